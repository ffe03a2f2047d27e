"""Identity classifiers on embeddings (identification/): F-score against hand counts, open-set threshold at a
target FAR, persistence (safe loading), the identify.py --classifier and predict.py command lines."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from common.cli import run_cli
from common.errors import UsageError
from common.features_mat import write_features
from common.safe_pickle import UnsafePickleError
from identification import (CLASSIFIERS, CosineKNN, closed_set_report, fit_classifier, load_classifier,
                            score_classifier)
from identification.classifiers import impostor_scores, open_set_threshold
from helpers import make_checkpoint, make_tree
from lfw_verification import identify as identify_cli
from lfw_verification.synthetic import synthetic_features

AXES = np.eye(3)


def _toward(axis, other=None, w=0.3):
    v = AXES[axis] + (0 if other is None else w * AXES[other])
    return v / np.linalg.norm(v)


def hand_case():
    """Gallery: 2 images per identity on its axis. Probes built so the nearest centroid is, by construction:
    A (4 probes) -> A, A, A, B; B (2) -> B, B; C (3) -> C, C, A."""
    gallery = np.repeat(AXES, 2, axis=0) + 0.01 * np.array([[0, 1, 0], [0, 0, 1]] * 3)
    ids = np.repeat(['A', 'B', 'C'], 2)
    probes = np.array([_toward(0, 1), _toward(0, 2), _toward(0), _toward(1, 0, 0.1) + [0.2, 0, 0],
                       _toward(1), _toward(1, 2), _toward(2), _toward(2, 1), _toward(0, 2, 0.5)])
    truth = np.array(['A'] * 4 + ['B'] * 2 + ['C'] * 3)
    return gallery, ids, probes, truth


def test_per_class_f1_against_hand_counts():
    gallery, ids, probes, truth = hand_case()
    clf = fit_classifier(gallery, ids, 'centroid', far=None)
    assert clf.identify(probes)[0].tolist() == list('AAAB') + list('BB') + list('CCA')
    r = closed_set_report(clf, probes, truth, top_k=3)
    table = r['per_class'].set_index('identity')
    # A: 3 right of 4 probes, 1 more predicted A (a C probe) -> P 3/4, R 3/4, F1 3/4
    # B: 2 right of 2, 1 more predicted B (an A probe)      -> P 2/3, R 1,   F1 4/5
    # C: 2 right of 3, none wrongly predicted C             -> P 1,   R 2/3, F1 4/5
    assert table.loc['A'].tolist() == pytest.approx([3 / 4, 3 / 4, 3 / 4, 4])
    assert table.loc['B'].tolist() == pytest.approx([2 / 3, 1, 4 / 5, 2])
    assert table.loc['C'].tolist() == pytest.approx([1, 2 / 3, 4 / 5, 3])
    assert r['accuracy'] == pytest.approx(7 / 9)
    assert r['macro_f1'] == pytest.approx((3 / 4 + 4 / 5 + 4 / 5) / 3)
    assert r['weighted_f1'] == pytest.approx((4 * 3 / 4 + 2 * 4 / 5 + 3 * 4 / 5) / 9)
    assert r['top_k'][3] == 1.0 and r['top_k'][1] == pytest.approx(7 / 9)
    assert r['confusion'].tolist() == [[3, 1, 0], [0, 2, 0], [1, 0, 2]]


def test_knn_scores_are_cosine_weighted_votes():
    gallery = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]], float)
    knn = CosineKNN(n_neighbors=3).fit(gallery, ['a', 'a', 'b', 'b'])
    x = np.array([[1.0, 0.2]])
    cos = (gallery / np.linalg.norm(gallery, axis=1, keepdims=True)) @ (x[0] / np.linalg.norm(x[0]))
    near = np.argsort(-cos)[:3]  # two 'a' images and the nearest 'b'
    expected = [cos[near][np.array([0, 1, 2, 3])[near] < 2].sum() / 3, cos[near][near >= 2].sum() / 3]
    assert knn.decision_function(x)[0] == pytest.approx(expected)


def _open_set_data(seed=0):
    data, labels = synthetic_features(n_identities=12, images_per_identity=10, dim=32, noise=1.0, seed=seed)
    ids = np.array([label.split('/')[0] for label in labels])
    return data, ids


def test_open_set_threshold_at_target_far_by_hand():
    data, ids = _open_set_data()
    names = np.unique(ids)
    # leave-one-identity-out (threshold_folds = identities): for the centroid classifier the impostor score of
    # an image is its best cosine to the *other* identities' centroids, which removing its own does not move
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    cent = np.stack([unit[ids == n].mean(axis=0) for n in names])
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    cos = unit @ cent.T
    cos[np.arange(len(ids)), np.searchsorted(names, ids)] = -np.inf
    by_hand = cos.max(axis=1)
    assert impostor_scores('centroid', data, ids, folds=len(names)) == pytest.approx(by_hand)
    for far in (0.05, 0.1, 0.25):
        clf = fit_classifier(data, ids, 'centroid', far=far, threshold_folds=len(names))
        t = clf.threshold
        accepted = np.sum(by_hand > t)
        assert accepted <= far * len(ids)                       # FAR at the threshold is within target
        lower = np.max(by_hand[by_hand <= t])                   # the next impostor down would break it
        assert np.sum(by_hand >= lower) > far * len(ids)
        assert clf.threshold_info['impostor_far'] == pytest.approx(accepted / len(ids))
    # a FAR the 120 impostor images cannot resolve: reject every impostor seen, and say it was not measured
    t, info = open_set_threshold(by_hand, 0.005)
    assert np.all(by_hand <= t) and info['impostor_far'] == 0 and 'not measurable' in info['note']
    assert 'note' not in open_set_threshold(by_hand, 1 / 120)[1]


def test_open_set_decisions_on_probes():
    data, ids = _open_set_data(seed=3)
    known = np.isin(ids, np.unique(ids)[:8])
    first = np.zeros(len(ids), bool)
    for n in np.unique(ids[known]):
        first[np.flatnonzero(ids == n)[:6]] = True
    clf = fit_classifier(data[first], ids[first], 'centroid', far=0.1)
    probes, truth = data[~first], ids[~first]
    result = score_classifier(clf, probes, truth)
    o = result['open_set']
    decided, scores = clf.identify(probes)
    assert ((decided == 'unknown') == (scores <= clf.threshold)).all()
    is_known = np.isin(truth, clf.names)
    assert o['far'] == pytest.approx(np.mean(decided[~is_known] != 'unknown'))
    assert o['dir'] == pytest.approx(np.mean(decided[is_known] == truth[is_known]))
    assert o['accuracy'] == pytest.approx(np.mean(decided == np.where(is_known, truth, 'unknown')))
    assert result['n_unknown_probes'] == int((~is_known).sum()) == 40


@pytest.mark.parametrize('kind', CLASSIFIERS)
def test_every_classifier_learns_and_round_trips(kind, tmp_path):
    data, ids = _open_set_data(seed=1)
    train = np.arange(len(ids)) % 10 < 7
    clf = fit_classifier(data[train], ids[train], kind, far=0.1, info={'flip': True})
    acc = closed_set_report(clf, data[~train], ids[~train])['accuracy']
    assert acc > 0.9, (kind, acc)  # noise 1.0 on 32-d: separable enough for every method
    path = clf.save(str(tmp_path / f'{kind}.joblib'))
    back = load_classifier(path)
    assert back.kind == kind and back.names.tolist() == clf.names.tolist() and back.threshold == clf.threshold
    np.testing.assert_allclose(back.scores(data), clf.scores(data))
    assert back.info['flip'] is True
    with pytest.raises(UsageError, match='features must be'):
        back.scores(data[:, :5])


def test_crafted_classifier_file_is_refused(tmp_path):
    marker = tmp_path / 'pwned'

    class Evil:
        def __reduce__(self):
            return os.system, (f'touch {marker}',)

    path = tmp_path / 'evil.joblib'
    with open(path, 'wb') as f:
        pickle.dump({'format': 'lightcnn-identity-classifier', 'estimator': Evil()}, f)
    with pytest.raises(UnsafePickleError, match='system'):
        load_classifier(str(path))
    assert not marker.exists()
    (tmp_path / 'junk.joblib').write_bytes(b'junk')
    with pytest.raises(UsageError, match='not a readable classifier'):
        load_classifier(str(tmp_path / 'junk.joblib'))


def test_bad_inputs_name_python_arguments():
    data, ids = _open_set_data()
    with pytest.raises(UsageError, match='classifier must be one of'):
        fit_classifier(data, ids, 'forest')
    with pytest.raises(UsageError, match='at least 2 identities'):
        fit_classifier(data[:5], ids[:5], 'svm')
    with pytest.raises(UsageError, match='far must be'):
        fit_classifier(data, ids, 'centroid', far=2.0)


@pytest.mark.parametrize('kind', ['svm', 'logreg'])
def test_two_identity_gallery_threshold_is_one_error_line(kind, tmp_path, capsys):
    """svm/logreg cannot fit a held-out fold of one identity: a clear error before any fit, not sklearn's."""
    data, labels = synthetic_features(n_identities=2, images_per_identity=3, dim=8, seed=1)
    ids = np.array([lb.split('/')[0] for lb in labels])
    with pytest.raises(UsageError, match='at least 3 gallery identities, got 2'):
        fit_classifier(data, ids, kind)
    assert fit_classifier(data, ids, kind, far=None).threshold is None  # closed set still fits
    write_features(str(tmp_path / 'g.mat'), data, labels)
    argv = ['--gallery', str(tmp_path / 'g.mat'), '--gallery-per-identity', '1', '--classifier', kind]
    assert run_cli(identify_cli.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith('error:') and err.count('\n') == 1 and 'Traceback' not in err
    # --top-k is checked before the classifier is fitted (no fit, no threshold search on bad options)
    assert run_cli(identify_cli.main, argv[:-1] + ['centroid', '--top-k', '0']) == 2
    assert '--top-k must be >= 1' in capsys.readouterr().err


def test_identify_cli_classifier_outputs(tmp_path, repo_root):
    data, labels = synthetic_features(n_identities=10, images_per_identity=8, dim=32, noise=1.2, seed=5)
    g = np.arange(len(labels)) % 8 < 5
    write_features(str(tmp_path / 'g.mat'), data[g], [lb for lb, k in zip(labels, g) if k])
    keep = ~g & ~np.isin(np.arange(len(labels)) // 8, [0])  # identity 0: only in the gallery
    write_features(str(tmp_path / 'p.mat'), data[keep], [lb for lb, k in zip(labels, keep) if k])
    argv = ['--gallery', str(tmp_path / 'g.mat'), '--probe', str(tmp_path / 'p.mat'), '--classifier', 'logreg',
            '--json', str(tmp_path / 'r.json'), '--per-class', str(tmp_path / 'f1.csv'),
            '--confusion', str(tmp_path / 'cm.png'), '--save-classifier', str(tmp_path / 'c.joblib'),
            '--predictions', str(tmp_path / 'pred.csv')]
    assert run_cli(identify_cli.main, argv) == 0
    saved = json.load(open(tmp_path / 'r.json'))
    rows = pd.read_csv(tmp_path / 'f1.csv')
    assert len(saved['per_class']) == len(rows) == 9  # identities with probes
    assert saved['macro_f1'] == pytest.approx(rows['f1'].mean())
    pred = pd.read_csv(tmp_path / 'pred.csv')
    assert saved['accuracy'] == pytest.approx((pred['predicted'] == pred['identity']).mean())
    assert {'identity', 'precision', 'recall', 'f1', 'support'} <= set(saved['per_class'][0])
    assert (tmp_path / 'cm.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    # the saved classifier answers on the probe features from the command line
    run = subprocess.run([sys.executable, str(repo_root / 'identification' / 'predict.py'), '--classifier',
                          str(tmp_path / 'c.joblib'), '--features', str(tmp_path / 'p.mat'), '--csv',
                          str(tmp_path / 'new.csv'), '--closed-set'], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert pd.read_csv(tmp_path / 'new.csv')['identity'].tolist() == pred['predicted'].tolist()
    bad = subprocess.run([sys.executable, str(repo_root / 'identification' / 'predict.py'), '--classifier',
                          str(tmp_path / 'nope.joblib'), '--features', str(tmp_path / 'p.mat')],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith('error:') and 'Traceback' not in bad.stderr
    with pytest.raises(SystemExit):
        identify_cli.main(['--gallery', str(tmp_path / 'g.mat'), '--probe', str(tmp_path / 'p.mat'),
                           '--confusion', str(tmp_path / 'x.png')])  # needs --classifier


def test_identify_images_with_a_model(tmp_path):
    from models import load_model
    root = tmp_path / 'imgs'
    labels = make_tree(root, per_identity=(4, 4), lfw=True)
    paths = [str(root / rel) for rel in labels]
    model = load_model(make_checkpoint(tmp_path))
    feats = model.embed(paths)
    clf = fit_classifier(feats, [rel.split('/')[0] for rel in labels], 'centroid', far=None)
    names, scores = clf.identify_images(paths, model)
    assert names.tolist() == clf.identify(feats)[0].tolist() and scores.shape == (len(paths),)
