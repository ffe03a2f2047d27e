"""Scoring an identity classifier on probes: accuracy, top-k, per-class precision/recall/F1, confusion, open set.

Closed set (probes whose identity is enrolled, "known"): the prediction is the best-scoring identity.
``accuracy`` is the fraction of known probes predicted right; ``top_k[k]`` the fraction whose identity is among
the ``k`` best. Per class (``sklearn.metrics.precision_recall_fscore_support``, one row per gallery identity
that has probes): precision = right predictions of the class / all predictions of it, recall = right / its
probes, F1 their harmonic mean (0 where undefined); ``macro_f1`` is their plain mean, ``weighted_f1`` the mean
weighted by probes per class.

Open set (when the classifier has a threshold and there are probes of identities not enrolled, "unknown"):
a probe is accepted as its best identity when its score is ``> threshold``, else it is "unknown". ``dir``:
known probes accepted *and* right; ``far``: unknown probes accepted; ``accuracy``: right decisions (right
identity, or "unknown" for unknown probes) over all probes; ``macro_f1`` over the identities with probes plus
the class "unknown".
"""
import json
import os

import numpy as np

from common.checks import check_seed
from common.errors import ParameterError, UsageError
from common.fileio import atomic_write, check_outputs, save_figure
from identification.classifiers import UNKNOWN, fit_classifier
from identification.gallery import check_gallery_probe, load_gallery_probe, skipped_lines


def closed_set_report(clf, features, identities, top_k=5):
    """Closed-set metrics of ``clf`` on known probes (see module docstring).

    Returns
    -------
    dict
        ``accuracy``, ``top_k`` (``{k: rate}`` for ``1..top_k``), ``macro_f1``, ``weighted_f1``,
        ``macro_precision``, ``macro_recall``, ``per_class`` (pandas DataFrame: ``identity``, ``precision``,
        ``recall``, ``f1``, ``support``), ``confusion`` (``C x C`` counts over :attr:`clf.names`),
        ``ranked`` names and ``scores`` (N x k), ``n_known``.
    """
    import pandas as pd
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
    identities = np.asarray(identities).astype(str)
    if not len(identities):
        raise UsageError('no probe of an enrolled identity: nothing to score (check the labels)')
    ranked, scores = clf.rank(features, top_k)
    pred = ranked[:, 0]
    hit = ranked == identities[:, None]
    labels = [n for n in clf.names if n in set(identities)]
    precision, recall, f1, support = precision_recall_fscore_support(identities, pred, labels=labels,
                                                                     zero_division=0)
    table = pd.DataFrame({'identity': labels, 'precision': precision, 'recall': recall, 'f1': f1,
                          'support': support.astype(int)})
    return {'n_known': int(len(identities)), 'accuracy': float(np.mean(pred == identities)),
            'top_k': {k: float(hit[:, :k].any(axis=1).mean()) for k in range(1, ranked.shape[1] + 1)},
            'macro_f1': float(np.mean(f1)), 'weighted_f1': float(np.average(f1, weights=support)),
            'macro_precision': float(np.mean(precision)), 'macro_recall': float(np.mean(recall)),
            'per_class': table, 'confusion': confusion_matrix(identities, pred, labels=clf.names),
            'ranked': ranked, 'scores': scores}


def open_set_report(clf, features, identities):
    """Open-set metrics at ``clf.threshold`` over all probes (module docstring); ``None`` without a threshold."""
    from sklearn.metrics import f1_score
    if clf.threshold is None:
        return None
    identities = np.asarray(identities).astype(str)
    known = np.isin(identities, clf.names)
    truth = np.where(known, identities, UNKNOWN)
    decided, _ = clf.identify(features, open_set=True)
    labels = sorted(set(truth))
    return {'threshold': clf.threshold, 'n_known': int(known.sum()), 'n_unknown': int((~known).sum()),
            'dir': float(np.mean(decided[known] == truth[known])) if known.any() else None,
            'far': float(np.mean(decided[~known] != UNKNOWN)) if (~known).any() else None,
            'known_rejected': float(np.mean(decided[known] == UNKNOWN)) if known.any() else None,
            'accuracy': float(np.mean(decided == truth)),
            'macro_f1': float(f1_score(truth, decided, labels=labels, average='macro', zero_division=0)),
            'decisions': decided}


