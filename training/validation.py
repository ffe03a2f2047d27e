"""Validation after each epoch by validators: callables ``(net, preprocessing, contexts) -> {metric: value}``.

The trainer runs :class:`ClassificationValidation` when ``data_val`` is given, :class:`PairVerification`
when ``val_pairs`` is and one :class:`BinVerification` per ``val_targets`` set (insightface's in-training
LFW / CFP / AgeDB checks: the same engine, :mod:`symbols.inference`, and scoring, :mod:`common.verification`,
as ``extract_features.py`` + ``lfw_eval.py``, without the files); other validators come from the caller
(``train(..., validators=[...])``). Each validator lists the row keys it fills in ``metrics``.
:class:`BestTargetCheckpoints` keeps the best weights per ``val_targets`` set.
"""
import math
import os

import mxnet as mx
import numpy as np
from mxnet import gluon

from common.errors import UsageError
from common.images import ImageError, decode_image, read_image
from common.verification import pair_rows, pair_scores, verification_metrics
from data_tools.bin_sets import bin_folds, load_bin
from data_tools.pairs import read_pairs
from symbols.checkpoint import load_metadata, save_checkpoint
from symbols.inference import Embedder, embed_bin, embed_images, items_from_pairs

from .callbacks import Callback
from .data import check_record_file, counted_batches


def evaluate_classification(net, preprocessing, contexts, rec_path, batch_size, threads=4, scan=None):
    """Top-1 / top-5 accuracy of ``net``'s logits on a ``.rec`` (centre crops, every image record once).

    ``ImageRecordIter`` with ``round_batch=False`` fills the last batch past the end with images that are
    not in the file and reports ``pad=0`` for it (MXNet 1.9.1): 126 records in batches of 64 came out as 128
    scored images. The count of each batch is therefore capped by the image records left, from the
    ``.idx`` (``scan``, :func:`data_tools.records.scan_records`; made here when not given). Files with
    records that hold no image (insightface) are read by :class:`training.data.ImageRecordBatches`.

    Returns
    -------
    dict
        ``val_top1``, ``val_top5``: fractions in [0, 1] (top-5 is top-k with k = min(5, classes)).
    """
    scan = scan if scan is not None else check_record_file(rec_path)
    k = min(5, net.num_classes)
    top1 = [mx.nd.zeros((1,), ctx=c) for c in contexts]
    topk = [mx.nd.zeros((1,), ctx=c) for c in contexts]
    total = 0
    for x, y in counted_batches(scan, preprocessing, batch_size, threads):
        n = x.shape[0]
        data = gluon.utils.split_and_load(x, contexts, even_split=False)
        label = gluon.utils.split_and_load(y, contexts, even_split=False)
        for i, (x, y) in enumerate(zip(data, label)):
            logits = net(x)[0]
            best = logits.topk(k=k, axis=1)
            hits = (best == y.reshape((-1, 1)))
            top1[i] += hits[:, 0].sum()
            topk[i] += hits.sum()
        total += n
    total = max(total, 1)
    return dict(val_top1=sum(float(v.asscalar()) for v in top1) / total,
                val_top5=sum(float(v.asscalar()) for v in topk) / total)


class ClassificationValidation:
    """Top-1/top-5 on a validation ``.rec`` of the training identities (``data_val``)."""

    metrics = ('val_top1', 'val_top5')

    def __init__(self, rec_path, batch_size, threads=4):
        self.rec_path, self.batch_size, self.threads = rec_path, batch_size, threads
        self.scan = None

    def check(self):
        """Before the first step: the ``.rec`` and its ``.idx`` agree; the image records are counted."""
        self.scan = check_record_file(self.rec_path)

    def __call__(self, net, preprocessing, contexts):
        return evaluate_classification(net, preprocessing, contexts, self.rec_path, self.batch_size,
                                       self.threads, self.scan)


class PairVerification:
    """Validator: ``(net, preprocessing, contexts) -> {'val_verification': accuracy}``.

    Parameters
    ----------
    pairs_path : str
        LFW-format ``pairs.txt`` (or the label-file form of ``data_tools.pairs.read_pairs``).
    images_root : str
        Directory the pair paths are relative to.
    batch_size : int
        Images per forward.

    The accuracy is the mean 10-fold (the file's folds) accuracy with each fold's threshold chosen on the
    other folds, a fraction in [0, 1]; with a single fold, the best-threshold (optimistic) accuracy.
    The network is the training one (``return_features=True``), run on ``contexts[0]`` without
    hybridising it for inference.
    """

    metrics = ('val_verification',)

    def __init__(self, pairs_path, images_root, batch_size=64):
        self.pairs_path, self.images_root, self.batch_size = pairs_path, images_root, batch_size

    def check(self):
        """Before the first step (the trainer calls it): every pair image found under the root and decodable.

        Raises
        ------
        UsageError
            The pairs file is unreadable, or images are missing/undecodable (counted, the first few named).
        """
        items = items_from_pairs(self.pairs_path, self.images_root)
        bad = []
        for item in items:
            if item.source is None:
                bad.append(f'{item.label} (not found)')
                continue
            try:
                read_image(item.source, 'gray')
            except ImageError as err:
                bad.append(f'{item.label} ({err})')
        if bad:
            raise UsageError(f'{len(bad)} of the {len(items)} images {self.pairs_path} names cannot be used '
                             f'under {self.images_root}: {", ".join(bad[:3])}{", ..." if len(bad) > 3 else ""}')

    def __call__(self, net, preprocessing, contexts):
        pairs = read_pairs(self.pairs_path)
        embedder = Embedder(net, preprocessing, contexts[0], batch_size=self.batch_size, hybridize=False)
        extraction = embed_images(embedder, items_from_pairs(self.pairs_path, self.images_root))
        idx1, idx2 = pair_rows(extraction.labels, pairs)
        scores = pair_scores(extraction.features.astype(np.float64), idx1, idx2)
        metrics = verification_metrics(scores, np.array([p.issame for p in pairs], dtype=bool),
                                       np.array([p.fold for p in pairs]))
        accuracy = metrics['accuracy_mean']
        return dict(val_verification=accuracy if accuracy is not None else metrics['optimistic_accuracy'])


