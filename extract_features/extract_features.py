"""Extract 256-d LightCNN features of many images into a ``.mat`` (``data`` N x 256, ``label`` cell).

    python extract_features/extract_features.py --model runs/pretrained/lightcnn-v4 \\
        --img-list lfw_list.txt --root /data/lfw --out LFW_features.mat --flip
"""
if __name__ == '__main__':  # first, before MXNet loads: it sizes its thread pool once (common/threads.py)
    from common.threads import default_compute_threads
    default_compute_threads()

import os  # noqa: E402
import sys  # noqa: E402

if __name__ == '__main__' and sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    # This file shares its package's name, and Python put its folder first on sys.path: there the name
    # extract_features would mean this file, not the package. Take that entry off (as pip's __main__ does
    # for the current directory); nothing is added, the installed package is found as from anywhere else.
    del sys.path[0]

from common.cli import ArgumentParser, run_cli  # noqa: E402
from common.textio import printable  # noqa: E402
from extract_features.extraction import extract_to_mat, failure_report_path  # noqa: E402
from symbols.inference import describe_failures  # noqa: E402


def build_parser():
    p = ArgumentParser(description=__doc__.split('\n')[0], parameters={'num_workers': 'workers'})
    p.add_argument('--model', required=True,
                   help='checkpoint: PREFIX (with --epoch, else its latest epoch), a stem such as '
                        'runs/pretrained/lightcnn-v4, or a .params file next to its .json')
    p.add_argument('--epoch', type=int, help='epoch of a training checkpoint PREFIX')
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--img-list', metavar='LIST', help='text file, one image path per line')
    src.add_argument('--images', metavar='ROOT', help='every image under ROOT (recursive, sorted)')
    src.add_argument('--pairs', metavar='PAIRS', help='the images named by a pairs.txt / pair.label')
    p.add_argument('--root', default='.', help='folder list/pairs paths are relative to (default .)')
    p.add_argument('--out', default='LFW_features.mat', help='output .mat (default LFW_features.mat)')
    p.add_argument('--npy', help='also save the features as a float32 .npy')
    p.add_argument('--csv', help='also save index,label,path of every row as CSV')
    p.add_argument('--center-crop', type=int, metavar='PX',
                   help='take a central PX x PX square first, then resize to the net input '
                        '(e.g. 150 or so for unaligned 250x250 LFW)')
    p.add_argument('--batch-size', type=int, default=64, help='images per forward (default 64)')
    p.add_argument('--flip', action='store_true',
                   help='feature = feature(image) + feature(mirrored image)')
    p.add_argument('--ctx', default='cpu', help='cpu, gpu or gpu:N (default cpu)')
    p.add_argument('--workers', type=int, default=2, help='image decoding threads (default 2)')
    p.add_argument('--skip-missing', action='store_true',
                   help='skip missing/unreadable images and, with --align, images without a face (counted, '
                        'listed, and stored in the .mat as "skipped") instead of stopping')
    p.add_argument('--align', action='store_true',
                   help='detect and align faces with MTCNN (data_tools.alignment) before cropping')
    p.add_argument('--fallback', choices=('center',), default=None,
                   help='with --align: centre-crop images without a detected face instead of skipping them '
                        '(as align.py --fallback)')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    result = extract_to_mat(
        args.model, args.out, img_list=args.img_list, images=args.images, pairs=args.pairs,
        root=args.root, epoch=args.epoch, center_crop=args.center_crop, batch_size=args.batch_size,
        flip=args.flip, ctx=args.ctx, skip_missing=args.skip_missing, align=args.align or None,
        num_workers=args.workers, npy=args.npy, csv=args.csv, progress=not args.quiet, fallback=args.fallback)
    if result.ignored:
        print(f'ignored {len(result.ignored)} link(s) already walked (each real folder and file is read once):',
              file=sys.stderr)
        for rel, reason in result.ignored[:20]:
            print(f'  {printable(rel)}: {reason}', file=sys.stderr)
    if result.skipped:
        print(f'skipped {describe_failures(result.skipped)}:', file=sys.stderr)
        for label, reason in result.skipped[:20]:
            print(f'  {label}: {reason}', file=sys.stderr)
        if len(result.skipped) > 20:
            print(f'  ... all {len(result.skipped)} in {failure_report_path(args.out)}',
                  file=sys.stderr)
    print(f'wrote {args.out}: {len(result.labels)} x {result.features.shape[1]} features'
          + (f', {len(result.skipped)} skipped' if result.skipped else ''))
    return 0


if __name__ == '__main__':
    raise SystemExit(run_cli(main))
