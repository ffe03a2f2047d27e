"""Write an insightface verification .bin (pickle of encoded images + issame list) from a pairs file and images.

Example: ``python data_tools/make_bin.py --pairs pairs.txt --images lfw-deepfunneled/ --out lfw.bin``
"""
if __name__ == '__main__':  # first, before MXNet loads: it sizes its thread pool once (common/threads.py)
    from common.threads import default_compute_threads
    default_compute_threads()

import sys  # noqa: E402

from common.cli import ArgumentParser, run_cli  # noqa: E402
from data_tools.bin_sets import make_bin  # noqa: E402


def main(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0],
                            parameters={'images_root': 'images', 'pairs_path': 'pairs'})
    parser.add_argument('--pairs', required=True, help="LFW pairs.txt (or the seed's pair.label)")
    parser.add_argument('--images', required=True, help='root the pair paths are relative to (identity folders)')
    parser.add_argument('--out', required=True, help='the .bin to write')
    args = parser.parse_args(argv)
    s = make_bin(args.pairs, args.images, args.out)
    print(f"wrote {s['out']}: {s['pairs']} pairs ({s['same']} same, {s['different']} different), "
          f"{s['distinct_images']} distinct images of {s['identities']} identities, {s['bytes'] / 1e6:.1f} MB")
    if 'fold_note' in s:
        print(f"warning: {s['fold_note']}", file=sys.stderr)


if __name__ == '__main__':
    raise SystemExit(run_cli(main))
