"""Verification on insightface ``.bin`` sets: embed their images and score their pairs in one go.

The ``.bin`` is read by :func:`data_tools.bin_sets.load_bin`; images are decoded in the model's channels
(exactly what extraction does with the same image files), embedded once each by the inference engine
(:func:`symbols.inference.embed_bin`), and pairs are scored by :func:`lfw_verification.evaluate.pair_metrics`
-- the same code, metrics and JSON keys as ``lfw_eval.py --features F.mat --pairs pairs.txt``. Folds:
insightface's 10 consecutive blocks (:func:`data_tools.bin_sets.bin_folds`).

In-training validation (the trainer's ``--val-targets``, :class:`training.validation.BinVerification`)
embeds with the same :func:`~symbols.inference.embed_bin` and scores like this module without options
(cosine, no PCA).
"""
import os
import time

import numpy as np

from common.checks import check_number
from common.devices import parse_device
from common.errors import UsageError
from common.features_mat import write_features
from common.fileio import check_outputs
from common.workers import MAX_WORKERS
from data_tools.bin_sets import bin_folds, load_bin
from lfw_verification.evaluate import METRICS, pair_metrics, report_verification
from symbols.checkpoint import checkpoint_files, load_checkpoint
from symbols.inference import MAX_BATCH, Embedder, embed_bin

__all__ = ['evaluate_bin', 'run_bin_evaluation']


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
    check_number(pca, 'pca', minimum=1, integer=True, optional=True, qualifier=' (dimensions)')
    check_number(center_crop, 'center_crop', minimum=1, integer=True, optional=True, qualifier=' (pixels)')
    check_number(batch_size, 'batch_size', minimum=1, maximum=MAX_BATCH, integer=True)
    check_number(num_workers, 'num_workers', minimum=0, maximum=MAX_WORKERS, integer=True)
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
    check_outputs({'json_path': json_path, 'roc_path': roc_path, 'features_out': options.get('features_out')},
                  inputs={'model': checkpoint_files(model, options.get('epoch')), 'bin_path': bin_path},
                  pictures={'roc_path': 'matplotlib'})
    return report_verification(evaluate_bin(model, bin_path, **options), json_path, roc_path)
