"""Detection + alignment on CPU: recall, landmark sanity, images/s; mean aligned face as a PNG.

    python bench/bench_align.py [--pubfig-per-id 5|0=all] [--out bench/results/align.json] [--mean-png docs/aligned_mean.png]

Runs :class:`data_tools.alignment.FaceAligner` (MTCNN + similarity warp, 144 gray) over all of ORL and a
PubFig83 subset (``--pubfig-per-id`` images per identity, 0 = all 13,838) in one process, and reports per
dataset: recall (a face found), landmark sanity (eyes above nose above mouth, left eye left of right eye),
the spread of inter-ocular distance within an identity (median over identities of std/mean), and speed.
"""
import argparse
import collections
import json
import os
import time

import cv2
import numpy as np

from common.images import list_images, read_image
from data_tools.alignment import FaceAligner, template

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
    for rel in files:
        result = aligner.align(read_image(os.path.join(root, rel), 'bgr'))
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--pubfig-per-id', type=int, default=5)
    parser.add_argument('--out', default='bench/results/align.json')
    parser.add_argument('--mean-png', default=None, help='save the mean aligned face (144 gray) here')
    args = parser.parse_args()
    aligner = FaceAligner(size=144, color='gray')
    aligner.detector.detect(np.zeros((60, 60, 3), np.uint8))  # load the nets outside the timing
    rows, mean_acc = [], []
    for name, folder, per_id in [('ORL', 'orl_faces', 0), ('PubFig83', 'pubfig83', args.pubfig_per_id)]:
        root = os.path.join(SHARED, folder)
        if not os.path.isdir(root):
            print(f'skip {name}: {root} absent')
            continue
        rows.append(run(name, root, subset(root, per_id), aligner, mean_acc))
    print(f"{'dataset':10} {'images':>7} {'found':>7} {'recall':>7} {'sane':>6} {'eye-dist CV':>11} {'img/s':>6}")
    for r in rows:
        print(f"{r['dataset']:10} {r['images']:7d} {r['faces_found']:7d} {r['recall']:7.2%} "
              f"{r['landmarks_sane']:6.1%} {r['eye_distance_cv_median']:11.3f} {r['images_per_second']:6.1f}")
    report = {'cpu_count': os.cpu_count(), 'aligner': repr(aligner), 'template_144': template(144).tolist(),
              'results': rows}
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
