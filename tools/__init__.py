"""Process tools. ``python -m tools.launch``: the local parameter-server launcher (import ``tools.launch``;
not re-exported here, so running it with ``-m`` does not import it twice)."""
