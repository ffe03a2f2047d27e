"""Split a features .mat into gallery and probe .mat files: known identities enrol, the last ones are unknown.

Example (PubFig83, issue 13's protocol): ``python identification/split_features.py --features pubfig_v4.mat
--unknown-last 20 --probes-per-identity 20 --gallery gallery.mat --probe probe.mat``
"""
if __name__ == '__main__':  # first, before MXNet loads: it sizes its thread pool once (common/threads.py)
    from common.threads import default_compute_threads
    default_compute_threads()

from common.cli import ArgumentParser, run_cli  # noqa: E402
from identification.split import split_features  # noqa: E402


def build_parser():
    parser = ArgumentParser(description=__doc__.splitlines()[0],
                            parameters={'features_path': 'features', 'gallery_out': 'gallery', 'probe_out': 'probe'})
    parser.add_argument('--features', required=True, help='.mat with data (N x D) and label (N x 1 cell)')
    parser.add_argument('--gallery', required=True, help='gallery .mat to write')
    parser.add_argument('--probe', required=True, help='probe .mat to write')
    parser.add_argument('--unknown-last', type=int, default=20,
                        help='the last N identities (sorted) are unknown: all their images are probes (default 20)')
    parser.add_argument('--probes-per-identity', type=int, default=20,
                        help='the last K images (by label) of each known identity are probes (default 20)')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    split_features(args.features, args.gallery, args.probe, args.unknown_last, args.probes_per_identity)


if __name__ == '__main__':
    raise SystemExit(run_cli(main))
