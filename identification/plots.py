"""Pictures of an embedding: t-SNE and PCA maps coloured by identity, known vs unknown identities with their
centroids, and the k-means SSE curve.

All three work on L2-normalised features (the sphere LightCNN features are compared on). Above
``max_points`` images a random subsample (``seed``) is drawn and every picture says how many of how many it
shows. Same features + same ``seed`` give the same pictures.

* **t-SNE** (van der Maaten and Hinton, JMLR 2008; ``sklearn.manifold.TSNE``, Barnes-Hut, PCA
  initialisation, on the first 50 principal components): neighbourhoods are kept, distances between
  clusters are not. An identity's centroid is the mean of its points on the map.
* **PCA**: the first two principal components of all the images (the subsample is only what is drawn); an
  identity's centroid is the projection of its mean feature.
* **k-means SSE**: ``sklearn.cluster.KMeans`` (``n_init=3``) for ``k`` from 1 to ``k_max``; the sum of squared
  distances to the nearest centre against ``k``, with the number of identities marked and, for reference, the
  SSE of the partition into identities.
"""
import numpy as np

from common.checks import check_number, check_seed
from common.errors import ParameterError, UsageError
from common.features_mat import read_features
from common.fileio import check_output_prefix, check_outputs_apart, save_figure
from common.textio import read_lines
from identification.classifiers import l2_rows
from identification.gallery import identity_of


def subsample(n, max_points, seed=0):
    """Sorted row indices: all ``n`` rows, or ``max_points`` of them drawn at random with ``seed``."""
    if max_points is None or n <= max_points:
        return np.arange(n)
    if max_points < 2:
        raise ParameterError(lambda n: f'{n("max_points")} must be >= 2, got {max_points}')
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


PERPLEXITY_MAX = 1000  # t-SNE neighbourhoods beyond this are the whole map (van der Maaten: 5-50 is usual)


