"""Time LFW-sized verification (6000 pairs, 10 folds, all metrics) in Python and, if installed, Octave.

Usage: python bench/bench_verification.py [--images-per-identity 8] [--repeat 5]
Synthetic 256-D features (lfw_verification.synthetic) stand in for a model's; only the timing matters.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from data_tools.pairs import write_pairs  # noqa: E402
from lfw_verification.evaluate import evaluate_verification  # noqa: E402
from lfw_verification.metrics import verification_metrics  # noqa: E402
from lfw_verification.synthetic import synthetic_features, synthetic_pairs, write_features_mat  # noqa: E402


def _best_of(repeat, fn):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images-per-identity', type=int, default=8)
    parser.add_argument('--repeat', type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data, labels = synthetic_features(200, args.images_per_identity, dim=256, noise=1.5)
        pairs = synthetic_pairs(labels, folds=10, per_fold=300)
        feat, pairs_txt = os.path.join(tmp, 'f.mat'), os.path.join(tmp, 'pairs.txt')
        write_features_mat(feat, data, labels)
        write_pairs(pairs_txt, pairs, 10, 300)
        rng = np.random.default_rng(0)
        issame = np.array([p.issame for p in pairs])
        folds = np.array([p.fold for p in pairs])
        scores = rng.normal(size=len(pairs)) + issame
        rows = [('metrics only (6000 scores, all metrics)', _best_of(args.repeat, lambda: verification_metrics(
                    scores, issame, folds))),
                ('lfw_eval end to end (load .mat + pairs, cosine)', _best_of(args.repeat, lambda: evaluate_verification(
                    feat, pairs_txt))),
                ('lfw_eval end to end, --pca 128', _best_of(args.repeat, lambda: evaluate_verification(
                    feat, pairs_txt, pca=128)))]
        octave = shutil.which('octave-cli')
        if octave:
            repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            code = (f"addpath('{os.path.join(repo, 'lfw_verification')}'); t = tic; "
                    f"lfw_eval('{feat}', '{pairs_txt}'); fprintf('SECONDS %f\\n', toc(t));")
            out = subprocess.run([octave, '--no-gui', '--norc', '--eval', code], capture_output=True, text=True)
            seconds = [float(line.split()[1]) for line in out.stdout.splitlines() if line.startswith('SECONDS')]
            rows.append(('lfw_eval.m in Octave (inside Octave, no startup)', seconds[0] if seconds else float('nan')))
    for name, seconds in rows:
        print(f'{name:55s} {1000 * seconds:8.1f} ms')


if __name__ == '__main__':
    main()
