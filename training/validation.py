"""Validation after each epoch by validators: callables ``(net, preprocessing, contexts) -> {metric: value}``.

The trainer runs :class:`ClassificationValidation` when ``data_val`` is given and :class:`PairVerification`
when ``val_pairs`` is (insightface's in-training LFW check: the same engine, :mod:`symbols.inference`, and
scoring, :mod:`common.verification`, as ``extract_features.py`` + ``lfw_eval.py``, without the files);
other validators come from the caller (``train(..., validators=[...])``). Each validator lists the row
keys it fills in ``metrics``.
"""
import mxnet as mx
import numpy as np
from mxnet import gluon

from common.errors import UsageError
from common.images import ImageError, read_image
from common.verification import pair_rows, pair_scores, verification_metrics
from data_tools.pairs import read_pairs
from symbols.inference import Embedder, embed_images, items_from_pairs

from .data import record_iter


def evaluate_classification(net, preprocessing, contexts, rec_path, batch_size, threads=4):
    """Top-1 / top-5 accuracy of ``net``'s logits on a ``.rec`` (centre crops, every record once).

    Returns
    -------
    dict
        ``val_top1``, ``val_top5``: fractions in [0, 1] (top-5 is top-k with k = min(5, classes)).
    """
    it = record_iter(rec_path, preprocessing, batch_size, train=False, threads=threads)
    k = min(5, net.num_classes)
    top1 = [mx.nd.zeros((1,), ctx=c) for c in contexts]
    topk = [mx.nd.zeros((1,), ctx=c) for c in contexts]
    total = 0
    for batch in it:
        n = batch.data[0].shape[0] - batch.pad
        data = gluon.utils.split_and_load(batch.data[0][:n], contexts, even_split=False)
        label = gluon.utils.split_and_load(batch.label[0][:n], contexts, even_split=False)
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

    def __call__(self, net, preprocessing, contexts):
        return evaluate_classification(net, preprocessing, contexts, self.rec_path, self.batch_size,
                                       self.threads)


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
