"""Embedding BatchNorm (``--embedding-bn``, ``symbols.lightcnn.EmbeddingBN``): why it is there, what it
computes, and that every stage (checkpoint, extraction, export, API, training, fine-tuning) uses it."""
import argparse
import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

from data_tools.synthetic import make_synthetic_faces
from helpers import PRE, SIZE, make_checkpoint, write_tiny_rec
from models import load_model
from models.export import export_model
from symbols import LightCNNInit, get_model
from symbols.checkpoint import load_checkpoint, load_metadata, save_checkpoint
from training import ParameterError, train
from training.config import build_parser, embedding_bn, parse_config
from training.finetune import copy_backbone, read_pretrained

QUIET = dict(log=lambda _: None)


def _net(bn, seed=0, num_classes=None):
    mx.random.seed(seed)
    net = get_model('lightcnn9', num_classes=num_classes, preprocessing=PRE, embedding_bn=bn)
    net.initialize(LightCNNInit())
    return net


def _images(n=16, seed=0):
    return mx.nd.array(np.random.RandomState(seed).rand(n, *PRE.data_shape).astype(np.float32))


def _mean_pair_cosine(f):
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    c = f @ f.T
    return float(c[np.triu_indices(len(f), 1)].mean())


def _warm_running_stats(net, steps=3):
    """A few train-mode steps so that the running statistics leave their (0, 1) start (MXNet's BatchNorm
    updates them in the backward pass)."""
    for k in range(steps):
        with autograd.record(train_mode=True):
            out = net(_images(16, seed=10 + k))
        out.backward()


def test_untrained_embeddings_share_one_direction_and_the_bn_spreads_them():
    x = _images()
    plain = _net(False)(x).asnumpy()
    bn = _net(True)
    with autograd.record(train_mode=True):
        normed = bn(x).asnumpy()
    # the cause: MFM + biases 0.1 give every face nearly the same direction (the margin losses' dead start)
    assert _mean_pair_cosine(plain) > 0.99
    # batch-centred: directions spread (mean cosine near 0), each unit has batch mean beta = 0
    assert abs(_mean_pair_cosine(normed)) < 0.2
    np.testing.assert_allclose(normed.mean(axis=0), 0, atol=1e-4)


def test_bn_computes_the_running_statistics_formula_and_hybridized_equals_imperative():
    net = _net(True)
    _warm_running_stats(net)
    bn = net.embedding_bn
    mean, var = bn.running_mean.data().asnumpy(), bn.running_var.data().asnumpy()
    assert np.abs(mean).max() > 0.01  # moved by the train-mode steps (momentum 0.9)
    bn.beta.set_data(mx.nd.array(np.linspace(-0.5, 0.5, 256)))
    plain = _net(False)  # same seed: the same trunk weights
    x = _images(4, seed=3)
    fc = plain(x).asnumpy()
    expected = (fc - mean) / np.sqrt(var + 2e-5) + np.linspace(-0.5, 0.5, 256)
    imperative = net(x).asnumpy()  # inference mode: running statistics
    np.testing.assert_allclose(imperative, expected, rtol=1e-4, atol=1e-4)
    net.hybridize(static_alloc=True, static_shape=True)
    np.testing.assert_allclose(net(x).asnumpy(), imperative, rtol=1e-5, atol=1e-5)
    assert bn.gamma.grad_req == 'null'  # fix_gamma, as insightface's fc1


def test_checkpoint_extraction_api_and_export_use_the_bn(tmp_path):
    net = _net(True, num_classes=5)
    _warm_running_stats(net)
    x = _images(3, seed=4)
    logits = net(x).asnumpy()
    feature_net = _net(True)  # what extraction builds: features only
    stem = save_checkpoint(net, str(tmp_path / 'bn'), dict(network='lightcnn9', num_classes=5,
                                                            preprocessing=PRE, embedding_bn=True))
    assert load_metadata(stem)['embedding_bn'] is True
    loaded, _ = load_checkpoint(stem)
    np.testing.assert_allclose(loaded(x).asnumpy(), logits, rtol=1e-5, atol=1e-5)
    features, _ = load_checkpoint(stem, features_only=True)
    assert features.embedding_bn is not None
    names = features._collect_params_with_prefix()
    assert {'embedding_bn.running_mean', 'embedding_bn.running_var', 'embedding_bn.beta'} <= set(names)
    np.testing.assert_allclose(names['embedding_bn.running_mean'].data().asnumpy(),
                               net.embedding_bn.running_mean.data().asnumpy())
    # the feature before fc2 is BN(fc): the classifier net's fc2 input equals the feature net's output
    net.return_features = True
    _, expected = net(x)
    np.testing.assert_allclose(features(x).asnumpy(), expected.asnumpy(), rtol=1e-5, atol=1e-5)
    model = load_model(stem)  # the Python API (extraction and identification go through it)
    assert model.net.embedding_bn is not None
    out = export_model(stem, 'mxnet', prefix=str(tmp_path / 'export' / 'bn'))
    exported = mx.gluon.SymbolBlock.imports(out['files'][0], ['data'], out['files'][1])
    np.testing.assert_allclose(exported(x).asnumpy(), expected.asnumpy(), rtol=1e-4, atol=1e-4)
    del feature_net


def _args(**values):
    base = dict(embedding_bn=None, loss='softmax')
    base.update(values)
    return argparse.Namespace(**base)


