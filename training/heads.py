"""Training heads: what turns the network's outputs and the labels into the loss that is minimised.

A head is built once in setup (:func:`build_head`) and called in every step::

    losses, logits = head(outputs, label)   # outputs = net(x): (fc2 logits, 256-d features)

``losses`` is per sample, shape ``(batch,)``; ``logits`` feed the accuracy meters. A head with weights of
its own (a margin classifier replacing fc2, center-loss centres) returns them from :meth:`collect_params`,
so they are trained with the network, and describes itself in :meth:`metadata`, which the checkpoint JSON
stores under ``head``.
"""
from mxnet import gluon


class SoftmaxHead:
    """Softmax cross-entropy on fc2's logits: the loss of the LightCNN papers (Wu et al., TIFS 2018)."""

    name = 'softmax'

    def __init__(self):
        self.loss = gluon.loss.SoftmaxCrossEntropyLoss()

    def __call__(self, outputs, label):
        """``(losses, logits)``: per-sample cross-entropy ``(batch,)`` and logits ``(batch, classes)``."""
        logits = outputs[0]
        return self.loss(logits, label), logits

    def collect_params(self):
        """Parameters the head trains besides the network's: none (fc2 is part of the network)."""
        return gluon.ParameterDict()

    def metadata(self):
        return dict(loss=self.name)


def build_head(args, num_classes):
    """The head ``args`` asks for (today the softmax classifier of the network's fc2)."""
    return SoftmaxHead()
