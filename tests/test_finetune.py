"""Fine-tuning (--pretrained, --backbone-lr-mult, --freeze-epochs), colour training, checkpoint metadata,
and training defaults that converge."""
import json
import os
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest

from common.preprocessing import Preprocessing
from common.errors import flag
from helpers import PRE, SIZE, make_checkpoint, save_image, write_tiny_rec
from models.checkpoint import load_checkpoint, load_metadata
from training import Callback, ParameterError, setup, train
from training.config import PRETRAINED_BACKBONE_LR_MULT, parse_config
from training.data import record_iter

QUIET = dict(log=lambda _: None)


def colour_tree(root, identities=4, images=6, size=SIZE, seed=0):
    """``id_K/J.png`` colour images: each identity a hue of its own plus smooth noise (BGR uint8)."""
    rng = np.random.default_rng(seed)
    for k in range(identities):
        base = np.array([(50 + 60 * k) % 256, (200 - 40 * k) % 256, (90 * k + 30) % 256], np.float32)
        for j in range(images):
            noise = cv2.resize(rng.uniform(-60, 60, (5, 5, 3)).astype(np.float32), (size, size))
            img = np.clip(base + noise, 0, 255).astype(np.uint8)
            save_image(root / f'id_{k}' / f'{j}.png', img)
    return root


@pytest.fixture(scope='module')
def bgr_rec(tmp_path_factory):
    root = tmp_path_factory.mktemp('bgr')
    colour_tree(root / 'images')
    return write_tiny_rec(str(root / 'images'), str(root / 'faces'), val_per_identity=1, color='bgr')


@pytest.fixture(scope='module')
def source(tmp_path_factory):
    """A gray LightCNN-9 checkpoint (32 px input) with 9 classes: another class count than the data's 6."""
    return make_checkpoint(tmp_path_factory.mktemp('source'), num_classes=9, seed=5)


def _config(rec, prefix, **overrides):
    config = dict(data_train=rec, model_prefix=str(prefix), batch_size=8, num_epochs=1, data_nthreads=1,
                  disp_batches=100, seed=1)
    config.update(overrides)
    return config


def _params(net):
    return {k: v.data().asnumpy() for k, v in net._collect_params_with_prefix().items()}


def _source_params(stem):
    return {k: v.asnumpy() for k, v in mx.nd.load(stem + '.params').items()}


def _backbone(params):
    return {k: v for k, v in params.items() if not k.startswith('fc2.')}


def test_backbone_is_copied_by_name_and_the_classifier_is_new(tiny_rec, source, tmp_path):
    # without the linear probe (tests/test_probe.py), which then fits the new classifier
    run = setup(parse_config(_config(tiny_rec, tmp_path / 'ft', pretrained=source, probe_epochs=0)), **QUIET)
    got, src = _params(run.net), _source_params(source)
    assert _backbone(got).keys() == _backbone(src).keys() and len(_backbone(got)) == 20
    for key, value in _backbone(got).items():
        np.testing.assert_array_equal(value, src[key], err_msg=key)
    assert src['fc2.weight'].shape == (9, 256) and got['fc2.weight'].shape == (6, 256)
    # the new classifier is initialised as a run from scratch initialises it (same seed: same values)
    scratch = setup(parse_config(_config(tiny_rec, tmp_path / 'scratch', input_size=32)), **QUIET)
    for key in ('fc2.weight', 'fc2.bias'):
        np.testing.assert_array_equal(got[key], _params(scratch.net)[key])
    assert run.args.network == 'lightcnn9' and run.preprocessing == PRE  # taken from the checkpoint
    pretrained = run.meta['pretrained']
    assert pretrained['stem'] == os.path.abspath(source) and pretrained['num_classes'] == 9
    assert pretrained['copied'] == 20 and pretrained['left_out'] == ['fc2.bias', 'fc2.weight']


class GradReqs(Callback):
    """Records, per epoch, the grad_req of a backbone and of a classifier parameter."""

    def __init__(self):
        self.seen = {}

    def on_batch_end(self, run, epoch, nbatch):
        params = run.net._collect_params_with_prefix()
        self.seen[epoch] = (params['features.0.filter.weight'].grad_req, params['fc2.weight'].grad_req)


