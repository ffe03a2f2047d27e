"""Write LFW-format verification pairs (``pairs.txt``) from an ``identity/image`` tree.

Example: ``python data_tools/make_pairs.py --images held_out/ --out pairs.txt --folds 10 --per-fold 300``
"""
if __name__ == '__main__':  # first, before MXNet loads: it sizes its thread pool once (common/threads.py)
    from common.threads import default_compute_threads
    default_compute_threads()

import sys  # noqa: E402

from common.cli import ArgumentParser, run_cli  # noqa: E402
from common.fileio import check_outputs  # noqa: E402
from data_tools.pairs import (few_identities_warning, identities_from, make_pairs, pairs_report,  # noqa: E402
                              write_pairs)


def build_parser():
    parser = ArgumentParser(description=__doc__.splitlines()[0], parameters={'images_root': 'images'})
    parser.add_argument('--images', required=True, help='root with one folder per identity')
    parser.add_argument('--out', required=True, help='pairs file to write (LFW pairs.txt format)')
    parser.add_argument('--folds', type=int, default=10, help='identity-disjoint folds (default 10)')
    parser.add_argument('--per-fold', type=int, default=300,
                        help='matched pairs per fold, and as many mismatched (default 300)')
    parser.add_argument('--identities-from', metavar='FILE',
                        help="only these identities: a pack_rec PREFIX.json (its held-out identities) "
                             "or a text file with one folder name per line")
    parser.add_argument('--seed', type=int, default=0, help='random seed; same seed -> same file')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_outputs({'out': args.out}, inputs={'identities_from': args.identities_from}, trees={'images': args.images})
    identities = identities_from(args.identities_from) if args.identities_from else None
    pairs = make_pairs(args.images, folds=args.folds, per_fold=args.per_fold, seed=args.seed,
                       identities=identities)
    write_pairs(args.out, pairs, args.folds, args.per_fold)
    report = pairs_report(pairs)
    print(f'wrote {args.out}: {args.folds} folds x ({args.per_fold} matched + {args.per_fold} mismatched) '
          f'= {len(pairs)} pairs from {args.images}; {report["identities"]} distinct identities, '
          f'{report["images"]} distinct images; per fold: '
          f'{min(f["identities"] for f in report["per_fold"])}-{max(f["identities"] for f in report["per_fold"])} '
          f'identities, {min(f["people_pairs"] for f in report["per_fold"])}-'
          f'{max(f["people_pairs"] for f in report["per_fold"])} pairs of people among the mismatched pairs')
    warning = few_identities_warning(report['identities'], args.folds)
    if warning:
        print(f'warning: {warning}', file=sys.stderr)


if __name__ == '__main__':
    raise SystemExit(run_cli(main))
