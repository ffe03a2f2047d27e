"""Identify faces with a saved classifier (identify.py --save-classifier): names, scores, "unknown" below threshold.

Examples:
  python identification/predict.py --classifier svm.joblib --model runs/pretrained/lightcnn-v4 --images new_faces/
  python identification/predict.py --classifier svm.joblib --model runs/pretrained/lightcnn-v4 a.jpg b.jpg
  python identification/predict.py --classifier svm.joblib --features new.mat --csv out.csv
"""
if __name__ == '__main__':  # first, before MXNet loads: it sizes its thread pool once (common/threads.py)
    from common.threads import default_compute_threads
    default_compute_threads()

from common.cli import ArgumentParser, run_cli  # noqa: E402
from identification.predicting import run_prediction  # noqa: E402


def build_parser():
    parser = ArgumentParser(description=__doc__.splitlines()[0],
                            parameters={'classifier_path': 'classifier', 'csv_path': 'csv'})
    parser.add_argument('--classifier', required=True, help='a .joblib written by identify.py --save-classifier')
    parser.add_argument('images', nargs='*', help='image files (with --model)')
    parser.add_argument('--images', dest='tree', metavar='ROOT', help='every image under ROOT (with --model)')
    parser.add_argument('--model', help='checkpoint that embedded the gallery (e.g. runs/pretrained/lightcnn-v4)')
    parser.add_argument('--features', help='instead of images: a features .mat made like the gallery')
    parser.add_argument('--flip', action='store_true', default=None,
                        help='add mirrored features (default: as recorded for the gallery, else no)')
    parser.add_argument('--center-crop', type=int, metavar='PX', help='central square taken before resizing')
    parser.add_argument('--top-k', type=int, default=1, help='also list the K best identities (default 1)')
    parser.add_argument('--closed-set', action='store_true', help='never answer "unknown"')
    parser.add_argument('--csv', help='write one row per image here')
    parser.add_argument('--skip-missing', action='store_true',
                        help='leave out images that cannot be read (counted and listed) instead of stopping')
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.features and (args.images or args.tree or args.model):
        parser.error('give --features, or --model with images / --images, not both')
    if not args.features and not (args.model and (args.images or args.tree)):
        parser.error('give --features F.mat, or --model MODEL with image files or --images ROOT')
    run_prediction(args.classifier, features=args.features, model=args.model, images=args.images,
                   tree=args.tree, flip=args.flip, center_crop=args.center_crop, top_k=args.top_k,
                   open_set=not args.closed_set, csv_path=args.csv, skip_missing=args.skip_missing)


if __name__ == '__main__':
    raise SystemExit(run_cli(main))
