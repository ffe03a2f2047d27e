"""Verification on insightface ``.bin`` sets: embed their images and score their pairs in one go.

The ``.bin`` is read by :func:`data_tools.bin_sets.load_bin`; images are decoded in the model's channels
(exactly what extraction does with the same image files), embedded by the inference engine
(:class:`~symbols.inference.Embedder` + :func:`~symbols.inference.embed_images`), and
pairs are scored by :func:`lfw_verification.evaluate.pair_metrics` -- the same code, metrics and JSON keys
as ``lfw_eval.py --features F.mat --pairs pairs.txt``. Folds: insightface's 10 consecutive blocks
(:func:`data_tools.bin_sets.bin_folds`).

An image repeated in several pairs (LFW's 6,000 pairs fill 12,000 slots with far fewer images) is embedded once.

In-training validation (the trainer's ``--val-targets``) calls :func:`load_bin` once per target and
:func:`bin_metrics` every epoch with its own :class:`Embedder`.
"""
import os
import time

import numpy as np

from tqdm import tqdm

from common.devices import parse_device
from common.errors import UsageError
from common.features_mat import write_features
from common.fileio import check_output_paths
from common.images import ImageError, decode_image
from data_tools.bin_sets import bin_folds, load_bin
from lfw_verification.evaluate import METRICS, pair_metrics, report_verification
from symbols.checkpoint import load_checkpoint
from symbols.inference import Embedder, ImageItem, embed_images

__all__ = ['load_bin', 'embed_bin', 'bin_metrics', 'evaluate_bin', 'run_bin_evaluation']

DECODE_CHUNK = 512   # images decoded ahead of the engine at a time: bounded memory for large sets


def distinct_images(images):
    """``(unique, rows)``: the distinct encoded images in first-seen order, and each slot's row in them."""
    first, rows = {}, np.empty(len(images), np.int64)
    for k, img in enumerate(images):
        rows[k] = first.setdefault(img, len(first))
    return list(first), rows


def embed_bin(embedder, images, flip=False, center_crop=None, num_workers=2, progress=False, name='.bin'):
    """Features of the distinct images of a ``.bin``.

    Parameters
    ----------
    embedder : symbols.inference.Embedder
    images : list of bytes
        Encoded images (from :func:`load_bin`).

    Returns
    -------
    features : numpy.ndarray, float32 (U, D)
        One row per distinct image.
    rows : numpy.ndarray, int64 (len(images),)
        Row of ``features`` for each image slot.

    Raises
    ------
    UsageError
        Undecodable images (count and the first slots, with their pair numbers).
    """
    unique, rows = distinct_images(images)
    color = 'gray' if embedder.pre.channels == 'gray' else 'bgr'
    slot_of = {}
    for k, r in enumerate(rows):
        slot_of.setdefault(int(r), k)
    feats, failures = [], []
    bar = None
    if progress:
        bar = tqdm(total=len(unique), unit='img', desc='embed')
    for start in range(0, len(unique), DECODE_CHUNK):
        items = []
        for u in range(start, min(start + DECODE_CHUNK, len(unique))):
            try:
                items.append(ImageItem(f'{name}[{slot_of[u]}]', decode_image(unique[u], color)))
            except ImageError as err:
                failures.append((slot_of[u], str(err)))
        if failures:  # keep decoding to count them all, embed nothing more
            continue
        feats.append(embed_images(embedder, items, center_crop, None, flip, num_workers=num_workers).features)
        if bar is not None:
            bar.update(len(items))
    if bar is not None:
        bar.close()
    if failures:
        shown = '; '.join(f'image {k} (pair {k // 2}): {reason}' for k, reason in failures[:5])
        raise UsageError(f'{name}: {len(failures)} of {len(unique)} distinct images cannot be decoded: {shown}')
    return np.concatenate(feats), rows


def bin_metrics(embedder, images, issame, flip=False, center_crop=None, metric='cosine', l2=False, pca=None,
                num_workers=2):
    """Verification metrics of a loaded ``.bin`` with ``embedder`` (what in-training validation calls).

    Parameters
    ----------
    embedder : symbols.inference.Embedder
        Any batch size; built by the caller (the trainer reuses its own, ``hybridize=False``).
    images, issame
        From :func:`load_bin`.

    Returns
    -------
    dict
        :func:`common.verification.verification_metrics` (``accuracy_mean``, ``auc``, ``eer``, ...)
        plus ``n_bin_images`` (distinct images embedded).
    """
    features, rows = embed_bin(embedder, images, flip, center_crop, num_workers)
    idx1, idx2 = rows[0::2], rows[1::2]
    metrics = pair_metrics(features, idx1, idx2, np.asarray(issame, bool), bin_folds(len(issame)), metric, l2, pca)
    metrics['n_bin_images'] = int(len(features))
    return metrics


