"""LightCNN building blocks as Gluon HybridBlocks, named after the official ``light_cnn.py``.

Attribute names (``filter``, ``conv_a``, ``conv``, ``conv1``, ``conv2``) follow the PyTorch modules,
so a structural parameter name here equals the key of the official ``state_dict``.
"""
import mxnet as mx
from mxnet.gluon import nn


class MFM(nn.HybridBlock):
    """2-way Max-Feature-Map (Wu et al., "A Light CNN for Deep Face Representation with Noisy Labels").

    A convolution (or dense layer) produces ``2 * out_channels`` maps; the output keeps, element-wise,
    the larger of the first and the second half. This is the competitive activation that replaces ReLU.

    Parameters
    ----------
    in_channels, out_channels : int
        Input channels (input units when ``dense``) and output channels after the max.
    kernel_size, stride, padding : int
        Convolution geometry (ignored when ``dense``).
    dense : bool
        Use a fully connected filter (``type=0`` in the official code); flattens its input.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1, dense=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.out_channels = out_channels
        with self.name_scope():
            if dense:
                self.filter = dense_layer(2 * out_channels, in_channels)
            else:
                self.filter = nn.Conv2D(2 * out_channels, kernel_size, stride, padding,
                                        in_channels=in_channels, bias_initializer=None)

    def hybrid_forward(self, F, x):
        conv = self.filter
        if not isinstance(conv, nn.Conv2D):
            first, second = F.split(conv(x), num_outputs=2, axis=1)
            return F.maximum(first, second)
        # max(a, b) = a + relu(b - a), and b - a is itself a convolution (weights W2 - W1, bias b2 - b1).
        # Same parameters, same function (to float rounding), but every op is a oneDNN op that keeps the
        # blocked layout: split + maximum forced a full reorder of each conv output and of its gradient,
        # a third of a CPU training step (bench/bench_train.py).
        weight, bias = (conv.weight.var(), conv.bias.var()) if F is mx.sym else \
            (conv.weight.data(x.context), conv.bias.data(x.context))
        c = self.out_channels
        halves = [(F.slice_axis(p, axis=0, begin=0, end=c), F.slice_axis(p, axis=0, begin=c, end=2 * c))
                  for p in (weight, bias)]
        (w1, w2), (b1, b2) = halves
        kwargs = dict(conv._kwargs, num_filter=c)
        first = F.Convolution(x, w1, b1, **kwargs)
        return first + F.Activation(F.Convolution(x, w2 - w1, b2 - b1, **kwargs), act_type='relu')


class Group(nn.HybridBlock):
    """1x1 MFM (channel mixing) followed by a kxk MFM: the "network in network" unit of LightCNN."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv_a = MFM(in_channels, in_channels, 1, 1, 0)
            self.conv = MFM(in_channels, out_channels, kernel_size, stride, padding)

    def hybrid_forward(self, F, x):
        return self.conv(self.conv_a(x))


class ResBlock(nn.HybridBlock):
    """Two 3x3 MFM convolutions plus the identity shortcut (LightCNN-29 and later)."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv1 = MFM(channels, channels, 3, 1, 1)
            self.conv2 = MFM(channels, channels, 3, 1, 1)

    def hybrid_forward(self, F, x):
        return self.conv2(self.conv1(x)) + x


class MaxAvgPool(nn.HybridBlock):
    """2x2 max-pool plus 2x2 average-pool, summed (LightCNN-29v2 and V4 downsampling)."""

    def hybrid_forward(self, F, x):
        return (F.Pooling(x, kernel=(2, 2), stride=(2, 2), pool_type='max')
                + F.Pooling(x, kernel=(2, 2), stride=(2, 2), pool_type='avg'))


def dense_layer(units, in_units, use_bias=True):
    """``nn.Dense`` whose bias, like its weight, is set by the initializer given to ``initialize``."""
    return nn.Dense(units, in_units=in_units, use_bias=use_bias, bias_initializer=None)


def max_pool():
    """2x2 max-pool with ceil mode, as the official LightCNN-9/29."""
    return nn.MaxPool2D(pool_size=2, strides=2, ceil_mode=True)


def res_stage(num_blocks, channels):
    """``num_blocks`` residual blocks in a row; indices match ``nn.Sequential`` in PyTorch."""
    stage = nn.HybridSequential(prefix='')
    with stage.name_scope():
        for _ in range(num_blocks):
            stage.add(ResBlock(channels))
    return stage


@mx.init.register
class LightCNNInit(mx.init.Xavier):
    """Xavier weights and biases of 0.1: what the seed's patched ``Xavier_LightCNN`` did, in stock MXNet.

    The weights use MXNet's Xavier defaults (uniform, fan average, magnitude 3). He-style scaling
    (gaussian, fan-in, magnitude 2) suits ReLU, which zeroes half the units; MFM keeps the larger of
    two, so it would double the activation variance per layer (LightCNN-29 logits ~1e5 at init).
    Registered, so it serialises by name.
    """

    def __init__(self, rnd_type='uniform', factor_type='avg', magnitude=3, bias=0.1):
        super().__init__(rnd_type=rnd_type, factor_type=factor_type, magnitude=magnitude)
        self._kwargs['bias'] = bias
        self.bias = bias

    def _init_weight(self, name, arr):
        # Gluon hands every parameter (biases too) to ``_init_weight``; dispatch on the name.
        if name.endswith('bias'):
            self._init_bias(name, arr)
        else:
            super()._init_weight(name, arr)

    def _init_bias(self, _, arr):
        arr[:] = self.bias
