"""Draw t-SNE / PCA maps of a features .mat by identity (known vs unknown, centroids) and the k-means SSE curve.

Example: ``python identification/plot_embeddings.py --features pubfig_v4.mat --unknown-last 20 --out plots/pubfig``
(writes plots/pubfig_tsne.png, plots/pubfig_pca.png, plots/pubfig_kmeans.png)
"""
if __name__ == '__main__':  # first, before MXNet loads: it sizes its thread pool once (common/threads.py)
    from common.threads import default_compute_threads
    default_compute_threads()

from common.cli import ArgumentParser, run_cli  # noqa: E402
from identification.plots import run_embedding_plots  # noqa: E402


def build_parser():
    parser = ArgumentParser(description=__doc__.splitlines()[0],
                            parameters={'features_path': 'features', 'out_prefix': 'out', 'what': 'only'})
    parser.add_argument('--features', required=True, help='.mat with data (N x D) and label (N x 1 cell)')
    parser.add_argument('--out', required=True, metavar='PREFIX', help='writes PREFIX_tsne.png, _pca.png, _kmeans.png')
    k = parser.add_mutually_exclusive_group()
    k.add_argument('--known-from', metavar='FILE',
                   help='known identities: those of a gallery .mat, or a text file with one name per line')
    k.add_argument('--unknown-last', type=int, metavar='N',
                   help='the last N identities in sorted order are unknown, the others known')
    parser.add_argument('--seed', type=int, default=0, help='subsample, t-SNE and k-means seed (default 0)')
    parser.add_argument('--max-points', type=int, default=3000,
                        help='draw at most this many images, a random subsample above (default 3000)')
    parser.add_argument('--perplexity', type=float, default=30.0, help='t-SNE perplexity (default 30)')
    parser.add_argument('--k-max', type=int, help='largest k of the SSE curve (default 2 x identities, <= 200)')
    parser.add_argument('--only', nargs='+', choices=('tsne', 'pca', 'kmeans'), help='draw only these')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    run_embedding_plots(args.features, args.out, args.known_from, args.unknown_last, args.seed, args.max_points,
                        args.perplexity, args.k_max, tuple(args.only or ('tsne', 'pca', 'kmeans')))


if __name__ == '__main__':
    raise SystemExit(run_cli(main))