def tsne_map(features, seed=0, perplexity=30.0):
    """2-D t-SNE coordinates (N x 2) of L2-normalised ``features`` (PCA to 50 dimensions first)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    x = l2_rows(features)
    if x.shape[1] > 50 and len(x) > 50:
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    perplexity = min(float(perplexity), (len(x) - 1) / 3.0)
    return TSNE(n_components=2, perplexity=perplexity, init='pca', learning_rate='auto',
                random_state=seed).fit_transform(x)


def pca_map(features, rows, identities):
    """First two principal components of all ``features`` (fitted on all rows): the ``rows`` drawn and the
    identity centroids (projections of the mean unit feature of each identity in ``identities``)."""
    from sklearn.decomposition import PCA
    x = l2_rows(features)
    pca = PCA(n_components=2).fit(x)
    names = np.unique(identities)
    centroids = np.stack([x[identities == n].mean(axis=0) for n in names])
    return pca.transform(x[rows]), dict(zip(names, pca.transform(centroids))), pca.explained_variance_ratio_


def kmeans_sse(features, ks, seed=0):
    """``{k: SSE}`` of k-means on L2-normalised ``features`` for each ``k``."""
    from sklearn.cluster import KMeans
    x = l2_rows(features)
    return {int(k): float(KMeans(n_clusters=int(k), n_init=3, random_state=seed).fit(x).inertia_) for k in ks}


def identity_sse(features, identities):
    """SSE of the partition into identities (each image to its identity's mean), on unit features."""
    x = l2_rows(features)
    return float(sum(((x[identities == n] - x[identities == n].mean(axis=0)) ** 2).sum()
                     for n in np.unique(identities)))


def _colours(n):
    import matplotlib
    palette = [matplotlib.colormaps[m](i) for m in ('tab20', 'tab20b', 'tab20c') for i in range(20)]
    if n > len(palette):
        palette = [matplotlib.colormaps['hsv'](i / n) for i in range(n)]
    return palette[:n]


def _draw_map(path, xy, identities, centroids, known, title, axis_names):
    """Two panels (by identity; known vs unknown) or one (no known/unknown split)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = sorted(centroids)
    colour = dict(zip(names, _colours(len(names))))
    panels = 2 if known is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(7.5 * panels, 7), squeeze=False)
    ax = axes[0, 0]
    ax.scatter(xy[:, 0], xy[:, 1], s=7, c=[colour[n] for n in identities], alpha=0.8, linewidths=0)
    for n in names:  # hollow, so the identity's own points stay visible inside
        ax.scatter(*centroids[n], s=60, facecolors='none', edgecolors='black', linewidths=0.9)
        ax.scatter(*centroids[n], s=14, c=[colour[n]], edgecolors='black', linewidths=0.4,
                   label=n if len(names) <= 20 else None)
    ax.set_title(f'coloured by identity ({len(names)}); black rings: centroids', fontsize=10)
    if len(names) <= 20:
        ax.legend(fontsize=7, markerscale=0.8, loc='best')
    if known is not None:
        ax = axes[0, 1]
        is_known = np.isin(identities, list(known))
        for mask, label, c in ((is_known, 'known', '#1f77b4'), (~is_known, 'unknown', '#ff7f0e')):
            ids = sorted(set(identities[mask]))
            ax.scatter(xy[mask, 0], xy[mask, 1], s=7, c=c, alpha=0.6, linewidths=0,
                       label=f'{label}: {len(ids)} identities, {int(mask.sum())} images')
        for group, marker, c in ((sorted(set(names) & set(known)), '*', '#0b3d91'),
                                 (sorted(set(names) - set(known)), 'X', '#c0392b')):
            if group:
                pts = np.array([centroids[n] for n in group])
                ax.scatter(pts[:, 0], pts[:, 1], s=70, marker=marker, c=c, edgecolors='white', linewidths=0.6,
                           label=f'{"known" if marker == "*" else "unknown"} centroids')
        ax.set_title('known vs unknown identities', fontsize=10)
        ax.legend(fontsize=8, loc='best')
    for a in axes[0]:
        a.set_xlabel(axis_names[0])
        a.set_ylabel(axis_names[1])
        a.grid(True, alpha=0.2)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save_figure(fig, path, dpi=90, metadata={'Software': None})
    plt.close(fig)
    return path


def _draw_sse(path, sse, n_identities, reference, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ks = sorted(sse)
    ax.plot(ks, [sse[k] for k in ks], 'o-', ms=4, label='k-means SSE')
    ax.axvline(n_identities, color='gray', ls='--', lw=1, label=f'{n_identities} identities')
    ax.axhline(reference, color='#c0392b', ls=':', lw=1.2, label=f'SSE of the identity partition ({reference:.1f})')
    ax.set_xlabel('k (clusters)')
    ax.set_ylabel('sum of squared distances to the nearest centre')
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=90, metadata={'Software': None})
    plt.close(fig)
    return path


def embedding_plots(features, identities, out_prefix, known=None, seed=0, max_points=3000, perplexity=30.0,
                    k_max=None, what=('tsne', 'pca', 'kmeans')):
    """Draw ``out_prefix``\\ ``_tsne.png``, ``_pca.png`` and ``_kmeans.png``.

    Parameters
    ----------
    features : array (N, D)
    identities : array (N,) of str
    known : collection of str, optional
        Enrolled identities; the others are drawn as unknown (a second panel). ``None``: one panel.
    seed : int
        Subsample, t-SNE and k-means seed.
    max_points : int
        Images drawn (and clustered) at most; above, a random subsample.
    k_max : int, optional
        Largest k of the SSE curve (default: twice the identities drawn, at most 200).
    what : sequence of {'tsne', 'pca', 'kmeans'}

    Returns
    -------
    dict
        ``paths`` written, ``n_points`` drawn of ``n_total``, ``n_identities``, ``sse`` (``{k: SSE}``),
        ``identity_sse``, ``pca_explained``.
    """
    features, identities = np.asarray(features), np.asarray(identities).astype(str)
    if features.ndim != 2 or len(features) != len(identities):
        raise UsageError(f'features must be N x D with one identity per row, got {features.shape} and '
                         f'{len(identities)} identities')
    if len(features) < 3:
        n_ids = len(set(identities.tolist()))
        raise UsageError(f'the plots need at least 3 images, got {len(features)} image(s) of {n_ids} '
                         f'identit{"y" if n_ids == 1 else "ies"}')
    check_seed(seed)
    check_number(max_points, 'max_points', minimum=2, integer=True, optional=True)
    check_number(perplexity, 'perplexity', above=0, maximum=PERPLEXITY_MAX,
                 qualifier=' (t-SNE; capped at (images - 1) / 3)')
    check_number(k_max, 'k_max', minimum=1, integer=True, optional=True)
    unknown_what = set(what) - {'tsne', 'pca', 'kmeans'}
    if unknown_what:
        raise UsageError(f'what may hold tsne, pca, kmeans; not {sorted(unknown_what)}')
    check_output_prefix(out_prefix, 'out_prefix')  # not a folder name ('plots/'); its folder is created
    rows = subsample(len(features), max_points, seed)
    sub, sub_ids = features[rows], identities[rows]
    said = (f'{len(rows):,} of {len(features):,} images (random subsample, seed {seed})' if len(rows) < len(features)
            else f'all {len(features):,} images')
    kn = None if known is None else set(known)
    counts = f'{len(np.unique(sub_ids))} identities' + ('' if kn is None else
                                                          f' ({len(set(sub_ids) & kn)} known)')
    out = {'paths': {}, 'n_points': int(len(rows)), 'n_total': int(len(features)),
           'n_identities': int(len(np.unique(sub_ids))), 'rows': rows}
    if 'tsne' in what:
        xy = tsne_map(sub, seed, perplexity)
        centroids = {n: xy[sub_ids == n].mean(axis=0) for n in np.unique(sub_ids)}
        out['tsne'] = xy
        out['paths']['tsne'] = _draw_map(f'{out_prefix}_tsne.png', xy, sub_ids, centroids, kn,
                                         f't-SNE of {said}, {counts}; perplexity {perplexity:g}',
                                         ('t-SNE 1', 't-SNE 2'))
    if 'pca' in what:
        xy, centroids, explained = pca_map(features, rows, identities)
        out['pca'], out['pca_explained'] = xy, [float(v) for v in explained]
        out['paths']['pca'] = _draw_map(f'{out_prefix}_pca.png', xy, sub_ids, centroids, kn,
                                        f'PCA of {said}, {counts}', (f'PC 1 ({100 * explained[0]:.1f}% of variance)',
                                                                     f'PC 2 ({100 * explained[1]:.1f}%)'))
    if 'kmeans' in what:
        n_ids = out['n_identities']
        top = int(min(k_max or min(2 * n_ids, 200), len(rows) - 1))
        if top < 1:
            raise ParameterError(lambda n: f'{n("k_max")} must be >= 1, got {k_max}')
        ks = sorted(set(np.unique(np.round(np.geomspace(1, top, 14)).astype(int)).tolist()) | ({n_ids} if n_ids <= top
                                                                                                   else set()))
        out['sse'] = kmeans_sse(sub, ks, seed)
        out['identity_sse'] = identity_sse(sub, sub_ids)
        out['paths']['kmeans'] = _draw_sse(f'{out_prefix}_kmeans.png', out['sse'], n_ids, out['identity_sse'],
                                           f'k-means SSE on {said}, {counts}')
    return out


def run_embedding_plots(features_path, out_prefix, known_from=None, unknown_last=None, seed=0, max_points=3000,
                        perplexity=30.0, k_max=None, what=('tsne', 'pca', 'kmeans')):
    """What ``plot_embeddings.py`` does: load a features ``.mat``, decide known identities, draw, print."""
    if known_from is not None and unknown_last is not None:
        raise ParameterError(lambda n: f'give {n("known_from")} or {n("unknown_last")}, not both')
    check_outputs_apart({'out_prefix': [f'{out_prefix}_{kind}.png' for kind in what]},
                        inputs={'features_path': features_path, 'known_from': known_from})
    check_output_prefix(out_prefix, 'out_prefix')  # before any work; creates its folder
    data, labels = read_features(features_path, name='features_path')
    identities = np.array([identity_of(label) for label in labels])
    names = sorted(set(identities))
    known = None
    if known_from is not None:
        known = set(known_identities(known_from))
        if not known & set(names):
            raise UsageError(f'none of the {len(known)} identities of {known_from} is in {features_path}')
    elif unknown_last is not None:
        if not 0 < unknown_last < len(names):
            raise ParameterError(lambda n: f'{n("unknown_last")} must be in 1..{len(names) - 1} '
                                           f'({len(names)} identities), got {unknown_last}')
        known = set(names[:len(names) - unknown_last])
    result = embedding_plots(data, identities, out_prefix, known, seed, max_points, perplexity, k_max, what)
    print(f'{features_path}: drew {result["n_points"]} of {result["n_total"]} images'
          + (f' (random subsample, seed {seed}; --max-points {max_points})'
             if result['n_points'] < result['n_total'] else '')
          + f', {result["n_identities"]} identities'
          + ('' if known is None else f', {len(known & set(names))} known / {len(set(names) - known)} unknown'))
    for kind, path in result['paths'].items():
        print(f'wrote {path}')
    return result


def known_identities(path):
    """Identity names from a features ``.mat`` (the identities of its labels) or a text file (one per line)."""
    if path.lower().endswith('.mat'):
        return sorted({identity_of(label) for label in read_features(path)[1]})
    names = [line.strip() for _, line in read_lines(path, 'identities file') if line.strip()]
    if not names:
        raise UsageError(f'{path} lists no identities')
    return names
