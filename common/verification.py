"""Verification protocol on pairs: matching pairs to feature rows, pair scores, and the metrics on them
(k-fold accuracy, EER, AUC, TAR@FAR; pure numpy + sklearn).

One implementation for the evaluators (:mod:`lfw_verification`) and training's per-epoch verification
(``train_lightcnn.py --val-pairs``), so both report the same numbers for the same features.

Matching labels to pair paths (:func:`common.images.image_key`, same rule in ``lfw_eval.m``, and the rule
extraction and training use to find pair images on disk): backslashes become ``/``, only the last two path
components (identity folder and file) are kept and the file extension is dropped, so
``/lfw_patch/Aaron_Eckhart/Aaron_Eckhart_0001.jpg``, ``Aaron_Eckhart/Aaron_Eckhart_0001.png`` and
``Aaron_Eckhart/Aaron_Eckhart_0001`` are the same image. Matching is case-sensitive. Pairs naming images the
features file recorded as skipped at extraction are dropped and reported (:func:`match_pairs`).

Scores are *similarities*: higher means "same identity" (for distances pass ``-distance``).
A pair is predicted "same" when ``score > threshold``.

Threshold rule (shared bit-for-bit with ``lfw_eval.m``)
-------------------------------------------------------
Candidates are ``u[0] - 1``, the midpoints ``(u[k-1] + u[k]) / 2`` of consecutive sorted unique scores
``u`` and ``u[-1] + 1``; the candidate with the highest accuracy on the scores it is fitted on wins, ties
going to the lowest threshold. Tied scores therefore always fall on the same side.

* 10-fold accuracy: for each fold (ascending fold id = file order), the threshold is fitted on the other
  folds and the accuracy measured on the fold; mean and population std (``ddof=0``) over folds.
* "Optimistic" accuracy: the seed's protocol -- the threshold is fitted on all pairs and tested on the
  same pairs, an upper bound, not a result to publish.
* ROC: ``sklearn.metrics.roc_curve(drop_intermediate=False)``; AUC by the trapezoid rule on it.
* EER: where the ROC polyline (linearly interpolated) crosses ``FPR = 1 - TPR``.
* TAR@FAR=x: the highest TPR among ROC points with ``FPR <= x`` (no interpolation; conservative). With
  ``n`` different pairs the smallest FAR a count can show is ``1/n``; a target ``x < 1/n`` (and ``x = 0``)
  cannot be resolved, so its TAR is ``None`` with the reason in ``tar_at_far_note`` -- never a number.
* Recommended thresholds (fitted on *all* pairs; for deployment, not for reporting accuracy):
  ``threshold_at_eer`` -- the candidate where FAR and FRR are closest (ties: lowest) -- and
  ``threshold_at_far[x]`` -- the lowest candidate whose FAR is ``<= x`` (``None`` where not measurable).
* VAL@FAR=1e-3 (facenet protocol): per fold, the lowest candidate threshold whose FAR on the *training*
  folds is ``<= 1e-3``; VAL (TAR) and FAR then measured on the test fold, mean/std over folds. Facenet
  interpolates a fixed distance grid; candidates from the data make it exact and grid-free.
"""
import math
from collections import namedtuple

import numpy as np
from sklearn.metrics import auc as _trapezoid_auc
from sklearn.metrics import roc_curve

from common.errors import ParameterError, UsageError
from common.images import image_key

TAR_FARS = (1e-2, 1e-3, 0.0)
VAL_FAR = 1e-3
METRICS = ('cosine', 'euclidean')
SCORE_DECIMALS = 12  # rounding makes ties identical in Python and Octave/MATLAB (their sums differ in the last bit)
_NORM_FLOOR = 1e-12


