"""Checkpoint format: save/load round trip, resolution of what users type, clear errors."""
import json

import mxnet as mx
import numpy as np
import pytest

from common.errors import UsageError
from common.preprocessing import Preprocessing
from symbols.checkpoint import list_epochs, load_checkpoint, resolve_checkpoint, save_checkpoint
from symbols import LightCNNInit, get_model


def _trained(num_classes=4):
    net = get_model('lightcnn9', num_classes=num_classes, preprocessing=Preprocessing(input_size=64))
    net.initialize(LightCNNInit())
    net(mx.nd.zeros((1, 1, 64, 64)))
    return net


def _meta(num_classes=4):
    return {'network': 'lightcnn9', 'num_classes': num_classes,
            'preprocessing': Preprocessing(input_size=64), 'metrics': {'acc': 0.5}}


def test_round_trip_with_classifier_and_features_only(tmp_path):
    net = _trained()
    x = mx.nd.array(np.random.RandomState(0).rand(2, 1, 64, 64))
    logits = net(x).asnumpy()
    prefix = str(tmp_path / 'run' / 'lcnn')
    for epoch in (1, 2):
        save_checkpoint(net, prefix, _meta(), epoch=epoch)
    assert list_epochs(prefix) == [1, 2]

    loaded, meta = load_checkpoint(prefix)  # bare prefix -> latest epoch
    assert meta['epoch'] == 2 and meta['stem'].endswith('lcnn-0002')
    assert meta['preprocessing'] == Preprocessing(input_size=64)
    np.testing.assert_allclose(loaded(x).asnumpy(), logits, rtol=1e-6)

    features, _ = load_checkpoint(prefix + '-0001.params', features_only=True)
    net.return_features = True
    np.testing.assert_allclose(features(x).asnumpy(), net(x)[1].asnumpy(), rtol=1e-6)


def test_imported_stem_without_epoch(tmp_path):
    save_checkpoint(_trained(), str(tmp_path / 'v'), _meta())
    assert resolve_checkpoint(str(tmp_path / 'v')) == str(tmp_path / 'v')
    assert json.load(open(tmp_path / 'v.json'))['format'] == 'lightcnn-gluon-checkpoint'
    assert not list(tmp_path.glob('*.tmp*'))


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(UsageError, match='no checkpoint'):
        resolve_checkpoint(str(tmp_path / 'missing'))
    save_checkpoint(_trained(), str(tmp_path / 'a'), _meta(), epoch=3)
    with pytest.raises(UsageError, match='a-0004.params is missing'):
        resolve_checkpoint(str(tmp_path / 'a'), epoch=4)
    # parameters that do not fit the network named in the JSON
    meta = json.load(open(tmp_path / 'a-0003.json'))
    meta['network'] = 'lightcnn29'
    json.dump(meta, open(tmp_path / 'a-0003.json', 'w'))
    with pytest.raises(UsageError, match='does not fit lightcnn29'):
        load_checkpoint(str(tmp_path / 'a'), epoch=3)
