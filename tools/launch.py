"""Start an MXNet parameter-server job (ps-lite) on this machine, bound to 127.0.0.1.

    python -m tools.launch -n 2 -s 1 -- python train_lightcnn.py --kv-store dist_sync ...

One scheduler, ``-s`` servers and ``-n`` workers run as child processes with the ``DMLC_*``
variables ps-lite reads. Workers run the given command; the scheduler and servers run
``python -c 'import mxnet'``, which in those roles serves until the workers finish. Unlike
``mxnet.tools.launch --launcher local`` (which binds to the machine's network address), every
process here listens on loopback only. The exit code is the first failing worker's, or 0; when a
worker fails the others are stopped. For several hosts see the README (same variables, the
scheduler's address as ``DMLC_PS_ROOT_URI``).
"""
import os
import signal
import socket
import subprocess
import sys
import time

# No MXNet in this process, so no default_compute_threads() here: role_env gives each worker its share.
from common.checks import check_number
from common.cli import ArgumentParser, run_cli
from common.errors import UsageError
from common.threads import threads_per_process
from common.workers import MAX_WORKERS

HOST = '127.0.0.1'
SERVE = [sys.executable, '-c', 'import mxnet']


def free_port(host=HOST):
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def role_env(role, num_workers, num_servers, port, host=HOST, base=None):
    """Environment of one ps-lite process; ``DMLC_NODE_HOST`` keeps it on ``host``.

    Workers share the cores (``OMP_NUM_THREADS`` = cores / workers unless the user set it); the
    scheduler and servers only move gradients and get one thread.
    """
    env = dict(os.environ if base is None else base)
    env.update(DMLC_ROLE=role, DMLC_PS_ROOT_URI=host, DMLC_PS_ROOT_PORT=str(port),
               DMLC_NUM_WORKER=str(num_workers), DMLC_NUM_SERVER=str(num_servers),
               DMLC_NODE_HOST=host,
               OMP_NUM_THREADS=threads_per_process(num_workers) if role == 'worker' else '1')
    return env


def _stop(procs, grace=5.0):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.time() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch(command, num_workers, num_servers=1, port=None, timeout=None, log=print):
    """Run ``command`` as ``num_workers`` workers beside a scheduler and servers; returns the exit code.

    Parameters
    ----------
    command : list of str
        The worker command, e.g. ``['python', 'train_lightcnn.py', '--kv-store', 'dist_sync', ...]``.
    num_workers, num_servers : int
        Process counts (at least one of each).
    port : int, optional
        Scheduler port on 127.0.0.1 (default: a free one).
    timeout : float, optional
        Seconds before everything is stopped and 124 returned.
    """
    if not command:
        raise UsageError('give the worker command after --, e.g. -- python train_lightcnn.py ...')
    check_number(num_workers, 'num_workers', minimum=1, maximum=MAX_WORKERS, integer=True)
    check_number(num_servers, 'num_servers', minimum=1, maximum=MAX_WORKERS, integer=True)
    check_number(port, 'port', minimum=1, maximum=65535, integer=True, optional=True)
    check_number(timeout, 'timeout', above=0, optional=True, qualifier=' (seconds)')
    port = port or free_port()
    log(f'launch: scheduler {HOST}:{port}, {num_servers} server(s), {num_workers} worker(s)')
    support, workers = [], []
    try:
        support.append(subprocess.Popen(SERVE, env=role_env('scheduler', num_workers, num_servers, port)))
        for _ in range(num_servers):
            support.append(subprocess.Popen(SERVE, env=role_env('server', num_workers, num_servers, port)))
        for _ in range(num_workers):
            workers.append(subprocess.Popen(command, env=role_env('worker', num_workers, num_servers, port)))
        deadline = None if timeout is None else time.time() + timeout
        pending, code = list(workers), 0
        while pending:
            for p in list(pending):
                if p.poll() is not None:
                    pending.remove(p)
                    if p.returncode != 0 and code == 0:
                        code = p.returncode
            if code != 0:
                log(f'launch: a worker exited with code {code}; stopping the others')
                break
            if any(p.poll() is not None and p.returncode != 0 for p in support):
                log('launch: the scheduler or a server died; stopping the workers')
                code = 1
                break
            if deadline is not None and time.time() > deadline:
                log(f'launch: timed out after {timeout:g}s; stopping every process')
                code = 124
                break
            time.sleep(0.2)
        if code == 0:  # finished workers let the servers and scheduler exit on their own
            for p in support:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
        return code
    finally:
        _stop(workers + support)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    command = []
    if '--' in argv:
        cut = argv.index('--')
        argv, command = argv[:cut], argv[cut + 1:]
    parser = ArgumentParser(prog='python -m tools.launch',
                            description='Run a dist_sync MXNet job on this machine (127.0.0.1): '
                            'python -m tools.launch -n 2 -s 1 -- python train_lightcnn.py '
                            '--kv-store dist_sync ...')
    parser.add_argument('-n', '--num-workers', type=int, required=True)
    parser.add_argument('-s', '--num-servers', type=int, default=1)
    parser.add_argument('--port', type=int, help='scheduler port (default: a free one)')
    parser.add_argument('--timeout', type=float, help='stop everything after this many seconds')
    args = parser.parse_args(argv)
    return launch(command, args.num_workers, args.num_servers, args.port, args.timeout)


if __name__ == '__main__':
    raise SystemExit(run_cli(main))