def plot_confusion(confusion, names, path, title=''):
    """Row-normalised confusion matrix (each row: where a true identity's probes went) as a PNG.

    Colours follow the square root of the share (a probe in twenty still shows), every off-diagonal cell with
    errors carries its count in red, and identity names label the axes up to 100 identities (font shrinking with
    their number; beyond, only indices). Rows without probes stay white.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.colors import PowerNorm
    confusion = np.asarray(confusion, dtype=np.float64)
    n = len(names)
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.full_like(confusion, np.nan), where=rows > 0)
    side = float(np.clip(3 + 0.16 * n, 5, 18))
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(share, cmap='Blues', norm=PowerNorm(0.5, vmin=0, vmax=1), interpolation='nearest')
    cbar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    cbar.set_label("share of the true identity's probes (square-root scale)")
    size = float(np.clip(300 / max(n, 1), 4.5, 10))
    for i, j in zip(*np.nonzero((confusion > 0) & ~np.eye(n, dtype=bool))):
        ax.text(j, i, str(int(confusion[i, j])), ha='center', va='center', color='#c0392b', fontsize=size + 1,
                fontweight='bold')
    if n <= 100:
        ax.set_xticks(range(n), names, rotation=90, fontsize=size)
        ax.set_yticks(range(n), names, fontsize=size)
    ax.set_xlabel('predicted identity')
    ax.set_ylabel('true identity')
    ax.set_title(title + ('\nred: number of probes given to the wrong identity' if n > 1 else ''), fontsize=11)
    fig.tight_layout()
    save_figure(fig, path, dpi=100, metadata={'Software': None})
    plt.close(fig)
    return path


def format_report(result, max_rows=100):
    """Plain-text summary and per-class table (all rows up to ``max_rows`` identities, else the lowest F1)."""
    c, o, t = result['closed_set'], result['open_set'], result['threshold']
    lines = [f'{result["classifier"]}: gallery {result["n_gallery"]} images of {result["n_gallery_identities"]} '
             f'identities (fit {result["fit_seconds"]:.2f} s); probes {result["n_probe"]} '
             f'({result["n_known_probes"]} known, {result["n_unknown_probes"]} unknown)',
             f'closed set: accuracy {100 * c["accuracy"]:.2f}%  '
             + '  '.join(f'top-{k} {100 * v:.2f}%' for k, v in c['top_k'].items()
                         if k > 1 and k in (5, max(c['top_k'])))
             + f'  macro F1 {c["macro_f1"]:.4f}  weighted F1 {c["weighted_f1"]:.4f}']
    if t['threshold'] is None:
        lines.append(f'open set: no threshold ({t.get("reason", "")})')
    else:
        lines.append(f'open-set threshold {t["threshold"]:.4f}: impostor FAR {100 * t["impostor_far"]:.2f}% on '
                     f'{t["n_impostors"]} gallery images held out by identity (target {t["target_far"]:g})'
                     + (f'; {t["note"]}' if t.get('note') else '')
                     + (f'; {t["folds_note"]}' if t.get('folds_note') else ''))
        if o is not None and o['far'] is not None:
            lines.append(f'open set on probes: DIR {100 * o["dir"]:.2f}%  FAR {100 * o["far"]:.2f}%  '
                         f'accuracy {100 * o["accuracy"]:.2f}%  macro F1 (with "unknown") {o["macro_f1"]:.4f}')
        elif o is not None:
            lines.append(f'open set on probes: no unknown probes; {100 * o["known_rejected"]:.2f}% of known probes '
                         'rejected as unknown at the threshold')
    table = c['per_class']
    shown = table if len(table) <= max_rows else table.nsmallest(20, 'f1')
    if len(shown) < len(table):
        lines.append(f'per class: the 20 lowest F1 of {len(table)} (all in the CSV / JSON)')
    lines.append(shown.to_string(index=False, float_format=lambda v: f'{v:.4f}'))
    return '\n'.join(lines)


def json_ready(result):
    """The JSON written by ``identify.py --classifier --json``."""
    c, o = result['closed_set'], result['open_set']
    out = {k: v for k, v in result.items() if k not in ('closed_set', 'open_set', 'predictions')}
    out.update(accuracy=c['accuracy'], macro_f1=c['macro_f1'], weighted_f1=c['weighted_f1'],
               macro_precision=c['macro_precision'], macro_recall=c['macro_recall'],
               top_k={str(k): v for k, v in c['top_k'].items()},
               per_class=c['per_class'].to_dict(orient='records'),
               open_set=None if o is None else {k: v for k, v in o.items() if k != 'decisions'})
    return out


def score_classifier(clf, features, identities, top_k=5):
    """Closed- and open-set report of a fitted ``clf`` on probe ``features`` / ``identities``.

    Returns
    -------
    dict
        ``closed_set`` (:func:`closed_set_report` on the known probes), ``open_set``
        (:func:`open_set_report`), counts and ``predictions`` (pandas DataFrame, one row per probe).
    """
    import pandas as pd
    features, identities = np.asarray(features), np.asarray(identities).astype(str)
    if features.ndim != 2 or len(features) != len(identities):
        raise UsageError(f'probe features must be N x D with one identity each, got {features.shape} and '
                         f'{len(identities)} identities')
    if top_k < 1:
        raise ParameterError(lambda n: f'{n("top_k")} must be >= 1, got {top_k}')
    known = np.isin(identities, clf.names)
    if not known.any():
        raise UsageError('no probe identity is in the gallery: nothing to identify (check the labels)')
    closed = closed_set_report(clf, features[known], identities[known], top_k)
    opened = open_set_report(clf, features, identities)
    ranked, scores = clf.rank(features, top_k)
    predictions = pd.DataFrame({'identity': identities, 'known': known, 'predicted': ranked[:, 0],
                                'score': scores[:, 0], f'top{ranked.shape[1]}': [';'.join(r) for r in ranked]})
    if opened is not None:
        predictions['open_set'] = opened['decisions']
    return {'closed_set': closed, 'open_set': opened, 'n_probe': int(len(identities)),
            'n_known_probes': int(known.sum()), 'n_unknown_probes': int((~known).sum()),
            'predictions': predictions}


def run_classifier_identification(gallery_path, probe_path=None, gallery_per_identity=None, unknown_fraction=0.0,
                                  seed=0, far=0.01, classifier='svm', top_k=5, threshold_folds=5,
                                  predictions_path=None, json_path=None, per_class_path=None,
                                  confusion_path=None, save_path=None):
    """What ``identify.py --classifier KIND`` does: fit on the gallery, score the probes, print and write.

    Gallery/probe selection is that of :func:`identification.cosine.run_identification`
    (``probe_path``, or ``gallery_per_identity`` + ``unknown_fraction`` to split one file).

    Returns
    -------
    dict
        :func:`score_classifier`'s result plus ``classifier``, ``threshold`` (value and how it was chosen),
        ``fit_seconds`` and the counts; ``model`` is the fitted :class:`IdentityClassifier`.
    """
    check_gallery_probe(probe_path, gallery_per_identity, unknown_fraction, far)
    if threshold_folds < 2:
        raise ParameterError(lambda n: f'{n("threshold_folds")} must be >= 2, got {threshold_folds}')
    check_seed(seed)
    if top_k < 1:
        raise ParameterError(lambda n: f'{n("top_k")} must be >= 1, got {top_k}')
    check_outputs({'predictions_path': predictions_path, 'json_path': json_path, 'per_class_path': per_class_path,
                   'confusion_path': confusion_path, 'save_path': save_path},
                  inputs={'gallery_path': gallery_path, 'probe_path': probe_path},
                  pictures={'confusion_path': 'matplotlib'})
    gallery, gallery_ids, probe, probe_ids, probe_labels, split, skipped = load_gallery_probe(
        gallery_path, probe_path, gallery_per_identity, unknown_fraction, seed)
    info = {'gallery': os.path.abspath(gallery_path), 'probe': probe_path and os.path.abspath(probe_path)}
    clf = fit_classifier(gallery, gallery_ids, classifier, far, threshold_folds, seed, info)
    result = score_classifier(clf, probe, probe_ids, top_k)
    result['predictions'].insert(0, 'probe', probe_labels)
    result.update(classifier=classifier, n_gallery=int(len(gallery)),
                  n_gallery_identities=int(len(clf.names)), fit_seconds=clf.info['fit_seconds'],
                  threshold_seconds=clf.info['threshold_seconds'],
                  threshold={'threshold': clf.threshold, **clf.threshold_info}, split=split, seed=seed,
                  gallery=info['gallery'], probe=info['probe'],
                  skipped_at_extraction=[{'image': label, 'reason': reason} for label, reason in skipped])
    wrote = []  # every file first, then the report: a closed standard output (| head) loses no file
    if per_class_path:
        with atomic_write(per_class_path, 'w', encoding='utf-8', newline='') as f:
            result['closed_set']['per_class'].to_csv(f, index=False)
        wrote.append(f'wrote {per_class_path}')
    if predictions_path:
        with atomic_write(predictions_path, 'w', encoding='utf-8', newline='') as f:
            result['predictions'].to_csv(f, index=False)
        wrote.append(f'wrote {predictions_path}')
    if confusion_path:
        c = result['closed_set']
        plot_confusion(c['confusion'], clf.names, confusion_path,
                       f'{classifier}: accuracy {100 * c["accuracy"]:.2f}%, macro F1 {c["macro_f1"]:.3f} '
                       f'({c["n_known"]} known probes)')
        wrote.append(f'wrote {confusion_path}')
    if save_path:
        clf.save(save_path)
        wrote.append(f'wrote {save_path} ({clf!r})')
    if json_path:
        with atomic_write(json_path, 'w', encoding='utf-8') as f:
            json.dump(json_ready(result), f, indent=1)
        wrote.append(f'wrote {json_path}')
    for line in skipped_lines(skipped):
        print(line)
    print(format_report(result))
    for line in wrote:
        print(line)
    result['model'] = clf
    return result
