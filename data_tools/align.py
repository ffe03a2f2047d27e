"""Align every face image under a tree to the LightCNN template (MTCNN + 5-point similarity).

    python data_tools/align.py --images ROOT --out OUT_ROOT [--size 144|128] [--scale S] [--color gray|bgr]
                               [--workers N] [--fallback center] [--method similarity|eyes-mouth]

Mirrors ROOT into OUT_ROOT; images without a face are listed in OUT_ROOT.align_report.{json,csv} beside
the tree, not inside it (with --fallback center they are centre-cropped instead and marked 'center').
"""
if __name__ == '__main__':  # first, before MXNet loads: it sizes its thread pool once (common/threads.py)
    from common.threads import default_compute_threads
    default_compute_threads()

from common.cli import ArgumentParser, run_cli  # noqa: E402
from data_tools.alignment import MAX_DETECT_SIDE, FaceAligner, align_tree, summary_line  # noqa: E402


def main(argv=None):
    parser = ArgumentParser(prog='align.py', description=__doc__.splitlines()[0])
    parser.add_argument('--images', required=True, help='root of the image tree (e.g. Name/1.jpg)')
    parser.add_argument('--out', required=True, help='root of the aligned tree (created)')
    parser.add_argument('--size', type=int, choices=(144, 128), default=144,
                        help='144: training records (ec_y 48); 128: network input (ec_y 40)')
    parser.add_argument('--scale', type=float, default=1.0,
                        help='face size relative to the official template, in [0.5, 2] (default 1; 1.1 fits '
                             'LightCNN-V4 best)')
    parser.add_argument('--color', choices=('gray', 'bgr'), default='gray')
    parser.add_argument('--workers', type=int, default=None,
                        help='processes, each with its own MTCNN and one OpenMP thread (default: one per '
                             'physical core from 200 images on, else 1 = this process)')
    parser.add_argument('--fallback', choices=('center',), default=None,
                        help='centre-crop images without a detected face instead of skipping them')
    parser.add_argument('--method', choices=('similarity', 'eyes-mouth'), default='similarity',
                        help='5-point least squares, or eyes level + eye-to-mouth distance 48')
    parser.add_argument('--report', metavar='PREFIX',
                        help='write the report as PREFIX.json and PREFIX.csv (default: OUT_ROOT.align_report.*, '
                             'beside the aligned tree)')
    parser.add_argument('--max-detect-side', type=int, default=MAX_DETECT_SIDE, metavar='PX',
                        help=f'larger images are shrunk to this longer side for the detector only '
                             f'(default {MAX_DETECT_SIDE}; landmarks are mapped back, the crop is warped '
                             f'from the full image)')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    aligner = FaceAligner(size=args.size, color=args.color, fallback=args.fallback, method=args.method,
                          max_detect_side=args.max_detect_side, scale=args.scale)
    summary = align_tree(args.images, args.out, workers=args.workers, aligner=aligner,
                         progress=not args.quiet, report=args.report)
    print(summary_line(summary))


if __name__ == '__main__':
    raise SystemExit(run_cli(main))
