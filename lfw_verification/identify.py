"""Face identification: closed-set top-1/top-5 and open-set (unknown) thresholds from features .mat files.

Examples:
  python lfw_verification/identify.py --gallery G.mat --probe P.mat --far 0.01 --predictions pred.csv
  python lfw_verification/identify.py --gallery LFW_features.mat --gallery-per-identity 1 --unknown-fraction 0.2
"""
if __name__ == '__main__':  # first, before MXNet loads: it sizes its thread pool once (common/threads.py)
    from common.threads import default_compute_threads
    default_compute_threads()

from common.cli import ArgumentParser, run_cli  # noqa: E402
from lfw_verification.identification import run_identification  # noqa: E402


def build_parser():
    parser = ArgumentParser(description=__doc__.splitlines()[0])
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
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    run_identification(args.gallery, args.probe, args.gallery_per_identity, args.unknown_fraction, args.seed,
                       args.far, args.predictions, args.json)
    return 0


if __name__ == '__main__':
    raise SystemExit(run_cli(main))