# ------------------------------------------------------------------------------------------- pair scores
def match_pairs(labels, pairs, skipped=(), skip_missing=False):
    """Rows in ``labels`` of both images of every pair that can be scored, and the pairs that cannot.

    Labels and pair paths match by :func:`image_key`. A pair naming an image that is not among
    ``labels`` is *dropped* when that image is listed in ``skipped`` (the features file records it as
    left out at extraction, ``extract_features.py --skip-missing``) or when ``skip_missing`` is set;
    otherwise that is an error, since the features do not belong to these pairs.

    Parameters
    ----------
    labels : sequence of str
        One per feature row.
    pairs : sequence of Pair
        ``path1``, ``path2``, ``issame``, ``fold``.
    skipped : sequence of (label, reason)
        Images left out at extraction, with the reason.
    skip_missing : bool
        Drop pairs naming any absent image, recorded or not.

    Returns
    -------
    PairMatch
        ``idx1``, ``idx2`` (int64 rows of the kept pairs), ``kept`` (int64 indices into ``pairs``) and
        ``dropped``: ``[(index into pairs, [reason per absent image])]``.

    Raises
    ------
    UsageError
        Two labels with the same key; images absent and not recorded as skipped (without
        ``skip_missing``): their count and examples.
    """
    rows, duplicates = {}, []
    for i, label in enumerate(labels):
        key = image_key(label)
        if key in rows:
            duplicates.append(label)
        rows[key] = rows.get(key, i)
    if duplicates:
        raise UsageError(f'{len(duplicates)} labels repeat an image already in the features file '
                         f'(same identity/file after normalisation), e.g. {duplicates[:3]}')
    recorded = {image_key(label): reason for label, reason in skipped}
    missing = sorted({p for pair in pairs for p in (pair.path1, pair.path2) if image_key(p) not in rows})
    unrecorded = [p for p in missing if image_key(p) not in recorded]
    if unrecorded and not skip_missing:
        raise ParameterError(lambda n: f'{len(unrecorded)} images named by the pairs are not in the features file, '
                                       f'e.g. {", ".join(unrecorded[:5])} (labels look like '
                                       f'{labels[0] if labels else None!r}); extract them, or pass '
                                       f'{n("skip_missing")} to score only the pairs whose images are there')
    kept, dropped = [], []
    for k, pair in enumerate(pairs):
        reasons = [f'{p}: ' + (f'skipped at extraction ({recorded[image_key(p)]})' if image_key(p) in recorded
                               else 'not in the features file')
                   for p in (pair.path1, pair.path2) if image_key(p) not in rows]
        if reasons:
            dropped.append((k, reasons))
        else:
            kept.append(k)
    idx1 = np.array([rows[image_key(pairs[k].path1)] for k in kept], dtype=np.int64)
    idx2 = np.array([rows[image_key(pairs[k].path2)] for k in kept], dtype=np.int64)
    return PairMatch(idx1, idx2, np.array(kept, dtype=np.int64), dropped)


PairMatch = namedtuple('PairMatch', 'idx1 idx2 kept dropped')


def pair_rows(labels, pairs):
    """Row indices in ``labels`` of both images of every pair (matched by :func:`image_key`).

    Raises
    ------
    UsageError
        Two labels with the same key, or pairs naming images absent from the labels (count + examples).
        :func:`match_pairs` drops such pairs instead, where that is asked for.
    """
    match = match_pairs(labels, pairs)
    return match.idx1, match.idx2


def l2_normalize(features):
    """Rows scaled to unit length (all-zero rows stay zero)."""
    norms = np.sqrt(np.sum(features * features, axis=1, keepdims=True))
    return features / np.maximum(norms, _NORM_FLOOR)


def pair_scores(features, idx1, idx2, metric='cosine'):
    """Similarity per pair: cosine, or minus the Euclidean distance; rounded to ``SCORE_DECIMALS``."""
    a, b = features[idx1], features[idx2]
    if metric == 'cosine':
        a, b = l2_normalize(a), l2_normalize(b)
        scores = np.sum(a * b, axis=1)
    elif metric == 'euclidean':
        scores = -np.sqrt(np.sum((a - b) ** 2, axis=1))
    else:
        raise UsageError(f'unknown metric {metric!r}; use one of {", ".join(METRICS)}')
    return np.round(scores, SCORE_DECIMALS)


# ------------------------------------------------------------------------------------------- metrics


def _threshold_table(scores, issame):
    """Candidate thresholds and, for each, the counts of positives/negatives scored ``<=`` it."""
    unique, inverse = np.unique(scores, return_inverse=True)
    pos = np.bincount(inverse, weights=issame, minlength=len(unique))
    neg = np.bincount(inverse, weights=~issame, minlength=len(unique))
    pos_le = np.concatenate(([0.0], np.cumsum(pos)))
    neg_le = np.concatenate(([0.0], np.cumsum(neg)))
    candidates = np.concatenate(([unique[0] - 1.0], (unique[:-1] + unique[1:]) / 2.0, [unique[-1] + 1.0]))
    return candidates, pos_le, neg_le


