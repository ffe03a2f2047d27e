"""LFW-style verification from a features ``.mat`` and a pairs file: scores, metrics, JSON, ROC plot.

The ``.mat`` holds ``data`` (N x D float) and ``label`` (N x 1 cell of ``Name/Name_0001.jpg``), as written by
``extract_features.py`` and loaded by the seed's MATLAB evaluator (:mod:`common.features_mat`). Pairs are read
by :func:`data_tools.pairs.read_pairs` (official ``pairs.txt`` or the seed's ``pair.label``); matching them
to rows, scoring and the metrics follow :mod:`common.verification`.
"""
import json
import math
import os

import numpy as np

from common.checks import check_number
from common.errors import ParameterError, UsageError
from common.features_mat import read_features
from common.fileio import atomic_write, check_outputs, save_figure
from common.verification import (METRICS, TAR_FARS, VAL_FAR, image_key, l2_normalize, match_pairs, pair_scores,
                                 verification_metrics)
from data_tools.pairs import read_pairs


def fold_pca_scores(features, idx1, idx2, folds, n_components, metric='cosine', l2=False):
    """Scores under a PCA fitted, for each fold, on the images of the *other* folds' pairs only.

    Returns
    -------
    (array (n,), array (n_folds, n))
        Out-of-fold scores (each pair scored by the PCA that did not see its fold) and the full
        per-fold score matrix used to fit each fold's threshold.
    """
    from sklearn.decomposition import PCA
    fold_ids = np.unique(folds)
    if len(fold_ids) < 2:
        raise ParameterError(lambda n: f'{n("pca")} needs at least 2 folds (it is fitted on the training folds)')
    fold_scores = np.empty((len(fold_ids), len(idx1)))
    for k, fold in enumerate(fold_ids):
        train = folds != fold
        train_rows = np.union1d(idx1[train], idx2[train])
        if n_components > min(len(train_rows), features.shape[1]):
            raise ParameterError(lambda n: f'{n("pca")} {n_components} exceeds what fold {fold} can fit: '
                                           f'{len(train_rows)} training images of dimension {features.shape[1]}')
        pca = PCA(n_components=n_components, svd_solver='full').fit(features[train_rows])
        projected = pca.transform(features).astype(np.float64)
        if l2:
            projected = l2_normalize(projected)
        fold_scores[k] = pair_scores(projected, idx1, idx2, metric)
    scores = np.empty(len(idx1))
    for k, fold in enumerate(fold_ids):
        scores[folds == fold] = fold_scores[k][folds == fold]
    return scores, fold_scores


def pair_coverage(pairs, match):
    """How many pairs were scored and dropped, per fold, and every dropped pair with its reasons.

    Returns
    -------
    dict
        ``total``, ``scored``, ``dropped``; ``per_fold``: ``[{fold, pairs, scored, dropped, same,
        different}]`` (``same``/``different``: scored pairs of each kind); ``dropped_pairs``:
        ``[{index, fold, path1, path2, same, reasons}]`` (``index``: 0-based position in the pairs file).
    """
    kept = set(match.kept.tolist())
    per_fold = {}
    for k, pair in enumerate(pairs):
        row = per_fold.setdefault(int(pair.fold), {'fold': int(pair.fold), 'pairs': 0, 'scored': 0, 'dropped': 0,
                                                   'same': 0, 'different': 0})
        row['pairs'] += 1
        if k in kept:
            row['scored'] += 1
            row['same' if pair.issame else 'different'] += 1
        else:
            row['dropped'] += 1
    return {'total': len(pairs), 'scored': len(kept), 'dropped': len(match.dropped),
            'per_fold': [per_fold[f] for f in sorted(per_fold)],
            'dropped_pairs': [{'index': k, 'fold': int(pairs[k].fold), 'path1': pairs[k].path1,
                               'path2': pairs[k].path2, 'same': bool(pairs[k].issame), 'reasons': reasons}
                              for k, reasons in match.dropped]}


