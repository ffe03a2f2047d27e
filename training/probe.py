"""Linear probe before fine-tuning: the new classifier fitted on the pretrained features, then everything trained.

Kumar, Raghunathan, Jones, Ma and Liang, "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution" (ICLR 2022), "LP-FT": a new, random or zero classifier on a pretrained trunk sends the
trunk gradients that only say "this classifier is wrong", and the first updates distort features that were
already good. Fitting the classifier first on the frozen trunk's features, then fine-tuning everything, keeps
the features where they help and trains them where they do not. Here the probe is cheap because the trunk is
run once: the training records are embedded (centre crops, inference mode), and the classifier is fitted on
those cached features with the training loss itself (softmax on ``fc2``, or the margin head's cosine
classifier; a center loss starts from the class means).
"""
import time

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from .data import counted_batches

PROBE_LR = 1e-2  # Adam on a linear layer over fixed features
PROBE_BATCH = 256


def embed_records(net, scan, preprocessing, ctx, batch_size=64, threads=4, limit=None):
    """The network's features for the records of a scanned ``.rec`` (centre crops, inference mode).

    Returns
    -------
    features : NDArray, (N, 256) float32 on ``ctx``
        What the head sees: the embedding (after the embedding BN when the network has one).
    labels : NDArray, (N,) float32 on ``ctx``
    """
    features, labels = [], []
    for x, y in counted_batches(scan, preprocessing, batch_size, threads, limit=limit):
        out = net(x.as_in_context(ctx))
        features.append(out[1] if isinstance(out, (list, tuple)) else out)
        labels.append(y.as_in_context(ctx))
    return mx.nd.concat(*features, dim=0), mx.nd.concat(*labels, dim=0)


def probe_classifier(net, head):
    """``(parameters, outputs_fn, logits_fn)`` of what maps features to logits, or ``(None, None, None)``
    (triplet: no classifier). ``outputs_fn(features)`` is what ``head`` takes for one device, ``logits_fn``
    the plain logits (no margin) for accuracy.
    """
    if head.uses_fc2:
        return net.fc2.collect_params(), lambda f: (net.fc2(f), f), net.fc2
    margin = getattr(head, 'margin', None)
    if margin is None:
        return None, None, None
    return margin.collect_params(), lambda f: f, margin.cosine_logits


