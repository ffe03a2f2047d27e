"""Training heads: what turns the network's outputs and the labels into the loss that is minimised.

A head is built once in setup (:func:`build_head`) and called in every step on the outputs of all devices::

    losses, logits = head([net(x) for x in data], labels)   # one entry per device
    autograd.backward(losses); trainer.step(batch); head.after_update()

``losses`` are per sample, ``(batch_on_device,)``; ``logits`` ``(batch_on_device, classes)`` feed the
accuracy meters. The formulas are in :mod:`training.losses`; a head adds what training needs around them:

* :class:`SoftmaxHead` -- cross-entropy on the network's own fc2 (the LightCNN papers' loss).
* :class:`MarginHead` -- ArcFace / CosFace / combined margin; its cosine classifier *replaces* fc2 (the
  network is built without one), and validation top-1 reads its ``s * cos`` logits
  (:meth:`Head.evaluation_net`).
* :class:`TripletHead` -- no classifier; the embeddings of all devices are gathered on the first one and
  mined together, so the loss does not depend on how the batch is split.
* any of them ``+ center loss`` (``center_loss_weight > 0``).

Parameters of a head (margin classifier, centres) are trained with the network (:meth:`Head.collect_params`),
saved beside each checkpoint as ``STEM.head.params`` and described by :meth:`Head.metadata` under ``head`` in
the checkpoint JSON. Extraction, export and the Python API never load them: the feature is the embedding
before the head.
"""
import os

import mxnet as mx
from mxnet import gluon, nd
from mxnet.gluon import nn

from common.errors import UsageError
from symbols import LightCNNInit

from .errors import ParameterError
from .losses import ARCFACE, COMBINED, COSFACE, CenterLoss, MarginSoftmax, TripletLoss

LOSSES = ('softmax', 'arcface', 'cosface', 'combined', 'triplet')
FEATURE_UNITS = 256  # every LightCNN's embedding
HEAD_PARAMS = '.head.params'  # the checkpoint file of a head's parameters (STEM.head.params)
MARGIN_DEFAULTS = dict(arcface=ARCFACE, cosface=COSFACE, combined=COMBINED)
MAIN_MARGIN = dict(arcface=1, cosface=2)  # which of (m1, m2, m3) --margin-m sets
SCALE = 64.0  # --margin-s: the ArcFace and CosFace papers' s
LOSS_OPTIONS = dict(arcface=('margin_s', 'margin_m'), cosface=('margin_s', 'margin_m'),  # only with that loss
                    combined=('margin_s', 'margin_m1', 'margin_m2', 'margin_m3'),
                    triplet=('triplet_margin', 'triplet_k', 'triplet_mining'))
TRIPLET = dict(triplet_margin=0.2, triplet_k=4, triplet_mining='semihard')  # FaceNet's margin; Hermans' K


class Head:
    """A loss over the outputs of all devices, with its own parameters (if any) and an optional center loss.

    Subclasses define :meth:`classify` ``(output, label) -> (loss, logits, features)`` for one device, or
    override :meth:`__call__`.
    """

    name = None
    uses_fc2 = False  # the network keeps its fc2 classifier (softmax); other heads replace or drop it

    def __init__(self, center_loss_weight=0.0, center_loss_alpha=0.5, num_classes=None):
        self.blocks = nn.Block(prefix='head_')  # container: one parameter file, structural names
        self.center_loss_weight = float(center_loss_weight)
        self.center = None
        if self.center_loss_weight > 0:
            self.center = CenterLoss(num_classes, FEATURE_UNITS, alpha=center_loss_alpha)
            self.blocks.register_child(self.center, 'center')
        self.center_loss_alpha = float(center_loss_alpha)

    def __call__(self, outputs, labels):
        """``(losses, logits)``: lists with one entry per device, as ``outputs`` and ``labels``."""
        losses, logits = [], []
        for output, label in zip(outputs, labels):
            loss, out, features = self.classify(output, label)
            losses.append(self._with_center(loss, features, label))
            logits.append(out)
        return losses, logits

    def _with_center(self, loss, features, label):
        if self.center is None:
            return loss
        return loss + self.center_loss_weight * self.center(features, label)

    def after_update(self):
        """Run after ``trainer.step``: moves the centres of the center loss (Wen et al. 2016, Eq. 4)."""
        if self.center is not None:
            self.center.update_centers()

    def initialize(self, contexts):
        """Initialise the head's parameters on ``contexts`` and hybridise its blocks."""
        self.blocks.collect_params().initialize(LightCNNInit(), ctx=contexts)
        self.blocks.hybridize(static_alloc=True, static_shape=True)
        return self

    def collect_params(self):
        """Parameters the Trainer updates besides the network's (the center loss's statistics carrier
        too, which stays zero: see :class:`training.losses.CenterLoss`)."""
        params = gluon.ParameterDict()
        params.update({p.name: p for p in self.blocks.collect_params().values() if p.grad_req != 'null'})
        return params

    @property
    def has_parameters(self):
        """Whether the head has parameters of its own (margin classifier, centres); a ``ParameterDict`` is
        always true, so its keys are counted."""
        return len(self.blocks.collect_params().keys()) > 0

    def save_parameters(self, path):
        self.blocks.save_parameters(path)

    def load_parameters(self, path, ctx):
        if not os.path.isfile(path):
            raise UsageError(f'{path} (the parameters of the {self.name} head) is missing')
        try:
            self.blocks.load_parameters(path, ctx=ctx)
        except (AssertionError, OSError, ValueError, mx.MXNetError) as err:  # asserts: missing/extra names
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UsageError(f'{path} does not fit the {self.name} head: {first}') from None

    def evaluation_net(self, net):
        """What validators run: ``net`` itself, or a block giving ``(logits, features)`` through the head."""
        return net

    def metadata(self):
        """The checkpoint JSON's ``head`` entry (``params`` is added per checkpoint when there are any)."""
        meta = dict(loss=self.name, center_loss_weight=self.center_loss_weight)
        if self.center is not None:
            meta['center_loss_alpha'] = self.center_loss_alpha
        return meta


