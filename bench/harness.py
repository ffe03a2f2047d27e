"""Shared benchmark plumbing: thread pinning, interleaved timing, process RSS, tables and JSON.

Benchmarks run as scripts (``python bench/NAME.py``), so they import this file and each other by plain
name (``from harness import ...``); it is not called ``common`` so as not to hide the project's package.

The machine these numbers come from is shared, so absolute speeds drift by 2x within minutes. Every
benchmark therefore runs ours and its anchor in alternation (A B B A A B ...), each in its own
long-lived worker process when the frameworks differ, and reports medians and the median of the
per-round ratios: drift hits both sides of a round alike and cancels in the ratio.
"""
import contextlib
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import threading
import time
from pathlib import Path

from common.workers import environment

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / 'results'
THREADS = 2
_THREAD_ENV = ('OMP_NUM_THREADS', 'OMP_WAIT_POLICY', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS',
               'MXNET_CPU_WORKER_NTHREADS', 'MXNET_ENGINE_TYPE', 'MXNET_SUBGRAPH_BACKEND', 'MXNET_MKLDNN_ENABLED')


def pin_threads(threads=THREADS):
    """Give every framework the same compute threads (set before mxnet/torch are imported), waiting passively
    as the project's commands do (``common.threads``) unless the caller chose otherwise."""
    os.environ['OMP_NUM_THREADS'] = str(threads)
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    os.environ.setdefault('MKL_NUM_THREADS', str(threads))
    os.environ.setdefault('OPENBLAS_NUM_THREADS', str(threads))
    os.environ.setdefault('MXNET_STORAGE_FALLBACK_LOG_VERBOSE', '0')
    return threads


def machine():
    """CPU model, cores, load and library versions: what a number in a table came from."""
    info = {'cpu': platform.processor() or platform.machine(), 'cores': os.cpu_count(),
            'python': platform.python_version(), 'load_1_5_15': [round(x, 2) for x in os.getloadavg()]}
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            key, _, value = line.partition(':')
            if key.strip() == 'Model name':
                info['cpu'] = value.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    info['env'] = {k: os.environ[k] for k in _THREAD_ENV if k in os.environ}
    for module in ('mxnet', 'torch', 'cv2', 'numpy'):
        info[module] = _version(module)
    return info


def _version(module):
    """Installed version without importing (importing torch next to mxnet costs seconds and memory)."""
    from importlib import metadata
    dist = {'cv2': 'opencv-python-headless'}.get(module, module)
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def torch_available():
    return _version('torch') is not None


def load():
    return [round(x, 2) for x in os.getloadavg()]


# --- workers: one framework per process, driven in alternation ------------------------------------

def _serve(conn, module, factory, kwargs):
    """Child side of :class:`Worker`: build the workload once, then time ``run(n)`` on request.

    ``module`` is a sibling of this file (e.g. ``bench_train``): a spawned child gets the parent's
    ``sys.path``, whose first entry is ``bench/`` when a benchmark runs as ``python bench/NAME.py``.
    """
    try:
        import importlib
        run = getattr(importlib.import_module(module), factory)(**kwargs)
        conn.send(('ready', None))
    except Exception as exc:  # reported to the parent as a skipped row, not a traceback
        conn.send(('error', f'{type(exc).__name__}: {exc}'))
        return
    while True:
        n = conn.recv()
        if n is None:
            return
        try:
            conn.send(('ok', run(n)))
        except Exception as exc:
            conn.send(('error', f'{type(exc).__name__}: {exc}'))


class Worker:
    """A workload in its own process (its own framework, threads and memory), timed on demand.

    ``module.factory(**kwargs)`` runs in the child and returns ``run(n) -> dict`` (e.g. seconds for ``n``
    steps). Between calls the child blocks on its pipe, so only one side computes at a time.

    ``env`` (name -> value, None unsets) is the environment the child starts with, e.g. its OpenMP threads.
    A workload that starts processes of its own needs ``daemon=False``.
    """

    def __init__(self, module, factory, env=None, daemon=True, **kwargs):
        ctx = multiprocessing.get_context('spawn')
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, module, factory, kwargs), daemon=daemon)
        with environment(env or {}):
            self._proc.start()
        child.close()  # so a crashed child shows as EOFError here instead of a hang
        status, self.error = self._receive()

    def _receive(self):
        try:
            return self._conn.recv()
        except EOFError:
            return 'error', f'worker process died (exit code {self._proc.exitcode})'

    def __call__(self, n):
        self._conn.send(n)
        status, value = self._receive()
        if status != 'ok':
            raise RuntimeError(value)
        return value

    def close(self):
        if self._proc.is_alive():
            try:
                self._conn.send(None)
            except OSError:
                pass
            self._proc.join(30)
            if self._proc.is_alive():
                self._proc.terminate()


# --- a competitor of known size: what a busy machine does to a stage ---------------------------------

def _spin(counter, stop):
    """One core's worth of pure-Python work until ``stop`` is set; ``counter`` counts blocks of 1e5 steps."""
    while not stop.is_set():
        n = 0
        for _ in range(100_000):
            n += 1
        with counter.get_lock():
            counter.value += 1