def fit_head(net, head, features, labels, contexts, epochs, lr=PROBE_LR, wd=0.0, batch_size=PROBE_BATCH, seed=0):
    """Fit the classifier of ``net``/``head`` on fixed ``features`` with the head's loss (Adam, shuffled
    minibatches split over ``contexts`` like training batches; no dropout). A center loss's centres are set to
    the class means of ``features`` first.

    Parameters
    ----------
    features : NDArray, (N, 256) float32
    labels : NDArray, (N,) float32 class indices
    epochs : int
        Passes over the features (updates: ``epochs * ceil(N / batch_size)``).

    Returns
    -------
    dict or None
        ``loss_before`` / ``loss``: the head's mean loss on ``features`` (center loss not included) with the
        classifier as it started / as fitted; ``kept``: whether the fit lowered it (otherwise the classifier is
        put back as it started); ``accuracy`` (top-1 on ``features``), ``feature_scale`` (mean L2 norm of the
        features fc2 was fitted on, 1 for a cosine classifier), ``updates``, ``seconds``; ``None`` when the head
        has no classifier (triplet).
    """
    start = time.time()
    if head.center is not None:
        head.center.set_class_means(features, labels)
    params, outputs_fn, logits_fn = probe_classifier(net, head)
    if params is None or epochs <= 0:
        return None
    # fc2 sees raw features, whose scale differs by orders of magnitude between networks (mean L2 norm 1.3 for
    # V4, hundreds for a LightCNN-9 from scratch): fit on features of unit mean norm and divide the weights by
    # that scale afterwards (Adam is invariant to the gradient's scale, not to the input's); a cosine
    # classifier does not see the scale
    scale = float(mx.nd.norm(features, axis=1).mean().asscalar()) if head.uses_fc2 else 1.0
    scale = scale if np.isfinite(scale) and scale > 0 else 1.0
    scaled = features / scale
    start_values = {name: p.data().copy() for name, p in params.items()}
    before = _score(head, outputs_fn, logits_fn, scaled, labels, contexts[0], batch_size)
    trainer = gluon.Trainer(params, 'adam', dict(learning_rate=lr, wd=wd), kvstore='local')
    lr_mults = {name: p.lr_mult for name, p in params.items()}
    for p in params.values():  # the optimizer reads lr_mult at each update: the probe's lr is its own
        p.lr_mult = 1.0
    try:
        _fit(trainer, head, outputs_fn, scaled, labels, contexts, epochs, batch_size, np.random.RandomState(seed))
    finally:
        for name, p in params.items():
            p.lr_mult = lr_mults[name]
    after = _score(head, outputs_fn, logits_fn, scaled, labels, contexts[0], batch_size)
    kept = after[0] < before[0]
    if kept and head.uses_fc2:  # back to the raw features' scale: the same logits
        net.fc2.weight.set_data(net.fc2.weight.data() / scale)
    elif not kept:  # the fit did not lower the loss on the features: the classifier stays as it started
        for name, p in params.items():
            p.set_data(start_values[name])
    loss, accuracy = after if kept else before
    return dict(loss=loss, loss_before=before[0], kept=bool(kept), accuracy=accuracy, feature_scale=scale,
                updates=epochs * -(-features.shape[0] // batch_size), seconds=time.time() - start)


def _fit(trainer, head, outputs_fn, features, labels, contexts, epochs, batch_size, rng):
    """``epochs`` passes of shuffled minibatches (split over ``contexts``) of the head's loss, no dropout."""
    n = features.shape[0]
    for _ in range(epochs):
        perm = mx.nd.array(rng.permutation(n), ctx=features.context, dtype='int64')
        for begin in range(0, n, batch_size):
            index = perm[begin:begin + batch_size]
            f = gluon.utils.split_and_load(features.take(index), contexts, even_split=False)
            y = gluon.utils.split_and_load(labels.take(index), contexts, even_split=False)
            with autograd.record(train_mode=False):
                loss = [head.classify(outputs_fn(x), label)[0] for x, label in zip(f, y)]
            autograd.backward(loss)
            trainer.step(index.shape[0])


def _score(head, outputs_fn, logits_fn, features, labels, ctx, batch_size):
    """``(mean loss, top-1)`` of the head on ``features`` in inference mode (center loss not included; top-1 by
    the plain logits), summed on the device and read once."""
    loss, hits = mx.nd.zeros((1,), ctx=ctx), mx.nd.zeros((1,), ctx=ctx)
    for begin in range(0, features.shape[0], batch_size):
        x = features[begin:begin + batch_size].as_in_context(ctx)
        y = labels[begin:begin + batch_size].as_in_context(ctx)
        loss += head.classify(outputs_fn(x), y)[0].sum()
        hits += (logits_fn(x).argmax(axis=1) == y).sum()
    n = features.shape[0]
    return float(loss.asscalar()) / n, float(hits.asscalar()) / n


def linear_probe(net, head, scan, preprocessing, contexts, epochs, wd=0.0, threads=4, seed=0, log=print):
    """Embed the training records once (:func:`embed_records`) and fit the classifier on them
    (:func:`fit_head`); logs one line and returns the checkpoint JSON's ``probe`` entry (``None`` when the
    head has no classifier to fit)."""
    start = time.time()
    features, labels = embed_records(net, scan, preprocessing, contexts[0], threads=threads)
    features.wait_to_read()  # the engine runs ahead of Python: time the embedding, not its queueing
    embed_seconds = time.time() - start
    fit = fit_head(net, head, features, labels, contexts, epochs, wd=wd, seed=seed)
    if fit is None:
        log(f'linear probe skipped: the {head.name} head has no classifier')
        return None
    outcome = (f'loss {fit["loss_before"]:.3f} -> {fit["loss"]:.3f}, training top-1 {100 * fit["accuracy"]:.1f} %'
               if fit['kept'] else f'loss {fit["loss_before"]:.3f} not lowered: the classifier is kept as it started')
    log(f'linear probe: {features.shape[0]} training faces embedded in {embed_seconds:.0f} s, classifier fitted '
        f'on them in {epochs} epochs ({fit["updates"]} updates, {fit["seconds"]:.0f} s): {outcome}')
    return dict(fit, epochs=epochs, images=int(features.shape[0]), embed_seconds=embed_seconds)