def coverage_lines(coverage, examples=5):
    """Lines saying how many pairs were dropped and why (nothing when every pair was scored)."""
    if not coverage['dropped']:
        return []
    images = sorted({reason for pair in coverage['dropped_pairs'] for reason in pair['reasons']})
    lines = [f'dropped {coverage["dropped"]} of {coverage["total"]} pairs, naming {len(images)} image(s) '
             f'without features:']
    lines += [f'  {reason}' for reason in images[:examples]]
    if len(images) > examples:
        lines.append(f'  ... and {len(images) - examples} more (all in the JSON: pairs.dropped_pairs)')
    lines.append('scored pairs per fold: ' + ', '.join(
        f'{row["fold"] + 1}: {row["scored"]}/{row["pairs"]}' for row in coverage['per_fold']))
    return lines


def evaluate_verification(features_path, pairs_path, metric='cosine', l2=False, pca=None, skip_missing=False):
    """Load features and pairs, score every pair that can be and compute :func:`verification_metrics`.

    Pairs naming an image the features file records as skipped at extraction are dropped and reported
    (``result['pairs']``, :func:`pair_coverage`); images absent without such a record are an error
    unless ``skip_missing``. Folds keep their pairs' fold ids, so each fold's threshold is still fitted on
    the other folds' remaining pairs; a fold left without pairs drops out of the k-fold mean.

    Parameters
    ----------
    metric : {'cosine', 'euclidean'}
        Similarity; Euclidean scores are ``-distance``.
    l2 : bool
        L2-normalise features first (and again after PCA), e.g. for Euclidean distance on the unit sphere.
    pca : int, optional
        Project to ``pca`` dimensions, fitted per fold on the training folds' images only.
    skip_missing : bool
        Also drop pairs naming images that are absent from the features file without a record.

    Returns
    -------
    dict
        ``config`` (inputs and options), ``metrics`` (see :func:`verification_metrics`) and ``pairs``
        (see :func:`pair_coverage`).
    """
    if metric not in METRICS:
        raise UsageError(f'unknown metric {metric!r}; use one of {", ".join(METRICS)}')
    check_number(pca, 'pca', minimum=1, integer=True, optional=True)
    data, labels, skipped = read_features(features_path, with_skipped=True)
    all_pairs = read_pairs(pairs_path)
    match = match_pairs(labels, all_pairs, skipped, skip_missing)
    coverage = pair_coverage(all_pairs, match)
    pairs = [all_pairs[k] for k in match.kept]
    idx1, idx2 = match.idx1, match.idx2
    issame = np.array([p.issame for p in pairs], dtype=bool)
    folds = np.array([p.fold for p in pairs], dtype=np.int64)
    if issame.all() or not issame.any():
        dropped = f' after dropping {coverage["dropped"]} of {coverage["total"]}' if coverage['dropped'] else ''
        raise UsageError(f'{pairs_path}: need both same and different pairs, all {len(pairs)} pairs'
                         f'{dropped} are {"same" if issame.all() else "different"}')
    metrics = pair_metrics(data, idx1, idx2, issame, folds, metric, l2, pca)
    config = {'features': os.path.abspath(features_path), 'pairs': os.path.abspath(pairs_path),
              'n_images': len(labels), 'feature_dim': int(data.shape[1]), 'metric': metric, 'l2': bool(l2),
              'pca': pca, 'score': 'cosine similarity' if metric == 'cosine' else 'minus Euclidean distance',
              'rule': 'same if score > threshold; threshold fitted on the other folds',
              'skipped_at_extraction': len(skipped), 'skip_missing': bool(skip_missing), **pairs_usage(pairs)}
    return {'config': config, 'metrics': metrics, 'pairs': coverage}


def pair_metrics(features, idx1, idx2, issame, folds, metric='cosine', l2=False, pca=None):
    """:func:`verification_metrics` of the pairs ``(idx1[k], idx2[k])`` of rows of ``features`` (N x D).

    The scoring shared by the ``.mat`` + pairs path and the insightface ``.bin`` path: optional L2
    normalisation, optional per-fold PCA (:func:`fold_pca_scores`), then :func:`pair_scores`.
    """
    if metric not in METRICS:
        raise UsageError(f'unknown metric {metric!r}; use one of {", ".join(METRICS)}')
    features = np.asarray(features, dtype=np.float64)
    if l2:
        features = l2_normalize(features)
    if pca:
        scores, fold_scores = fold_pca_scores(features, idx1, idx2, folds, pca, metric, l2)
    else:
        scores, fold_scores = pair_scores(features, idx1, idx2, metric), None
    return verification_metrics(scores, issame, folds, fold_scores)


