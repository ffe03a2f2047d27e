"""Verification with MTCNN alignment vs a plain centre crop: LightCNN-V4 on PubFig83 pairs.

    python models/import_pretrained.py lightcnn-v4          # once: runs/pretrained/lightcnn-v4.params/.json
    python bench/bench_alignment_accuracy.py [--model runs/pretrained/lightcnn-v4] [--identities 20] [--per-fold 50]

Pairs: LFW-style, 10 identity-disjoint folds, drawn from the last ``--identities`` PubFig83 identities by
name (held out from any training on PubFig83 in this project). The V4 weights were trained on MS-Celeb-1M,
which probably holds these celebrities (other photos), so absolute numbers are optimistic; the point is the
comparison. The same pairs are scored three times with the same network (no flip): images aligned by
:func:`data_tools.alignment.make_aligner` (128 test geometry) with the 5-point least-squares fit, then with
the eyes-level / ec-mc = 48 constraints (no-face images fall back to the centre crop in both), and the plain
centre crop of the model's preprocessing (100x100 -> 128). Prints a table, writes
``bench/results/alignment_accuracy.json``.
"""
import argparse
import json
import os
import sys
import tempfile

from common.paths import runs_dir
from data_tools.alignment import make_aligner
from data_tools.pairs import list_identities, make_pairs, write_pairs
from extract_features.extraction import extract_to_mat
from lfw_verification.evaluate import evaluate_verification

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBFIG = os.path.join(os.environ.get('LIGHTCNN_SHARED_DATASETS', os.path.join(ROOT, '..', 'shared', 'datasets')),
                      'pubfig83')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default=runs_dir('pretrained', 'lightcnn-v4'))
    parser.add_argument('--images', default=PUBFIG)
    parser.add_argument('--identities', type=int, default=20)
    parser.add_argument('--per-fold', type=int, default=50)
    parser.add_argument('--out', default=os.path.join(ROOT, 'bench', 'results', 'alignment_accuracy.json'))
    args = parser.parse_args()
    if not os.path.exists(args.model + '.params'):
        sys.exit(f'{args.model}.params missing: run `python models/import_pretrained.py lightcnn-v4` first')
    with tempfile.TemporaryDirectory() as tmp:
        tree = os.path.join(tmp, 'heldout')      # symlinks to the held-out identities
        os.makedirs(tree)
        for name in sorted(list_identities(args.images))[-args.identities:]:
            os.symlink(os.path.join(args.images, name), os.path.join(tree, name))
        pairs = make_pairs(tree, folds=10, per_fold=args.per_fold, seed=0)
        pairs_path = os.path.join(tmp, 'pairs.txt')
        write_pairs(pairs_path, pairs, 10, args.per_fold)
        rows = {}
        # no-face images fall back to the centre crop, so both variants score exactly the same pairs
        variants = [('mtcnn 5-point', make_aligner(128, fallback='center')),
                    ('mtcnn eyes-mouth', make_aligner(128, fallback='center', method='eyes-mouth')),
                    ('centre crop', None)]
        for variant, align in variants:
            mat = os.path.join(tmp, variant.replace(' ', '_') + '.mat')
            result = extract_to_mat(args.model, mat, pairs=pairs_path, root=tree, align=align,
                                    batch_size=32, num_workers=1, progress=False)
            metrics = evaluate_verification(mat, pairs_path)['metrics']
            rows[variant] = {'auc': metrics['auc'], 'accuracy_mean': metrics['accuracy_mean'],
                             'accuracy_std': metrics['accuracy_std'], 'images': len(result.labels)}
    print(f"{'variant':17} {'AUC':>8} {'10-fold acc':>16}")
    for variant, r in rows.items():
        print(f"{variant:17} {r['auc']:8.4f} {r['accuracy_mean']:8.2%} +- {r['accuracy_std']:.2%}")
    report = {'model': args.model, 'identities': args.identities, 'pairs': len(pairs), 'results': rows}
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=1)
    print(f'results -> {args.out}')


if __name__ == '__main__':
    main()
