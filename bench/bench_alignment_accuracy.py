"""Verification with MTCNN alignment at several template scales vs a plain centre crop: LightCNN-V4 pairs.

    python models/import_pretrained.py lightcnn-v4          # once: runs/pretrained/lightcnn-v4.params/.json
    python bench/bench_alignment_accuracy.py [--model runs/pretrained/lightcnn-v4] [--datasets pubfig orl]
                                             [--scales 1.0 1.1 1.2] [--eyes-mouth] [--identities 20] [--per-fold 50]

Pairs: LFW-style, 10 identity-disjoint folds. PubFig83: drawn from the last ``--identities`` identities by
name (held out from any training on PubFig83 in this project); ORL: all 40 identities. The V4 weights were
trained on MS-Celeb-1M, which probably holds the PubFig83 celebrities (other photos), so absolute numbers
are optimistic; the point is the comparison. The same pairs are scored with the same network (no flip) on
images aligned by :func:`data_tools.alignment.make_aligner` (128 test geometry, 5-point least squares) at
each template ``--scale`` (face size relative to the official ``ec_mc_y`` = 48 geometry; MTCNN runs once per
image whatever the number of scales), optionally with the eyes-level / ec-mc constraints (``--eyes-mouth``,
scale 1), and on the plain centre crop of the model's preprocessing. No-face images fall back to the centre
crop zoomed by the same scale, so every variant scores exactly the same pairs. Prints a table, writes
``bench/results/alignment_accuracy.json``.
"""
import argparse
import hashlib
import json
import os
import sys
import tempfile

import numpy as np

from common.paths import runs_dir
from data_tools.alignment import make_aligner
from data_tools.mtcnn import MTCNN
from data_tools.pairs import list_identities, make_pairs, write_pairs
from extract_features.extraction import extract_to_mat
from lfw_verification.evaluate import evaluate_verification

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get('LIGHTCNN_SHARED_DATASETS', os.path.join(ROOT, '..', 'shared', 'datasets'))


class CachedDetector:
    """MTCNN whose detections are remembered per image content, so each scale's aligner reuses them."""

    def __init__(self):
        self.mtcnn, self.cache = MTCNN(), {}

    def detect(self, image, margin=None):
        image = np.ascontiguousarray(image)
        key = (hashlib.sha1(image.tobytes()).hexdigest(), image.shape, margin)
        if key not in self.cache:
            self.cache[key] = self.mtcnn.detect(image, margin)
        boxes, points = self.cache[key]
        return boxes.copy(), points.copy()


def _pairs(name, images, identities, per_fold, tmp):
    """``(tree, pairs.txt, number of pairs)`` for one dataset."""
    tree = os.path.join(tmp, name)
    os.makedirs(tree)
    names = sorted(list_identities(images))
    for ident in names[-identities:] if name == 'pubfig' else names:
        os.symlink(os.path.join(images, ident), os.path.join(tree, ident))
    pairs = make_pairs(tree, folds=10, per_fold=per_fold, seed=0)
    path = os.path.join(tmp, f'{name}_pairs.txt')
    write_pairs(path, pairs, 10, per_fold)
    return tree, path, len(pairs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default=runs_dir('pretrained', 'lightcnn-v4'))
    parser.add_argument('--datasets', nargs='+', choices=('pubfig', 'orl'), default=['pubfig'])
    parser.add_argument('--scales', nargs='+', type=float, default=[1.0])
    parser.add_argument('--eyes-mouth', action='store_true', help='also the eyes-level / ec-mc = 48 fit')
    parser.add_argument('--identities', type=int, default=20, help='PubFig83 identities (the last by name)')
    parser.add_argument('--per-fold', type=int, default=50)
    parser.add_argument('--out', default=os.path.join(ROOT, 'bench', 'results', 'alignment_accuracy.json'))
    args = parser.parse_args()
    if not os.path.exists(args.model + '.params'):
        sys.exit(f'{args.model}.params missing: run `python models/import_pretrained.py lightcnn-v4` first')
    roots = {'pubfig': os.path.join(SHARED, 'pubfig83'), 'orl': os.path.join(SHARED, 'orl_faces')}
    detector = CachedDetector()
    variants = [('centre crop', None)]
    variants += [(f'mtcnn 5-point, scale {s:g}', make_aligner(128, fallback='center', scale=s, detector=detector))
                 for s in args.scales]
    if args.eyes_mouth:
        variants.append(('mtcnn eyes-mouth, scale 1',
                         make_aligner(128, fallback='center', method='eyes-mouth', scale=1.0, detector=detector)))
    report = {'model': args.model, 'identities': args.identities, 'per_fold': args.per_fold, 'results': {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            tree, pairs_path, n_pairs = _pairs(name, roots[name], args.identities, args.per_fold, tmp)
            rows = report['results'][name] = {}
            for variant, align in variants:
                mat = os.path.join(tmp, f'{name}_{len(rows)}.mat')
                result = extract_to_mat(args.model, mat, pairs=pairs_path, root=tree, align=align,
                                        batch_size=32, num_workers=1, progress=False)
                metrics = evaluate_verification(mat, pairs_path)['metrics']
                rows[variant] = {'auc': metrics['auc'], 'accuracy_mean': metrics['accuracy_mean'],
                                 'accuracy_std': metrics['accuracy_std'], 'images': len(result.labels),
                                 'pairs': n_pairs}
                print(f"{name:7} {variant:28} AUC {metrics['auc']:.4f}  10-fold acc "
                      f"{metrics['accuracy_mean']:.2%} +- {metrics['accuracy_std']:.2%}", flush=True)
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=1)
    print(f'results -> {args.out}')


if __name__ == '__main__':
    main()
