"""Compute threads for MXNet, chosen per stage before it is imported. Importing this module changes nothing.

Two measured facts decide the settings (README, Installation: Threads; ``bench/bench_busy.py``):

* With ``OMP_NUM_THREADS`` unset, MXNet 1.x on x86 uses *half* the processors (it assumes every core runs two
  hyper-threads). On machines with one thread per core -- most cloud VMs -- that leaves half the cores idle:
  extracting ORL with LightCNN-V4 on 2 cores took 32.6 s instead of 17.1 s. So a command sets
  ``OMP_NUM_THREADS`` to the physical cores this process may run on.
* The MXNet wheel uses GNU OpenMP (libgomp), whose threads *spin* at every barrier before sleeping. When another
  process holds a core, every parallel region waits for a thread that is not running while its partner burns
  the other core: MTCNN (hundreds of tiny operations per image) fell from 13 to 0.6 images/s with two threads
  on a busy machine. ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once) removes the collapse; networks of tiny
  operations run one thread per process, and use the cores through worker processes instead.

The user's ``OMP_NUM_THREADS`` (or ``MXNET_OMP_MAX_THREADS``) and ``OMP_WAIT_POLICY`` always win.

MXNet reads the variables once, when it is imported, so every command line calls
:func:`default_compute_threads` as its first statement (guarded, so that importing the script as a module
changes nothing)::

    if __name__ == '__main__':  # first, before MXNet loads: it sizes its thread pool once (common/threads.py)
        from common.threads import default_compute_threads
        default_compute_threads()

and so should a Python program that wants every core, before its first ``import mxnet`` (or of a module of
this project that loads it, e.g. ``models``). Worker processes get their share explicitly:
``common.workers.process_pool(..., env=compute_env(stage, processes))``.
"""
import os
import sys

USER_OMP_THREADS = os.environ.get('OMP_NUM_THREADS')  # as the user started us, before any of ours
USER_THREADS = USER_OMP_THREADS or os.environ.get('MXNET_OMP_MAX_THREADS')
USER_WAIT_POLICY = os.environ.get('OMP_WAIT_POLICY')
USER_WAITS = USER_WAIT_POLICY or os.environ.get('GOMP_SPINCOUNT')  # the user chose how threads wait
WAIT_POLICY = 'PASSIVE'
# Threads per process for stages made of tiny operations (MTCNN: 3 small nets, ~10 calls per image); other
# stages (packing, training, extraction) split the physical cores among their MXNet processes.
STAGE_THREADS = {'align': 1}


def physical_cores():
    """Physical cores among the CPUs this process may use (Linux topology; else the CPU count)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        try:
            with open(f'/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list', encoding='ascii') as f:
                cores.add(f.read().strip())
        except OSError:
            cores.add(str(cpu))  # no topology: count the CPU itself
    return max(1, len(cores))


def compute_env(stage=None, processes=1):
    """OpenMP settings for one of ``processes`` MXNet processes running ``stage``; the user's settings win.

    Parameters
    ----------
    stage : str, optional
        ``'align'`` gets :data:`STAGE_THREADS` threads per process; the others (``'pack'``, ``'train'``,
        ``'extract'``, None) an equal share of the physical cores.
    processes : int
        MXNet processes of this stage sharing the machine (workers of a pool).

    Returns
    -------
    dict
        ``OMP_NUM_THREADS`` (absent when the user set ``MXNET_OMP_MAX_THREADS``, which MXNet reads instead) and
        ``OMP_WAIT_POLICY`` (the user's, else ``PASSIVE``; absent when the user set ``GOMP_SPINCOUNT``), as
        strings for ``os.environ``.
    """
    env = {}
    if USER_OMP_THREADS:
        env['OMP_NUM_THREADS'] = USER_OMP_THREADS
    elif not USER_THREADS:
        env['OMP_NUM_THREADS'] = str(STAGE_THREADS.get(stage) or max(1, physical_cores() // max(1, processes)))
    if USER_WAIT_POLICY or not USER_WAITS:
        env['OMP_WAIT_POLICY'] = USER_WAIT_POLICY or WAIT_POLICY
    return env


def default_compute_threads():
    """Give this process every physical core and the passive wait (:func:`compute_env`), unless the user set
    them or MXNet is already loaded. Worker processes of a stage get their own share from :func:`compute_env`.

    Returns the ``OMP_NUM_THREADS`` in effect for MXNet started after this call, or ``None`` when it is not
    ours to set.
    """
    if 'mxnet' in sys.modules:
        return USER_THREADS or None  # too late: its thread pool is sized at import
    if 'OMP_NUM_THREADS' in os.environ and not USER_THREADS:  # set by this program before the call
        env = {k: v for k, v in compute_env().items() if k != 'OMP_NUM_THREADS'}
    else:
        env = compute_env()
    os.environ.update(env)
    return USER_THREADS or os.environ.get('OMP_NUM_THREADS')


def threads_per_process(processes):
    """``OMP_NUM_THREADS`` for one of ``processes`` MXNet processes sharing this machine: the user's, else a share."""
    return USER_THREADS or str(max(1, physical_cores() // processes))
