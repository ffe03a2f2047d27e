"""Linear probe before fine-tuning (LP-FT, training/probe.py): the classifier fitted on the frozen features."""
import mxnet as mx
import numpy as np
import pytest

from helpers import train_config
from models.checkpoint import load_checkpoint, load_metadata, save_checkpoint
from training import setup, train
from training.config import PRETRAINED_PROBE_EPOCHS, parse_config
from training.data import check_record_file
from training.probe import embed_records, fit_head

QUIET = dict(log=lambda _: None)


@pytest.fixture(scope='module')
def source(tiny_rec, tmp_path_factory):
    """A gray LightCNN-9 checkpoint (32 px input, 9 classes) whose features tell faces apart: the
    data-dependent initialisation on the tiny records (Xavier alone gives every face the same feature)."""
    folder = tmp_path_factory.mktemp('probe_source')
    run = setup(parse_config(_config(tiny_rec, folder / 'init', input_size=32, num_classes=9)), **QUIET)
    return save_checkpoint(run.net, str(folder / 'source'), run.meta)


def _config(rec, prefix, **overrides):
    return train_config(rec, prefix, **dict(dict(num_epochs=1, dropout=0.0), **overrides))


def _features(run, rec):
    """Features and labels of every record in file order, computed here with numpy-side batching of 1."""
    feats, labels = embed_records(run.net, check_record_file(rec), run.preprocessing, mx.cpu(), batch_size=5,
                                  threads=1)
    return feats.asnumpy().astype(np.float64), labels.asnumpy().astype(np.int64)


def _softmax_ce(logits, labels):
    logits = logits - logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def test_probe_fits_the_classifier_on_frozen_features_and_leaves_the_backbone(tiny_rec, source, tmp_path):
    lines = []
    run = setup(parse_config(_config(tiny_rec, tmp_path / 'p', pretrained=source, probe_epochs=60)),
                log=lines.append)
    unprobed = setup(parse_config(_config(tiny_rec, tmp_path / 'u', pretrained=source, probe_epochs=0)), **QUIET)
    params = {k: v.data().asnumpy() for k, v in run.net._collect_params_with_prefix().items()}
    before = {k: v.data().asnumpy() for k, v in unprobed.net._collect_params_with_prefix().items()}
    for key in params:  # the backbone is the pretrained one, only fc2 moved
        if key.startswith('fc2.'):
            assert np.abs(params[key] - before[key]).max() > 1e-3, key
        else:
            np.testing.assert_array_equal(params[key], before[key], err_msg=key)
    features, labels = _features(run, tiny_rec)
    assert features.shape == (36, 256)
    logits = features @ params['fc2.weight'].T.astype(np.float64) + params['fc2.bias']
    probe = run.meta['probe']
    assert probe['images'] == 36 and probe['epochs'] == 60 and probe['updates'] == 60
    # what the log and the JSON report is what the fitted classifier does on those features
    assert probe['accuracy'] == pytest.approx(np.mean(logits.argmax(axis=1) == labels))
    zero = np.log(6)  # the unprobed classifier: fc2 zero, every class equally likely
    assert _softmax_ce(logits, labels) < 0.5 * zero and probe['accuracy'] > 0.9
    assert not np.abs(before['fc2.weight']).any()
    assert any(line.startswith('linear probe: 36 training faces embedded') for line in lines)


def test_probe_starts_center_loss_centres_at_the_class_means(tiny_rec, source, tmp_path):
    run = setup(parse_config(_config(tiny_rec, tmp_path / 'c', pretrained=source, center_loss_weight=0.01)),
                **QUIET)
    features, labels = _features(run, tiny_rec)
    means = np.stack([features[labels == c].mean(axis=0) for c in range(6)])
    np.testing.assert_allclose(run.head.center.centers.data().asnumpy(), means, rtol=1e-5, atol=1e-5)


def test_probe_fits_a_margin_head_and_skips_triplet(tiny_rec, source, tmp_path):
    arc = setup(parse_config(_config(tiny_rec, tmp_path / 'a', pretrained=source, loss='arcface', margin_s=16.0,
                                     probe_epochs=60)), **QUIET)
    raw = setup(parse_config(_config(tiny_rec, tmp_path / 'r', pretrained=source, loss='arcface', margin_s=16.0,
                                     probe_epochs=0)), **QUIET)
    features, labels = _features(arc, tiny_rec)

    def cosine_accuracy(run):
        w = run.head.margin.classifier.weight.data().asnumpy().astype(np.float64)
        w /= np.linalg.norm(w, axis=1, keepdims=True)
        return np.mean((features @ w.T).argmax(axis=1) == labels)
    assert arc.meta['probe']['accuracy'] == pytest.approx(cosine_accuracy(arc))
    assert cosine_accuracy(arc) > 0.9 and cosine_accuracy(arc) > cosine_accuracy(raw)
    lines = []
    triplet = setup(parse_config(_config(tiny_rec, tmp_path / 't', pretrained=source, loss='triplet')),
                    log=lines.append)
    assert triplet.meta['probe'] is None and 'linear probe skipped: the triplet head has no classifier' in lines


def test_probe_on_two_devices_fits_the_same_classifier(tiny_rec, source, tmp_path):
    common = dict(pretrained=source, probe_epochs=20)
    one = setup(parse_config(_config(tiny_rec, tmp_path / 'one', **common)), **QUIET)
    two = setup(parse_config(_config(tiny_rec, tmp_path / 'two', **common)), contexts=[mx.cpu(0), mx.cpu(1)],
                **QUIET)
    for key in ('fc2.weight', 'fc2.bias'):
        a = one.net._collect_params_with_prefix()[key]
        b = two.net._collect_params_with_prefix()[key]
        np.testing.assert_allclose(b.data(mx.cpu(1)).asnumpy(), b.data(mx.cpu(0)).asnumpy())
        np.testing.assert_allclose(b.data(mx.cpu(0)).asnumpy(), a.data().asnumpy(), rtol=1e-4, atol=1e-5)


def test_probe_defaults_and_resume(tiny_rec, source, tmp_path):
    assert parse_config(_config(tiny_rec, tmp_path / 's')).probe_epochs is None
    scratch = setup(parse_config(_config(tiny_rec, tmp_path / 's', input_size=32)), **QUIET)
    assert scratch.meta['probe'] is None  # from scratch: no probe unless asked
    prefix = tmp_path / 'res'
    first = train(_config(tiny_rec, prefix, pretrained=source, num_epochs=1), **QUIET)
    assert load_metadata(first['checkpoint'])['probe']['epochs'] == PRETRAINED_PROBE_EPOCHS
    lines = []
    second = train(_config(tiny_rec, prefix, pretrained=source, num_epochs=2, load_epoch=1), log=lines.append)
    assert not any('linear probe' in line for line in lines)  # the resumed run keeps the classifier it trained
    assert load_checkpoint(second['checkpoint'])[0] is not None
