"""Run every benchmark (quick settings, ~15 min on 2 quiet cores) and write ``bench/results.md`` + ``results.json``.

    nice python bench/run_all.py [--only train extract ...] [--skip align]

With ``--only`` / ``--skip`` the tables of the benchmarks not run are kept from the last ``results.json``
(their titles say "earlier run").

Each benchmark alternates ours and its anchor within the run, so the ratios hold on a loaded machine;
the load average is recorded next to every table. The alignment bench (``bench_align.py``, owned by the
alignment stage) runs as a subprocess when present. Long benchmarks (``transfer``: bench_transfer.py, training
nine configurations) run only when named: ``--only transfer``.
"""
import argparse
import json
import os
import subprocess
import sys
import time

from harness import BENCH_DIR, RESULTS_DIR, load, machine, markdown_table, pin_threads

# name -> (module, quick keyword arguments for its run())
BENCHES = {
    'eval': ('bench_eval', {'rounds': 3}),
    'pack': ('bench_pack', {'rounds': 4}),
    'input': ('bench_input', {'loader_batches': 40, 'steps': 1, 'rounds': 2}),
    'extract': ('bench_extract', {'n': 192, 'rounds': 3}),
    'train': ('bench_train', {'rounds': 2, 'steps': 1}),
    'deploy': ('bench_deploy', {'n': 192, 'rounds': 3, 'per_fold': 100}),
    'busy': ('bench_busy', {'rounds': 2, 'pool_n': 64, 'pack_identities': 6}),
}
# long benchmarks: only with --only NAME (the transfer protocol trains 9 configurations, ~1.5 h on 2 cores)
LONG = {
    'transfer': ('bench_transfer', {'budget_minutes': 4.0}),
}


def run_align():
    """``bench_align.py`` (not ours: its own CLI and JSON) as a subprocess; a result dict or None."""
    script = BENCH_DIR / 'bench_align.py'
    if not script.exists():
        return None
    out = RESULTS_DIR / 'align.json'
    env = dict(os.environ, OMP_NUM_THREADS='1', OMP_WAIT_POLICY='PASSIVE')  # an alignment worker's settings
    proc = subprocess.run([sys.executable, str(script), '--pubfig-per-id', '2', '--speed-per-id', '2',
                           '--whole-every', '20', '--rounds', '2', '--out', str(out)],
                          cwd=BENCH_DIR.parent, capture_output=True, text=True, env=env)
    if proc.returncode or not out.exists():
        rows = [{'variant': 'bench_align.py', 'note': f'failed: {proc.stderr.strip()[-200:]}'}]
        return {'name': 'align', 'title': 'Face detection + alignment', 'rows': rows,
                'columns': [['variant', 'run', ''], ['note', 'note', '']], 'meta': {}}
    report = json.loads(out.read_text())
    columns = [['dataset', 'dataset', ''], ['variant', 'run', ''], ['images', 'images', 'd'],
               ['recall', 'recall', '.3f'], ['landmarks_sane', 'landmarks sane', '.3f'],
               ['images_per_second', 'images/s', '.1f'], ['cpu_ms_per_image', 'CPU ms/image', '.2f'],
               ['ratio', 'ours / anchor (wall)', '.2f'], ['spread', 'per-round min-max', ''],
               ['cpu_ratio', 'ours / anchor (CPU)', '.2f'], ['cpu_spread', 'per-round min-max', ''],
               ['load1', 'load per round', '']]
    return {'name': 'align', 'title': 'Face detection + alignment (MTCNN; anchor: main before batching)',
            'rows': report.get('results', []), 'columns': columns, 'meta': {}, 'stdout': proc.stdout}


def to_markdown(results, info, seconds):
    lines = ['# Benchmark results', '',
             f"Machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}, mxnet {info['mxnet']}, "
             f"torch {info['torch'] or 'not installed'}, OpenCV {info['cv2']}. Threads: "
             + ', '.join(f'{k}={v}' for k, v in info['env'].items()) + '.',
             f'Whole run: {seconds / 60:.1f} min; load average at the start {info["load_1_5_15"]}, '
             f'at the end {load()} (the machine was shared: compare ratios, not absolute speeds).', '']
    for res in results:
        lines += [f"## {res['title']}", '', markdown_table(res['rows'], [tuple(c) for c in res['columns']]), '']
        for extra in res.get('tables', []):  # further tables of the same bench (e.g. deploy accuracy)
            if extra['rows']:
                lines += [f"**{extra['title']}**", '',
                          markdown_table(extra['rows'], [tuple(c) for c in extra['columns']]), '']
        lines += [f'- {note}' for note in res.get('meta', {}).get('notes', [])]
        if res.get('meta', {}).get('target'):
            lines.append(f"- target: {res['meta']['target']}")
        if res.get('machine'):
            lines.append(f"- load average during this bench (1/5/15 min): {res['machine']['load_1_5_15']}")
        lines.append('')
    return '\n'.join(lines)


def _with_earlier(results, not_run):
    """``results`` plus, for benchmarks not run this time, their tables from the last ``results.json`` (marked
    as such), in the usual order: a partial run (``--only``) updates its tables and keeps the others."""
    path = BENCH_DIR / 'results.json'
    try:
        earlier = {r['name']: r for r in json.loads(path.read_text())['results']}
    except (OSError, ValueError, KeyError):
        earlier = {}
    fresh = {r['name']: r for r in results}
    merged = []
    for name in list(BENCHES) + ['align'] + list(LONG):
        if name in fresh:
            merged.append(fresh[name])
        elif name in not_run and name in earlier:
            kept = dict(earlier[name])
            if not kept.get('title', '').endswith('(earlier run)'):
                kept['title'] = kept.get('title', name) + ' (earlier run)'
            merged.append(kept)
    return merged


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = list(BENCHES) + ['align']
    parser.add_argument('--only', nargs='+', choices=names + list(LONG), default=names,
                        help=f'default: all but the long ones ({", ".join(LONG)}), which run only when named')
    parser.add_argument('--skip', nargs='+', choices=names, default=[])
    args = parser.parse_args(argv)
    pin_threads()
    info = machine()
    start = time.perf_counter()
    results = []
    for name in [n for n in names + list(LONG) if n in args.only and n not in args.skip]:
        print(f'\n=== {name} (load {load()}) ===', flush=True)
        tic = time.perf_counter()
        if name == 'align':
            res = run_align()
            if res is None:
                print('bench_align.py absent: skipped')
                continue
        else:
            module, kwargs = {**BENCHES, **LONG}[name]
            res = __import__(module, fromlist=['run']).run(**kwargs)
        res['seconds'] = time.perf_counter() - tic
        results.append(res)
        print(f'[{name}: {res["seconds"]:.0f} s]', flush=True)
    seconds = time.perf_counter() - start
    results = _with_earlier(results, [n for n in names if n not in args.only or n in args.skip])
    (BENCH_DIR / 'results.md').write_text(to_markdown(results, info, seconds))
    (BENCH_DIR / 'results.json').write_text(json.dumps(
        {'machine': info, 'seconds': seconds, 'results': results}, indent=1, default=float))
    print(f'\nall done in {seconds / 60:.1f} min -> bench/results.md, bench/results.json')


if __name__ == '__main__':
    main()
