"""Data-dependent initialisation: every MFM filter rescaled to zero-mean, unit-variance outputs on real faces.

After :class:`symbols.LightCNNInit` (Xavier weights, biases 0.1) alone, the 0.1 biases and the max of every MFM
add a positive offset at each layer: on 64 PubFig83 faces at initialisation, LightCNN-9's 256-d feature varies
across images by 1 % of its size (standard deviation 0.004 against a mean of 0.42), the features of two
different people have cosine similarity 1.000, and the classifier sees the same vector for every face. Training
then sits at chance for hundreds of updates (PubFig83, 12 images per identity: 16 epochs without leaving
ln 63). Here each filter, in forward order, is rescaled so that its outputs on one batch of training faces have
mean 0 and variance 1 per channel, as in Krähenbühl, Doersch, Donahue and Darrell, "Data-dependent
Initializations of Convolutional Neural Networks" (ICLR 2016) and Mishkin and Matas, "All you need is a good
init" (LSUV, ICLR 2016). Afterwards the features of different people have cosine similarity 0.37 and vary by
as much as their mean. The classifier ``fc2`` then starts at zero (:func:`zero_classifier`): every class
equally likely, a loss of ln C, instead of logits that are large for the now unit-scale features.

One forward pass does it: a pre-hook on each MFM sees the block's input (already computed with the earlier
filters rescaled), rescales its filter and lets the block run with the new weights.
"""
import mxnet as mx
import numpy as np
from mxnet.gluon import nn

from symbols import MFM


def _filter_output(mfm, x):
    """The ``2 * out_channels`` maps of ``mfm``'s filter before the max, for input ``x``.

    The convolution gets copies of the weights: outside ``autograd.record`` oneDNN reorders a weight array it is
    handed into its blocked layout in place, and a parameter left so was pushed too late by a ``dist_sync``
    kvstore's init (the server saw a worker's pull first: "init 3 first").
    """
    conv = mfm.filter
    if isinstance(conv, nn.Conv2D):
        weight, bias = (p.data(x.context).copy() for p in (conv.weight, conv.bias))
        return mx.nd.Convolution(x, weight, bias, **conv._kwargs)
    return conv(x)


def _standardise(mfm, inputs):
    """Forward pre-hook: rescale ``mfm``'s filter to zero-mean, unit-variance outputs on ``inputs[0]``."""
    out = _filter_output(mfm, inputs[0]).asnumpy().astype(np.float64)
    axes = (0,) + tuple(range(2, out.ndim))  # batch and spatial positions: one mean and std per channel
    mean, std = out.mean(axis=axes), out.std(axis=axes) + 1e-6
    weight, bias = mfm.filter.weight, mfm.filter.bias
    w = weight.data().asnumpy() / std.reshape((-1,) + (1,) * (len(weight.shape) - 1))
    b = (bias.data().asnumpy() - mean) / std
    weight.set_data(mx.nd.array(w.astype(np.float32)))
    bias.set_data(mx.nd.array(b.astype(np.float32)))


def data_dependent_init(net, batch):
    """Standardise every MFM filter of ``net``, in forward order, on ``batch``.

    Parameters
    ----------
    net : LightCNN HybridBlock, initialised
        Left hybridized as it came (``static_alloc``/``static_shape``) after one imperative pass.
    batch : NDArray, shape (N,) + data_shape
        Preprocessed training faces on ``net``'s first device (a few dozen are enough: the statistics are
        per channel over images and positions).

    Returns
    -------
    int
        Number of filters standardised.
    """
    blocks = []

    def collect(block):
        if isinstance(block, MFM):
            blocks.append(block)
        for child in block._children.values():
            collect(child)
    collect(net)
    net.hybridize(False)
    hooks = [block.register_forward_pre_hook(_standardise) for block in blocks]
    try:
        with mx.autograd.predict_mode():
            net(batch)
    finally:
        for hook in hooks:
            hook.detach()
    net.hybridize(static_alloc=True, static_shape=True)
    return len(blocks)


def zero_classifier(net):
    """Set the classifier ``fc2`` (weights and bias) of ``net`` to zero: logits 0, loss ln C at the start.

    Its first gradient is then that of the features alone; the backbone receives gradients from the second
    update on. No-op for a feature-only net.
    """
    if getattr(net, 'num_classes', None):
        for param in net.fc2.collect_params().values():
            param.set_data(mx.nd.zeros(param.shape))
