"""Packing speed and memory: our ``data_tools/pack_rec.py`` vs MXNet's ``python -m mxnet.tools.im2rec``.

    nice python bench/bench_pack.py [--images ../shared/datasets/pubfig83] [--threads 2] [--rounds 2]

Both store 144x144 gray JPEG (quality 95) with the same number of encoding processes, run as the user
would run them (separate processes, timed end to end, peak RSS summed over each process tree). im2rec
needs a ``--list --recursive`` pass first; the ratio is taken against its packing pass alone (strict)
and against list + pack (what a user types). RSS flatness: ours on half the identities and on all. The
steady-state rates (full minus half: images / seconds) leave out start-up, which is what 5M images see.
"""
import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from harness import (REPO_ROOT, alternate, finish, paired_ratio, pin_threads,
                     rate_summary, run_process)

DEFAULT_IMAGES = REPO_ROOT.parent / 'shared' / 'datasets' / 'pubfig83'
COLUMNS = (('variant', 'packer', ''), ('images', 'images', 'd'), ('seconds', 'seconds', '.2f'),
           ('rate', 'images/s', '.0f'), ('peak_rss_mb', 'peak RSS MB', '.0f'),
           ('ratio', 'ours / im2rec pack', '.2f'), ('ratio_total', 'ours / im2rec list+pack', '.2f'),
           ('note', 'note', ''))


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


def run(images=DEFAULT_IMAGES, threads=2, rounds=2, json_path=None):
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

        results = alternate({'ours': timed(ours, images, n_full, 'ours'),
                             'im2rec': timed(im2rec, images, n_full, 'im2rec')}, rounds)
        halves = alternate({'ours': timed(ours, half, n_half, 'ours_half'),
                            'im2rec': timed(im2rec, half, n_half, 'im2rec_half')}, rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def row(label, res, n):
        med = rate_summary(res, 'images')
        return {'variant': label, 'images': n, 'seconds': n / med['rate'], 'rate': med['rate'],
                'peak_rss_mb': max(r['peak_rss_mb'] for r in res)}

    for r in results['im2rec'] + halves['im2rec']:
        r['total_seconds'] = r['seconds'] + r['list_seconds']
    for r in results['ours'] + halves['ours']:
        r['total_seconds'] = r['seconds']  # one command: listing included
    rows = [row(f'ours: pack_rec.py --workers {threads}', results['ours'], n_full),
            row(f'im2rec --num-thread {threads} (pack pass)', results['im2rec'], n_full),
            {**row('im2rec list + pack', [{**r, 'seconds': r['total_seconds']} for r in results['im2rec']],
                   n_full), 'peak_rss_mb': None},
            row('ours, half the identities', halves['ours'], n_half),
            row('im2rec pack, half the identities', halves['im2rec'], n_half)]
    rows[0]['ratio'] = paired_ratio(results['ours'], results['im2rec'], 'images')
    rows[0]['ratio_total'] = paired_ratio(results['ours'], results['im2rec'], 'images', 'total_seconds')
    growth = rows[0]['peak_rss_mb'] / rows[3]['peak_rss_mb']
    steady = {name: (n_full - n_half) / (rows[i]['seconds'] - rows[j]['seconds'])
              for name, i, j in (('ours', 0, 3), ('im2rec', 1, 4))}
    steady_ratio = steady['ours'] / steady['im2rec']
    rows[0]['note'] = f'peak RSS full / half = {growth:.2f}; steady state {steady_ratio:.2f}x'
    meta = {'images_root': str(images), 'threads': threads, 'rounds': rounds, 'raw': results, 'raw_half': halves,
            'rss_full_over_half_ours': growth, 'steady_state_rate': steady, 'steady_state_ratio': steady_ratio,
            'target': 'ours / im2rec >= 1.5 at equal threads, RSS flat',
            'notes': [f'{n_full} images ({images.name}), 144x144 gray JPEG q95, {threads} encoding processes each; '
                      f'median of {rounds} alternating rounds; peak RSS summed over each process tree',
                      f'ours peak RSS full/half dataset: {growth:.2f} (1.0 = flat)',
                      f"steady state (full minus half, start-up excluded): ours {steady['ours']:.0f} img/s, "
                      f"im2rec {steady['im2rec']:.0f} img/s = {steady_ratio:.2f}x"]}
    return finish('pack', 'Packing (RecordIO, 144x144 gray)', rows, COLUMNS, meta, json_path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', default=str(DEFAULT_IMAGES))
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--json', default=None, help='default: bench/results/pack.json')
    args = parser.parse_args(argv)
    run(args.images, args.threads, args.rounds, args.json)


if __name__ == '__main__':
    main()
