"""Face identification: closed-set top-1/top-5 and open-set (unknown) thresholds from features .mat files.

Examples:
  python lfw_verification/identify.py --gallery G.mat --probe P.mat --far 0.01 --predictions pred.csv
  python lfw_verification/identify.py --gallery LFW_features.mat --gallery-per-identity 1 --unknown-fraction 0.2
  python lfw_verification/identify.py --gallery G.mat --probe P.mat --classifier svm --json r.json \
      --per-class f1.csv --confusion cm.png --save-classifier svm.joblib
"""
if __name__ == '__main__':  # first, before MXNet loads: it sizes its thread pool once (common/threads.py)
    from common.threads import default_compute_threads
    default_compute_threads()

from common.cli import ArgumentParser, run_cli  # noqa: E402
from identification.classifiers import CLASSIFIERS  # noqa: E402
from identification.cosine import run_identification  # noqa: E402
from identification.report import run_classifier_identification  # noqa: E402


def build_parser():
    parser = ArgumentParser(description=__doc__.splitlines()[0], parameters={
        'gallery_path': 'gallery', 'probe_path': 'probe', 'predictions_path': 'predictions', 'json_path': 'json',
        'per_class_path': 'per_class', 'confusion_path': 'confusion', 'save_path': 'save_classifier'})
    parser.add_argument('--gallery', required=True, help='.mat (data, label) of the enrolled images')
    parser.add_argument('--probe', help='.mat of the query images (identities absent from the gallery = unknown)')
    parser.add_argument('--gallery-per-identity', type=int, metavar='K',
                        help='instead of --probe: split --gallery, the first K images (by label) of each '
                             'identity enrol, the rest are probes')
    parser.add_argument('--unknown-fraction', type=float, default=0.0, metavar='F',
                        help='with --gallery-per-identity: keep this fraction of identities out of the gallery '
                             'as unknown probes (default 0)')
    parser.add_argument('--seed', type=int, default=0, help='which identities become unknown (default 0)')
    parser.add_argument('--far', type=float, default=0.01,
                        help='target false-accept rate of unknown probes for the open-set threshold (default 0.01)')
    parser.add_argument('--predictions', metavar='CSV', help='write one row per probe here')
    parser.add_argument('--json', help='write the summary (accuracies, thresholds, table) here')
    c = parser.add_argument_group('a classifier trained on the gallery (scikit-learn), scored on the probes')
    c.add_argument('--classifier', choices=CLASSIFIERS,
                   help='svm (linear, Platt probabilities) | logreg | knn (cosine) | centroid (cosine); its '
                        '--json holds accuracy, macro_f1 and per_class rows')
    c.add_argument('--top-k', type=int, default=5, help='report top-1 .. top-K accuracy (default 5)')
    c.add_argument('--per-class', metavar='CSV', help='per-class precision / recall / F1 / support table')
    c.add_argument('--confusion', metavar='PNG', help='confusion-matrix picture (rows normalised)')
    c.add_argument('--save-classifier', metavar='FILE.joblib',
                   help='save the fitted classifier with its identity names and open-set threshold '
                        '(use it with identification/predict.py)')
    c.add_argument('--threshold-folds', type=int, default=5,
                   help='identity folds held out in turn to choose the open-set threshold for --far (default 5)')
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.classifier:
        run_classifier_identification(
            args.gallery, args.probe, args.gallery_per_identity, args.unknown_fraction, args.seed, args.far,
            args.classifier, args.top_k, args.threshold_folds, args.predictions, args.json, args.per_class,
            args.confusion, args.save_classifier)
        return 0
    only = [f for f, v in (('--per-class', args.per_class), ('--confusion', args.confusion),
                           ('--save-classifier', args.save_classifier)) if v]
    if only:
        parser.error(f'{", ".join(only)} need --classifier')
    run_identification(args.gallery, args.probe, args.gallery_per_identity, args.unknown_fraction, args.seed,
                       args.far, args.predictions, args.json)
    return 0


if __name__ == '__main__':
    raise SystemExit(run_cli(main))
