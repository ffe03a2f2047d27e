"""LFW verification from a features .mat and a pairs file: 10-fold accuracy, EER, AUC, TAR@FAR, ROC.

Example: python lfw_verification/lfw_eval.py --features LFW_features.mat --pairs pairs.txt --json r.json --roc roc.png
"""
if __name__ == '__main__':  # first, before MXNet loads: it sizes its thread pool once (common/threads.py)
    from common.threads import default_compute_threads
    default_compute_threads()

from common.cli import ArgumentParser, run_cli  # noqa: E402
from lfw_verification.evaluate import METRICS, run_evaluation  # noqa: E402


def build_parser():
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--features', required=True, help='.mat with data (N x D) and label (N x 1 cell)')
    parser.add_argument('--pairs', required=True, help="official LFW pairs.txt or the seed's pair.label")
    parser.add_argument('--json', help='write config, metrics and ROC points here')
    parser.add_argument('--roc', help='write the ROC figure (PNG) here')
    parser.add_argument('--metric', choices=METRICS, default='cosine', help='similarity (default cosine)')
    parser.add_argument('--l2', action='store_true', help='L2-normalise features first (and after PCA)')
    parser.add_argument('--pca', type=int, metavar='N', help='PCA to N dims, fitted on the training folds only')
    parser.add_argument('--skip-missing', action='store_true',
                        help='also drop pairs naming images absent from the features file (pairs naming images '
                             'the .mat records as skipped at extraction are always dropped and reported)')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    run_evaluation(args.features, args.pairs, json_path=args.json, roc_path=args.roc,
                   metric=args.metric, l2=args.l2, pca=args.pca, skip_missing=args.skip_missing)
    return 0


if __name__ == '__main__':
    raise SystemExit(run_cli(main))
