"""LFW verification from a features .mat and a pairs file: 10-fold accuracy, EER, AUC, TAR@FAR, ROC.

Examples:
  python lfw_verification/lfw_eval.py --features LFW_features.mat --pairs pairs.txt --json r.json --roc roc.png
  python lfw_verification/lfw_eval.py --model runs/pretrained/lightcnn-v4 --bin lfw.bin --json r.json  # a .bin
"""
if __name__ == '__main__':  # first, before MXNet loads: it sizes its thread pool once (common/threads.py)
    from common.threads import default_compute_threads
    default_compute_threads()

from common.cli import ArgumentParser, run_cli  # noqa: E402
from lfw_verification.evaluate import METRICS, run_evaluation  # noqa: E402


def build_parser():
    parser = ArgumentParser(description=__doc__.splitlines()[0],
                            parameters={'json_path': 'json', 'roc_path': 'roc', 'features_out': 'save_features',
                                        'bin_path': 'bin'})
    parser.add_argument('--features', help='.mat with data (N x D) and label (N x 1 cell); with --pairs')
    parser.add_argument('--pairs', help="official LFW pairs.txt or the seed's pair.label; with --features")
    parser.add_argument('--json', help='write config, metrics and ROC points here')
    parser.add_argument('--roc', help='write the ROC figure (PNG) here')
    parser.add_argument('--metric', choices=METRICS, default='cosine', help='similarity (default cosine)')
    parser.add_argument('--l2', action='store_true', help='L2-normalise features first (and after PCA)')
    parser.add_argument('--pca', type=int, metavar='N', help='PCA to N dims, fitted on the training folds only')
    parser.add_argument('--skip-missing', action='store_true',
                        help='also drop pairs naming images absent from the features file (pairs naming images '
                             'the .mat records as skipped at extraction are always dropped and reported)')
    b = parser.add_argument_group('insightface .bin (extract and score in one go, instead of --features/--pairs)')
    b.add_argument('--bin', help='insightface verification set (lfw.bin, cfp_fp.bin, agedb_30.bin, make_bin.py)')
    b.add_argument('--model', help='checkpoint to embed the .bin images with (e.g. runs/pretrained/lightcnn-v4)')
    b.add_argument('--epoch', type=int, help='epoch of a training prefix given as --model')
    b.add_argument('--flip', action='store_true', help='add the features of mirrored images')
    b.add_argument('--center-crop', type=int, metavar='PX', help='central square taken before resizing')
    b.add_argument('--batch-size', type=int, default=64, help='images per forward (default 64)')
    b.add_argument('--ctx', default='cpu', help='cpu | gpu | gpu:N (default cpu)')
    b.add_argument('--save-features', metavar='MAT', help='also save the features of the distinct .bin images')
    b.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bin or args.model:
        if not (args.bin and args.model):
            parser.error('--bin and --model go together')
        if args.features or args.pairs:
            parser.error('give either --features and --pairs, or --model and --bin')
        if args.skip_missing:
            parser.error('--skip-missing applies to --features and --pairs (a .bin holds its images)')
        from lfw_verification.bin_eval import run_bin_evaluation  # loads MXNet: only for --bin
        run_bin_evaluation(args.model, args.bin, json_path=args.json, roc_path=args.roc, epoch=args.epoch,
                           flip=args.flip, center_crop=args.center_crop, batch_size=args.batch_size,
                           ctx=args.ctx, metric=args.metric, l2=args.l2, pca=args.pca,
                           features_out=args.save_features, progress=not args.quiet)
        return 0
    if not (args.features and args.pairs):
        parser.error('the following arguments are required: --features and --pairs (or --model and --bin)')
    extraction_only = [f for f, v in (('--epoch', args.epoch), ('--flip', args.flip),
                                      ('--center-crop', args.center_crop), ('--save-features', args.save_features))
                       if v]
    if extraction_only:
        parser.error(f'{", ".join(extraction_only)} only apply with --model and --bin')
    run_evaluation(args.features, args.pairs, json_path=args.json, roc_path=args.roc,
                   metric=args.metric, l2=args.l2, pca=args.pca, skip_missing=args.skip_missing)
    return 0


if __name__ == '__main__':
    raise SystemExit(run_cli(main))
