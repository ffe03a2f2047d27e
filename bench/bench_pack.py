"""Packing speed and memory: our ``data_tools/pack_rec.py`` vs MXNet's ``python -m mxnet.tools.im2rec``.

    nice python bench/bench_pack.py [--images ../shared/datasets/pubfig83] [--threads 2] [--rounds 5]

Both store 144x144 gray JPEG (quality 95) with the same number of encoding processes, run as the user
would run them (separate processes, timed end to end, peak RSS summed over each process tree). im2rec
needs a ``--list --recursive`` pass first; the ratio is taken against its packing pass alone (strict)
and against list + pack (what a user types). RSS flatness: ours on half the identities and on all. The
steady state (full minus half: the second half's images over its seconds) leaves out start-up, which is what
5M images see. Every round runs all four packs (ours and im2rec, full and half), so each round gives its own
ratios; the tables give their median and min-max over the rounds, by wall time and by CPU time (summed over
each process tree: on a shared machine the wall-time ratio also depends on which side's processes the
scheduler favours, the CPU-time ratio much less).
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from harness import (REPO_ROOT, alternate, finish, paired_ratio, pin_threads,
                     rate_summary, run_process)

DEFAULT_IMAGES = REPO_ROOT.parent / 'shared' / 'datasets' / 'pubfig83'
COLUMNS = (('variant', 'packer', ''), ('images', 'images', 'd'), ('seconds', 'seconds', '.2f'),
           ('rate', 'images/s', '.0f'), ('cpu_ms', 'CPU ms/image', '.3f'), ('peak_rss_mb', 'peak RSS MB', '.0f'),
           ('ratio', 'ours / im2rec pack', '.2f'), ('spread', 'per-round min-max', ''),
           ('ratio_total', 'ours / im2rec list+pack', '.2f'), ('note', 'note', ''))


def _half_tree(images, work):
    """A tree of symlinks to the first half of the identity folders (same images, half the dataset)."""
    half = work / 'half'
    half.mkdir()
    names = sorted(p.name for p in images.iterdir() if p.is_dir())
    for name in names[:len(names) // 2]:
        (half / name).symlink_to(images / name)
    return half


def _count_images(root):
    return sum(1 for _, _, files in os.walk(root, followlinks=True)  # half/ holds symlinked folders
               for f in files if f.lower().endswith(('.jpg', '.jpeg', '.png')))


def ours(images, prefix, threads):
    cmd = [sys.executable, str(REPO_ROOT / 'data_tools' / 'pack_rec.py'), '--images', str(images),
           '--out', str(prefix), '--size', '144', '--color', 'gray', '--workers', str(threads), '--quiet']
    return run_process(cmd, cwd=REPO_ROOT)


def im2rec(images, prefix, threads):
    """im2rec's two passes; returns the pack pass with ``list_seconds`` of the list pass added."""
    tool = [sys.executable, '-m', 'mxnet.tools.im2rec']
    listing = run_process(tool + ['--list', '--recursive', str(prefix), str(images)])
    packing = run_process(tool + ['--resize', '144', '--color', '0', '--quality', '95',
                                  '--num-thread', str(threads), str(prefix), str(images)])
    packing['list_seconds'] = listing['seconds']
    return packing


def _spread(values):
    """``{'median', 'min', 'max'}`` of per-round values."""
    return {'median': statistics.median(values), 'min': min(values), 'max': max(values)}


def _fmt(spread):
    return f"{spread['median']:.2f}x (rounds {spread['min']:.2f}-{spread['max']:.2f})"