class BinVerification:
    """Validator of one insightface ``.bin`` set: ``(net, preprocessing, contexts) -> {'val_NAME': accuracy}``.

    The accuracy is the mean 10-fold accuracy (insightface's 10 consecutive blocks of pairs,
    :func:`data_tools.bin_sets.bin_folds`; each fold's threshold chosen on the other nine), a fraction in
    [0, 1] -- what ``lfw_eval.py --model PREFIX-NNNN --bin NAME.bin`` reports for the saved weights: the same
    embedding (:func:`symbols.inference.embed_bin`, each distinct image once, no flip) and cosine scoring.
    The network is the training one (``return_features=True``) on ``contexts[0]``, not hybridised for
    inference.

    Parameters
    ----------
    path : str
        The ``.bin`` (:func:`data_tools.bin_sets.load_bin`: Python 2 or 3 pickles).
    name : str
        The row key is ``val_<name>`` (``lfw`` for ``lfw.bin``: :func:`training.config.val_targets`).
    batch_size : int
        Images per forward.
    """

    def __init__(self, path, name, batch_size=64):
        self.path, self.name, self.batch_size = os.fspath(path), name, batch_size
        self.key = f'val_{name}'
        self.metrics = (self.key,)
        self.images = self.issame = self.folds = None

    def check(self):
        """Before the first step (the trainer calls it): the set reads, holds both kinds of pairs in 10 folds
        and every distinct image decodes. Keeps the encoded images for the epochs.

        Raises
        ------
        UsageError
            Naming the file and what is wrong (undecodable images: count and the first pair numbers).
        """
        images, issame = load_bin(self.path)
        if issame.all() or not issame.any():
            raise UsageError(f'{self.path}: need both same and different pairs, all {len(issame)} are '
                             f'{"same" if issame.all() else "different"}')
        folds = bin_folds(len(issame))
        bad, seen = [], set()
        for k, img in enumerate(images):
            if img in seen:
                continue
            seen.add(img)
            try:
                decode_image(img, 'gray')
            except ImageError as err:
                bad.append(f'image {k} (pair {k // 2}): {err}')
        if bad:
            raise UsageError(f'{self.path}: {len(bad)} of {len(seen)} distinct images cannot be decoded: '
                             f'{"; ".join(bad[:3])}{"; ..." if len(bad) > 3 else ""}')
        self.images, self.issame, self.folds = images, issame, folds

    def __call__(self, net, preprocessing, contexts):
        if self.images is None:
            self.check()
        embedder = Embedder(net, preprocessing, contexts[0], batch_size=self.batch_size, hybridize=False)
        features, rows = embed_bin(embedder, self.images, name=os.path.basename(self.path))
        scores = pair_scores(features.astype(np.float64), rows[0::2], rows[1::2])
        return {self.key: verification_metrics(scores, self.issame, self.folds)['accuracy_mean']}


class BestTargetCheckpoints(Callback):
    """The best weights per ``val_targets`` set: ``PREFIX-best-NAME.params`` + ``.json`` (no ``.states``).

    After each epoch whose ``val_NAME`` beats every earlier epoch's (strictly: the first epoch reaching a
    value keeps it), the network is saved with :func:`symbols.checkpoint.save_checkpoint` as the stem
    ``PREFIX-best-NAME``, whatever ``save_period`` says; its JSON holds the run's metadata, the epoch's
    ``metrics`` row and ``best``: ``{target, bin, key, value, epoch}`` (``epoch``: epochs completed, the
    ``-NNNN`` numbering). It loads like any checkpoint (``load_model('PREFIX-best-lfw')``,
    ``lfw_eval.py --model PREFIX-best-lfw --bin lfw.bin``). A resumed run starts from the best recorded at
    or before the epoch it resumes from; a run from scratch replaces older files of the same prefix.
    A margin head's weights (``.head.params``) are not kept: the network alone gives the embeddings.

    Parameters
    ----------
    targets : list of (name, path)
        :func:`training.config.val_targets`.
    """

    def __init__(self, targets):
        self.targets = list(targets)
        self.best = {}

    @staticmethod
    def stem(prefix, name):
        return f'{prefix}-best-{name}'

    def on_train_begin(self, run):
        self.best = {}
        for name, _ in self.targets:
            stem = self.stem(run.prefix, name)
            if not run.begin_epoch or not os.path.exists(stem + '.json'):
                continue
            try:
                best = load_metadata(stem).get('best') or {}
            except UsageError:
                continue  # a damaged file of an earlier run: the next best epoch replaces it
            if best.get('epoch') is not None and best['epoch'] <= run.begin_epoch and best.get('value') is not None:
                self.best[name] = float(best['value'])

    def on_epoch_end(self, run, epoch, row, checkpoint):
        for name, path in self.targets:
            value = row.get(f'val_{name}')
            if value is None or not math.isfinite(value) or value <= self.best.get(name, -math.inf):
                continue
            self.best[name] = value
            best = dict(target=name, bin=os.path.abspath(path), key=f'val_{name}', value=value, epoch=epoch + 1)
            stem = save_checkpoint(run.net, self.stem(run.prefix, name), dict(run.meta, metrics=row, best=best))
            run.log(f'Epoch[{epoch}] best val_{name} so far: {value:.6f}, weights in {stem}')
