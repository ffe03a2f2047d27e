"""Detection + alignment on CPU: recall, landmark sanity, images/s against the code before batching.

    python bench/bench_align.py [--pubfig-per-id 5|0=all] [--rounds 3] [--speed-per-id 5] [--whole-every 4]
                                [--anchor-ref COMMIT] [--out bench/results/align.json] [--mean-png PNG]

Runs :class:`data_tools.alignment.FaceAligner` (MTCNN + similarity warp, 144 gray) over all of ORL and a
PubFig83 subset (``--pubfig-per-id`` images per identity, 0 = all 13,838) in one process, ``CHUNK`` images per
detector call as ``align_tree`` does, and reports per dataset: recall (a face found), landmark sanity (eyes
above nose above mouth, left eye left of right eye), the spread of inter-ocular distance within an identity
(median over identities of std/mean), and speed.

Then speed against the anchor, the project's ``common`` + ``data_tools`` at ``--anchor-ref`` (main before
batching: one cascade per image), extracted with ``git archive`` into a temporary folder; both sides run in
fresh interpreters of their own tree, alternating round by round:

* per core: ``--speed-per-id`` PubFig83 images per identity aligned in one process on one thread (passive
  wait), timed after a warm-up: CPU ms per image and images/s;
* whole command: ``python data_tools/align.py --images SUBSET --out TMP --quiet`` with each tree's defaults
  (workers, threads: no thread variable set) on every ``--whole-every``-th PubFig83 image, start-up included:
  images/s as a user sees them, and the CPU seconds of the process tree.

Ratios are medians of per-round ratios (ours / anchor), with their min-max.
"""
import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

from common.images import list_images, read_image
from data_tools.alignment import CHUNK, FaceAligner, template
from harness import alternate, run_process

SHARED = os.environ.get('LIGHTCNN_SHARED_DATASETS',
                        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '..', 'shared',
                                     'datasets'))


def landmarks_sane(points):
    """Eyes above the nose above the mouth corners, left eye left of the right eye."""
    eyes_y, nose_y, mouth_y = points[:2, 1].max(), points[2, 1], points[3:, 1].min()
    return bool(eyes_y < nose_y < mouth_y and points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0])


def subset(root, per_id):
    by_id = collections.defaultdict(list)
    for rel in list_images(root):
        by_id[os.path.dirname(rel)].append(rel)
    return [r for k in sorted(by_id) for r in (by_id[k][:per_id] if per_id else by_id[k])]


def run(name, root, files, aligner, mean_acc):
    eye_dist = collections.defaultdict(list)
    missed, insane = [], []
    start = time.time()
    results = []
    for first in range(0, len(files), CHUNK):
        chunk = files[first:first + CHUNK]
        results += aligner.align_batch([read_image(os.path.join(root, rel), 'bgr') for rel in chunk])
    for rel, result in zip(files, results):
        if result.status != 'aligned':
            missed.append(rel)
            continue
        if not landmarks_sane(result.landmarks):
            insane.append(rel)
        eye_dist[os.path.dirname(rel)].append(np.linalg.norm(result.landmarks[1] - result.landmarks[0]))
        mean_acc.append(result.image.astype(np.float64))
    seconds = time.time() - start
    spread = [np.std(v) / np.mean(v) for v in eye_dist.values() if len(v) > 1]
    return {'dataset': name, 'images': len(files), 'faces_found': len(files) - len(missed),
            'recall': round(1 - len(missed) / len(files), 4), 'missed': missed,
            'landmarks_sane': round(1 - len(insane) / max(1, len(files) - len(missed)), 4),
            'insane': insane, 'eye_distance_cv_median': round(float(np.median(spread)), 4),
            'seconds': round(seconds, 1), 'images_per_second': round(len(files) / seconds, 1)}


# The anchor: the project's alignment as it was before batching (main at this commit: one MTCNN cascade
# per image, MXNet's defaults -- what `align.py` ran then), extracted from git into a temporary folder.
ANCHOR_REF = 'dc36ef65a79e78f509afe587892060ac6c5c05ff'
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE_CORE = {'OMP_NUM_THREADS': '1', 'OMP_WAIT_POLICY': 'PASSIVE'}