def run(images=DEFAULT_IMAGES, threads=2, rounds=5, json_path=None):
    pin_threads(threads)
    images = Path(images)
    if not images.is_dir():
        rows = [{'variant': 'both', 'note': f'skipped: dataset {images} absent'}]
        return finish('pack', 'Packing (RecordIO, 144x144 gray)', rows, COLUMNS, {'images': str(images)}, json_path)
    work = Path(tempfile.mkdtemp(prefix='bench_pack_'))
    try:
        n_full = _count_images(images)
        half = _half_tree(images, work)
        n_half = _count_images(half)

        def timed(fn, root, n, tag):
            def go():
                res = fn(root, work / tag, threads)
                for f in work.glob(f'{tag}*'):
                    f.unlink()
                res.pop('stdout', None), res.pop('stderr', None)
                return {**res, 'images': n}
            return go

        # all four runs in every round, the order reversed every other round: a load change mid-round
        # hits each side alike, and each round gives its own full/half pair for the steady state
        raw = alternate({'ours': timed(ours, images, n_full, 'ours'),
                         'im2rec': timed(im2rec, images, n_full, 'im2rec'),
                         'ours_half': timed(ours, half, n_half, 'ours_half'),
                         'im2rec_half': timed(im2rec, half, n_half, 'im2rec_half')}, rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {'ours': raw['ours'], 'im2rec': raw['im2rec']}
    halves = {'ours': raw['ours_half'], 'im2rec': raw['im2rec_half']}

    def row(label, res, n):
        med = rate_summary(res, 'images')
        return {'variant': label, 'images': n, 'seconds': n / med['rate'], 'rate': med['rate'],
                'peak_rss_mb': max(r['peak_rss_mb'] for r in res),
                'cpu_ms': statistics.median(1e3 * r['cpu_seconds'] / n for r in res)}

    for r in results['im2rec'] + halves['im2rec']:
        r['total_seconds'] = r['seconds'] + r['list_seconds']
    for r in results['ours'] + halves['ours']:
        r['total_seconds'] = r['seconds']  # one command: listing included
    rows = [row(f'ours: pack_rec.py --workers {threads}', results['ours'], n_full),
            row(f'im2rec --num-thread {threads} (pack pass)', results['im2rec'], n_full),
            {**row('im2rec list + pack', [{**r, 'seconds': r['total_seconds']} for r in results['im2rec']],
                   n_full), 'peak_rss_mb': None, 'cpu_ms': None},
            row('ours, half the identities', halves['ours'], n_half),
            row('im2rec pack, half the identities', halves['im2rec'], n_half)]
    per_round = {
        'full': [i['seconds'] / o['seconds'] for o, i in zip(results['ours'], results['im2rec'])],
        # steady state: the images of the second half of the identities, start-up and listing excluded
        'steady': [(i['seconds'] - ih['seconds']) / (o['seconds'] - oh['seconds'])
                   for o, i, oh, ih in zip(results['ours'], results['im2rec'], halves['ours'], halves['im2rec'])],
        'steady_cpu': [(i['cpu_seconds'] - ih['cpu_seconds']) / (o['cpu_seconds'] - oh['cpu_seconds'])
                       for o, i, oh, ih in zip(results['ours'], results['im2rec'], halves['ours'], halves['im2rec'])]}
    spreads = {k: _spread(v) for k, v in per_round.items()}
    rows[0]['ratio'] = paired_ratio(results['ours'], results['im2rec'], 'images')
    rows[0]['ratio_total'] = paired_ratio(results['ours'], results['im2rec'], 'images', 'total_seconds')
    rows[0]['spread'] = f"{spreads['full']['min']:.2f}-{spreads['full']['max']:.2f}"
    growth = rows[0]['peak_rss_mb'] / rows[3]['peak_rss_mb']
    steady_cpu_ms = {name: statistics.median(1e3 * (f['cpu_seconds'] - h['cpu_seconds']) / (n_full - n_half)
                                             for f, h in zip(results[name], halves[name]))
                     for name in ('ours', 'im2rec')}
    rows[0]['note'] = (f"peak RSS full / half = {growth:.2f}; steady state {_fmt(spreads['steady'])}, "
                       f"by CPU {_fmt(spreads['steady_cpu'])}")
    meta = {'images_root': str(images), 'threads': threads, 'rounds': rounds, 'raw': results, 'raw_half': halves,
            'rss_full_over_half_ours': growth, 'per_round_ratios': per_round, 'ratio_spread': spreads,
            'steady_state_ratio': spreads['steady']['median'], 'steady_state_cpu_ms_per_image': steady_cpu_ms,
            'target': 'ours / im2rec >= 1.5 at equal threads (steady state too), RSS flat',
            'notes': [f'{n_full} images ({images.name}), 144x144 gray JPEG q95, {threads} encoding processes each; '
                      f'median of {rounds} rounds, each running all four packs (order reversed every other '
                      'round); peak RSS and CPU summed over each process tree',
                      f'ours peak RSS full/half dataset: {growth:.2f} (1.0 = flat)',
                      f"ours / im2rec pack pass, per round: {_fmt(spreads['full'])}",
                      f"steady state (full minus half in the same round: start-up and listing excluded): "
                      f"{_fmt(spreads['steady'])} by wall time; by CPU time {_fmt(spreads['steady_cpu'])} "
                      f"(ours {steady_cpu_ms['ours']:.3f} ms/image, im2rec {steady_cpu_ms['im2rec']:.3f})"]}
    return finish('pack', 'Packing (RecordIO, 144x144 gray)', rows, COLUMNS, meta, json_path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', default=str(DEFAULT_IMAGES))
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--json', default=None, help='default: bench/results/pack.json')
    args = parser.parse_args(argv)
    run(args.images, args.threads, args.rounds, args.json)


if __name__ == '__main__':
    main()
