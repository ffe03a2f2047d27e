"""Align every face image under a tree to the LightCNN template (MTCNN + 5-point similarity).

    python data_tools/align.py --images ROOT --out OUT_ROOT [--size 144|128] [--color gray|bgr]
                               [--workers N] [--fallback center] [--method similarity|eyes-mouth]

Mirrors ROOT into OUT_ROOT; images without a face are listed in OUT_ROOT/align_report.{json,csv}
(with --fallback center they are centre-cropped instead and marked 'center').
"""
if __name__ == '__main__':  # first, before MXNet loads: it sizes its thread pool once (common/threads.py)
    from common.threads import default_compute_threads
    default_compute_threads()

from common.cli import ArgumentParser, run_cli  # noqa: E402
from data_tools.alignment import align_tree, summary_line  # noqa: E402


def main(argv=None):
    parser = ArgumentParser(prog='align.py', description=__doc__.splitlines()[0])
    parser.add_argument('--images', required=True, help='root of the image tree (e.g. Name/1.jpg)')
    parser.add_argument('--out', required=True, help='root of the aligned tree (created)')
    parser.add_argument('--size', type=int, choices=(144, 128), default=144,
                        help='144: training records (ec_y 48); 128: network input (ec_y 40)')
    parser.add_argument('--color', choices=('gray', 'bgr'), default='gray')
    parser.add_argument('--workers', type=int, default=1, help='processes (each loads its own MTCNN)')
    parser.add_argument('--fallback', choices=('center',), default=None,
                        help='centre-crop images without a detected face instead of skipping them')
    parser.add_argument('--method', choices=('similarity', 'eyes-mouth'), default='similarity',
                        help='5-point least squares, or eyes level + eye-to-mouth distance 48')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    summary = align_tree(args.images, args.out, size=args.size, color=args.color, workers=args.workers,
                         fallback=args.fallback, method=args.method, progress=not args.quiet)
    print(summary_line(summary))


if __name__ == '__main__':
    raise SystemExit(run_cli(main))
