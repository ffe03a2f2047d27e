"""The LightCNN family: shapes, parameter counts, MFM semantics, hybridization, init, export."""
import mxnet as mx
import numpy as np
import pytest

from common.preprocessing import Preprocessing
from symbols import MFM, Group, LightCNNInit, ResBlock, default_preprocessing, get_model, get_model_list

# Official backbone parameter counts (everything except the classifier fc2).
OFFICIAL_BACKBONE = {'lightcnn9': 5_480_864, 'lightcnn29': 12_573_280,
                     'lightcnn29v2': 10_475_872, 'lightcnn_v4': 10_345_600}


def _net(name, **kw):
    net = get_model(name, **kw)
    net.initialize(LightCNNInit())
    return net


def _input(name, n=2, size=128, seed=0):
    c = default_preprocessing(name).num_channels
    return mx.nd.array(np.random.RandomState(seed).rand(n, c, size, size))


def _count(net, skip=()):
    return sum(p.data().size for k, p in net._collect_params_with_prefix().items()
               if not k.startswith(skip))


@pytest.mark.parametrize('name', sorted(OFFICIAL_BACKBONE))
def test_backbone_parameter_count_matches_official(name):
    net = _net(name)
    net(_input(name))
    assert _count(net) == OFFICIAL_BACKBONE[name]


@pytest.mark.parametrize('name', sorted(OFFICIAL_BACKBONE))
def test_classifier_shapes_and_feature_output(name):
    net = _net(name, num_classes=7, return_features=True)
    logits, feature = net(_input(name, n=3))
    assert logits.shape == (3, 7) and feature.shape == (3, 256)
    assert _count(net, skip=('fc2',)) == OFFICIAL_BACKBONE[name]
    fc2_bias = 'fc2.bias' in net._collect_params_with_prefix()
    assert fc2_bias == (name != 'lightcnn29v2')  # 29v2's classifier has no bias


@pytest.mark.parametrize('name', sorted(OFFICIAL_BACKBONE))
def test_hybridized_equals_imperative(name):
    net = _net(name)
    x = _input(name, n=2)
    imperative = net(x).asnumpy()
    net.hybridize(static_alloc=True, static_shape=True)
    np.testing.assert_allclose(net(x).asnumpy(), imperative, rtol=1e-5, atol=1e-5)


def test_mfm_matches_numpy_reference_conv_and_dense():
    rng = np.random.RandomState(1)
    conv = MFM(3, 4, kernel_size=3, padding=1)
    conv.initialize(mx.init.Normal(1.0))
    x = rng.randn(2, 3, 5, 5).astype('float32')
    raw = conv.filter(mx.nd.array(x)).asnumpy()           # 8 maps
    expected = np.maximum(raw[:, :4], raw[:, 4:])          # first half vs second half
    np.testing.assert_allclose(conv(mx.nd.array(x)).asnumpy(), expected, rtol=1e-5, atol=1e-5)

    dense = MFM(10, 3, dense=True)
    dense.initialize(mx.init.Normal(1.0))
    v = rng.randn(4, 10).astype('float32')
    w = dense.filter.weight.data().asnumpy()
    b = dense.filter.bias.data().asnumpy()
    full = v @ w.T + b
    np.testing.assert_allclose(dense(mx.nd.array(v)).asnumpy(),
                               np.maximum(full[:, :3], full[:, 3:]), rtol=1e-5, atol=1e-6)


def test_group_and_resblock_compose_mfms():
    x = mx.nd.array(np.random.RandomState(2).rand(1, 6, 8, 8))
    group = Group(6, 10)
    group.initialize(LightCNNInit())
    assert group(x).shape == (1, 10, 8, 8)
    np.testing.assert_allclose(group(x).asnumpy(), group.conv(group.conv_a(x)).asnumpy())
    block = ResBlock(6)
    block.initialize(LightCNNInit())
    np.testing.assert_allclose(block(x).asnumpy(),
                               (block.conv2(block.conv1(x)) + x).asnumpy(), rtol=1e-6)


def test_initializer_xavier_weights_and_bias_point_one():
    net = _net('lightcnn9', num_classes=3)
    net(_input('lightcnn9'))
    params = net._collect_params_with_prefix()
    for key, p in params.items():
        data = p.data().asnumpy()
        if key.endswith('bias'):
            assert np.all(data == np.float32(0.1)), key
        else:
            receptive = np.prod(data.shape[2:])
            fan_avg = (data.shape[0] + data.shape[1]) * receptive / 2.0
            expected_std = np.sqrt(3.0 / fan_avg) / np.sqrt(3.0)  # uniform(-a, a) has std a/sqrt(3)
            assert abs(data.std() - expected_std) < 0.1 * expected_std, key
            assert np.abs(data).max() <= np.sqrt(3.0 / fan_avg) + 1e-6, key
    # a fresh net must not blow up: MFM with He scaling gave LightCNN-29 logits of ~1e5
    deep = _net('lightcnn29', num_classes=1000)
    assert deep(_input('lightcnn29', n=4)).asnumpy().std() < 20
    # registered: MXNet can rebuild it from its serialised form
    assert isinstance(mx.init.create(LightCNNInit().dumps()), LightCNNInit)


@pytest.mark.parametrize('name,size,side', [('lightcnn9', 96, 6), ('lightcnn9', 100, 7),
                                            ('lightcnn29v2', 144, 9), ('lightcnn_v4', 112, 7)])
def test_other_input_sizes_derive_the_dense_layer(name, size, side):
    pre = Preprocessing(channels=default_preprocessing(name).channels, input_size=size)
    net = get_model(name, preprocessing=pre)
    net.initialize(LightCNNInit())
    assert net(_input(name, size=size)).shape == (2, 256)
    dense = [p for k, p in net._collect_params_with_prefix().items() if k.startswith('fc')][0]
    assert dense.shape[1] == side * side * 128


def test_unknown_network_is_a_clear_error():
    with pytest.raises(ValueError, match='lightcnn9'):
        get_model('resnet50')
    assert set(get_model_list()) == set(OFFICIAL_BACKBONE)


@pytest.mark.parametrize('name', ['lightcnn9', 'lightcnn29v2'])
def test_export_and_symbolblock_reload(tmp_path, name):
    net = _net(name)
    net.hybridize()
    x = _input(name)
    expected = net(x).asnumpy()
    net.export(str(tmp_path / name))
    loaded = mx.gluon.SymbolBlock.imports(str(tmp_path / f'{name}-symbol.json'), ['data'],
                                          str(tmp_path / f'{name}-0000.params'))
    np.testing.assert_allclose(loaded(x).asnumpy(), expected, rtol=1e-5, atol=1e-6)
