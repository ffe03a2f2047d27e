"""Pieces every stage of the pipeline shares: errors, CLI conventions, image decoding, preprocessing,
default paths and compute threads.

The names below resolve on first use, so importing the package loads nothing (no numpy, OpenCV or MXNet):
a command can still size MXNet's threads first (:mod:`common.threads`).
"""
import importlib

_EXPORTS = {'UsageError': 'errors', 'ParameterError': 'errors', 'ArgumentParser': 'cli', 'run_cli': 'cli', 'ImageError': 'images',
            'read_image': 'images', 'Preprocessing': 'preprocessing', 'runs_dir': 'paths',
            'default_compute_threads': 'threads'}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(importlib.import_module(f'.{_EXPORTS[name]}', __name__), name)
