"""Pack a face image tree or list into im2rec-compatible RecordIO (144x144 gray by default) with splits and stats.

Examples::

    python data_tools/pack_rec.py --images CASIA-WebFace/ --out data/casia --val-per-identity 2
    python data_tools/pack_rec.py --list MS-Celeb-1M_clean_list.txt --images aligned/ --out data/msceleb10k \\
        --strip-prefix 1 --top-identities 10000
"""
if __name__ == '__main__':  # first, before MXNet loads: it sizes its thread pool once (common/threads.py)
    from common.threads import default_compute_threads
    default_compute_threads()

from common.cli import ArgumentParser, run_cli  # noqa: E402
from data_tools.packing import pack_records, summary_line  # noqa: E402


def build_parser():
    p = ArgumentParser(description=__doc__.splitlines()[0],
                       parameters={'images_root': 'images', 'out_prefix': 'out', 'list_path': 'list'})
    p.add_argument('--images', help='tree with one folder per identity, or the root of the list paths')
    p.add_argument('--list', help='"path label" list (MS-Celeb clean list), im2rec .lst or insightface .lst '
                                  '(format detected from the lines); labels are re-indexed densely '
                                  '(mapping in PREFIX.json)')
    p.add_argument('--out', required=True, help='output prefix: PREFIX.rec/.idx/.lst/.json (+ _val, _heldout)')
    p.add_argument('--size', type=int, default=144, help='side of the stored square (default 144)')
    p.add_argument('--color', choices=('gray', 'bgr'), default='gray', help='stored channels (default gray)')
    p.add_argument('--quality', type=int, default=95, help='JPEG quality (default 95)')
    p.add_argument('--min-size', type=int, default=32,
                   help='skip images whose shorter side is below this, capped at --size (default 32)')
    p.add_argument('--workers', type=int, default=None,
                   help='encoding processes (default: all cores; 0 = in this process)')
    val = p.add_mutually_exclusive_group()
    val.add_argument('--val-per-identity', type=int, default=0, metavar='K',
                     help='move K images of every identity to PREFIX_val (at least one stays for training)')
    val.add_argument('--val-ratio', type=float, default=0.0, metavar='R',
                     help='move a fraction R of every identity\'s images to PREFIX_val')
    p.add_argument('--val-identities', type=float, default=0.0, metavar='R',
                   help='hold out whole identities (fraction < 1, or a count) into PREFIX_heldout '
                        'for verification')
    p.add_argument('--seed', type=int, default=0, help='seed for splits and record order (default 0)')
    p.add_argument('--min-images-per-identity', type=int, default=1, metavar='N',
                   help='drop identities with fewer than N listed images')
    p.add_argument('--top-identities', type=int, default=None, metavar='K',
                   help='keep the K identities with most images (ties: smaller label/name first), '
                        'e.g. 10000 for MS-Celeb 10K')
    p.add_argument('--strip-prefix', type=int, default=0, metavar='N',
                   help='drop N leading path components of list paths')
    p.add_argument('--no-shuffle', action='store_true', help='keep training records in identity order')
    p.add_argument('--align', action='store_true',
                   help='detect and align faces with MTCNN first (data_tools.alignment, LightCNN template '
                        'at --size); images without a face are skipped as "no face"')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    return p


def _aligner(args):
    if not args.align:
        return None
    from data_tools.alignment import FaceAligner
    return FaceAligner(size=args.size, color=args.color)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.images is None and args.list is None:
        build_parser().error('give --images ROOT (a tree) or --list LIST [--images ROOT]')
    summary = pack_records(
        args.images, args.out, args.list, size=args.size, color=args.color, quality=args.quality,
        workers=args.workers, val_per_identity=args.val_per_identity, val_ratio=args.val_ratio,
        val_identities=args.val_identities, seed=args.seed, min_images_per_identity=args.min_images_per_identity,
        strip_prefix=args.strip_prefix, top_identities=args.top_identities, progress=not args.quiet,
        min_size=args.min_size, shuffle=not args.no_shuffle, image_filter=_aligner(args))
    print(summary_line(summary))


if __name__ == '__main__':
    raise SystemExit(run_cli(main))