def test_backbone_lr_mult_zero_freezes_the_backbone_bit_for_bit(tiny_rec, source, tmp_path):
    lines, reqs = [], GradReqs()
    result = train(_config(tiny_rec, tmp_path / 'frozen', pretrained=source, backbone_lr_mult=0.0,
                           num_epochs=2, lr=0.05, wd=1e-3), log=lines.append, callbacks=[reqs])
    trained = _params(load_checkpoint(result['checkpoint'])[0])
    src = _source_params(source)
    for key, value in _backbone(trained).items():
        assert np.array_equal(value, src[key]), key  # no update at all, weight decay included
    assert np.abs(trained['fc2.weight'] - _params(setup(parse_config(
        _config(tiny_rec, tmp_path / 'init', pretrained=source)), **QUIET).net)['fc2.weight']).max() > 1e-4
    assert reqs.seen == {0: ('null', 'write'), 1: ('null', 'write')}
    assert any('backbone frozen for good' in line for line in lines)
    assert load_metadata(result['checkpoint'])['lr_schedule']['backbone_lr_mult'] == 0.0


def test_backbone_lr_mult_scales_the_backbone_update(tiny_rec, source, tmp_path):
    # one plain-SGD update (36 records, batch 36) from the same weights on the same batch: the backbone
    # moves by backbone_lr_mult x the full update, the classifier by the same amount in both runs (a random
    # classifier, init='xavier': a zero one would pass no gradient to the backbone in the first update)
    common = dict(pretrained=source, batch_size=36, optimizer='sgd', mom=0.0, wd=0.0, dropout=0.0, lr=0.05,
                  warmup_epochs=0.0, freeze_epochs=0, clip_gradient=0.0, init='xavier')
    full = train(_config(tiny_rec, tmp_path / 'full', backbone_lr_mult=1.0, **common), **QUIET)
    part = train(_config(tiny_rec, tmp_path / 'part', backbone_lr_mult=0.25, **common), **QUIET)
    src = _source_params(source)
    a = _params(load_checkpoint(full['checkpoint'])[0])
    b = _params(load_checkpoint(part['checkpoint'])[0])
    for key in _backbone(src):
        step_full, step_part = a[key] - src[key], b[key] - src[key]
        assert np.abs(step_full).max() > 0, key
        # float32 rounding of w - lr * g: a few ulps of |w|
        np.testing.assert_allclose(step_part, 0.25 * step_full, rtol=0,
                                   atol=4 * np.finfo(np.float32).eps * np.abs(src[key]).max(), err_msg=key)
    init = _params(setup(parse_config(_config(tiny_rec, tmp_path / 'init', **common)), **QUIET).net)
    np.testing.assert_allclose(b['fc2.weight'] - init['fc2.weight'], a['fc2.weight'] - init['fc2.weight'],
                               rtol=1e-4, atol=1e-7)


def test_two_stage_schedule_unfreezes_after_freeze_epochs(tiny_rec, source, tmp_path):
    lines, reqs = [], GradReqs()
    prefix = tmp_path / 'two'
    train(_config(tiny_rec, prefix, pretrained=source, freeze_epochs=2, backbone_lr_mult=1.0, num_epochs=3),
          log=lines.append, callbacks=[reqs])
    assert reqs.seen == {0: ('null', 'write'), 1: ('null', 'write'), 2: ('write', 'write')}
    src = _source_params(source)
    fc2 = None
    for epoch in (1, 2, 3):
        params = _params(load_checkpoint(str(prefix), epoch=epoch)[0])
        same = [np.array_equal(params[k], v) for k, v in _backbone(src).items()]
        assert all(same) if epoch <= 2 else not any(same), epoch
        assert fc2 is None or np.abs(params['fc2.weight'] - fc2).max() > 0  # the classifier always trains
        fc2 = params['fc2.weight']
    assert [l for l in lines if 'backbone' in l] == [
        'Epoch[0] backbone frozen until Epoch[2]: training the classifier only',
        'Epoch[2] backbone unfrozen: trained at lr x 1']