class SoftmaxHead(Head):
    """Softmax cross-entropy on fc2's logits: the loss of the LightCNN papers (Wu et al., TIFS 2018)."""

    name = 'softmax'
    uses_fc2 = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.loss = gluon.loss.SoftmaxCrossEntropyLoss()

    def classify(self, output, label):
        logits, features = output
        return self.loss(logits, label), logits, features


class MarginHead(Head):
    """ArcFace / CosFace / combined margin softmax (:class:`training.losses.MarginSoftmax`) replacing fc2."""

    def __init__(self, name, num_classes, s=SCALE, margins=ARCFACE, dropout=0.0, classifier_lr_mult=1.0,
                 **kwargs):
        super().__init__(num_classes=num_classes, **kwargs)
        self.name, self.num_classes = name, int(num_classes)
        self.margin = MarginSoftmax(num_classes, FEATURE_UNITS, s, *margins, dropout=dropout)
        self.blocks.register_child(self.margin, 'margin')
        self.margin.classifier.weight.lr_mult = classifier_lr_mult

    def classify(self, features, label):
        loss, logits = self.margin(features, label)
        return loss, logits, features

    def evaluation_net(self, net):
        return HeadClassifier(net, self.margin)

    def metadata(self):
        m1, m2, m3 = self.margin.margins
        return dict(super().metadata(), num_classes=self.num_classes, s=self.margin.s, m1=m1, m2=m2, m3=m3)


class HeadClassifier(nn.Block):
    """``net`` followed by a margin head's cosine classifier: ``x -> (s * cos logits, features)``, the
    output of a network with fc2 and ``return_features=True`` (what validators and the Embedder take)."""

    def __init__(self, net, margin, **kwargs):
        super().__init__(**kwargs)
        self.net, self.margin = net, margin
        self.num_classes = margin.num_classes

    def forward(self, x):
        features = self.net(x)
        return self.margin.cosine_logits(features), features


class TripletHead(Head):
    """Triplet loss (:class:`training.losses.TripletLoss`) on the whole batch of every device.

    The embeddings of all devices are copied to the first (the copies are differentiable), mined and
    scored there, and the per-sample losses copied back: mining sees the machine's whole P x K batch.
    """

    name = 'triplet'

    def __init__(self, num_classes, margin=0.2, mining='semihard', k=4, **kwargs):
        super().__init__(num_classes=num_classes, **kwargs)
        self.num_classes, self.k = int(num_classes), int(k)
        self.triplet = TripletLoss(num_classes, margin, mining)
        self.blocks.register_child(self.triplet, 'triplet')

    def __call__(self, outputs, labels):
        if len(outputs) == 1:
            loss, logits = self.triplet(outputs[0], labels[0])
            return [self._with_center(loss, outputs[0], labels[0])], [logits]
        first = outputs[0].context
        loss, logits = self.triplet(nd.concat(*[o.as_in_context(first) for o in outputs], dim=0),
                                    nd.concat(*[y.as_in_context(first) for y in labels], dim=0))
        losses, outs, begin = [], [], 0
        for output, label in zip(outputs, labels):
            end = begin + output.shape[0]
            part = nd.slice_axis(loss, axis=0, begin=begin, end=end).as_in_context(output.context)
            losses.append(self._with_center(part, output, label))
            outs.append(nd.slice_axis(logits, axis=0, begin=begin, end=end).as_in_context(output.context))
            begin = end
        return losses, outs

    def metadata(self):
        return dict(super().metadata(), num_classes=self.num_classes, margin=self.triplet.margin,
                    mining=self.triplet.mining, k=self.k)


