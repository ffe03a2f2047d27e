"""Loss formulas of the training heads, each a HybridBlock giving per-sample losses ``(batch,)``.

* :class:`MarginSoftmax` -- softmax cross-entropy on ``s * psi(theta)`` logits, with the combined margin
  ``psi(theta) = cos(m1 * theta + m2) - m3`` at the target class and ``cos(theta)`` elsewhere, ``theta`` the
  angle between the L2-normalised feature and the L2-normalised class weight (Deng et al., "ArcFace: Additive
  Angular Margin Loss for Deep Face Recognition", CVPR 2019, Sec. 3.3). ArcFace is ``(1, m, 0)``, CosFace
  ``(1, 0, m)`` (Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition", CVPR 2018),
  SphereFace's multiplicative margin ``(m, 0, 0)`` (Liu et al., "SphereFace: Deep Hypersphere Embedding for
  Face Recognition", CVPR 2017); ``(1, 0, 0)`` is the normalised softmax.
* :class:`CenterLoss` -- ``1/2 ||x - c_y||^2`` with the centres moved by the paper's rule (Wen et al.,
  "A Discriminative Feature Learning Approach for Deep Face Recognition", ECCV 2016).
* :class:`TripletLoss` -- ``max(d(a,p) - d(a,n) + margin, 0)`` on L2-normalised embeddings with online
  semi-hard (Schroff et al., "FaceNet", CVPR 2015) or batch-hard (Hermans et al., "In Defense of the Triplet
  Loss for Person Re-Identification", 2017) mining inside the batch.

Written for MXNet 1.9 from the papers (not ported from gluon-face); :mod:`training.heads` applies them to the
network's outputs on each device.
"""
import math

import mxnet as mx
import numpy as np
from mxnet import gluon, init
from mxnet.gluon import nn

ARCFACE = (1.0, 0.5, 0.0)  # (m1, m2, m3) of each paper's recommended setting
COSFACE = (1.0, 0.0, 0.35)
COMBINED = (1.0, 0.3, 0.2)  # ArcFace paper, Table 1/2: the best combined margin on LFW/CFP/AgeDB
COS_CLIP = 1.0 - 1e-7  # float32 0.99999988: arccos' = -1/sin stays below ~2,000 (Deng et al. clip too)
SIN2_FLOOR = 1e-8  # sin(theta)^2 floor: only cos == +-1 exactly reaches it in float32
_FAR = 8.0  # larger than any squared distance on the unit sphere (<= 4) plus a margin: masks out pairs


def combined_target(F, cos, m1, m2, m3):
    """``psi(theta) = cos(m1*theta + m2) - m3`` for ``cos = cos(theta)``, kept decreasing on [0, pi].

    Where ``phi = m1*theta + m2`` leaves [0, pi] the plain formula would turn back up (a *larger* logit for
    a worse angle); like SphereFace (Liu et al. 2017, Eq. 6) it continues as
    ``(-1)^k cos(phi) - 2k - m3`` with ``k = floor(phi / pi)``, which is continuous and decreasing for
    every ``theta`` -- unlike insightface's ``cos(theta) - m2*sin(m2)`` fallback, which jumps at
    ``theta = pi - m2``. Gradients stay finite at ``cos = +-1``: with ``m1 = 1`` through
    ``cos(theta + m2) = cos*cos(m2) - sin(theta)*sin(m2)`` with ``sin(theta)^2`` floored at
    :data:`SIN2_FLOOR` (no arccos); otherwise ``cos`` is clipped to ``+-COS_CLIP`` before arccos.
    ``m1 = 1, m2 = 0`` (CosFace) is exactly ``cos - m3``.

    Parameters
    ----------
    cos : Symbol or NDArray, float32, any shape, values in [-1, 1]
    m1 : float > 0; m2, m3 : float >= 0 (plain Python numbers, fixed when hybridised)
    """
    if m1 == 1 and m2 == 0:
        return cos - m3
    if m1 == 1 and m2 < math.pi:
        sin = F.sqrt(F.maximum(1 - cos * cos, SIN2_FLOOR))
        cos_phi = cos * math.cos(m2) - sin * math.sin(m2)
        beyond = cos < -math.cos(m2)  # theta + m2 > pi (k = 1)
        return F.where(beyond, -cos_phi - 2, cos_phi) - m3
    phi = m1 * F.arccos(F.clip(cos, -COS_CLIP, COS_CLIP)) + m2
    k = F.floor(phi / math.pi)
    sign = 1 - 2 * (k - 2 * F.floor(k / 2))  # (-1)^k
    return sign * F.cos(phi) - 2 * k - m3


