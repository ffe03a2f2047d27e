"""Synthetic features and pairs with LFW's layout, for tests, benchmarks and trying the tools without a model.

Each identity is a random unit direction; its images are that direction plus Gaussian noise, so ``noise``
sets how hard verification is. Labels follow LFW naming (``Name_003/Name_003_0001.jpg``).
"""
import numpy as np

from data_tools.pairs import Pair


def synthetic_features(n_identities=40, images_per_identity=6, dim=256, noise=0.8, seed=0):
    """``(data float32 (N, dim), labels list of 'Name/Name_0001.jpg')``, identities in folder order."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_identities, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    data, labels = [], []
    for i in range(n_identities):
        name = f'Name_{i:03d}'
        for j in range(images_per_identity):
            data.append(centres[i] + noise * rng.normal(size=dim) / np.sqrt(dim))
            labels.append(f'{name}/{name}_{j + 1:04d}.jpg')
    return np.asarray(data, dtype=np.float32), labels


def synthetic_pairs(labels, folds=10, per_fold=30, seed=0):
    """LFW View-2-like pairs over ``labels``: identity-disjoint folds, ``per_fold`` same then different each.

    Identities are dealt round-robin to folds; needs >= 2 identities with >= 2 images per fold.
    """
    rng = np.random.default_rng(seed)
    by_identity = {}
    for label in labels:
        name = label.split('/')[-2]
        by_identity.setdefault(name, []).append(label)
    names = sorted(by_identity)
    pairs = []
    for fold in range(folds):
        members = names[fold::folds]
        same, diff = set(), set()
        while len(same) < per_fold:
            imgs = by_identity[members[rng.integers(len(members))]]
            a, b = sorted(rng.choice(len(imgs), 2, replace=False))
            same.add((imgs[a], imgs[b]))
        while len(diff) < per_fold:
            n1, n2 = sorted(rng.choice(len(members), 2, replace=False))
            i1, i2 = by_identity[members[n1]], by_identity[members[n2]]
            diff.add((i1[rng.integers(len(i1))], i2[rng.integers(len(i2))]))
        pairs += [Pair(a, b, True, fold) for a, b in sorted(same)]
        pairs += [Pair(a, b, False, fold) for a, b in sorted(diff)]
    return pairs


def write_pair_label(path, pairs):
    """The seed's ``pair.label`` format: ``1 Name/Name_0001.jpg Name/Name_0004.jpg`` per line."""
    with open(path, 'w', encoding='utf-8') as f:
        for p in pairs:
            f.write(f'{int(p.issame)} {p.path1} {p.path2}\n')