def test_default_is_on_for_margin_losses_from_scratch_and_the_checkpoints_otherwise():
    assert [embedding_bn(_args(loss=loss)) for loss in ('arcface', 'cosface', 'combined')] == [True] * 3
    assert not embedding_bn(_args(loss='softmax')) and not embedding_bn(_args(loss='triplet'))
    assert not embedding_bn(_args(loss='arcface'), checkpoint_meta={'network': 'lightcnn_v4'})  # V4: none
    assert embedding_bn(_args(loss='softmax'), checkpoint_meta={'embedding_bn': True})
    assert embedding_bn(_args(loss='softmax', embedding_bn='on'))
    assert not embedding_bn(_args(loss='arcface', embedding_bn='off'))
    assert build_parser().parse_args(['--embedding-bn', 'off']).embedding_bn == 'off'
    with pytest.raises(SystemExit):
        build_parser().parse_args(['--embedding-bn', 'maybe'])
    assert 'arcface' in build_parser().format_help()  # the worked-out default is shown


@pytest.fixture(scope='module')
def tiny_rec(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny_bn')
    make_synthetic_faces(root / 'images', num_identities=6, images_per_identity=8, size=SIZE, seed=3)
    return write_tiny_rec(str(root / 'images'), str(root / 'faces'))


def _config(rec, prefix, **overrides):
    config = dict(data_train=rec, model_prefix=str(prefix), input_size=32, batch_size=8, num_epochs=1,
                  data_nthreads=1, disp_batches=100, seed=1)
    config.update(overrides)
    return config


def test_arcface_from_scratch_trains_and_saves_the_bn(tiny_rec, tmp_path):
    result = train(_config(tiny_rec, tmp_path / 'arc', loss='arcface', margin_s=16.0), **QUIET)
    stem = result['checkpoint']
    meta = load_metadata(stem)
    assert meta['embedding_bn'] is True
    net, _ = load_checkpoint(stem, features_only=True)
    running = net.embedding_bn.running_mean.data().asnumpy()
    assert np.isfinite(running).all() and np.abs(running).max() > 0  # statistics of the real batches
    softmax = train(_config(tiny_rec, tmp_path / 'soft'), **QUIET)
    assert load_metadata(softmax['checkpoint'])['embedding_bn'] is False
    # resuming keeps the checkpoint's choice; asking for the other is one error naming the option
    resumed = train(_config(tiny_rec, tmp_path / 'arc', loss='arcface', margin_s=16.0, num_epochs=2, load_epoch=1),
                    **QUIET)
    assert load_metadata(resumed['checkpoint'])['embedding_bn'] is True
    with pytest.raises(ParameterError, match='embedding_bn on, not off'):
        train(_config(tiny_rec, tmp_path / 'arc', loss='arcface', margin_s=16.0, num_epochs=3, load_epoch=2,
                      embedding_bn='off'), **QUIET)


def test_fine_tuning_adds_a_new_bn_to_a_checkpoint_without_one(tmp_path):
    source = read_pretrained(make_checkpoint(tmp_path, num_classes=9, seed=5))
    net = _net(True, seed=1, num_classes=6)
    net(_images(1))
    copied = copy_backbone(net, source)
    assert copied['new'] == ['embedding_bn.beta', 'embedding_bn.gamma', 'embedding_bn.running_mean',
                             'embedding_bn.running_var']
    src = mx.nd.load(source.stem + '.params')
    np.testing.assert_array_equal(net.fc1.filter.weight.data().asnumpy(), src['fc1.filter.weight'].asnumpy())
    assert not net.embedding_bn.beta.data().asnumpy().any()  # initialised, not taken from anywhere
    with_bn = str(tmp_path / 'with_bn')
    bn_net = _net(True, seed=2, num_classes=9)
    _warm_running_stats(bn_net)
    save_checkpoint(bn_net, with_bn, dict(network='lightcnn9', num_classes=9, preprocessing=PRE,
                                          embedding_bn=True))
    target = _net(True, seed=3, num_classes=6)
    target(_images(1))
    assert copy_backbone(target, read_pretrained(with_bn))['new'] == []
    np.testing.assert_array_equal(target.embedding_bn.running_mean.data().asnumpy(),
                                  bn_net.embedding_bn.running_mean.data().asnumpy())
    assert not os.path.exists(with_bn + '-0001.params')
    assert parse_config(dict(embedding_bn='on')).embedding_bn == 'on'


def test_running_statistics_are_the_exact_ones_of_the_saved_weights(tiny_rec, tmp_path):
    """Precise BN: after each epoch the running mean/variance are the statistics of the current weights'
    pre-BN features over the training images (centre crops), so extraction and validation see the
    features training normalised (an exponential average lags weights that Adam moves fast)."""
    from common.preprocessing import Preprocessing
    from training.data import record_iter
    stem = train(_config(tiny_rec, tmp_path / 'arc', loss='arcface', margin_s=16.0, num_epochs=2), **QUIET)['checkpoint']
    net, meta = load_checkpoint(stem, features_only=True)
    pre = meta['preprocessing']
    pre = pre if isinstance(pre, Preprocessing) else Preprocessing.from_dict(pre)
    raw = np.concatenate([net.embed(b.data[0]).asnumpy()[:b.data[0].shape[0] - b.pad]
                          for b in record_iter(tiny_rec, pre, 8, train=False, threads=1)])
    bn = net.embedding_bn
    np.testing.assert_allclose(bn.running_mean.data().asnumpy(), raw.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.running_var.data().asnumpy(), raw.var(0), rtol=1e-3, atol=1e-4)
    # the extracted (eval-mode) embeddings of the training images are centred and scaled as in training
    features = np.concatenate([net(b.data[0]).asnumpy()[:b.data[0].shape[0] - b.pad]
                               for b in record_iter(tiny_rec, pre, 8, train=False, threads=1)])
    beta = bn.beta.data().asnumpy()
    assert np.abs(features.mean(0) - beta).max() < 1e-2
    assert np.abs(features.std(0) - 1).max() < 0.05  # below 1 only by the eps of units with tiny variance
