"""Worker processes for packing and alignment, started from a clean interpreter.

A plain ``fork`` copies OpenCV's, OpenMP's and MXNet's thread pools mid-state, so workers forked from a
process that already ran threaded OpenCV or MXNet code can hang on their locks. Workers here are forked
from a fresh *forkserver* process instead (``spawn`` where forkserver does not exist): they start clean,
and modules named in ``preload`` are imported once in the server, so workers start warm.
"""
import multiprocessing


def process_pool(workers, initializer=None, initargs=(), preload=()):
    """A ``multiprocessing.Pool`` of ``workers`` processes started from a clean interpreter.

    Parameters
    ----------
    workers : int
        Number of processes (>= 1).
    initializer, initargs
        Run once in each worker (as for ``multiprocessing.Pool``); ``initargs`` are pickled.
    preload : sequence of str
        Modules the forkserver imports once before forking workers. Leave out modules that import
        MXNet: its engine threads would then be forked into every worker.
    """
    if 'forkserver' in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context('forkserver')
        if preload:
            ctx.set_forkserver_preload(list(preload))
    else:
        ctx = multiprocessing.get_context('spawn')
    return ctx.Pool(workers, initializer=initializer, initargs=initargs)