def evaluate_bin(model, bin_path, epoch=None, flip=False, center_crop=None, batch_size=64, ctx='cpu',
                 metric='cosine', l2=False, pca=None, features_out=None, num_workers=2, progress=True):
    """Load a checkpoint and a ``.bin``, embed, score: ``{'config', 'metrics'}`` as
    :func:`lfw_verification.evaluate.evaluate_verification` returns for a ``.mat`` + pairs.

    Parameters
    ----------
    model : str
        Checkpoint (``runs/pretrained/lightcnn-v4``, a training prefix with ``epoch``, a ``.params`` file).
    bin_path : str
        insightface ``.bin``.
    flip, center_crop, batch_size, ctx
        As for extraction (``center_crop`` is rarely wanted: ``.bin`` images are aligned 112x112 crops).
    features_out : str, optional
        Also save the distinct images' features as a features ``.mat`` (labels ``NAME.bin/IMAGE_SLOT``).

    Raises
    ------
    UsageError
        Bad option values (named by these parameters), unreadable checkpoint or ``.bin``.
    """
    if metric not in METRICS:
        raise UsageError(f'metric must be one of {", ".join(METRICS)}, not {metric!r}')
    if pca is not None and pca < 1:
        raise UsageError(f'pca must be a positive number of dimensions, got {pca}')
    if center_crop is not None and center_crop < 1:
        raise UsageError(f'center_crop must be a positive side in pixels, not {center_crop}')
    if batch_size < 1:
        raise UsageError(f'batch_size must be >= 1, not {batch_size}')
    start = time.time()
    images, issame = load_bin(bin_path)
    if issame.all() or not issame.any():
        raise UsageError(f'{bin_path}: need both same and different pairs, all {len(issame)} are '
                         f'{"same" if issame.all() else "different"}')
    context = parse_device(ctx) if isinstance(ctx, str) or ctx is None else ctx
    net, meta = load_checkpoint(model, epoch=epoch, ctx=context, features_only=True)
    embedder = Embedder(net, meta['preprocessing'], context, batch_size)
    features, rows = embed_bin(embedder, images, flip, center_crop, num_workers, progress,
                               name=os.path.basename(bin_path))
    folds = bin_folds(len(issame))
    metrics = pair_metrics(features, rows[0::2], rows[1::2], issame, folds, metric, l2, pca)
    if features_out:
        slot_of = {}
        for k, r in enumerate(rows):
            slot_of.setdefault(int(r), k)
        labels = [f'{os.path.basename(bin_path)}/{slot_of[u]:06d}' for u in range(len(features))]
        write_features(features_out, features, labels)
    config = {'features': os.path.abspath(features_out) if features_out else None,
              'pairs': os.path.abspath(bin_path), 'bin': os.path.abspath(bin_path),
              'model': meta.get('stem', os.fspath(model)), 'network': meta.get('network'),
              'flip': bool(flip), 'center_crop': center_crop,
              'n_images': int(len(images)), 'feature_dim': int(features.shape[1]), 'metric': metric,
              'l2': bool(l2), 'pca': pca,
              'score': 'cosine similarity' if metric == 'cosine' else 'minus Euclidean distance',
              'rule': 'same if score > threshold; threshold fitted on the other folds',
              'folds': f'{len(np.unique(folds))} consecutive blocks of pairs (insightface KFold)',
              'n_identities': None, 'n_pair_images': int(len(features)),
              'skipped_at_extraction': 0, 'skip_missing': False,  # a .bin holds its images: none skipped
              'seconds': round(time.time() - start, 2)}
    return {'config': config, 'metrics': metrics}


def run_bin_evaluation(model, bin_path, json_path=None, roc_path=None, **options):
    """What ``lfw_eval.py --model M --bin X.bin`` does: evaluate, print the table, write JSON / ROC."""
    check_output_paths(json_path, roc_path, options.get('features_out'))
    return report_verification(evaluate_bin(model, bin_path, **options), json_path, roc_path)