class CosineClassifier(nn.HybridBlock):
    """``cos(theta)`` between L2-normalised features and L2-normalised class weights (no bias).

    ``forward(x)``: ``x`` float32 ``(batch, units)`` -> ``(batch, num_classes)`` in [-1, 1].
    Parameter ``weight``: ``(num_classes, units)``.
    """

    def __init__(self, num_classes, units, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        with self.name_scope():
            self.weight = self.params.get('weight', shape=(num_classes, units))

    def hybrid_forward(self, F, x, weight):
        x = F.L2Normalization(x, mode='instance')
        weight = F.L2Normalization(weight, mode='instance')
        return F.FullyConnected(x, weight, no_bias=True, num_hidden=self.num_classes)


class MarginSoftmax(nn.HybridBlock):
    """Softmax cross-entropy with the combined angular margin: ArcFace, CosFace, SphereFace-style, mixed.

    Logits are ``s * psi(theta_y)`` at the label (:func:`combined_target`) and ``s * cos(theta_j)``
    elsewhere (Deng et al. 2019, Eq. 4 with the combined margin of Sec. 3.3). Dropout (if any) acts on
    the feature before the classifier, where LightCNN has it before fc2.

    Parameters
    ----------
    num_classes, units : int
        Classes; feature size (256 for LightCNN).
    s : float
        Scale of the normalised logits (64 in the ArcFace and CosFace papers).
    m1, m2, m3 : float
        Multiplicative angular, additive angular (radians) and additive cosine margins.

    ``forward(x, label)``: features float32 ``(batch, units)`` and class ids float32 ``(batch,)`` ->
    ``(loss (batch,), logits (batch, num_classes))`` where the logits are the margin-free ``s * cos``
    (what top-1 reads, in training and at evaluation).
    """

    def __init__(self, num_classes, units=256, s=64.0, m1=1.0, m2=0.5, m3=0.0, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.s, self.margins = num_classes, float(s), (float(m1), float(m2), float(m3))
        with self.name_scope():
            self.dropout = nn.Dropout(dropout) if dropout else None
            self.classifier = CosineClassifier(num_classes, units)
            self.cross_entropy = gluon.loss.SoftmaxCrossEntropyLoss()

    def cosine_logits(self, x):
        """Evaluation logits ``s * cos(theta)`` of features ``x`` (no margin, no dropout)."""
        return self.classifier(x) * self.s

    def hybrid_forward(self, F, x, label):
        cos = self.classifier(self.dropout(x) if self.dropout else x)
        target = combined_target(F, F.pick(cos, label, axis=1), *self.margins)
        is_target = F.one_hot(label, self.num_classes)
        logits = F.where(is_target, F.broadcast_like(target.expand_dims(1), cos), cos) * self.s
        return self.cross_entropy(logits, label), cos * self.s


class CenterLoss(nn.HybridBlock):
    """Center loss ``1/2 ||x_i - c_{y_i}||^2`` per sample, centres moved by the paper's rule.

    Wen et al. 2016, Eq. 2 (loss), Eq. 4 and Algorithm 1 (update): after each step
    ``c_j <- c_j - alpha * sum_{i: y_i=j} (c_j - x_i) / (1 + n_j)`` over the samples of the batch, with the
    features ``x_i`` the forward pass saw. The centres are not trained by the optimiser (``grad_req`` null,
    so no lr, momentum or weight decay touch them); they start at zero.

    The sums of the rule must cover the whole batch -- every device and, under ``dist_sync``, every
    worker. They travel as the gradient of ``stats`` ``(num_classes, units + 1)``, a parameter that stays
    zero (``lr_mult = wd_mult = 0``): the loss carries a term of value exactly 0 whose gradient with
    respect to ``stats`` is ``[c_j - x_i, 1]`` at row ``y_i``. The Gluon Trainer sums that gradient over
    devices and workers like any other, and :meth:`update_centers` reads it after ``trainer.step``, so
    every copy of the centres gets the same update.

    ``forward(x, label)``: features float32 ``(batch, units)``, class ids ``(batch,)`` -> ``(batch,)``.
    """

    def __init__(self, num_classes, units=256, alpha=0.5, **kwargs):
        super().__init__(**kwargs)
        self.units, self.alpha = units, float(alpha)
        with self.name_scope():
            self.centers = self.params.get('centers', shape=(num_classes, units), init=init.Zero(),
                                           grad_req='null')
            self.stats = self.params.get('stats', shape=(num_classes, units + 1), init=init.Zero(),
                                         lr_mult=0.0, wd_mult=0.0)

    def hybrid_forward(self, F, x, label, centers, stats):
        diff = x - F.take(centers, label)  # x_i - c_{y_i}; centres get no gradient
        loss = 0.5 * F.sum(diff * diff, axis=1)
        per_sample = F.concat(F.BlockGrad(-diff), F.ones_like(F.slice_axis(diff, axis=1, begin=0, end=1)),
                              dim=1)
        carrier = F.sum(F.take(stats, label) * per_sample, axis=1)
        return loss + (carrier - F.BlockGrad(carrier))  # value: exactly the loss

    def set_class_means(self, features, labels):
        """Start every centre at the mean of its class's ``features`` ``(N, units)`` (labels ``(N,)``);
        classes without a sample keep their centre (used by :func:`training.probe.fit_head`)."""
        f, y = features.asnumpy().astype(np.float64), labels.asnumpy().astype(np.int64)
        sums, counts = np.zeros((self.centers.shape[0], self.units)), np.bincount(y, minlength=self.centers.shape[0])
        np.add.at(sums, y, f)
        centers = self.centers.data().asnumpy()
        seen = counts > 0
        centers[seen] = sums[seen] / counts[seen, None]
        self.centers.set_data(mx.nd.array(centers.astype(np.float32)))

    def update_centers(self):
        """Apply Eq. 4 with the batch's summed statistics (call after ``trainer.step``)."""
        for centers, stats in zip(self.centers.list_data(), self.stats.list_grad()):
            sums = stats[:, :self.units]
            counts = stats[:, self.units:]
            centers[:] = centers - self.alpha * sums / (1 + counts)


class TripletLoss(nn.HybridBlock):
    """Triplet loss on L2-normalised embeddings with online mining in the batch.

    Distances are squared Euclidean on the unit sphere, ``d = 2 - 2 cos`` (FaceNet, Eq. 1). For each
    anchor-positive pair ``(a, p)`` (same label, ``a != p``):

    * ``semihard`` (Schroff et al. 2015, Sec. 3.2): the negative with the smallest ``d(a, n)`` still larger
      than ``d(a, p)``; if there is none, the negative farthest from ``a`` (as TensorFlow's
      ``triplet_semihard_loss``). The anchor's loss is the mean over its positives of
      ``max(d(a,p) - d(a,n) + margin, 0)``.
    * ``batch-hard`` (Hermans et al. 2017, Eq. 5): one term per anchor with its farthest positive and its
      closest negative.

    Anchors without a positive or without a negative in the batch get 0.

    ``forward(embedding, label)``: float32 ``(batch, units)`` and class ids ``(batch,)`` ->
    ``(loss (batch,), one_hot (batch, num_classes))`` where ``one_hot`` marks the label of each sample's
    nearest other sample (so argmax accuracy is the in-batch 1-NN accuracy).
    """

    def __init__(self, num_classes, margin=0.2, mining='semihard', **kwargs):
        super().__init__(**kwargs)
        if mining not in ('semihard', 'batch-hard'):
            raise ValueError(f"mining must be 'semihard' or 'batch-hard', not {mining!r}")
        self.num_classes, self.margin, self.mining = num_classes, float(margin), mining

    def hybrid_forward(self, F, embedding, label):
        e = F.L2Normalization(embedding, mode='instance')
        cos = F.dot(e, e, transpose_b=True)
        dist = F.relu(2 - 2 * cos)  # (B, B)
        index = F.contrib.arange_like(label, axis=0)
        eye = F.broadcast_equal(index.reshape((-1, 1)), index.reshape((1, -1)))
        same = F.broadcast_equal(label.reshape((-1, 1)), label.reshape((1, -1)))
        positive, negative = same - eye, 1 - same
        has_negative = F.max(negative, axis=1)
        if self.mining == 'batch-hard':
            d_ap = _pick_best(F, F.argmax(dist - (1 - positive) * _FAR, axis=1), dist)
            d_an = _pick_best(F, F.argmin(dist + (1 - negative) * _FAR, axis=1), dist)
            loss = F.relu(d_ap - d_an + self.margin) * F.max(positive, axis=1) * has_negative
        else:
            d_ap = dist.expand_dims(2)  # [a, p, 1]
            d_an = F.broadcast_like(dist.expand_dims(1), dist.expand_dims(2), lhs_axes=(1,), rhs_axes=(1,))
            outside = F.broadcast_mul(negative.expand_dims(1), F.broadcast_greater(d_an, d_ap))  # [a, p, n]
            closest_outside = F.pick(d_an, F.argmin(d_an + (1 - outside) * _FAR, axis=2), axis=2)
            farthest = _pick_best(F, F.argmax(dist - (1 - negative) * _FAR, axis=1), dist)  # [a]
            d_neg = F.where(F.max(outside, axis=2), closest_outside,
                            F.broadcast_like(farthest.expand_dims(1), dist))
            pair = F.relu(dist - d_neg + self.margin) * positive
            count = F.sum(positive, axis=1)
            loss = F.sum(pair, axis=1) / F.maximum(count, 1) * has_negative
        nearest = F.argmax(cos - eye * 4, axis=1)
        return loss, F.one_hot(F.take(label, nearest), self.num_classes)


def _pick_best(F, index, dist):
    """``dist[a, index[a]]`` for every row ``a``."""
    return F.pick(dist, index, axis=1)