def test_resuming_a_fine_tuning_run_is_exact(tiny_rec, source, tmp_path):
    common = dict(pretrained=source, freeze_epochs=1, dropout=0.3)
    straight = train(_config(tiny_rec, tmp_path / 'straight', num_epochs=3, **common), **QUIET)
    train(_config(tiny_rec, tmp_path / 'resumed', num_epochs=1, **common), **QUIET)
    lines = []
    resumed = train(_config(tiny_rec, tmp_path / 'resumed', num_epochs=3, load_epoch=1, **common),
                    log=lines.append)
    assert f'Epoch[1] backbone trained at lr x {PRETRAINED_BACKBONE_LR_MULT}' in lines  # the default with pretrained
    a, meta_a = load_checkpoint(straight['checkpoint'])
    b, meta_b = load_checkpoint(resumed['checkpoint'])
    pa, pb = _params(a), _params(b)
    for key in pa:
        np.testing.assert_allclose(pa[key], pb[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert meta_b['lr_schedule'] == meta_a['lr_schedule']
    assert meta_b['pretrained'] == meta_a['pretrained']


def test_mismatches_are_one_clear_error_naming_both_sides(tiny_rec, bgr_rec, source, tmp_path, repo_root):
    def error(**overrides):
        with pytest.raises(ParameterError) as info:
            train(_config(overrides.pop('rec', tiny_rec), tmp_path / 'x', **overrides), **QUIET)
        return str(info.value)

    assert error(pretrained=source, network='lightcnn29') == (
        f'network lightcnn29 conflicts with pretrained {os.path.abspath(source)}, a lightcnn9: drop network '
        '(the checkpoint sets the network)')
    assert error(pretrained=source, rec=bgr_rec).startswith(
        f'{bgr_rec} holds bgr records but pretrained {os.path.abspath(source)} (lightcnn9) takes gray input')
    assert error(pretrained=source, input_size=28).startswith('input_size 28 differs from the 32 px input '
                                                              'of pretrained')
    big = make_checkpoint(tmp_path / 'big', num_classes=3, pre=Preprocessing(input_size=40, record_size=44))
    assert error(pretrained=big).startswith(f'{tiny_rec} holds {SIZE} px records, smaller than the 40 px '
                                            'input of pretrained')
    assert error(pretrained=str(tmp_path / 'nothing')).startswith(f'pretrained {tmp_path / "nothing"}: '
                                                                  'no checkpoint at')
    assert error(network='lightcnn_v4', input_size=32).startswith(
        f'{tiny_rec} holds gray records but the network takes bgr input')
    # weights that do not fit the network the JSON names: every parameter listed, nothing trained
    odd = make_checkpoint(tmp_path / 'odd', num_classes=3, network='lightcnn29')
    meta = load_metadata(odd)
    with open(odd + '.json', 'w') as f:
        json.dump(dict(meta, network='lightcnn9'), f)
    from common.errors import UsageError
    with pytest.raises(UsageError, match=r'tiny.params does not fit the backbone of lightcnn9: missing: '
                                         r'features\.0\.filter\.weight, '):
        train(_config(tiny_rec, tmp_path / 'y', pretrained=odd), **QUIET)
    # the command line: one line, exit 2, flags spelled as flags
    proc = subprocess.run([sys.executable, 'train_lightcnn.py', '--data-train', tiny_rec, '--pretrained',
                           source, '--network', 'lightcnn29'], cwd=repo_root, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1, proc.stderr
    assert proc.stderr.startswith('error: --network lightcnn29 conflicts with --pretrained '), proc.stderr


def _records(rec_path, count):
    """``(labels, BGR uint8 images)`` of the first ``count`` records, decoded by OpenCV in Python."""
    reader = mx.recordio.MXRecordIO(rec_path, 'r')
    labels, images = [], []
    for _ in range(count):
        header, payload = mx.recordio.unpack(reader.read())
        labels.append(float(np.ravel(header.label)[0]))
        images.append(cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR))
    reader.close()
    return labels, images


def test_colour_records_give_exactly_the_bgr_pixels_of_the_preprocessing(bgr_rec):
    pre = Preprocessing(channels='bgr', input_size=SIZE, record_size=SIZE)
    labels, images = _records(bgr_rec, 8)
    expected = pre.to_batch([pre.decoded(img) for img in images])  # the one definition: BGR order, /255
    assert expected[:, 0].mean() != pytest.approx(expected[:, 2].mean(), abs=0.05)  # channels differ
    batch = next(iter(record_iter(bgr_rec, pre, batch_size=8, train=False, threads=1)))
    np.testing.assert_array_equal(batch.data[0].asnumpy(), expected)
    np.testing.assert_array_equal(batch.label[0].asnumpy(), labels)
    # training batches: random crop (here the whole record) and mirror -- each image as is or mirrored
    train_pre = Preprocessing(channels='bgr', input_size=SIZE - 4, record_size=SIZE)
    got = next(iter(record_iter(bgr_rec, train_pre, batch_size=8, train=False, threads=1))).data[0].asnumpy()
    np.testing.assert_array_equal(got, pre.to_batch([img[2:-2, 2:-2] for img in images]))
    got = next(iter(record_iter(bgr_rec, pre, batch_size=8, train=True, seed=4, threads=1))).data[0].asnumpy()
    count = sum(1 for _ in open(bgr_rec[:-4] + '.idx'))
    every = pre.to_batch([pre.decoded(img) for img in _records(bgr_rec, count)[1]])
    candidates = list(every) + [img[:, :, ::-1] for img in every]
    for x in got:
        assert any(np.array_equal(x, c) for c in candidates)
    assert not all(any(np.array_equal(x, c) for c in every) for x in got)  # some were mirrored


def test_lightcnn_v4_trains_on_colour_records_and_its_checkpoint_serves_features(bgr_rec, tmp_path):
    from extract_features.extraction import extract_to_mat
    from models import load_model
    from models.export import export_model
    from data_tools.pairs import make_pairs, write_pairs
    images = os.path.join(os.path.dirname(bgr_rec), 'images')
    pairs = str(tmp_path / 'pairs.txt')
    write_pairs(pairs, make_pairs(images, folds=2, per_fold=4, seed=0), 2, 4)
    result = train(_config(bgr_rec, tmp_path / 'v4', network='lightcnn_v4', input_size=32, num_epochs=2,
                           batch_size=6, val_pairs=pairs, val_images=images), **QUIET)  # verification on BGR
    assert all(np.isfinite(h['train_loss']) and 0 <= h['val_verification'] <= 1 for h in result['history'])
    meta = load_metadata(result['checkpoint'])
    assert meta['network'] == 'lightcnn_v4' and meta['num_classes'] == 4
    assert meta['preprocessing']['channels'] == 'bgr' and meta['preprocessing']['input_size'] == 32
    assert meta['loss'] == 'softmax' and meta['head']['loss'] == 'softmax' and meta['pretrained'] is None
    paths = sorted(os.path.join(images, d, f) for d in os.listdir(images)
                   for f in os.listdir(os.path.join(images, d)))
    model = load_model(result['checkpoint'])
    features = model.embed(paths)
    net, _ = load_checkpoint(result['checkpoint'], features_only=True)
    pre = model.preprocessing
    direct = net(mx.nd.array(pre.to_batch([pre.load(p) for p in paths]))).asnumpy()
    np.testing.assert_allclose(features, direct, rtol=1e-4, atol=1e-5)
    extraction = extract_to_mat(result['checkpoint'], str(tmp_path / 'f.mat'), images=images, progress=False)
    np.testing.assert_allclose(extraction.features, features, rtol=1e-4, atol=1e-5)
    exported = export_model(result['checkpoint'], 'mxnet', str(tmp_path / 'export' / 'v4'))
    assert all(os.path.getsize(f) > 0 for f in exported['files'])


@pytest.mark.slow
def test_fine_tuned_real_v4_keeps_its_features_when_frozen(real_v4, tmp_path):
    """The released V4 with a new 3-class classifier: extraction and the API give the imported features."""
    from extract_features.extraction import extract_to_mat
    from models import load_model
    stem, _ = real_v4
    images = colour_tree(tmp_path / 'images', identities=3, images=4, size=144)
    rec = write_tiny_rec(str(images), str(tmp_path / 'faces'), size=144, color='bgr')
    result = train(_config(rec, tmp_path / 'ft', pretrained=stem, backbone_lr_mult=0.0, batch_size=12),
                   **QUIET)
    meta = load_metadata(result['checkpoint'])
    assert meta['network'] == 'lightcnn_v4' and meta['num_classes'] == 3
    assert meta['pretrained']['source']['sha256'].startswith('c47c6845')  # the imported file's provenance
    paths = sorted(str(p) for p in images.rglob('*.png'))
    tuned = load_model(result['checkpoint'])
    np.testing.assert_allclose(tuned.embed(paths), load_model(stem).embed(paths), rtol=1e-5, atol=1e-5)
    ids, probs = tuned.classify(paths)
    assert probs.shape == (12, 3)
    mat = extract_to_mat(result['checkpoint'], str(tmp_path / 'f.mat'), images=str(images), progress=False)
    np.testing.assert_allclose(mat.features, tuned.embed(sorted(paths)), rtol=1e-5, atol=1e-5)


def _features_cosine(net, batch):
    features = net(batch)[1].asnumpy()
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    return (features @ features.T)[np.triu_indices(len(features), 1)]


def test_data_dependent_init_standardises_every_filter_and_zeroes_the_classifier(tiny_rec, tmp_path):
    run = setup(parse_config(_config(tiny_rec, tmp_path / 'data', input_size=32)), **QUIET)
    # the faces it was computed on: the first 32 records, centre crops
    batch = next(iter(record_iter(tiny_rec, run.preprocessing, 32, train=False, seed=1, threads=1)))
    batch = batch.data[0].as_in_context(mx.cpu())
    net = run.net
    first = net.features[0].filter
    weight, bias = first.weight.data().copy(), first.bias.data().copy()  # copies: oneDNN may reorder in place
    out = mx.nd.Convolution(batch, weight, bias, **first._kwargs).asnumpy()
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-3)
    dense = net.fc1.filter(net.features(batch)).asnumpy()  # the last MFM, after all earlier ones changed
    np.testing.assert_allclose(dense.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(dense.std(axis=0), 1, atol=1e-3)
    assert not np.abs(_params(net)['fc2.weight']).any() and run.meta['init'] == 'data'
    # LightCNNInit alone: every face has the same feature direction (what made training sit at chance)
    xavier = setup(parse_config(_config(tiny_rec, tmp_path / 'xavier', input_size=32, init='xavier')), **QUIET)
    assert _features_cosine(xavier.net, batch).min() > 0.99
    assert _features_cosine(net, batch).mean() < 0.7
    assert np.abs(_params(xavier.net)['fc2.weight']).max() > 0.01


def pattern_tree(root, identities=8, images=12, size=SIZE, seed=0):
    """``id_K/J.png`` gray images: an identity is a smooth random pattern, an image it shifted, lit, noisy."""
    rng = np.random.default_rng(seed)
    for k in range(identities):
        pattern = cv2.resize(rng.uniform(0, 255, (4, 4)).astype(np.float32), (size + 8, size + 8))
        for j in range(images):
            dy, dx = rng.integers(0, 9, 2)
            img = pattern[dy:dy + size, dx:dx + size] * rng.uniform(0.7, 1.1)
            img += rng.normal(0, 12, (size, size))
            save_image(root / f'id_{k}' / f'{j}.png', np.clip(img, 0, 255).astype(np.uint8))
    return root


def test_defaults_learn_without_tuning_flags(tmp_path):
    """No optimiser flag at all: the loss falls well below chance (ln 8) and stays finite.

    Adam sits near chance for its first ~100 updates before the loss drops (README, Training: defaults that
    learn): 20 epochs of 6 updates. Real data at batch 16-128 is bench/bench_defaults.py's and the README's.
    """
    rec = write_tiny_rec(str(pattern_tree(tmp_path / 'images')), str(tmp_path / 'faces'))
    result = train(dict(data_train=rec, model_prefix=str(tmp_path / 'm'), input_size=32, batch_size=16,
                        num_epochs=20, data_nthreads=1, save_period=20), **QUIET)
    losses = [h['train_loss'] for h in result['history']]
    assert all(np.isfinite(losses)), losses
    assert min(losses[-3:]) < 0.5 * np.log(8) < losses[0], losses


def test_fine_tuning_never_overwrites_its_source(tiny_rec, tmp_path):
    """``--pretrained runs/a-0001 --model-prefix runs/a`` would write epoch 1 over the source: refused before
    any work, the source unchanged; another prefix (or epochs past the source's) is fine."""
    first = train(_config(tiny_rec, tmp_path / 'a', num_epochs=1), **QUIET)['checkpoint']
    before = {p: open(p, 'rb').read() for p in (first + '.params', first + '.json')}
    with pytest.raises(ParameterError, match='would overwrite epoch 1, the pretrained checkpoint') as err:
        train(_config(tiny_rec, tmp_path / 'a', num_epochs=2, pretrained=first), **QUIET)
    assert '--model-prefix' in err.value.spelled(flag) and '--pretrained' in err.value.spelled(flag)
    assert {p: open(p, 'rb').read() for p in before} == before
    other = train(_config(tiny_rec, tmp_path / 'b', num_epochs=1, pretrained=first), **QUIET)
    assert other['checkpoint'] != first


def test_a_missing_pretrained_checkpoint_is_one_error_line(tiny_rec, tmp_path, repo_root):
    for spec in (tmp_path / 'nonexist', tmp_path / 'nonexist.params'):
        with pytest.raises(ParameterError, match='pretrained .*nonexist'):
            train(_config(tiny_rec, tmp_path / 'x', pretrained=str(spec)), **QUIET)
    run = subprocess.run([sys.executable, str(repo_root / 'train_lightcnn.py'), '--data-train', tiny_rec,
                          '--model-prefix', str(tmp_path / 'y'), '--pretrained', str(tmp_path / 'nonexist')],
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.startswith('error: --pretrained ') and run.stderr.count('\n') == 1