# Run in a fresh interpreter of either tree (cwd = that tree): align the images of a list file, best of
# nothing -- one timed pass after a warm-up on the first images; prints wall/CPU seconds as JSON.
PER_CORE_SNIPPET = """
import json, sys, time
from common.images import read_image
from data_tools.alignment import FaceAligner
paths = open(sys.argv[1], encoding='utf-8').read().split('\\n')
images = [read_image(p, 'bgr') for p in paths if p]
aligner = FaceAligner(size=144, color='gray')
batch = getattr(aligner, 'align_batch', None)
chunk = int(sys.argv[2])
def run():
    if batch is None:
        return [aligner.align(image) for image in images]
    return [r for k in range(0, len(images), chunk) for r in batch(images[k:k + chunk])]
[aligner.align(image) for image in images[:4]]
wall, cpu = time.perf_counter(), time.process_time()
found = sum(r.status == 'aligned' for r in run())
print(json.dumps({'seconds': time.perf_counter() - wall, 'cpu': time.process_time() - cpu,
                  'images': len(images), 'aligned': found}))
"""


def anchor_tree(ref, where):
    """The anchor's ``common`` and ``data_tools`` (git archive of ``ref``) under ``where``; None without git."""
    try:
        archive = subprocess.run(['git', '-C', REPO, 'archive', ref, 'common', 'data_tools'], check=True,
                                 capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    subprocess.run(['tar', '-x', '-C', where], input=archive, check=True)
    return where


def _env(tree, extra):
    """The environment of a run in ``tree``: its packages first, no thread settings but ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ('OMP_NUM_THREADS', 'OMP_WAIT_POLICY',
                                                            'MXNET_OMP_MAX_THREADS', 'GOMP_SPINCOUNT')}
    env.update(extra, PYTHONPATH=tree)
    return env


def per_core(trees, list_file, rounds):
    """Each tree's aligner in its own interpreter on one thread (passive), alternating rounds: rows."""
    runs = {name: (lambda tree=tree: json.loads(subprocess.run(
        [sys.executable, '-c', PER_CORE_SNIPPET, list_file, str(CHUNK)], cwd=tree, env=_env(tree, ONE_CORE),
        capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])) for name, tree in trees}
    return _rows('per core (1 thread, in process)', alternate(runs, rounds), 'cpu')


def whole_command(trees, images, rounds):
    """``python data_tools/align.py --images IMAGES --out TMP --quiet`` of each tree with its default
    workers and threads (no thread variable set), alternating rounds: rows (wall incl. start-up)."""
    def command(tree):
        with tempfile.TemporaryDirectory(prefix='bench_align_') as out:
            result = run_process([sys.executable, os.path.join(tree, 'data_tools', 'align.py'), '--images', images,
                                  '--out', os.path.join(out, 'aligned'), '--quiet'], cwd=tree, env=_env(tree, {}))
        summary = result['stdout'].strip().splitlines()[-1]
        return {'seconds': result['seconds'], 'cpu': result['cpu_seconds'],
                'images': int(summary.split(' of ')[1].split()[0]), 'aligned': int(summary.split()[1])}
    runs = {name: (lambda tree=tree: command(tree)) for name, tree in trees}
    return _rows('whole command (align.py defaults, 2 cores)', alternate(runs, rounds), 'wall')


def _rows(kind, results, per):
    names = list(results)
    anchor = results[names[0]]
    rows = []
    for name in names:
        got = results[name]
        ratios = [(a['seconds'] / g['seconds']) for g, a in zip(got, anchor)]
        cpu_ratios = [(a['cpu'] / g['cpu']) for g, a in zip(got, anchor)]
        rows.append({'dataset': 'PubFig83 speed', 'variant': f'{kind}: {name}', 'images': got[0]['images'],
                     'faces_found': got[0]['aligned'],
                     'images_per_second': round(statistics.median(g['images'] / g['seconds'] for g in got), 1),
                     'cpu_ms_per_image': round(statistics.median(1e3 * g['cpu'] / g['images'] for g in got), 2),
                     'ratio': round(statistics.median(ratios), 2), 'spread': f'{min(ratios):.2f}-{max(ratios):.2f}',
                     'cpu_ratio': round(statistics.median(cpu_ratios), 2),
                     'cpu_spread': f'{min(cpu_ratios):.2f}-{max(cpu_ratios):.2f}',
                     'load1': [round(g['load1'], 1) for g in got]})
    return rows


def speed_rows(root, per_id, whole_every, rounds, ref):
    """Per-core and whole-command comparisons against the anchor tree (``ref``); rows."""
    rows = []
    with tempfile.TemporaryDirectory(prefix='bench_align_') as tmp:
        anchor = anchor_tree(ref, tmp)
        if anchor is None:
            print(f'anchor skipped: git archive {ref} failed (not a git checkout?)')
            return rows
        trees = [('anchor (before batching)', anchor), ('ours', REPO)]
        list_file = os.path.join(tmp, 'images.txt')
        with open(list_file, 'w', encoding='utf-8') as f:
            f.write('\n'.join(os.path.join(root, rel) for rel in subset(root, per_id)))
        rows += per_core(trees, list_file, rounds)
        if whole_every:
            tree = os.path.join(tmp, 'pubfig83')
            for k, rel in enumerate(list_images(root)):
                if k % whole_every == 0:
                    os.makedirs(os.path.dirname(os.path.join(tree, rel)), exist_ok=True)
                    shutil.copyfile(os.path.join(root, rel), os.path.join(tree, rel))
            rows += whole_command(trees, tree, rounds)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--pubfig-per-id', type=int, default=5)
    parser.add_argument('--out', default='bench/results/align.json')
    parser.add_argument('--mean-png', default=None, help='save the mean aligned face (144 gray) here')
    parser.add_argument('--rounds', type=int, default=3, help='alternating rounds of the speed comparisons')
    parser.add_argument('--speed-per-id', type=int, default=5,
                        help='PubFig83 images per identity of the per-core comparison')
    parser.add_argument('--whole-every', type=int, default=4,
                        help='the whole-command comparison aligns every Nth PubFig83 image (0: skip it)')
    parser.add_argument('--anchor-ref', default=ANCHOR_REF, help='git commit of the anchor (before batching)')
    args = parser.parse_args()
    aligner = FaceAligner(size=144, color='gray')
    aligner.detector.detect(np.zeros((60, 60, 3), np.uint8))  # load the nets outside the timing
    rows, mean_acc, speed = [], [], []
    for name, folder, per_id in [('ORL', 'orl_faces', 0), ('PubFig83', 'pubfig83', args.pubfig_per_id)]:
        root = os.path.join(SHARED, folder)
        if not os.path.isdir(root):
            print(f'skip {name}: {root} absent')
            continue
        rows.append(run(name, root, subset(root, per_id), aligner, mean_acc))
        if name == 'PubFig83' and args.rounds:
            speed = speed_rows(root, args.speed_per_id, args.whole_every, args.rounds, args.anchor_ref)
    print(f"{'dataset':10} {'images':>7} {'found':>7} {'recall':>7} {'sane':>6} {'eye-dist CV':>11} {'img/s':>6}")
    for r in rows:
        print(f"{r['dataset']:10} {r['images']:7d} {r['faces_found']:7d} {r['recall']:7.2%} "
              f"{r['landmarks_sane']:6.1%} {r['eye_distance_cv_median']:11.3f} {r['images_per_second']:6.1f}")
    for r in speed:
        print(f"{r['variant']:62} {r['images_per_second']:6.1f} img/s  {r['cpu_ms_per_image']:6.2f} CPU ms/img  "
              f"x{r['ratio']:.2f} (rounds {r['spread']}), by CPU x{r['cpu_ratio']:.2f} ({r['cpu_spread']})  "
              f"load {r['load1']}")
    report = {'cpu_count': os.cpu_count(), 'aligner': repr(aligner), 'template_144': template(144).tolist(),
              'threads': {k: os.environ.get(k) for k in ('OMP_NUM_THREADS', 'OMP_WAIT_POLICY')},
              'load_1_5_15': [round(x, 2) for x in os.getloadavg()], 'results': rows + speed}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=1)
    if args.mean_png and mean_acc:
        mean = np.mean(mean_acc, axis=0)
        cv2.imwrite(args.mean_png, np.clip(mean, 0, 255).astype(np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f'mean of {len(mean_acc)} aligned faces -> {args.mean_png}')
    print(f'results -> {args.out}')


if __name__ == '__main__':
    main()
