"""Worker processes for packing and alignment, started from a clean interpreter.

A plain ``fork`` copies OpenCV's, OpenMP's and MXNet's thread pools mid-state, so workers forked from a
process that already ran threaded OpenCV or MXNet code can hang on their locks. Workers here are forked
from a fresh *forkserver* process instead (``spawn`` where forkserver does not exist): they start clean,
and modules named in ``preload`` are imported once in the server, so workers start warm.

Workers that need their own thread settings (``env``) are *spawned* with them instead: every new process of
a pool imports the parent's main script before anything else runs in it, so a script that imports MXNet at the
top would size MXNet's threads from the forkserver's environment (the parent's), too early for any
initializer to change.
"""
import contextlib
import multiprocessing
import os
import threading

_ENV_LOCK = threading.Lock()
# Most worker processes or decoding threads a command accepts: beyond a few per core they only queue for the
# CPU and hold memory (each alignment worker holds its own MTCNN); a typo such as 1000000000 is refused.
MAX_WORKERS = max(64, 4 * (os.cpu_count() or 1))
_NO_PRELOAD = ('common.workers',)  # stands in for "nothing": an empty list means the main script


def process_pool(workers, initializer=None, initargs=(), preload=(), env=None):
    """A ``multiprocessing.Pool`` of ``workers`` processes started from a clean interpreter.

    Parameters
    ----------
    workers : int
        Number of processes (>= 1).
    initializer, initargs
        Run once in each worker (as for ``multiprocessing.Pool``); ``initargs`` are pickled.
    preload : sequence of str
        Modules the forkserver imports once before forking workers. Leave out modules that import
        MXNet: its engine threads would then be forked into every worker, sized by the parent's settings.
        Ignored with ``env``.
    env : dict, optional
        Environment variables the workers start with (spawned, not forked), e.g.
        ``common.threads.compute_env('align', workers)``: MXNet and OpenMP read their thread settings once,
        when loaded. A worker the pool replaces later (one that crashed) starts with the parent's.
    """
    if env:
        with environment(env):  # the workers start inside Pool(), with these variables
            return multiprocessing.get_context('spawn').Pool(workers, initializer=initializer, initargs=initargs)
    if 'forkserver' in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context('forkserver')
        ctx.set_forkserver_preload(list(preload or _NO_PRELOAD))  # only the first pool's list counts
    else:
        ctx = multiprocessing.get_context('spawn')
    return ctx.Pool(workers, initializer=initializer, initargs=initargs)


@contextlib.contextmanager
def environment(env):
    """Set ``env`` in ``os.environ`` (None unsets) for processes started inside; restore on exit.

    Holds a lock meanwhile, so two threads starting processes with different settings do not mix them.
    """
    with _ENV_LOCK:
        saved = {key: os.environ.get(key) for key in env}
        _update(env)
        try:
            yield
        finally:
            _update(saved)


def _update(env):
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = str(value)
