"""Every stage alone and beside a CPU-bound competitor, under the thread settings it could use.

    nice python bench/bench_busy.py [--stages pack align align-pool extract train] [--rounds 3]

A competitor of known size -- one process spinning a pure-Python loop, i.e. one core's demand -- is started
by this benchmark for the "busy" measurements and stopped after each (``harness.competitor``). Each stage
runs in its own worker processes, one per setting, created with that setting's environment (OpenMP reads
it once, when MXNet loads):

* ``threads 2, spin``: ``OMP_NUM_THREADS=2`` with libgomp's default wait (spin, then sleep) -- what every
  command used before ``common.threads`` chose per stage;
* ``threads 2, passive``: the same with ``OMP_WAIT_POLICY=PASSIVE`` (a waiting thread sleeps at once);
* ``threads 1``: no OpenMP team at all.

Packing has no OpenMP work: its setting is the number of encoding processes. Alignment through a pool
(``align-pool``: ``align_tree``'s workers, warm) compares processes x threads. Settings and conditions
alternate round by round (A B C, C B A, ...); a row gives the median rate alone and busy, busy / alone
(median of per-round ratios) and the ratio to the ``before`` setting measured in the same rounds.
"""
import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import REPO_ROOT, Worker, alternate, competitor, finish, pin_threads, run_process

DEFAULT_IMAGES = REPO_ROOT.parent / 'shared' / 'datasets' / 'pubfig83'
SPIN2, PASSIVE2, ONE = 'threads 2, spin', 'threads 2, passive', 'threads 1'
ONE_BY_ONE = 'one image per call, threads 2, spin'  # alignment as it was before batching
OMP_SETTINGS = {SPIN2: {'OMP_NUM_THREADS': '2', 'OMP_WAIT_POLICY': None, 'GOMP_SPINCOUNT': None},
                PASSIVE2: {'OMP_NUM_THREADS': '2', 'OMP_WAIT_POLICY': 'PASSIVE', 'GOMP_SPINCOUNT': None},
                ONE: {'OMP_NUM_THREADS': '1', 'OMP_WAIT_POLICY': None, 'GOMP_SPINCOUNT': None}}
COLUMNS = (('stage', 'stage', ''), ('variant', 'setting', ''), ('unit', 'unit', ''),
           ('alone', 'alone /s', '.1f'), ('busy', 'busy /s', '.1f'), ('busy_over_alone', 'busy / alone', '.2f'),
           ('spread', 'busy / alone min-max', ''), ('vs_before_alone', 'vs before, alone', '.2f'),
           ('vs_before_busy', 'vs before, busy', '.2f'), ('cpu_alone', 'CPU ms/unit alone', '.1f'),
           ('cpu_busy', 'CPU ms/unit busy', '.1f'), ('competitor', 'competitor blocks/s', '.0f'),
           ('note', 'note', ''))