def network_classes(args, num_classes):
    """Classes of the network's fc2: the data's for softmax, ``None`` (no fc2) when the head replaces it."""
    return num_classes if getattr(args, 'loss', 'softmax') == 'softmax' else None


def build_head(args, num_classes, contexts=None):
    """The head ``args`` asks for (``loss``, margins, center loss, triplet), initialised on ``contexts``."""
    loss = getattr(args, 'loss', 'softmax')
    center = dict(center_loss_weight=getattr(args, 'center_loss_weight', 0.0) or 0.0,
                  center_loss_alpha=_given(args, 'center_loss_alpha', 0.5))
    if loss == 'softmax':
        head = SoftmaxHead(num_classes=num_classes, **center)
    elif loss == 'triplet':
        head = TripletHead(num_classes, _given(args, 'triplet_margin', TRIPLET['triplet_margin']),
                           _given(args, 'triplet_mining', TRIPLET['triplet_mining']),
                           _given(args, 'triplet_k', TRIPLET['triplet_k']), **center)
    else:
        head = MarginHead(loss, num_classes, _given(args, 'margin_s', SCALE), margins(args),
                          dropout=args.dropout, classifier_lr_mult=1.0 if args.fc2_lr_mult is None else args.fc2_lr_mult,
                          **center)
    return head.initialize(contexts) if contexts else head


def triplet_batch(args):
    """``(P, K)``: identities per batch and images per identity of ``loss`` triplet."""
    k = int(_given(args, 'triplet_k', TRIPLET['triplet_k']))
    return args.batch_size // k, k


def margins(args):
    """``(m1, m2, m3)`` of ``args.loss``: the paper's defaults, ``margin_m`` for the main one of arcface
    (m2) and cosface (m3), ``margin_m1..3`` for combined."""
    m = list(MARGIN_DEFAULTS[args.loss])
    if args.loss == 'combined':
        for i in range(3):
            m[i] = _given(args, f'margin_m{i + 1}', m[i])
    else:
        m[MAIN_MARGIN[args.loss]] = _given(args, 'margin_m', m[MAIN_MARGIN[args.loss]])
    return tuple(float(v) for v in m)


def _given(args, name, default):
    value = getattr(args, name, None)
    return default if value is None else value


def check_loss_options(args):
    """Refuse loss options that do not belong to ``args.loss`` or cannot work together (before any data is
    read; the ranges of the values are :data:`training.config.RANGES`).

    Raises
    ------
    ParameterError
        Naming the parameters, e.g. ``margin_m1 is for loss combined, not arcface``.
    """
    loss = getattr(args, 'loss', 'softmax')
    own = LOSS_OPTIONS.get(loss, ())
    for name in sorted({o for names in LOSS_OPTIONS.values() for o in names}):
        if getattr(args, name, None) is not None and name not in own:
            users = sorted(k for k, v in LOSS_OPTIONS.items() if name in v)
            raise ParameterError(lambda n, name=name, users=users: (
                f'{n(name)} is for {n("loss")} {"|".join(users)}, not {loss}'))
    alpha = _given(args, 'center_loss_alpha', 0.5)
    if alpha > 1:
        raise ParameterError(lambda n: f'{n("center_loss_alpha")} is the centre update rate, at most 1, not {alpha}')
    if loss == 'triplet':
        p, k = triplet_batch(args)
        if args.batch_size % k or p < 2:
            raise ParameterError(lambda n: f'{n("batch_size")} {args.batch_size} must be P x {n("triplet_k")} '
                                           f'{k} with P >= 2 identities per batch')
        if args.data_val:
            raise ParameterError(lambda n: f'{n("data_val")} reports top-1 of a classifier and {n("loss")} '
                                           f'triplet trains none; check the embedding with {n("val_pairs")}')


def head_params_path(stem):
    """Where a checkpoint keeps its head's parameters: ``STEM.head.params``."""
    return os.fspath(stem) + HEAD_PARAMS
