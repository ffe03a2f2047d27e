"""LFW evaluation from .mat + pairs files (lfw_verification/evaluate.py, lfw_eval.py)."""
import json

import numpy as np
import pytest
from scipy.io import savemat

from common.cli import run_cli
from common.errors import UsageError
from common.features_mat import write_features
from common.verification import best_threshold, image_key, l2_normalize, pair_rows, pair_scores
from data_tools.pairs import Pair, read_pairs, write_pairs
from lfw_verification import lfw_eval, load_features
from lfw_verification.evaluate import evaluate_verification, fold_pca_scores
from lfw_verification.synthetic import synthetic_features, synthetic_pairs, write_pair_label


@pytest.fixture(scope='module')
def lfw_like(tmp_path_factory):
    """40 identities x 6 images, 10 identity-disjoint folds of 12 + 12 pairs, both pairs formats."""
    root = tmp_path_factory.mktemp('lfw')
    data, labels = synthetic_features(40, 6, dim=32, noise=1.2, seed=3)
    write_features(root / 'f.mat', data, labels)
    pairs = synthetic_pairs(labels, folds=10, per_fold=12, seed=3)
    write_pairs(root / 'pairs.txt', pairs, 10, 12)
    write_pair_label(root / 'pair.label', pairs)
    return root, data, labels, pairs


def test_image_key_normalisation():
    assert image_key('/lfw_patch/Aaron_Eckhart/Aaron_Eckhart_0001.jpg') == 'Aaron_Eckhart/Aaron_Eckhart_0001'
    assert image_key('Aaron_Eckhart/Aaron_Eckhart_0001.png') == 'Aaron_Eckhart/Aaron_Eckhart_0001'
    assert image_key('C:\\lfw\\A\\A_0001.jpg ') == 'A/A_0001'
    assert image_key('a//b/c.d.jpg') == 'b/c.d'
    assert image_key('Adam Sandler/103.jpg') == 'Adam Sandler/103'
    assert image_key('name/.hidden') == 'name/.hidden'


def test_load_features_cell_and_char_labels(tmp_path):
    data = np.arange(6, dtype=np.float32).reshape(3, 2)
    write_features(tmp_path / 'cell.mat', data, ['A/A_0001.jpg', 'A/A_0002.jpg', 'Bob/Bob_0001.jpg'])
    loaded, labels = load_features(str(tmp_path / 'cell.mat'))
    assert loaded.dtype == np.float32 and loaded.shape == (3, 2)
    assert labels == ['A/A_0001.jpg', 'A/A_0002.jpg', 'Bob/Bob_0001.jpg']
    savemat(tmp_path / 'char.mat', {'data': data, 'label': np.array(['A/A_0001.jpg', 'A/A_0002.jpg', 'B/B_1.jpg'])})
    assert load_features(str(tmp_path / 'char.mat'))[1] == ['A/A_0001.jpg', 'A/A_0002.jpg', 'B/B_1.jpg']


@pytest.mark.parametrize('content, message', [
    ({'data': np.zeros((2, 3))}, 'lacks variable'),
    ({'data': np.zeros((3, 3)), 'label': np.array(['a/b', 'c/d'], dtype=object).reshape(2, 1)}, 'one label per row'),
    ({'data': np.full((1, 3), np.nan), 'label': np.array(['a/b'], dtype=object).reshape(1, 1)}, 'NaN'),
])
def test_load_features_errors(tmp_path, content, message):
    savemat(tmp_path / 'bad.mat', content)
    with pytest.raises(UsageError, match=message):
        load_features(str(tmp_path / 'bad.mat'))
    with pytest.raises(UsageError, match='not found'):
        load_features(str(tmp_path / 'absent.mat'))


def test_pair_rows_prefix_tolerant_and_missing_listed():
    labels = ['/lfw_patch/A/A_0001.jpg', '/lfw_patch/A/A_0002.jpg', '/lfw_patch/B/B_0001.jpg']
    pairs = [Pair('A/A_0001.jpg', 'A/A_0002.jpg', True, 0), Pair('A/A_0002.jpg', 'B/B_0001.jpg', False, 0)]
    idx1, idx2 = pair_rows(labels, pairs)
    assert idx1.tolist() == [0, 1] and idx2.tolist() == [1, 2]
    missing = pairs + [Pair('C/C_0001.jpg', 'D/D_0003.jpg', False, 0), Pair('C/C_0001.jpg', 'A/A_0001.jpg', False, 0)]
    with pytest.raises(UsageError, match=r'2 images named by the pairs are not in the features file.*C/C_0001.jpg'):
        pair_rows(labels, missing)
    with pytest.raises(UsageError, match='repeat an image'):
        pair_rows(labels + ['other/A/A_0001.png'], pairs)