def _sample(images, n, start=0):
    from common.images import list_images
    files = list_images(str(images))
    step = max(1, len(files) // n)
    return [os.path.join(str(images), f) for f in files[start::step][:n]]


def _clock(fn, count, key, cpu_time=time.process_time):
    wall, cpu = time.perf_counter(), cpu_time()
    fn()
    return {'seconds': time.perf_counter() - wall, 'cpu': cpu_time() - cpu, key: count}


def _pids_cpu(pids):
    """CPU seconds (user + system) used so far by the processes ``pids`` (Linux /proc)."""
    total = 0
    for pid in pids:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf('SC_CLK_TCK')


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- workloads, built inside worker processes --------------------------------------------------------

def align_worker(paths, batched=True):
    """MTCNN + warp over decoded images in this process, as ``align_tree --workers 1`` does (chunks of
    ``CHUNK`` images per detector call), or one image per call (``FaceAligner.align``, as before batching)."""
    from common.images import read_image
    from data_tools.alignment import CHUNK, FaceAligner
    images = [read_image(p, 'bgr') for p in paths]
    aligner = FaceAligner()
    aligner.align_batch(images[:4])  # loads the nets

    def align(n):
        step = CHUNK if batched else 1
        for start in range(0, n, step):
            aligner.align_batch(images[start:min(n, start + step)])
    return lambda n: _clock(lambda: align(n), n, 'images')


def align_pool_worker(paths, workers, threads):
    """``align_tree``'s worker pool, kept warm: ``workers`` processes of ``threads`` OpenMP threads each."""
    from common.workers import process_pool
    from data_tools import alignment
    out = tempfile.mkdtemp(prefix='bench_busy_align_')
    env = {'OMP_NUM_THREADS': str(threads), 'OMP_WAIT_POLICY': None, 'GOMP_SPINCOUNT': None}
    pool = process_pool(workers, alignment._init_worker, (alignment.FaceAligner(),), env=env)
    tasks = [(os.path.basename(p), p, os.path.join(out, f'{k}.png')) for k, p in enumerate(paths)]
    chunks = lambda n: [tasks[i:i + alignment.CHUNK] for i in range(0, n, alignment.CHUNK)]
    pool.map(alignment._align_chunk, chunks(workers * alignment.CHUNK))  # every worker loads its nets

    pids = [p.pid for p in pool._pool]  # the workers' CPU time is the cost (spinning threads burn it)

    def run(n):
        return _clock(lambda: pool.map(alignment._align_chunk, chunks(n), chunksize=1), n, 'images',
                      lambda: _pids_cpu(pids))
    return run


def extract_worker(paths, batch):
    from bench_extract import ours_worker
    return ours_worker('lightcnn9', batch, paths, None)


def train_worker(batch):
    from bench_train import mxnet_step
    return mxnet_step('lightcnn9', batch, 10575, None)  # counts 'samples'



# --- one stage: settings x {alone, busy}, alternating -------------------------------------------------

def _measure(stage, unit, runs, before, rounds):
    """``runs``: setting -> zero-argument callable returning a dict with ``seconds`` and ``unit``."""
    plan = {}
    for label, fn in runs.items():
        plan[(label, 'alone')] = fn

        def busy(fn=fn):
            with competitor(1) as info:
                result = fn()
            return {**result, **info}
        plan[(label, 'busy')] = busy
    raw = alternate(plan, rounds)
    rows = []
    for label in runs:
        alone, busy = raw[(label, 'alone')], raw[(label, 'busy')]
        rate = lambda r: r[unit] / r['seconds']
        ratios = [rate(b) / rate(a) for a, b in zip(alone, busy)]
        cpu = lambda res: (statistics.median(1e3 * r['cpu'] / r[unit] for r in res)
                           if all('cpu' in r for r in res) else None)
        row = {'stage': stage, 'variant': label, 'unit': unit, 'alone': statistics.median(map(rate, alone)),
               'busy': statistics.median(map(rate, busy)), 'busy_over_alone': statistics.median(ratios),
               'cpu_alone': cpu(alone), 'cpu_busy': cpu(busy),
               'spread': f'{min(ratios):.2f}-{max(ratios):.2f}',
               'competitor': statistics.median(r['competitor_blocks_per_s'] for r in busy)}
        if before in runs and label != before:
            for cond, res in (('alone', alone), ('busy', busy)):
                row[f'vs_before_{cond}'] = statistics.median(
                    rate(a) / rate(b) for a, b in zip(res, raw[(before, cond)]))
        rows.append(row)
    return rows, {f'{k[0]} | {k[1]}': v for k, v in raw.items()}


def _omp_stage(stage, unit, factory, n, rounds, settings=None, before=SPIN2, **kwargs):
    """``settings``: label -> (environment, extra factory arguments); default the three OpenMP settings."""
    settings = settings or {label: (env, {}) for label, env in OMP_SETTINGS.items()}
    workers = {label: Worker('bench_busy', factory, env=env, **kwargs, **extra)
               for label, (env, extra) in settings.items()}
    try:
        errors = [f'{label}: {w.error}' for label, w in workers.items() if w.error]
        if errors:
            return [{'stage': stage, 'note': 'skipped: ' + '; '.join(errors)}], {}
        return _measure(stage, unit, {label: (lambda w=w: w(n)) for label, w in workers.items()}, before, rounds)
    finally:
        for w in workers.values():
            w.close()


def _align_pool_stage(paths, n, rounds):
    settings = {'2 workers x 2 threads, spin': (2, 2), '2 workers x 1 thread': (2, 1), '1 worker x 1 thread': (1, 1)}
    workers = {label: Worker('bench_busy', 'align_pool_worker', daemon=False, paths=paths, workers=w, threads=t)
               for label, (w, t) in settings.items()}
    try:
        errors = [f'{label}: {w.error}' for label, w in workers.items() if w.error]
        if errors:
            return [{'stage': 'align-pool', 'note': 'skipped: ' + '; '.join(errors)}], {}
        return _measure('align-pool', 'images', {label: (lambda w=w: w(n)) for label, w in workers.items()},
                        '2 workers x 2 threads, spin', rounds)
    finally:
        for w in workers.values():
            w.close()


def _pack_stage(images, identities, rounds):
    """``pack_rec.py`` end to end on the first ``identities`` folders, 1 or 2 encoding processes."""
    work = Path(tempfile.mkdtemp(prefix='bench_busy_pack_'))
    try:
        tree = work / 'tree'
        tree.mkdir()
        for name in sorted(p.name for p in Path(images).iterdir() if p.is_dir())[:identities]:
            (tree / name).symlink_to(Path(images) / name)
        count = sum(len(files) for _, _, files in os.walk(tree, followlinks=True))

        def pack(workers):
            def go():
                cpu = _children_cpu()
                res = run_process([sys.executable, str(REPO_ROOT / 'data_tools' / 'pack_rec.py'), '--images',
                                   str(tree), '--out', str(work / 'out'), '--workers', str(workers), '--quiet'],
                                  cwd=REPO_ROOT)
                return {'seconds': res['seconds'], 'images': count, 'cpu': _children_cpu() - cpu}
            return go
        return _measure('pack', 'images', {'2 workers': pack(2), '1 worker': pack(1)}, '2 workers', rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


STAGES = ('pack', 'align', 'align-pool', 'extract', 'train')


def run(images=DEFAULT_IMAGES, stages=STAGES, rounds=3, align_n=16, pool_n=96, extract_n=64, train_steps=1,
        batch=32, pack_identities=8, json_path=None):
    pin_threads(2)
    rows, raw = [], {}
    if not os.path.isdir(images):
        rows.append({'stage': 'all', 'note': f'skipped: dataset {images} absent'})
        stages = [s for s in stages if s == 'train']
    for stage in stages:
        print(f'-- {stage} (load {os.getloadavg()[0]:.1f})', flush=True)
        if stage == 'pack':
            stage_rows, raw[stage] = _pack_stage(images, pack_identities, rounds)
        elif stage == 'align':
            settings = {ONE_BY_ONE: (OMP_SETTINGS[SPIN2], {'batched': False}),
                        **{f'batched, {label}': (env, {}) for label, env in OMP_SETTINGS.items()}}
            stage_rows, raw[stage] = _omp_stage('align', 'images', 'align_worker', align_n, rounds, settings,
                                                ONE_BY_ONE, paths=_sample(images, align_n))
        elif stage == 'align-pool':
            stage_rows, raw[stage] = _align_pool_stage(_sample(images, pool_n, 1), pool_n, rounds)
        elif stage == 'extract':
            stage_rows, raw[stage] = _omp_stage('extract', 'images', 'extract_worker', extract_n, rounds,
                                                paths=_sample(images, extract_n, 2), batch=batch)
        else:
            stage_rows, raw[stage] = _omp_stage('train', 'samples', 'train_worker', train_steps, rounds, batch=batch)
        rows += stage_rows
    meta = {'rounds': rounds, 'raw': raw, 'cores': os.cpu_count(),
            'target': 'each stage keeps most of its speed beside one competing process',
            'notes': [f'competitor: 1 process spinning a pure-Python loop (one core), started for each busy '
                      f'measurement; median of {rounds} alternating rounds; "vs before" = this setting / the '
                      'old default (2 threads, libgomp spin) in the same rounds',
                      f'align: FaceAligner on {align_n} PubFig83 images in one process, batched by '
                      '16 (before: one per call); '
                      f'align-pool: {pool_n} images through align_tree\'s warm worker pool; '
                      f'extract: lightcnn9 embed_images, batch {batch}, {extract_n} images; '
                      f'train: lightcnn9 step, batch {batch}; pack: pack_rec.py on {pack_identities} identities',
                      'the machine is shared: "alone" means beside whatever else ran (load average below)']}
    return finish('busy', 'Stages alone and beside a CPU-bound competitor', rows, COLUMNS, meta, json_path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', default=str(DEFAULT_IMAGES))
    parser.add_argument('--stages', nargs='+', choices=STAGES, default=list(STAGES))
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--json', default=None, help='default: bench/results/busy.json')
    args = parser.parse_args(argv)
    run(args.images, args.stages, args.rounds, json_path=args.json)


if __name__ == '__main__':
    main()
