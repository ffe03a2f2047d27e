"""Verification metrics against hand-computed cases (common/verification.py)."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from common.verification import (best_threshold, equal_error_rate, tar_at_far, threshold_at_far,
                                 verification_metrics)


def _metrics(scores, issame, folds=None):
    scores = np.asarray(scores, float)
    folds = np.arange(len(scores)) % 2 if folds is None else np.asarray(folds)
    return verification_metrics(scores, np.asarray(issame, bool), folds)


def test_perfectly_separable():
    same = [0.9, 0.8, 0.75, 0.7, 0.95, 0.85]
    diff = [0.1, 0.3, 0.2, 0.4, 0.05, 0.15]
    m = _metrics(same + diff, [True] * 6 + [False] * 6, [0, 1, 2] * 4)
    assert m['accuracy_mean'] == 1.0 and m['accuracy_std'] == 0.0
    assert m['optimistic_accuracy'] == 1.0
    assert m['eer'] == 0.0 and m['one_minus_eer'] == 1.0
    assert m['auc'] == 1.0
    # 6 different pairs resolve FAR >= 1/6 only: no TAR at 1%, 0.1% or 0% is measurable (issue 15)
    assert m['tar_at_far'] == {0.01: None, 0.001: None, 0.0: None}
    assert set(m['tar_at_far_note']) == {0.01, 0.001, 0.0} and 'not measurable' in m['tar_at_far_note'][0.01]
    assert tar_at_far(m['roc']['fpr'], m['roc']['tpr'], 0.0, 6) == 1.0  # the raw count-based value
    assert m['val'] == 1.0 and m['val_far'] == 0.0
    # the optimistic threshold is the midpoint of the gap between classes
    assert m['optimistic_threshold'] == pytest.approx((0.4 + 0.7) / 2)


def test_perfectly_inverted_scores():
    m = _metrics([0.1, 0.2, 0.9, 0.8], [True, True, False, False], [0, 0, 1, 1])
    assert m['auc'] == 0.0
    assert m['eer'] == 1.0


def test_constant_scores_give_chance():
    m = _metrics(np.full(8, 0.5), [True, False] * 4, [0, 0, 1, 1] * 2)
    assert m['auc'] == 0.5
    assert m['eer'] == 0.5  # ROC is the diagonal (0,0)-(1,1); it crosses FPR = 1 - TPR at 0.5
    # both candidates (accept all / reject all) score 50%; the tie goes to the lowest threshold = accept all
    threshold, acc = best_threshold(np.full(8, 0.5), np.array([True, False] * 4))
    assert threshold == -0.5 and acc == 0.5
    assert m['accuracy_mean'] == 0.5


def test_random_scores_auc_near_half_and_equal_to_mann_whitney():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 50, size=20000) / 50.0  # many ties
    issame = rng.random(20000) < 0.5
    m = _metrics(scores, issame, np.arange(20000) * 10 // 20000)
    assert m['auc'] == pytest.approx(roc_auc_score(issame, scores), abs=1e-12)
    assert abs(m['auc'] - 0.5) < 0.02
    assert abs(m['eer'] - 0.5) < 0.03
    assert abs(m['accuracy_mean'] - 0.5) < 0.03


def test_tied_scores_hand_computed():
    # scores 0.8(T) 0.5(T) 0.5(F) 0.2(F)
    scores, issame = np.array([0.8, 0.5, 0.5, 0.2]), np.array([True, True, False, False])
    # candidates -0.8, 0.35, 0.65, 1.8 -> accuracies 2/4, 3/4, 3/4, 2/4; tie -> lowest (0.35)
    threshold, acc = best_threshold(scores, issame)
    assert threshold == pytest.approx(0.35) and acc == 0.75
    m = _metrics(scores, issame)
    # ROC (0,0) (0,.5) (.5,1) (1,1): trapezoids 0 + .375 + .5; Mann-Whitney (1 + 1 + .5 + 1) / 4
    assert m['auc'] == pytest.approx(0.875)
    assert m['roc']['fpr'].tolist() == [0.0, 0.0, 0.5, 1.0]
    assert m['roc']['tpr'].tolist() == [0.0, 0.5, 1.0, 1.0]
    # the segment (0,.5)-(.5,1) crosses FPR = 1 - TPR halfway: (0.25, 0.75)
    assert m['eer'] == pytest.approx(0.25)
    assert tar_at_far(m['roc']['fpr'], m['roc']['tpr'], 0.0, 2) == 0.5
    assert m['tar_at_far'][0.0] is None  # FAR 0 is below what 2 different pairs resolve (1/2)
    assert m['optimistic_accuracy'] == 0.75


def test_tied_pair_never_split_by_threshold():
    scores = np.array([0.7, 0.7, 0.7, 0.1])
    issame = np.array([True, True, False, False])
    threshold, _ = best_threshold(scores, issame)
    predicted = scores > threshold
    assert predicted[0] == predicted[1] == predicted[2]


def test_fold_order_follows_fold_ids():
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.3, 0.7])
    issame = np.array([True, True, False, False, True, False])
    # fold A = first four (separable), fold B = last two (inverted).
    # A tested with B's threshold: B's candidates -0.7/0.5/1.7 score 1/2, 0, 1/2 -> -0.7 -> all accepted: 2/4
    # B tested with A's threshold 0.5: both wrong: 0
    m = verification_metrics(scores, issame, np.array([0, 0, 0, 0, 1, 1]))
    assert m['fold_accuracies'] == [0.5, 0.0]
    assert m['fold_thresholds'] == [pytest.approx(-0.7), pytest.approx(0.5)]
    assert m['accuracy_mean'] == 0.25 and m['accuracy_std'] == 0.25
    swapped = verification_metrics(scores, issame, np.array([1, 1, 1, 1, 0, 0]))
    assert swapped['fold_accuracies'] == [0.0, 0.5]


def test_fold_scores_drive_thresholds():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=40) + np.repeat([1.0, 0.0], 20)
    issame = np.repeat([True, False], 20)
    folds = np.arange(40) % 4
    plain = verification_metrics(scores, issame, folds)
    shifted = verification_metrics(scores, issame, folds, fold_scores=np.stack([scores + 10.0] * 4))
    assert np.allclose(np.array(shifted['fold_thresholds']) - 10.0, plain['fold_thresholds'])
    assert shifted['auc'] == plain['auc']  # ROC uses the out-of-fold scores only


def test_equal_error_rate_at_roc_point():
    fpr, tpr = np.array([0.0, 0.2, 1.0]), np.array([0.0, 0.8, 1.0])
    assert equal_error_rate(fpr, tpr) == 0.2


def test_threshold_at_far_and_val():
    scores = np.array([0.9, 0.8, 0.6, 0.7, 0.5, 0.4])
    issame = np.array([True, True, True, False, False, False])
    # FAR <= 0 needs the threshold above the best impostor 0.7: lowest candidate is (0.7 + 0.8) / 2
    assert threshold_at_far(scores, issame, 0.0) == pytest.approx(0.75)
    assert threshold_at_far(scores, issame, 1.0) == pytest.approx(0.4 - 1.0)


def test_single_fold_has_no_kfold_accuracy():
    m = verification_metrics(np.array([0.9, 0.1]), np.array([True, False]), np.array([0, 0]))
    assert m['accuracy_mean'] is None and m['n_folds'] == 1
    assert m['optimistic_accuracy'] == 1.0


def test_one_class_rejected():
    with pytest.raises(ValueError, match='both same and different'):
        verification_metrics(np.array([0.9, 0.1]), np.array([True, True]), np.array([0, 1]))


def test_tar_at_far_only_where_the_negatives_resolve_it():
    # 1000 different pairs: FAR 1e-2 (10 false accepts) and 1e-3 (1) are measurable, FAR 0 is not
    rng = np.random.default_rng(4)
    issame = np.r_[np.ones(500, bool), np.zeros(1000, bool)]
    scores = np.r_[rng.normal(1, 1, 500), rng.normal(-1, 1, 1000)]
    m = _metrics(scores, issame, np.arange(1500) % 5)
    assert m['min_measurable_far'] == pytest.approx(1e-3)
    neg = np.sort(scores[~issame])[::-1]
    for far, allowed in ((1e-2, 10), (1e-3, 1)):
        # by hand: the TAR of the lowest threshold letting through at most `allowed` negatives
        t = neg[allowed]  # accept score > t: exactly `allowed` negatives pass
        assert m['tar_at_far'][far] == pytest.approx(np.mean(scores[issame] > t))
        assert m['threshold_at_far'][far] == pytest.approx(threshold_at_far(scores, issame, far))
        assert np.sum(scores[~issame] > m['threshold_at_far'][far]) <= allowed
    assert m['tar_at_far'][0.0] is None and m['threshold_at_far'][0.0] is None
    assert 'FAR = 0' in m['tar_at_far_note'][0.0] and '1/1000' in m['tar_at_far_note'][0.0]
    # the EER threshold balances the two error rates
    t = m['threshold_at_eer']
    far, frr = np.mean(scores[~issame] > t), np.mean(scores[issame] <= t)
    assert abs(far - frr) < 0.01 and abs(far - m['eer']) < 0.01