def test_both_pairs_formats_give_identical_results(lfw_like):
    root, *_ = lfw_like
    official = evaluate_verification(str(root / 'f.mat'), str(root / 'pairs.txt'))['metrics']
    seed_format = evaluate_verification(str(root / 'f.mat'), str(root / 'pair.label'))['metrics']
    assert official['n_pairs'] == 240 and official['n_folds'] == 10
    for key in ('fold_accuracies', 'fold_thresholds', 'accuracy_mean', 'eer', 'auc', 'optimistic_accuracy'):
        assert official[key] == seed_format[key], key
    assert 0.5 < official['accuracy_mean'] < 1.0  # a non-trivial case


def test_fold_accuracies_follow_the_file_folds(lfw_like, tmp_path):
    """The same 240 pairs as 4 folds of 60: each fold is tested with a threshold fitted on the other 3."""
    root, data, labels, pairs = lfw_like
    write_pairs(tmp_path / 'four.txt', [Pair(p.path1, p.path2, p.issame, 0) for p in _regroup(pairs, 4)], 4, 30)
    result = evaluate_verification(str(root / 'f.mat'), str(tmp_path / 'four.txt'))['metrics']
    regrouped = read_pairs(str(tmp_path / 'four.txt'))
    idx1, idx2 = pair_rows(labels, regrouped)
    scores = pair_scores(data.astype(np.float64), idx1, idx2)
    issame = np.array([p.issame for p in regrouped])
    folds = np.array([p.fold for p in regrouped])
    assert folds.tolist() == [k // 60 for k in range(240)]
    expected = []
    for fold in range(4):
        threshold, _ = best_threshold(scores[folds != fold], issame[folds != fold])
        expected.append(np.mean((scores[folds == fold] > threshold) == issame[folds == fold]))
    assert result['n_folds'] == 4
    assert result['fold_accuracies'] == pytest.approx(expected, abs=0)
    ten = evaluate_verification(str(root / 'f.mat'), str(root / 'pairs.txt'))['metrics']
    assert ten['auc'] == pytest.approx(result['auc'])  # same pairs, same ROC, only the folds differ


def _regroup(pairs, n_folds):
    """LFW file order for n_folds: per fold, its share of same pairs then of different pairs."""
    same = [p for p in pairs if p.issame]
    diff = [p for p in pairs if not p.issame]
    per = len(same) // n_folds
    out = []
    for k in range(n_folds):
        out += same[k * per:(k + 1) * per] + diff[k * per:(k + 1) * per]
    return out


def test_euclidean_on_unit_features_orders_like_cosine(lfw_like, tmp_path):
    root, *_ = lfw_like
    cosine = evaluate_verification(str(root / 'f.mat'), str(root / 'pairs.txt'))['metrics']
    euclid = evaluate_verification(str(root / 'f.mat'), str(root / 'pairs.txt'), metric='euclidean', l2=True)
    euclid = euclid['metrics']
    assert euclid['fold_accuracies'] == cosine['fold_accuracies']
    assert euclid['auc'] == pytest.approx(cosine['auc'], abs=1e-12)
    assert euclid['eer'] == pytest.approx(cosine['eer'], abs=1e-12)
    raw = evaluate_verification(str(root / 'f.mat'), str(root / 'pairs.txt'), metric='euclidean')['metrics']
    assert all(t < 0 for t in raw['fold_thresholds'])  # scores are minus distances


def test_pca_is_fitted_on_training_folds_only(lfw_like):
    _, data, labels, pairs = lfw_like
    idx1, idx2 = pair_rows(labels, pairs)
    folds = np.array([p.fold for p in pairs])
    features = data.astype(np.float64)
    _, before = fold_pca_scores(features, idx1, idx2, folds, 8)
    # change every image that only fold 3 uses (folds are identity-disjoint)
    fold3_rows = np.union1d(idx1[folds == 3], idx2[folds == 3])
    assert not np.isin(fold3_rows, np.r_[idx1[folds != 3], idx2[folds != 3]]).any()
    changed = features.copy()
    changed[fold3_rows] = np.random.default_rng(0).normal(size=(len(fold3_rows), features.shape[1])) * 5
    scores_after, after = fold_pca_scores(changed, idx1, idx2, folds, 8)
    train3 = folds != 3
    assert np.array_equal(after[3][train3], before[3][train3])  # fold 3's PCA never saw fold 3
    assert not np.allclose(after[0][train3], before[0][train3])  # ... while the other folds' PCAs did
    assert not np.allclose(after[3][~train3], before[3][~train3])


def test_pca_option_end_to_end_and_errors(lfw_like):
    root, *_ = lfw_like
    result = evaluate_verification(str(root / 'f.mat'), str(root / 'pairs.txt'), pca=16, l2=True)
    assert result['config']['pca'] == 16 and 0.5 < result['metrics']['auc'] <= 1.0
    with pytest.raises(UsageError, match='exceeds'):
        evaluate_verification(str(root / 'f.mat'), str(root / 'pairs.txt'), pca=33)


def test_l2_normalize_keeps_zero_rows():
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def test_cli_writes_json_and_roc(lfw_like, tmp_path, capsys):
    root, *_ = lfw_like
    argv = ['--features', str(root / 'f.mat'), '--pairs', str(root / 'pairs.txt'),
            '--json', str(tmp_path / 'r.json'), '--roc', str(tmp_path / 'roc.png')]
    assert run_cli(lfw_eval.main, argv) == 0
    out = capsys.readouterr().out
    assert '10-fold accuracy' in out and 'optimistic' in out and 'AUC' in out
    saved = json.loads((tmp_path / 'r.json').read_text())
    direct = evaluate_verification(str(root / 'f.mat'), str(root / 'pairs.txt'))['metrics']
    assert saved['metrics']['accuracy_mean'] == direct['accuracy_mean']
    assert set(saved['metrics']['tar_at_far']) == {'0.01', '0.001', '0'}
    assert len(saved['roc']['fpr']) == len(direct['roc']['fpr'])
    assert (tmp_path / 'roc.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_cli_errors_are_one_line(lfw_like, tmp_path, capsys):
    root, *_ = lfw_like
    assert run_cli(lfw_eval.main, ['--features', str(tmp_path / 'x.mat'), '--pairs', str(root / 'pairs.txt')]) == 2
    assert capsys.readouterr().err.startswith('error: features file not found')
    (tmp_path / 'few.label').write_text('1 Nobody/Nobody_0001.jpg Nobody/Nobody_0002.jpg\n'
                                        '0 Name_000/Name_000_0001.jpg Name_001/Name_001_0001.jpg\n')
    assert run_cli(lfw_eval.main, ['--features', str(root / 'f.mat'), '--pairs', str(tmp_path / 'few.label')]) == 2
    assert '2 images named by the pairs are not in the features file' in capsys.readouterr().err
    (tmp_path / 'afile').write_text('x')  # under a file (a missing folder is created now)
    argv = ['--features', str(root / 'f.mat'), '--pairs', str(root / 'pairs.txt'), '--json', str(tmp_path / 'afile' / 'r.json')]
    assert run_cli(lfw_eval.main, argv) == 2


def test_reads_the_extraction_writer_output(lfw_like, tmp_path):
    """The .mat written by extract_features.save_features (with a skipped list) evaluates like ours."""
    extraction = pytest.importorskip('extract_features')
    root, data, labels, _ = lfw_like
    result = extraction.Extraction(features=data, labels=[f'/lfw_patch/{x}' for x in labels],
                                   indices=np.arange(len(labels)), skipped=[('Gone/Gone_0001.jpg', 'zero-byte file')])
    extraction.save_features(str(tmp_path / 'x.mat'), result)
    theirs = evaluate_verification(str(tmp_path / 'x.mat'), str(root / 'pairs.txt'))['metrics']
    ours = evaluate_verification(str(root / 'f.mat'), str(root / 'pairs.txt'))['metrics']
    assert theirs['fold_accuracies'] == ours['fold_accuracies'] and theirs['auc'] == ours['auc']


# ------------------------------------------------------------------ features extracted with --skip-missing

def _without(root, data, labels, drop, tmp_path, record=True):
    """The features file with the images ``drop`` left out (recorded as skipped when ``record``)."""
    keep = [i for i, label in enumerate(labels) if label not in drop]
    path = tmp_path / 'partial.mat'
    write_features(path, data[keep], [labels[i] for i in keep],
                   [(label, 'zero-byte file') for label in drop] if record else [])
    return str(path)


def test_pairs_of_images_skipped_at_extraction_are_dropped_and_counted(lfw_like, tmp_path, capsys):
    root, data, labels, pairs = lfw_like
    drop = [pairs[0].path1, pairs[30].path2]                       # fold 0 and fold 1
    named = [k for k, p in enumerate(pairs) if p.path1 in drop or p.path2 in drop]
    features = _without(root, data, labels, drop, tmp_path)
    result = evaluate_verification(features, str(root / 'pairs.txt'))
    coverage = result['pairs']
    assert coverage['total'] == 240 and coverage['dropped'] == len(named) and coverage['scored'] == 240 - len(named)
    assert [d['index'] for d in coverage['dropped_pairs']] == named
    assert all('skipped at extraction (zero-byte file)' in r for d in coverage['dropped_pairs'] for r in d['reasons'])
    per_fold = {row['fold']: row for row in coverage['per_fold']}
    for fold in range(10):
        lost = sum(pairs[k].fold == fold for k in named)
        assert per_fold[fold]['pairs'] == 24 and per_fold[fold]['scored'] == 24 - lost
    assert result['metrics']['n_pairs'] == 240 - len(named)
    # the kept pairs score exactly as in the full evaluation: same features, same folds
    full = evaluate_verification(str(root / 'f.mat'), str(root / 'pairs.txt'))
    kept = [k for k in range(240) if k not in named]
    folds = np.array([p.fold for p in pairs])[kept]
    issame = np.array([p.issame for p in pairs])[kept]
    from common.verification import verification_metrics
    idx1, idx2 = pair_rows(labels, [pairs[k] for k in kept])
    expected = verification_metrics(pair_scores(data.astype(np.float64), idx1, idx2), issame, folds)
    assert result['metrics']['fold_accuracies'] == expected['fold_accuracies']
    assert full['pairs']['dropped'] == 0
    # the CLI says so, and the JSON lists every dropped pair
    assert run_cli(lfw_eval.main, ['--features', features, '--pairs', str(root / 'pairs.txt'),
                                   '--json', str(tmp_path / 'r.json')]) == 0
    out = capsys.readouterr().out
    assert f'dropped {len(named)} of 240 pairs, naming 2 image(s) without features' in out
    assert 'scored pairs per fold: 1: ' in out
    saved = json.loads((tmp_path / 'r.json').read_text())
    assert saved['pairs']['dropped'] == len(named) and len(saved['pairs']['dropped_pairs']) == len(named)


def test_absent_images_without_a_record_need_skip_missing(lfw_like, tmp_path):
    root, data, labels, pairs = lfw_like
    features = _without(root, data, labels, [pairs[0].path1], tmp_path, record=False)
    with pytest.raises(UsageError, match='1 images named by the pairs are not in the features file'):
        evaluate_verification(features, str(root / 'pairs.txt'))
    result = evaluate_verification(features, str(root / 'pairs.txt'), skip_missing=True)
    assert result['pairs']['dropped'] >= 1
    assert result['pairs']['dropped_pairs'][0]['reasons'] == [f'{pairs[0].path1}: not in the features file']


def test_read_features_returns_the_skipped_list(tmp_path):
    write_features(tmp_path / 'f.mat', np.zeros((1, 4)), ['A/A_0001.jpg'], [('A/A_0002.jpg', 'file not found')])
    data, labels, skipped = load_features(str(tmp_path / 'f.mat'), with_skipped=True)
    assert labels == ['A/A_0001.jpg'] and skipped == [('A/A_0002.jpg', 'file not found')]
    savemat(tmp_path / 'old.mat', {'data': np.zeros((1, 4)), 'label': np.array([['A/A_0001.jpg']], dtype=object)})
    assert load_features(str(tmp_path / 'old.mat'), with_skipped=True)[2] == []
