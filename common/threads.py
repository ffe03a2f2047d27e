"""Compute threads for MXNet, chosen before it is imported. Importing this module changes nothing.

With ``OMP_NUM_THREADS`` unset, MXNet 1.x on x86 uses *half* the processors (it assumes every core runs two
hyper-threads). On machines with one thread per core -- most cloud VMs -- that leaves half the cores idle:
extracting ORL with LightCNN-V4 on 2 cores took 32.6 s instead of 17.1 s. :func:`default_compute_threads`
sets ``OMP_NUM_THREADS`` to the number of physical cores this process may run on, unless the user has set it
(or ``MXNET_OMP_MAX_THREADS``). Hyper-threaded machines keep one thread per physical core, as MXNet intends.

MXNet reads the variable once, when it is imported, so every command line calls it as its first statement
(guarded, so that importing the script as a module changes nothing)::

    if __name__ == '__main__':  # first, before MXNet loads: it sizes its thread pool once (common/threads.py)
        from common.threads import default_compute_threads
        default_compute_threads()

and so should a Python program that wants every core, before its first ``import mxnet`` (or of a module of
this project that loads it, e.g. ``models``).
"""
import os
import sys

USER_THREADS = os.environ.get('OMP_NUM_THREADS') or os.environ.get('MXNET_OMP_MAX_THREADS')  # before ours


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


def default_compute_threads():
    """Set ``OMP_NUM_THREADS`` (physical cores by default) unless the user did or MXNet is already loaded.

    Returns the value in effect for MXNet started after this call, or ``None`` when it is not ours to set.
    """
    if USER_THREADS or 'OMP_NUM_THREADS' in os.environ:
        return USER_THREADS or os.environ['OMP_NUM_THREADS']
    if 'mxnet' in sys.modules:
        return None  # too late: its thread pool is sized at import
    os.environ['OMP_NUM_THREADS'] = str(physical_cores())
    return os.environ['OMP_NUM_THREADS']


def threads_per_process(processes):
    """``OMP_NUM_THREADS`` for one of ``processes`` MXNet processes sharing this machine: the user's, else a share."""
    return USER_THREADS or str(max(1, physical_cores() // processes))
