"""Validation after each epoch by validators: callables ``(net, preprocessing, contexts) -> {metric: value}``.

The trainer runs :class:`ClassificationValidation` when ``data_val`` is given; other validators come from
the caller (``train(..., validators=[...])``). Verification on LFW-format pairs needs the extraction and
evaluation stages, which come after training, so it lives there
(``lfw_verification.epoch_validation.PairVerification``) and ``train_lightcnn.py`` passes it in for
``--val-pairs``. Each validator lists the row keys it fills in ``metrics``.
"""
import mxnet as mx
from mxnet import gluon

from .data import check_record_file, record_iter


def evaluate_classification(net, preprocessing, contexts, rec_path, batch_size, threads=4):
    """Top-1 / top-5 accuracy of ``net``'s logits on a ``.rec`` (centre crops, every record once).

    Returns
    -------
    dict
        ``val_top1``, ``val_top5``: fractions in [0, 1] (top-5 is top-k with k = min(5, classes)).
    """
    it = record_iter(rec_path, preprocessing, batch_size, train=False, threads=threads)
    # ImageRecordIter (MXNet 1.9.1) fills a last, partial batch with other images and reports pad=0:
    # count the records of the .idx and score only those
    remaining = check_record_file(rec_path)
    k = min(5, net.num_classes)
    top1 = [mx.nd.zeros((1,), ctx=c) for c in contexts]
    topk = [mx.nd.zeros((1,), ctx=c) for c in contexts]
    total = 0
    for batch in it:
        n = min(batch.data[0].shape[0] - batch.pad, remaining)
        if n <= 0:
            break
        remaining -= n
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
