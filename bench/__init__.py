"""Benchmarks: each stage against its anchor, side by side (``python bench/run_all.py``)."""
