"""The LightCNN family in Gluon, layer for layer as the official PyTorch definitions.

Wu, He, Sun, Tan. "A Light CNN for Deep Face Representation with Noisy Labels", TIFS 2018.
Every net maps a face to a 256-d feature; with ``num_classes`` it also has the ``fc2`` classifier
(dropout before it) and returns logits, or ``(logits, feature)`` with ``return_features=True``.
``embedding_bn=True`` ends the feature with a BatchNorm, ``feature = BN(fc)``, as insightface's backbones do
(Deng et al., ArcFace, CVPR 2019, Sec. 4.1 "BN-Dropout-FC-BN" output; :class:`EmbeddingBN`).
"""
from mxnet.gluon import nn

from .blocks import MFM, Group, MaxAvgPool, dense_layer, max_pool, res_stage


def _pooled_side(side, pools, ceil):
    for _ in range(pools):
        side = -(-side // 2) if ceil else side // 2
    if side < 1:
        raise ValueError('input too small for four 2x2 poolings')
    return side


class EmbeddingBN(nn.BatchNorm):
    """BatchNorm of the 256-d embedding without scale: ``(x - mean) / sqrt(var + eps) + beta`` per unit.

    insightface's output block (``fc1 = BatchNorm(FC(x), fix_gamma=True, eps=2e-5, momentum=0.9)``; Deng et
    al., ArcFace, CVPR 2019, Sec. 4.1). Why LightCNN needs it for normalised-feature losses: MFM keeps
    ``max(a, b)`` and the initial biases are 0.1, so every embedding of an untrained net shares one large
    common component (mean pairwise cosine ~0.9999 at initialisation) and the gradient through the L2
    normalisation, ``(I - x x^T) / |x|``, is nearly zero along it. Subtracting the per-unit mean makes the
    embeddings point in different directions from the first step. Training uses the batch statistics,
    extraction the running ones (``running_mean``/``running_var``, saved with the weights).

    ``forward(x)``: float32 ``(batch, units)`` -> ``(batch, units)``. Parameters ``gamma`` (fixed at 1),
    ``beta``, ``running_mean``, ``running_var``: ``(units,)``.
    """

    def __init__(self, units=256, **kwargs):
        super().__init__(axis=1, momentum=0.9, epsilon=2e-5, center=True, scale=False, in_channels=units,
                         **kwargs)


class _LightCNN(nn.HybridBlock):
    """Shared head: trunk -> 256-d feature [-> embedding BN] [-> dropout -> fc2]."""

    def __init__(self, num_classes=None, dropout=0.5, return_features=False, fc2_bias=True,
                 embedding_bn=False, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.return_features = return_features
        self._dropout = dropout
        self.embedding_bn = None
        self._embedding_bn = bool(embedding_bn)

    def _add_classifier(self, fc2_bias):
        """The layers after the trunk (call inside ``name_scope``): embedding BN, dropout and fc2."""
        if self._embedding_bn:
            self.embedding_bn = EmbeddingBN(256)
        if self.num_classes:
            self.dropout = nn.Dropout(self._dropout)
            self.fc2 = dense_layer(self.num_classes, 256, use_bias=fc2_bias)

    def hybrid_forward(self, F, x):
        feature = self.embed(x)
        if self.embedding_bn is not None:
            feature = self.embedding_bn(feature)
        if not self.num_classes:
            return feature
        logits = self.fc2(self.dropout(feature))
        return (logits, feature) if self.return_features else logits


class LightCNN9(_LightCNN):
    """LightCNN-9: MFM conv 5x5, four groups, MFM-dense 256 (5,480,864 backbone parameters)."""

    def __init__(self, num_classes=None, input_size=128, in_channels=1, **kwargs):
        super().__init__(num_classes, **kwargs)
        side = _pooled_side(input_size, 4, ceil=True)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix='')
            self.features.add(MFM(in_channels, 48, 5, 1, 2), max_pool(),
                              Group(48, 96), max_pool(),
                              Group(96, 192), max_pool(),
                              Group(192, 128), Group(128, 128), max_pool())
            self.fc1 = MFM(side * side * 128, 256, dense=True)
            self._add_classifier(True)

    def embed(self, x):
        return self.fc1(self.features(x))


class LightCNN29(_LightCNN):
    """LightCNN-29 (v1 and v2): residual stages of 1/2/3/4 blocks before groups 1-4.

    ``v2=True`` gives LightCNN-29v2: max+avg pooling, a plain dense 256 feature and fc2 without bias.
    """

    def __init__(self, num_classes=None, input_size=128, in_channels=1, v2=False, **kwargs):
        super().__init__(num_classes, **kwargs)
        pool = MaxAvgPool if v2 else max_pool
        side = _pooled_side(input_size, 4, ceil=not v2)
        with self.name_scope():
            self.conv1, self.pool1 = MFM(in_channels, 48, 5, 1, 2), pool()
            self.block1, self.group1, self.pool2 = res_stage(1, 48), Group(48, 96), pool()
            self.block2, self.group2, self.pool3 = res_stage(2, 96), Group(96, 192), pool()
            self.block3, self.group3 = res_stage(3, 192), Group(192, 128)
            self.block4, self.group4, self.pool4 = res_stage(4, 128), Group(128, 128), pool()
            self.fc = (dense_layer(256, side * side * 128) if v2
                       else MFM(side * side * 128, 256, dense=True))
            self._add_classifier(not v2)

    def embed(self, x):
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.group1(self.block1(x)))
        x = self.pool3(self.group2(self.block2(x)))
        x = self.group3(self.block3(x))
        x = self.pool4(self.group4(self.block4(x)))
        return self.fc(x)


class LightCNNV4(_LightCNN):
    """LightCNN-V4: BGR input, 3x3 MFM convs between residual stages, max+avg pools, dense 256."""

    def __init__(self, num_classes=None, input_size=128, in_channels=3, **kwargs):
        super().__init__(num_classes, **kwargs)
        side = _pooled_side(input_size, 4, ceil=False)
        with self.name_scope():
            self.conv1, self.pool1 = MFM(in_channels, 48), MaxAvgPool()
            self.block1, self.conv2, self.pool2 = res_stage(1, 48), MFM(48, 96), MaxAvgPool()
            self.block2, self.conv3, self.pool3 = res_stage(2, 96), MFM(96, 192), MaxAvgPool()
            self.block3, self.conv4 = res_stage(3, 192), MFM(192, 128)
            self.block4, self.conv5, self.pool4 = res_stage(4, 128), MFM(128, 128), MaxAvgPool()
            self.fc = dense_layer(256, side * side * 128)
            self._add_classifier(True)

    def embed(self, x):
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(self.block1(x)))
        x = self.pool3(self.conv3(self.block2(x)))
        x = self.conv4(self.block3(x))
        x = self.pool4(self.conv5(self.block4(x)))
        return self.fc(x)