def pairs_usage(pairs):
    """How much data the pairs really use: ``n_identities`` and ``n_pair_images`` (distinct)."""
    keys = {image_key(p) for pair in pairs for p in (pair.path1, pair.path2)}
    return {'n_identities': len({k.rpartition('/')[0] for k in keys}), 'n_pair_images': len(keys)}


def _pct(value):
    return 'n/a' if value is None else f'{100.0 * value:.2f}%'


def format_table(result):
    """A short plain-text table of the headline numbers (percentages)."""
    m, c = result['metrics'], result['config']
    acc = ('n/a (one fold)' if m['accuracy_mean'] is None else
           f'{100 * m["accuracy_mean"]:.2f}% +- {100 * m["accuracy_std"]:.2f}%')
    val = 'n/a' if m['val'] is None else f'{_pct(m["val"])} +- {_pct(m["val_std"])} @ FAR={_pct(m["val_far"])}'
    used = ', '.join(f'{c[k]} {name}' for k, name in (('n_identities', 'identities'),
                                                     ('n_pair_images', 'distinct images')) if c.get(k) is not None)
    dropped = result.get('pairs', {}).get('dropped', 0)
    rows = [
        ('pairs', f'{m["n_pairs"]} ({m["n_same"]} same, {m["n_different"]} different), {m["n_folds"]} folds'
                  + (f'; {used}' if used else '')
                  + (f'; {dropped} dropped (images without features)' if dropped else '')),
        ('similarity', c['metric'] + (' + l2' if c['l2'] else '') + (f' + PCA {c["pca"]}' if c['pca'] else '')),
        (f'{m["n_folds"]}-fold accuracy', acc),
        ('best-threshold accuracy', f'{_pct(m["optimistic_accuracy"])} (optimistic: threshold fitted on test pairs)'),
        ('EER / 100%-EER', f'{_pct(m["eer"])} / {_pct(m["one_minus_eer"])}'),
        ('AUC', f'{100 * m["auc"]:.3f}%'),
    ]
    notes = m.get('tar_at_far_note', {})
    rows += [(f'TAR @ FAR={100 * far:g}%', _pct(m['tar_at_far'][far]) if far not in notes else
              f'n/a ({notes[far]})') for far in TAR_FARS]
    if m.get('threshold_at_eer') is not None:
        at_far = ', '.join(f'{t:.4f} @ FAR={100 * far:g}%' for far, t in m['threshold_at_far'].items()
                           if t is not None)
        rows.append(('threshold (all pairs)', f'{m["threshold_at_eer"]:.4f} @ EER' + (f'; {at_far}' if at_far else '')))
    rows.append((f'VAL @ FAR={VAL_FAR:g} (facenet)', val))
    width = max(len(name) for name, _ in rows)
    return '\n'.join(f'{name.ljust(width)}  {value}' for name, value in rows)


def _finite_or_none(values):
    return [float(v) if math.isfinite(v) else None for v in values]


def to_json_dict(result, include_roc=True):
    """JSON-ready copy: ``tar_at_far`` keys as strings, ROC arrays as lists (``inf`` thresholds -> null)."""
    m = dict(result['metrics'])
    roc = m.pop('roc')
    for key in ('tar_at_far', 'tar_at_far_note', 'threshold_at_far'):
        if key in m:
            m[key] = {f'{far:g}': value for far, value in m[key].items()}
    out = {'config': result['config'], 'metrics': m}
    if 'pairs' in result:
        out['pairs'] = result['pairs']
    if include_roc:
        out['roc'] = {'fpr': roc['fpr'].tolist(), 'tpr': roc['tpr'].tolist(),
                      'thresholds': _finite_or_none(roc['thresholds'])}
    return out


def write_json(result, path):
    """Write the result (config, metrics, pairs scored and dropped, ROC points) as JSON, atomically."""
    with atomic_write(path, 'w', encoding='utf-8') as f:
        json.dump(to_json_dict(result), f, indent=1)


