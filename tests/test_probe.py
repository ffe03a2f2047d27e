"""Linear probe before fine-tuning (LP-FT, training/probe.py): the classifier fitted on the frozen features."""
import os

import mxnet as mx
import numpy as np
import pytest

from helpers import PRE, train_config
from models.checkpoint import load_checkpoint, load_metadata, save_checkpoint
from training import ParameterError, setup, train
from training.config import PRETRAINED_PROBE_EPOCHS, classifier_lr_mult, parse_config
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
    """Features and labels of every record in file order (batches of 5: another split than the probe's)."""
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


def test_probe_does_not_depend_on_the_feature_scale_and_never_ends_worse(tiny_rec, source, tmp_path):
    run = setup(parse_config(_config(tiny_rec, tmp_path / 'f', pretrained=source, probe_epochs=0)), **QUIET)
    features, labels = embed_records(run.net, check_record_file(tiny_rec), run.preprocessing, mx.cpu(), threads=1)
    fc2 = run.net.fc2
    start = [p.data().copy() for p in (fc2.weight, fc2.bias)]

    def fitted_logits(scale, **kw):
        for p, value in zip((fc2.weight, fc2.bias), start):
            p.set_data(value)
        fit = fit_head(run.net, run.head, features * scale, labels, [mx.cpu()], **dict(dict(epochs=20), **kw))
        return fit, fc2(features * scale).asnumpy()
    fit1, logits1 = fitted_logits(1.0)
    fit1000, logits1000 = fitted_logits(1000.0)
    # LightCNN-9 and V4 features differ in scale by orders of magnitude: the same fit either way
    assert fit1['kept'] and fit1000['feature_scale'] == pytest.approx(1000 * fit1['feature_scale'], rel=1e-5)
    np.testing.assert_allclose(logits1000, logits1, rtol=1e-3, atol=1e-3)
    assert fit1['loss'] < fit1['loss_before'] == pytest.approx(np.log(6), rel=1e-5)  # fc2 starts at zero
    # a fit that ends worse than it started (lr far too large) leaves the classifier as it started
    fit, _ = fitted_logits(1.0, lr=1e4, epochs=3)
    assert not fit['kept'] and fit['loss'] == fit['loss_before']
    for p, value in zip((fc2.weight, fc2.bias), start):
        np.testing.assert_array_equal(p.data().asnumpy(), value.asnumpy())


def test_resuming_a_fine_tuned_run_keeps_its_settings_without_pretrained(tiny_rec, source, tmp_path, repo_root):
    prefix = tmp_path / 'keep'
    train(_config(tiny_rec, prefix, pretrained=source, num_epochs=1), **QUIET)
    lines = []
    resumed = train(_config(tiny_rec, prefix, num_epochs=2, load_epoch=1), log=lines.append)
    meta = load_metadata(resumed['checkpoint'])
    assert meta['lr_schedule']['backbone_lr_mult'] == 0.01 and meta['pretrained']['stem'] == os.path.abspath(source)
    first = load_metadata(str(prefix) + '-0001')
    assert meta['probe'] == first['probe'] and meta['probe']['images'] == 36  # the probe of the first run
    assert meta['lr_schedule']['fc2_lr_mult'] == first['lr_schedule']['fc2_lr_mult']
    assert f'resuming a run fine-tuned from {os.path.abspath(source)}: its fine-tuning settings apply' in lines
    assert 'Epoch[1] backbone trained at lr x 0.01' in lines
    other = save_checkpoint(setup(parse_config(_config(tiny_rec, tmp_path / 'o', input_size=32)), **QUIET).net,
                            str(tmp_path / 'other'), dict(network='lightcnn9', num_classes=6, preprocessing=PRE))
    with pytest.raises(ParameterError, match='is not the checkpoint the resumed run'):
        train(_config(tiny_rec, prefix, num_epochs=3, load_epoch=2, pretrained=other), **QUIET)


def test_a_margin_head_with_the_papers_scale_on_few_classes_gets_a_note(tiny_rec, tmp_path):
    def notes(**options):
        lines = []
        setup(parse_config(_config(tiny_rec, tmp_path / str(len(options)), loss='arcface', **options)),
              log=lines.append)
        return [line for line in lines if line.startswith('note: margin_s')]
    assert notes() == ["note: margin_s (--margin-s) is 64, the papers' value for thousands of identities; with 6 "
                       'classes it saturates the softmax: give 16 (README: Why these defaults)']
    assert notes(margin_s=16.0) == []


def test_fine_tuned_classifier_lr_follows_the_feature_scale_and_the_probe_ignores_it(tiny_rec, source, tmp_path):
    args = parse_config(_config(tiny_rec, tmp_path / 'x', pretrained=source))
    # one Adam step moves a logit by ~lr x |features|: x1 for V4's norm 1.3, 2/566 for a LightCNN-9 from scratch
    assert classifier_lr_mult(args, 1.3) == 1.0 and classifier_lr_mult(args, 566.0) == pytest.approx(2 / 566)
    assert classifier_lr_mult(parse_config(_config(tiny_rec, tmp_path / 'x', pretrained=source, fc2_lr_mult=10.0)),
                              566.0) == 10.0
    assert classifier_lr_mult(parse_config(_config(tiny_rec, tmp_path / 'x')), 566.0) == 1.0  # from scratch
    run = setup(parse_config(_config(tiny_rec, tmp_path / 'p', pretrained=source)), **QUIET)
    scale = run.meta['probe']['feature_scale']
    assert run.net.fc2.weight.lr_mult == pytest.approx(min(1.0, 2 / scale))
    # a frozen classifier (--fc2-lr-mult 0) is still fitted by the probe, and stays frozen for training
    frozen = setup(parse_config(_config(tiny_rec, tmp_path / 'z', pretrained=source, fc2_lr_mult=0.0)), **QUIET)
    assert frozen.meta['probe']['kept'] and np.abs(frozen.net.fc2.weight.data().asnumpy()).max() > 0
    assert frozen.net.fc2.weight.lr_mult == 0.0
