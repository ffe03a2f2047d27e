"""Verification speed: 6000 LFW-style pairs, 10 folds, every metric, ours vs the MATLAB-style evaluator in Octave.

    nice python bench/bench_eval.py [--identities 1650 --images-per-identity 8] [--rounds 3]

Synthetic 256-d features (``lfw_verification.synthetic``, LFW-sized: ~13k images) and a 6000-pair
``pairs.txt`` stand in for a model's output; only time matters. Ours: ``evaluate_verification``
(load ``.mat`` + pairs, cosine, 10-fold accuracy, EER, AUC, TAR@FAR, VAL, ROC), also with per-fold PCA,
and the metrics alone. Anchor: ``lfw_verification/lfw_eval.m`` (the official MATLAB protocol) in GNU
Octave, timed inside Octave (no interpreter start-up) when ``octave-cli`` is installed.
"""
import argparse
import os
import shutil
import subprocess
import tempfile
import time

from harness import REPO_ROOT, alternate, finish, pin_threads, skipped_row

COLUMNS = (('variant', 'evaluation', ''), ('seconds', 'seconds', '.3f'), ('pairs_per_s', 'pairs/s', '.0f'),
           ('ratio', 'speed vs Octave', '.1f'), ('note', 'note', ''))


def _octave_seconds(octave, features, pairs):
    code = (f"addpath('{REPO_ROOT / 'lfw_verification'}'); t = tic; "
            f"lfw_eval('{features}', '{pairs}'); fprintf('SECONDS %f\\n', toc(t));")
    out = subprocess.run([octave, '--no-gui', '--norc', '--eval', code], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith('SECONDS'):
            return float(line.split()[1])
    raise RuntimeError(f'octave lfw_eval failed: {out.stderr.strip()[-300:]}')


def run(identities=1650, images_per_identity=8, rounds=3, octave=True, json_path=None):
    pin_threads()
    import numpy as np

    from common.features_mat import write_features
    from common.verification import verification_metrics
    from data_tools.pairs import write_pairs
    from lfw_verification.evaluate import evaluate_verification
    from lfw_verification.synthetic import synthetic_features, synthetic_pairs

    def clock(fn):
        def go():
            start = time.perf_counter()
            fn()
            return {'seconds': time.perf_counter() - start}
        return go

    with tempfile.TemporaryDirectory(prefix='bench_eval_') as tmp:
        data, labels = synthetic_features(identities, images_per_identity, dim=256, noise=1.5)
        pairs = synthetic_pairs(labels, folds=10, per_fold=300)
        features, pairs_txt = os.path.join(tmp, 'features.mat'), os.path.join(tmp, 'pairs.txt')
        write_features(features, data, labels)
        write_pairs(pairs_txt, pairs, 10, 300)
        issame = np.array([p.issame for p in pairs])
        folds = np.array([p.fold for p in pairs])
        scores = np.random.default_rng(0).normal(size=len(pairs)) + issame
        runs = {'ours: metrics only (6000 scores)': clock(lambda: verification_metrics(scores, issame, folds)),
                'ours: end to end (load .mat + pairs, cosine)': clock(
                    lambda: evaluate_verification(features, pairs_txt)),
                'ours: end to end, per-fold PCA 128': clock(lambda: evaluate_verification(features, pairs_txt,
                                                                                           pca=128))}
        octave_bin = shutil.which('octave-cli') if octave else None
        if octave_bin:
            runs['anchor: lfw_eval.m in Octave (inside Octave)'] = lambda: {
                'seconds': _octave_seconds(octave_bin, features, pairs_txt)}
        results = alternate(runs, rounds)
    rows = []
    for label, res in results.items():
        seconds = float(np.median([r['seconds'] for r in res]))
        rows.append({'variant': label, 'seconds': seconds, 'pairs_per_s': len(pairs) / seconds})
    anchor = rows[-1]['seconds'] if octave_bin else None
    for row in rows[:3]:
        if anchor:
            row['ratio'] = anchor / row['seconds']
    if not octave_bin:
        rows.append(skipped_row('anchor: lfw_eval.m in Octave', 'octave-cli not installed'))
    e2e = rows[1]['seconds']
    rows[1]['note'] = 'target < 1 s: ' + ('met' if e2e < 1 else 'NOT met')
    meta = {'pairs': len(pairs), 'images': len(labels), 'rounds': rounds, 'target': '6000 pairs < 1 s',
            'raw': results,
            'notes': [f'{len(pairs)} pairs (10 folds x 300 same + 300 different), {len(labels)} synthetic 256-d '
                      f'features; median of {rounds} alternating rounds; "speed vs Octave" = Octave s / ours s']}
    return finish('eval', 'Verification (6000 pairs, 10-fold, all metrics)', rows, COLUMNS, meta, json_path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--identities', type=int, default=1650)
    parser.add_argument('--images-per-identity', type=int, default=8)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--no-octave', action='store_true', help='skip the Octave anchor')
    parser.add_argument('--json', default=None, help='default: bench/results/eval.json')
    args = parser.parse_args(argv)
    run(args.identities, args.images_per_identity, args.rounds, not args.no_octave, args.json)


if __name__ == '__main__':
    main()
