"""Writing files so that a reader never sees half of one: the one implementation every stage uses.

A file is written under a temporary name beside its final path (same folder, hence same file system)
and renamed over it with :func:`os.replace`, which is atomic on POSIX and Windows. The temporary name
carries the process id and a per-process counter, so parallel processes and threads writing the same
path never share one; when the writing fails in any way (disk full, ``KeyboardInterrupt``, an exception
from the caller's code) the temporary file is removed and the previous file, if any, is left intact.
"""
import contextlib
import itertools
import os

from common.errors import UsageError

_SERIAL = itertools.count()  # next() on a count is atomic under the GIL: unique per thread too


def temporary_name(path):
    """``PATH.<pid>-<n>.part``: a name beside ``path`` no other process or thread uses."""
    return f'{os.fspath(path)}.{os.getpid()}-{next(_SERIAL)}.part'


def check_output_paths(*paths):
    """Fail before any work when an output's folder does not exist (``None`` / empty paths are skipped).

    Raises
    ------
    UsageError
        Naming the missing folder and the output it was for.
    """
    for path in paths:
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder and not os.path.isdir(folder):
            raise UsageError(f'output folder does not exist: {folder} (for {path})')


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path to write; rename it over ``path`` when the block succeeds.

    For writers that take a file name (``net.save_parameters``, ``mx.nd.save``,
    ``trainer.save_states``). The parent folder is created. On any exception the temporary file is
    removed and the exception propagates.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_write(path, mode='wb', **open_kwargs):
    """Open a temporary file for writing; it replaces ``path`` only if the block completes.

    Parameters
    ----------
    path : str or path-like
    mode : str
        ``'wb'`` (default) or ``'w'`` (text; pass ``encoding``/``newline`` in ``open_kwargs``).

    Example::

        with atomic_write('out.json', 'w', encoding='utf-8') as f:
            json.dump(summary, f)
    """
    if not mode.startswith('w'):
        raise ValueError(f"atomic_write writes a new file: mode must start with 'w', not {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