def best_threshold(scores, issame):
    """Threshold maximising accuracy of ``score > t`` on these pairs (rule in the module docstring).

    Returns
    -------
    (float, float)
        The threshold and the accuracy it reaches on ``scores`` themselves.
    """
    scores, issame = np.asarray(scores, dtype=np.float64), np.asarray(issame, dtype=bool)
    candidates, pos_le, neg_le = _threshold_table(scores, issame)
    correct = (issame.sum() - pos_le) + neg_le
    k = int(np.argmax(correct))  # first maximum = lowest threshold
    return float(candidates[k]), float(correct[k] / len(scores))


def threshold_at_far(scores, issame, far):
    """Lowest candidate threshold whose false-accept rate on these pairs is ``<= far``."""
    scores, issame = np.asarray(scores, dtype=np.float64), np.asarray(issame, dtype=bool)
    candidates, _, neg_le = _threshold_table(scores, issame)
    n_neg = max(int((~issame).sum()), 1)
    false_accepts = (~issame).sum() - neg_le
    ok = np.flatnonzero(false_accepts <= far * n_neg + 1e-9)
    return float(candidates[ok[0]])


def far_measurable(far, n_neg):
    """Whether ``n_neg`` negatives can resolve a false-accept rate of ``far`` (``far >= 1/n_neg``)."""
    return n_neg > 0 and far * n_neg >= 1.0 - 1e-9


def unmeasurable_far_note(far, n_neg):
    """Why ``far`` cannot be measured with ``n_neg`` negatives (different pairs), in one line."""
    if far <= 0:
        return f'not measurable: no finite number of negatives shows FAR = 0 ({n_neg} resolve FAR >= 1/{n_neg})'
    return (f'not measurable: {n_neg} negatives resolve FAR >= 1/{n_neg} = {1.0 / max(n_neg, 1):.3g}; '
            f'FAR {far:g} needs >= {math.ceil(1.0 / far - 1e-9)}')


def threshold_at_eer(scores, issame):
    """Candidate threshold (``score > t`` = same) where FAR and FRR are closest; ties go to the lowest."""
    scores, issame = np.asarray(scores, dtype=np.float64), np.asarray(issame, dtype=bool)
    candidates, pos_le, neg_le = _threshold_table(scores, issame)
    n_pos, n_neg = max(int(issame.sum()), 1), max(int((~issame).sum()), 1)
    far = (n_neg - neg_le) / n_neg
    frr = pos_le / n_pos
    return float(candidates[int(np.argmin(np.abs(far - frr)))])


def accuracy_at(scores, issame, threshold):
    """Fraction of pairs where ``score > threshold`` agrees with ``issame``."""
    return float(np.mean((np.asarray(scores) > threshold) == np.asarray(issame, dtype=bool)))


def equal_error_rate(fpr, tpr):
    """EER: where the ROC polyline crosses ``FPR = 1 - TPR`` (linear interpolation between ROC points)."""
    gap = fpr + tpr - 1.0  # non-decreasing from -1 (origin) to +1 (corner)
    i = int(np.argmax(gap >= 0.0))
    if gap[i] == 0.0 or i == 0:
        return float(fpr[i])
    t = -gap[i - 1] / (gap[i] - gap[i - 1])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def tar_at_far(fpr, tpr, far, n_neg):
    """Highest TPR among ROC points whose false accepts are ``<= far * n_neg`` (exact in counts)."""
    false_accepts = np.rint(fpr * n_neg)
    ok = false_accepts <= far * n_neg + 1e-9
    return float(tpr[ok].max())


