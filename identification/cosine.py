"""Closed- and open-set face identification by cosine from features ``.mat`` files (gallery vs probe).

What ``lfw_verification/identify.py`` runs without ``--classifier`` (with it: :mod:`identification.report`).

Closed set: every probe whose identity is in the gallery is ranked against the gallery identities, either by
its best cosine to any gallery image ("image", nearest neighbour) or by its cosine to each identity's centroid
(mean of the L2-normalised gallery features, renormalised) ("centroid"); top-1 and top-5 accuracy.

Open set: probes of identities absent from the gallery must come out "unknown". A probe is accepted when its
top-1 score is ``> threshold``, otherwise it is unknown. For each threshold: the detection-and-identification
rate (known probes accepted *and* correct), the false-accept rate (unknown probes accepted) and the open-set
accuracy (known probes accepted and correct + unknown probes rejected, over all probes). The operating
threshold is the lowest one whose false-accept rate is ``<= far`` (same candidate rule as verification).

The identity of an image is the folder part of its label (``Name/Name_0001.jpg`` -> ``Name``), after the
same normalisation as verification (:func:`identification.gallery.identity_of`).
"""
import json

import numpy as np

from common.checks import check_seed
from common.errors import UsageError
from common.fileio import atomic_write, check_outputs
from common.verification import l2_normalize, threshold_at_far
from identification.gallery import check_gallery_probe, load_gallery_probe, skipped_lines

METHODS = ('image', 'centroid')
TOP_K = 5


def _rank_identities(similarity, top_k):
    """Indices of the ``top_k`` best columns per row, best first."""
    k = min(top_k, similarity.shape[1])
    part = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(similarity, part, axis=1), axis=1, kind='stable')
    return np.take_along_axis(part, order, axis=1)


def identity_scores(gallery, gallery_ids, probe, method='image'):
    """Probe x identity cosine scores, and the identity names (columns) in sorted order."""
    names, codes = np.unique(np.asarray(gallery_ids), return_inverse=True)
    g, p = l2_normalize(np.asarray(gallery, np.float64)), l2_normalize(np.asarray(probe, np.float64))
    if method == 'image':
        order = np.argsort(codes, kind='stable')
        starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
        return np.maximum.reduceat(p @ g[order].T, starts, axis=1), names
    if method == 'centroid':
        centroids = np.zeros((len(names), g.shape[1]))
        np.add.at(centroids, codes, g)
        return p @ l2_normalize(centroids).T, names
    raise ValueError(f'unknown method {method!r}')


def rank_probes(gallery, gallery_ids, probe, method='image', chunk=2048):
    """Top-``TOP_K`` identity names per probe (best first) and the top-1 score, ``chunk`` probes at a time.

    Chunking keeps memory at ``chunk`` x gallery scores, so a whole LFW-sized split fits.
    """
    ranked, top1 = [], []
    for start in range(0, len(probe), chunk):
        scores, names = identity_scores(gallery, gallery_ids, probe[start:start + chunk], method)
        best = _rank_identities(scores, TOP_K)
        ranked.append(names[best])
        top1.append(scores[np.arange(len(scores)), best[:, 0]])
    return np.concatenate(ranked), np.concatenate(top1)


def open_set_table(top1_scores, top1_correct, known, thresholds):
    """Rows of (threshold, DIR, FAR, open-set accuracy) for each threshold (accept when score > threshold)."""
    rows = []
    n_known, n_unknown = int(known.sum()), int((~known).sum())
    for t in thresholds:
        accepted = top1_scores > t
        hits = int((accepted & top1_correct & known).sum())
        false_accepts = int((accepted & ~known).sum())
        rows.append({'threshold': float(t),
                     'dir': hits / n_known if n_known else None,
                     'far': false_accepts / n_unknown if n_unknown else None,
                     'accuracy': (hits + n_unknown - false_accepts) / len(known)})
    return rows