def plot_roc(result, path):
    """ROC figure: full curve, the seed's zoomed top-left corner (FAR <= 10%, TAR >= 90%), and log-FAR."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    m = result['metrics']
    fpr, tpr, eer = m['roc']['fpr'], m['roc']['tpr'], m['eer']
    label = f'AUC {100 * m["auc"]:.2f}%, EER {100 * eer:.2f}%'
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    for ax, title in zip(axes, ('ROC', 'zoomed (seed view)', 'log FAR')):
        ax.plot(fpr, tpr, lw=1.5, label=label)
        ax.plot([eer], [1 - eer], 'o', ms=5, label='EER point')
        ax.set_xlabel('false accept rate (FAR)')
        ax.set_ylabel('true accept rate (TAR)')
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    axes[0].plot([0, 1], [0, 1], 'k:', lw=0.8)
    axes[0].set_xlim(0, 1)
    axes[0].set_ylim(0, 1)
    axes[1].set_xlim(0, 0.1)
    # the seed's corner (TAR >= 90%); lowered for weaker models so their curve stays in view
    tar_at_1 = float(np.max(np.asarray(tpr)[np.asarray(fpr) <= 0.01], initial=0.0))
    axes[1].set_ylim(min(0.9, np.floor(tar_at_1 * 10) / 10), 1.0)
    axes[2].set_xscale('log')
    axes[2].set_xlim(max(1e-4, 0.5 / max(m['n_different'], 1)), 1)
    axes[2].set_ylim(0, 1)
    axes[0].legend(loc='lower right')
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def recommended_threshold(evaluation, far=None):
    """The decision threshold an evaluation recommends for ``cosine > threshold`` = same person.

    Parameters
    ----------
    evaluation : str or dict
        An evaluation JSON written by ``lfw_eval.py --json`` (or :func:`write_json`), or its dict.
    far : float, optional
        Target false-accept rate (one of the evaluated ``TAR_FARS``, e.g. ``1e-3``); ``None`` gives the
        threshold at the EER.

    Raises
    ------
    UsageError
        The evaluation holds no such threshold (older file, FAR not evaluated or not measurable with its
        pairs), or its scores are not plain cosine similarities (``pca`` or ``metric='euclidean'``).
    """
    if isinstance(evaluation, (str, os.PathLike)):
        try:
            with open(evaluation, encoding='utf-8') as f:
                evaluation = json.load(f)
        except (OSError, ValueError) as err:
            raise UsageError(f'cannot read evaluation JSON {evaluation}: {err}') from None
    config, metrics = evaluation.get('config', {}), evaluation.get('metrics', {})
    if config.get('metric', 'cosine') != 'cosine' or config.get('pca'):
        raise UsageError(f'evaluation scored {config.get("metric")} with pca={config.get("pca")}: its thresholds '
                         'do not apply to plain cosine similarities')
    if far is None:
        value = metrics.get('threshold_at_eer')
        what = 'threshold_at_eer'
    else:
        table = {float(k): v for k, v in (metrics.get('threshold_at_far') or {}).items()}
        value = table.get(float(far))
        what = f'threshold_at_far for far={far:g} (evaluated: {sorted(table)})'
        note = {float(k): v for k, v in (metrics.get('tar_at_far_note') or {}).items()}.get(float(far))
        if note:
            what += f'; {note}'
    if value is None:
        raise UsageError(f'the evaluation holds no {what}')
    return float(value)


def run_evaluation(features, pairs, json_path=None, roc_path=None, metric='cosine', l2=False, pca=None,
                   skip_missing=False):
    """What ``lfw_eval.py`` does: evaluate, print the table, write the JSON / ROC when asked."""
    check_outputs({'json_path': json_path, 'roc_path': roc_path}, inputs={'features': features, 'pairs': pairs},
                  pictures={'roc_path': 'matplotlib'})
    result = evaluate_verification(features, pairs, metric=metric, l2=l2, pca=pca, skip_missing=skip_missing)
    return report_verification(result, json_path, roc_path, lead_lines=coverage_lines(result['pairs']))


def report_verification(result, json_path=None, roc_path=None, lead_lines=()):
    """Write the JSON / ROC of a verification result when asked, then print ``lead_lines`` and its table;
    returns the result. Files come first, so a closed standard output (``| head``) loses none."""
    wrote = []
    if json_path:
        write_json(result, json_path)
        wrote.append(json_path)
    if roc_path:
        plot_roc(result, roc_path)
        wrote.append(roc_path)
    for line in lead_lines:
        print(line)
    print(format_table(result))
    for path in wrote:
        print(f'wrote {path}')
    return result