@contextlib.contextmanager
def competitor(processes=1):
    """Run ``processes`` CPU-bound processes (a pure-Python loop each: one core's demand, no memory traffic)
    for the duration of the block; they are started here, and stopped and joined on exit.

    Yields a dict that holds, after the block, ``competitor_blocks_per_s``: the competitors' own progress
    (1e5-step loop blocks per second, summed), which shows they ran and how much CPU they got.
    """
    ctx = multiprocessing.get_context('spawn')
    stop, counter = ctx.Event(), ctx.Value('q', 0)
    procs = [ctx.Process(target=_spin, args=(counter, stop), daemon=True) for _ in range(processes)]
    for p in procs:
        p.start()
    deadline = time.time() + 30
    while counter.value < processes and time.time() < deadline:  # running before the clock starts
        time.sleep(0.01)
    info, start, base = {}, time.perf_counter(), counter.value
    try:
        yield info
    finally:
        info['competitor_blocks_per_s'] = (counter.value - base) / max(time.perf_counter() - start, 1e-9)
        stop.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.terminate()


def timed(fn, *args, **kwargs):
    """``(wall seconds, process CPU seconds, result)`` of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def alternate(runs, rounds):
    """Call each of ``runs`` (name -> zero-argument callable returning a dict) once per round.

    The order flips every round (A B, B A, A B ...) so a load change mid-round hurts both sides alike.
    Returns name -> list of the dicts, each with the load average added.
    """
    names = list(runs)
    out = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            result = dict(runs[name]())
            result['load1'] = os.getloadavg()[0]
            out[name].append(result)
    return out


def rate_summary(results, count_key, time_key='seconds'):
    """Median rate (count per second) over rounds, plus the spread, from :func:`alternate` dicts."""
    rates = [r[count_key] / r[time_key] for r in results]
    summary = {'rate': statistics.median(rates), 'rate_min': min(rates), 'rate_max': max(rates),
               'rounds': len(rates)}
    if all('cpu' in r for r in results):
        summary['cpu_s_per_item'] = statistics.median(r['cpu'] / r[count_key] for r in results)
    return summary


def paired_ratio(ours, anchor, count_key, time_key='seconds'):
    """Median over rounds of ours/anchor rate, each ratio taken within one round (drift cancels)."""
    ratios = [(a[count_key] / a[time_key]) / (b[count_key] / b[time_key]) for a, b in zip(ours, anchor)]
    return statistics.median(ratios) if ratios else None


# --- external processes: wall time and peak RSS of the whole process tree ----------------------------

def _tree(pid):
    """``pid`` and its descendants (Linux /proc)."""
    found, stack = [], [pid]
    while stack:
        p = stack.pop()
        found.append(p)
        try:
            for task in os.listdir(f'/proc/{p}/task'):
                with open(f'/proc/{p}/task/{task}/children') as f:
                    stack.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return found


def _rss_kb(pid):
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _cpu_seconds(pid):
    """User + system CPU seconds of one process so far (all its threads), or None when it is gone."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
    except (OSError, ValueError, IndexError):
        return None


def run_process(cmd, cwd=None, env=None, interval=0.05):
    """Run ``cmd``; return wall seconds, peak RSS in MB summed over its process tree, and the tree's CPU.

    Sampled every ``interval`` s from /proc, so worker processes (im2rec's, ours -- also those a forkserver
    starts) are counted together; ``cpu_seconds`` sums each process's last sampled user + system time (a
    process that ends between two samples loses at most ``interval`` s). Raises ``RuntimeError`` with the
    tail of stderr when the command fails.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    peak, cpu = [0], {}
    done = threading.Event()

    def sample():
        while not done.is_set():
            tree = _tree(proc.pid)
            peak[0] = max(peak[0], sum(_rss_kb(p) for p in tree))
            for p in tree:
                seconds = _cpu_seconds(p)
                if seconds is not None:
                    cpu[p] = max(cpu.get(p, 0.0), seconds)
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode:
        raise RuntimeError(f'{" ".join(map(str, cmd))} failed ({proc.returncode}): {stderr.strip()[-600:]}')
    return {'seconds': seconds, 'peak_rss_mb': peak[0] / 1024, 'cpu_seconds': sum(cpu.values()),
            'stdout': stdout, 'stderr': stderr}


# --- output ----------------------------------------------------------------------------------------

def markdown_table(rows, columns):
    """``rows`` (dicts) as a markdown table over ``columns`` (key, header, format) triples."""
    lines = ['| ' + ' | '.join(h for _, h, _ in columns) + ' |',
             '|' + '|'.join('---' if i == 0 else '---:' for i in range(len(columns))) + '|']
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            cells.append('' if value is None else (format(value, fmt) if fmt and not isinstance(value, str)
                                                   else str(value)))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def finish(name, title, rows, columns, meta, json_path=None):
    """Print the table and write ``{title, rows, meta, machine}`` as JSON; return that dict."""
    result = {'name': name, 'title': title, 'rows': rows, 'columns': [list(c) for c in columns],
              'meta': meta, 'machine': machine()}
    print(f'\n## {title}\n')
    print(markdown_table(rows, columns))
    for note in meta.get('notes', []):
        print(f'- {note}')
    print(f"\nload average (1/5/15 min): {result['machine']['load_1_5_15']}")
    path = Path(json_path) if json_path else RESULTS_DIR / f'{name}.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=float))
    print(f'results -> {path}')
    return result


def skipped_row(label, reason, **extra):
    """A table row saying why a measurement is missing (e.g. torch not installed)."""
    return {'variant': label, 'note': f'skipped: {reason}', **extra}