def verification_metrics(scores, issame, folds, fold_scores=None):
    """All verification metrics for one set of pairs.

    Parameters
    ----------
    scores : array (n,)
        Similarity per pair, each pair scored by a model that did not see its fold (out-of-fold scores).
    issame : array (n,) of bool
        Ground truth.
    folds : array (n,) of int
        Fold id per pair; folds are taken in ascending id order.
    fold_scores : array (n_folds, n), optional
        Row ``k``: every pair scored by the model fitted without fold ``k`` (e.g. PCA on the other folds),
        used to fit fold ``k``'s threshold on its training pairs. Default: ``scores`` for every fold.

    Returns
    -------
    dict
        Fractions in [0, 1]: ``accuracy_mean/std`` (None with fewer than 2 folds), ``fold_accuracies``,
        ``fold_thresholds``, ``optimistic_accuracy`` + ``optimistic_threshold``, ``eer``,
        ``one_minus_eer``, ``auc``, ``tar_at_far`` (``{far: tar}``, ``None`` where ``far < 1/n_different``,
        reason in ``tar_at_far_note``), ``min_measurable_far``, ``threshold_at_eer`` and
        ``threshold_at_far`` (``{far: threshold or None}``, fitted on all pairs), ``val``/``val_std``/
        ``val_far`` (facenet VAL@FAR=1e-3), ``roc`` (``fpr``, ``tpr``, ``thresholds`` arrays) and counts.

    Raises
    ------
    ValueError
        Mismatched lengths, or only one class present.
    """
    scores = np.asarray(scores, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    folds = np.asarray(folds)
    if not (scores.shape == issame.shape == folds.shape) or scores.ndim != 1:
        raise ValueError(f'scores {scores.shape}, issame {issame.shape}, folds {folds.shape} must be equal 1-D')
    n_pos, n_neg = int(issame.sum()), int((~issame).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f'need both same and different pairs (have {n_pos} same, {n_neg} different)')
    fold_ids = np.unique(folds)
    if fold_scores is None:
        fold_scores = np.broadcast_to(scores, (len(fold_ids), len(scores)))
    fold_scores = np.asarray(fold_scores, dtype=np.float64)
    if fold_scores.shape != (len(fold_ids), len(scores)):
        raise ValueError(f'fold_scores must be ({len(fold_ids)}, {len(scores)}), got {fold_scores.shape}')

    accs, thresholds, vals, val_fars = [], [], [], []
    if len(fold_ids) >= 2:
        for k, fold in enumerate(fold_ids):
            test, train = folds == fold, folds != fold
            threshold, _ = best_threshold(fold_scores[k][train], issame[train])
            accs.append(accuracy_at(scores[test], issame[test], threshold))
            thresholds.append(threshold)
            if issame[train].all():
                continue
            val_threshold = threshold_at_far(fold_scores[k][train], issame[train], VAL_FAR)
            accepted = scores[test] > val_threshold
            if issame[test].any():
                vals.append(float(accepted[issame[test]].mean()))
            if (~issame[test]).any():
                val_fars.append(float(accepted[~issame[test]].mean()))

    optimistic_threshold, optimistic_accuracy = best_threshold(scores, issame)
    fpr, tpr, roc_thresholds = roc_curve(issame, scores, drop_intermediate=False)
    eer = equal_error_rate(fpr, tpr)
    return {
        'n_pairs': int(len(scores)), 'n_same': n_pos, 'n_different': n_neg, 'n_folds': int(len(fold_ids)),
        'accuracy_mean': float(np.mean(accs)) if accs else None,
        'accuracy_std': float(np.std(accs)) if accs else None,
        'fold_accuracies': accs, 'fold_thresholds': thresholds,
        'optimistic_accuracy': optimistic_accuracy, 'optimistic_threshold': optimistic_threshold,
        'eer': eer, 'one_minus_eer': 1.0 - eer,
        'auc': float(_trapezoid_auc(fpr, tpr)),
        'tar_at_far': {far: tar_at_far(fpr, tpr, far, n_neg) if far_measurable(far, n_neg) else None
                       for far in TAR_FARS},
        'tar_at_far_note': {far: unmeasurable_far_note(far, n_neg) for far in TAR_FARS
                            if not far_measurable(far, n_neg)},
        'min_measurable_far': 1.0 / n_neg,
        'threshold_at_eer': threshold_at_eer(scores, issame),
        'threshold_at_far': {far: threshold_at_far(scores, issame, far) if far_measurable(far, n_neg) else None
                             for far in TAR_FARS},
        'val': float(np.mean(vals)) if vals else None,
        'val_std': float(np.std(vals)) if vals else None,
        'val_far': float(np.mean(val_fars)) if val_fars else None,
        'roc': {'fpr': fpr, 'tpr': tpr, 'thresholds': roc_thresholds},
    }
