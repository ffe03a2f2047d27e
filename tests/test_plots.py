"""Embedding plots (identification/plots.py, plot_embeddings.py): deterministic, subsampled with the count
said, SSE numbers against hand computation, readable PNGs."""
import subprocess
import sys

import cv2
import numpy as np
import pytest

from common.errors import UsageError
from common.features_mat import write_features
from identification.plots import embedding_plots, identity_sse, kmeans_sse, subsample
from lfw_verification.synthetic import synthetic_features


@pytest.fixture(scope='module')
def feats():
    data, labels = synthetic_features(n_identities=8, images_per_identity=20, dim=24, noise=0.8, seed=2)
    return data, np.array([label.split('/')[0] for label in labels])


def test_same_seed_same_pictures_and_subsample_counted(feats, tmp_path):
    data, ids = feats
    known = set(np.unique(ids)[:6])
    a = embedding_plots(data, ids, str(tmp_path / 'a'), known=known, seed=3, max_points=100, k_max=12)
    b = embedding_plots(data, ids, str(tmp_path / 'b'), known=known, seed=3, max_points=100, k_max=12)
    assert (a['n_points'], a['n_total']) == (100, 160)
    assert np.array_equal(a['rows'], b['rows']) and np.array_equal(a['tsne'], b['tsne'])
    assert np.array_equal(a['pca'], b['pca']) and a['sse'] == b['sse']
    for kind in ('tsne', 'pca', 'kmeans'):
        assert open(a['paths'][kind], 'rb').read() == open(b['paths'][kind], 'rb').read()
        img = cv2.imread(a['paths'][kind])
        assert img is not None and min(img.shape[:2]) >= 400
    c = embedding_plots(data, ids, str(tmp_path / 'c'), seed=4, max_points=100, what=('pca',))
    assert not np.array_equal(c['rows'], a['rows']) and set(c['paths']) == {'pca'}


def test_sse_numbers_by_hand(feats):
    data, ids = feats
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    sse = kmeans_sse(data, [1, 8], seed=0)
    assert sse[1] == pytest.approx(((unit - unit.mean(axis=0)) ** 2).sum())   # one cluster: total SS
    by_identity = sum(((unit[ids == n] - unit[ids == n].mean(axis=0)) ** 2).sum() for n in np.unique(ids))
    assert identity_sse(data, ids) == pytest.approx(by_identity)
    assert sse[8] <= by_identity + 1e-6  # k-means with k = identities does at least as well as the identities
    assert sse[8] < sse[1]


def test_subsample_and_errors(feats, tmp_path):
    assert subsample(10, 20).tolist() == list(range(10))
    rows = subsample(1000, 30, seed=1)
    assert len(rows) == 30 and len(set(rows)) == 30 and (np.diff(rows) > 0).all()
    data, ids = feats
    with pytest.raises(UsageError, match='names a folder'):  # a missing folder is created now (test_outputs.py)
        embedding_plots(data, ids, str(tmp_path / 'missing') + '/')
    with pytest.raises(UsageError, match='what may hold'):
        embedding_plots(data, ids, str(tmp_path / 'x'), what=('umap',))


def test_cli_says_the_count(feats, tmp_path, repo_root):
    data, ids = feats
    labels = [f'{n}/{n}_{k:04d}.jpg' for k, n in enumerate(ids)]
    write_features(str(tmp_path / 'f.mat'), data, labels)
    run = subprocess.run([sys.executable, str(repo_root / 'identification' / 'plot_embeddings.py'), '--features',
                          str(tmp_path / 'f.mat'), '--out', str(tmp_path / 'p'), '--unknown-last', '2',
                          '--max-points', '120', '--only', 'pca', 'kmeans'], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert 'drew 120 of 160 images' in run.stdout and '6 known / 2 unknown' in run.stdout
    assert (tmp_path / 'p_pca.png').is_file() and (tmp_path / 'p_kmeans.png').is_file()
    assert not (tmp_path / 'p_tsne.png').exists()
    bad = subprocess.run([sys.executable, str(repo_root / 'identification' / 'plot_embeddings.py'), '--features',
                          str(tmp_path / 'f.mat'), '--out', str(tmp_path / 'p'), '--unknown-last', '8'],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith('error:') and '--unknown-last must be in 1..7' in bad.stderr