def identify(gallery, gallery_ids, probe, probe_ids, far=0.01, n_table=11):
    """Closed-set ranks and open-set thresholds for ``probe`` against ``gallery``.

    Returns
    -------
    dict
        ``closed_set`` (per method: ``top1``, ``top5`` over known probes), ``open_set`` (per method: the
        threshold picked for ``far`` -- None without unknown probes -- its row, and the accuracy-vs-threshold
        table at quantiles of the top-1 scores), counts, and ``predictions`` (a pandas DataFrame).
    """
    import pandas as pd
    gallery_ids, probe_ids = np.asarray(gallery_ids), np.asarray(probe_ids)
    known = np.isin(probe_ids, gallery_ids)
    if not known.any():
        raise UsageError('no probe identity is in the gallery: nothing to identify (check the labels)')
    result = {'n_gallery': int(len(gallery_ids)), 'n_gallery_identities': int(len(np.unique(gallery_ids))),
              'n_probe': int(len(probe_ids)), 'n_known_probes': int(known.sum()),
              'n_unknown_probes': int((~known).sum()), 'target_far': far, 'closed_set': {}, 'open_set': {}}
    columns = {'probe_identity': probe_ids, 'known': known}
    for method in METHODS:
        ranked_names, top1_score = rank_probes(gallery, gallery_ids, probe, method)
        top1 = ranked_names[:, 0]
        correct = top1 == probe_ids
        in_top5 = (ranked_names == probe_ids[:, None]).any(axis=1)
        result['closed_set'][method] = {'top1': float(correct[known].mean()), 'top5': float(in_top5[known].mean())}
        threshold = threshold_at_far(top1_score, known, far) if (~known).any() else None
        grid = np.unique(np.quantile(top1_score, np.linspace(0, 1, n_table)))
        at_threshold = None if threshold is None else open_set_table(top1_score, correct, known, [threshold])[0]
        result['open_set'][method] = {'threshold': threshold, 'at_threshold': at_threshold,
                                      'table': open_set_table(top1_score, correct, known, grid)}
        columns[f'{method}_top1'] = top1
        columns[f'{method}_score'] = top1_score
        columns[f'{method}_top{TOP_K}'] = [';'.join(r) for r in ranked_names]
        if threshold is not None:
            columns[f'{method}_open_set'] = np.where(top1_score > threshold, top1, 'unknown')
    result['predictions'] = pd.DataFrame(columns)
    return result


def format_report(result):
    """Plain-text summary: closed-set accuracies, the open-set operating point and its table."""
    lines = [f'gallery {result["n_gallery"]} images of {result["n_gallery_identities"]} identities; '
             f'probes {result["n_probe"]} ({result["n_known_probes"]} known, {result["n_unknown_probes"]} unknown)']
    for method in METHODS:
        c = result['closed_set'][method]
        lines.append(f'closed set, {method:8s}: top-1 {100 * c["top1"]:.2f}%  top-{TOP_K} {100 * c["top5"]:.2f}%')
    for method in METHODS:
        o = result['open_set'][method]
        if o['threshold'] is None:
            lines.append(f'open set, {method}: no unknown probes, no threshold picked (use --unknown-fraction)')
            continue
        row = o['at_threshold']
        lines.append(f'open set, {method:8s}: threshold {o["threshold"]:.4f} for FAR <= {result["target_far"]:g}: '
                     f'DIR {100 * row["dir"]:.2f}%  FAR {100 * row["far"]:.2f}%  accuracy {100 * row["accuracy"]:.2f}%')
    lines.append('open set (image) accuracy vs threshold:')
    lines.append('  threshold      DIR      FAR  accuracy')
    for row in result['open_set']['image']['table']:
        fmt = lambda v: '     n/a' if v is None else f'{100 * v:7.2f}%'  # noqa: E731
        lines.append(f'  {row["threshold"]:9.4f} {fmt(row["dir"])} {fmt(row["far"])}  {fmt(row["accuracy"])}')
    return '\n'.join(lines)


def run_identification(gallery_path, probe_path=None, gallery_per_identity=None, unknown_fraction=0.0,
                       seed=0, far=0.01, predictions_path=None, json_path=None):
    """What ``identify.py`` does: load, split if asked, identify, print, write the predictions CSV / JSON."""
    check_gallery_probe(probe_path, gallery_per_identity, unknown_fraction, far)
    check_seed(seed)
    check_outputs({'predictions_path': predictions_path, 'json_path': json_path},
                  inputs={'gallery_path': gallery_path, 'probe_path': probe_path})
    gallery, gallery_ids, probe, probe_ids, probe_labels, split, skipped = load_gallery_probe(
        gallery_path, probe_path, gallery_per_identity, unknown_fraction, seed)
    result = identify(gallery, gallery_ids, probe, probe_ids, far=far)
    result['split'] = split
    result['skipped_at_extraction'] = [{'image': label, 'reason': reason} for label, reason in skipped]
    result['predictions'].insert(0, 'probe', probe_labels)
    wrote = []  # files first, then the report: a closed standard output (| head) loses no file
    if predictions_path:
        with atomic_write(predictions_path, 'w', encoding='utf-8', newline='') as f:
            result['predictions'].to_csv(f, index=False)
        wrote.append(predictions_path)
    if json_path:
        with atomic_write(json_path, 'w', encoding='utf-8') as f:
            json.dump({k: v for k, v in result.items() if k != 'predictions'}, f, indent=1)
        wrote.append(json_path)
    for line in skipped_lines(skipped):
        print(line)
    print(format_report(result))
    for path in wrote:
        print(f'wrote {path}')
    return result
