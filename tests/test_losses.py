"""Losses and heads: values against numpy references, edge gradients, mining, P x K sampler, devices, resume."""
import math
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon
from mxnet.gluon import nn

from helpers import train_config
from models import load_model
from models.checkpoint import load_checkpoint
from symbols import default_preprocessing
from training import ParameterError, train
from training.config import check_config, parse_config
from training.heads import build_head
from training.losses import (ARCFACE, COMBINED, COSFACE, CenterLoss, MarginSoftmax, TripletLoss,
                             combined_target)
from training.data import record_preprocessing
from training.sampler import IdentityBalancedSampler, IdentityBatches
from training.trainer import forward_backward

SPHERE = (2.0, 0.0, 0.0)  # SphereFace-style multiplicative margin through the combined form
MIXED = (1.35, 0.25, 0.1)  # every margin at once, m1 not an integer
ALL_MARGINS = [ARCFACE, COSFACE, COMBINED, SPHERE, MIXED]


# --- numpy references ------------------------------------------------------------------------------------

def np_target(cos, m1, m2, m3):
    """psi(theta) = cos(m1 theta + m2) - m3, continued as (-1)^k cos(phi) - 2k - m3 beyond pi (float64)."""
    theta = np.arccos(np.clip(np.asarray(cos, np.float64), -1, 1))
    phi = m1 * theta + m2
    k = np.floor(phi / np.pi)
    return (-1.0) ** k * np.cos(phi) - 2 * k - m3


def np_margin_loss(x, weight, labels, s, margins):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    wn = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    cos = xn.astype(np.float64) @ wn.T.astype(np.float64)
    rows = np.arange(len(labels))
    logits = s * cos
    logits[rows, labels] = s * np_target(cos[rows, labels], *margins)
    top = logits.max(axis=1, keepdims=True)
    logsumexp = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    return logsumexp - logits[rows, labels], s * cos


def np_triplet(emb, labels, margin, mining):
    e = emb.astype(np.float64) / np.linalg.norm(emb, axis=1, keepdims=True)
    d = ((e[:, None, :] - e[None, :, :]) ** 2).sum(axis=2)
    loss = np.zeros(len(labels))
    for a in range(len(labels)):
        pos = [p for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        neg = [n for n in range(len(labels)) if labels[n] != labels[a]]
        if not pos or not neg:
            continue
        if mining == 'batch-hard':
            loss[a] = max(max(d[a, p] for p in pos) - min(d[a, n] for n in neg) + margin, 0)
            continue
        terms = []
        for p in pos:
            farther = [d[a, n] for n in neg if d[a, n] > d[a, p]]
            dn = min(farther) if farther else max(d[a, n] for n in neg)
            terms.append(max(d[a, p] - dn + margin, 0))
        loss[a] = np.mean(terms)
    return loss, d


def _nd(a, ctx=None):
    return mx.nd.array(a, ctx=ctx or mx.cpu(), dtype='float32')


def _forward_backward(block, x, labels):
    """``block(x, labels)`` recorded and back-propagated from its first output (the loss): ``(outputs as a
    tuple, gradient w.r.t. x as numpy)``; ``x`` and ``labels`` are numpy or NDArray (``x`` is copied)."""
    x = x.copy() if isinstance(x, mx.nd.NDArray) else _nd(x)
    x.attach_grad()
    with autograd.record():
        out = block(x, labels if isinstance(labels, mx.nd.NDArray) else _nd(labels))
        out = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    out[0].backward()
    return out, x.grad.asnumpy()


# --- combined margin ----------------------------------------------------------------------------------------

@pytest.mark.parametrize('margins', ALL_MARGINS)
def test_combined_target_matches_numpy_and_its_gradient_is_finite_at_the_edges(margins):
    cos = np.concatenate([[-1.0, -0.99999, -0.9, -0.877, -0.8776, 0.0, 0.5, 0.9999, 1.0],
                          np.linspace(-0.999, 0.999, 301)]).astype(np.float32)
    x = _nd(cos)
    x.attach_grad()
    with autograd.record():
        psi = combined_target(mx.nd, x, *margins)
    psi.backward()
    grad = x.grad.asnumpy()
    assert np.isfinite(grad).all() and np.isfinite(psi.asnumpy()).all()
    ref = np_target(cos, *margins)
    inner = np.abs(cos) < 0.9999
    np.testing.assert_allclose(psi.asnumpy()[inner], ref[inner], atol=2e-5)
    # at cos = +-1 the floor/clip that keeps gradients finite moves the value by at most ~5e-4
    np.testing.assert_allclose(psi.asnumpy(), ref, atol=1e-3)
    # the gradient is the derivative of the reference (central differences in float64)
    h = 1e-6
    numeric = (np_target(cos.astype(np.float64) + h, *margins) - np_target(cos.astype(np.float64) - h,
                                                                             *margins)) / (2 * h)
    smooth = np.abs(cos) < 0.999
    smooth &= np.abs(np.arccos(np.clip(cos, -1, 1)) * margins[0] + margins[1] - np.pi) > 1e-3  # not at a kink
    np.testing.assert_allclose(grad[smooth], numeric[smooth], rtol=2e-3, atol=2e-3)
    # psi decreases with the angle over [0, pi]: a worse angle never gets a larger target logit
    theta = np.linspace(0, np.pi, 2001)
    values = combined_target(mx.nd, _nd(np.cos(theta)), *margins).asnumpy()
    assert (np.diff(values) <= 1e-5).all()


def test_arcface_beyond_pi_continues_decreasing_instead_of_turning_back():
    m2 = ARCFACE[1]
    theta = np.array([np.pi - m2 - 0.1, np.pi - m2 + 0.1, np.pi])  # the last two: theta + m2 > pi
    plain = np.cos(theta + m2)  # the unguarded formula rises again past pi - m2
    assert plain[2] > plain[1]
    psi = combined_target(mx.nd, _nd(np.cos(theta)), *ARCFACE).asnumpy()
    assert psi[0] > psi[1] > psi[2]
    np.testing.assert_allclose(psi[1:], -np.cos(theta[1:] + m2) - 2, atol=1e-4)  # sin floor at pi


@pytest.mark.parametrize('margins', ALL_MARGINS)
def test_margin_softmax_loss_and_gradients_against_numpy(margins):
    rng = np.random.default_rng(4)
    classes, units, s = 5, 8, 16.0
    weight = rng.normal(size=(classes, units)).astype(np.float32)
    x = rng.normal(size=(7, units)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 4, 1, 2])
    x[5] = weight[1] * 3  # cos(theta_y) = 1: the gradient must stay finite
    x[6] = -weight[2]  # theta_y = pi: theta + m2 > pi
    block = MarginSoftmax(classes, units, s, *margins)
    block.initialize()
    block.classifier.weight.set_data(_nd(weight))
    block.hybridize()
    (loss, logits), grad = _forward_backward(block, x, labels)
    ref, ref_logits = np_margin_loss(x, weight, labels, s, margins)
    np.testing.assert_allclose(loss.asnumpy()[:5], ref[:5], rtol=1e-4, atol=1e-4)
    # cos = +-1 exactly: the floor/clip keeping the gradient finite moves psi by < 1e-3 (s * 1e-3 in logits)
    np.testing.assert_allclose(loss.asnumpy()[5:], ref[5:], atol=s * 1e-3)
    np.testing.assert_allclose(logits.asnumpy(), ref_logits, rtol=1e-5, atol=1e-4)
    assert np.isfinite(grad).all()
    assert np.isfinite(block.classifier.weight.grad().asnumpy()).all()
    assert np.abs(grad[:5]).max() > 0


def test_margin_is_what_separates_arcface_from_plain_cosine_softmax():
    rng = np.random.default_rng(1)
    weight, x = rng.normal(size=(4, 6)).astype(np.float32), rng.normal(size=(6, 6)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 0, 1])
    losses = {}
    for margins in [(1.0, 0.0, 0.0), ARCFACE, COSFACE]:
        block = MarginSoftmax(4, 6, 10.0, *margins)
        block.initialize()
        block.classifier.weight.set_data(_nd(weight))
        losses[margins] = block(_nd(x), _nd(labels))[0].asnumpy()
    # a margin makes the target harder for every sample (theta_y < pi - m2 here)
    assert (losses[ARCFACE] > losses[(1.0, 0.0, 0.0)]).all()
    assert (losses[COSFACE] > losses[(1.0, 0.0, 0.0)]).all()


# --- center loss --------------------------------------------------------------------------------------------

def _center_step(contexts, x, labels, centers, alpha, lr=0.1):
    block = CenterLoss(len(centers), x.shape[1], alpha=alpha)
    block.initialize(ctx=contexts)
    block.centers.set_data(_nd(centers))
    block.hybridize()
    trainer = gluon.Trainer({'stats': block.stats}, 'sgd', dict(learning_rate=lr, momentum=0.9, wd=0.1),
                            kvstore='device', update_on_kvstore=False)
    xs = gluon.utils.split_and_load(_nd(x), contexts, even_split=False)
    ys = gluon.utils.split_and_load(_nd(labels), contexts, even_split=False)
    for xi in xs:
        xi.attach_grad()
    with autograd.record():
        losses = [block(xi, yi) for xi, yi in zip(xs, ys)]
    autograd.backward(losses)
    trainer.step(len(labels))
    block.update_centers()
    loss = np.concatenate([l.asnumpy() for l in losses])
    grad = np.concatenate([xi.grad.asnumpy() for xi in xs])
    return loss, grad, [c.asnumpy() for c in block.centers.list_data()], block.stats.data().asnumpy()


@pytest.mark.parametrize('devices', [1, 2])
def test_center_loss_value_gradient_and_the_papers_update(devices):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(10, 5)).astype(np.float32)
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])  # class 4 absent from the batch
    centers = rng.normal(size=(5, 5)).astype(np.float32)
    alpha = 0.3
    contexts = [mx.cpu(i) for i in range(devices)]
    loss, grad, new_centers, stats = _center_step(contexts, x, labels, centers, alpha)
    diff = x - centers[labels]
    np.testing.assert_allclose(loss, 0.5 * (diff ** 2).sum(axis=1), rtol=1e-5)  # Wen et al., Eq. 2
    np.testing.assert_allclose(grad, diff, rtol=1e-5, atol=1e-6)  # Eq. 3
    expected = centers.astype(np.float64).copy()
    for j in range(5):  # Eq. 4 and Algorithm 1, over the whole batch (both devices)
        members = labels == j
        delta = (centers[j] - x[members]).sum(axis=0) / (1 + members.sum())
        expected[j] = centers[j] - alpha * delta
    for c in new_centers:  # every device holds the same centres
        np.testing.assert_allclose(c, expected, rtol=1e-5, atol=1e-6)
    for c in new_centers:  # a class absent from the batch keeps its centre
        np.testing.assert_array_equal(c[4], centers[4])
    assert not stats.any()  # the statistics carrier stays zero (lr_mult = wd_mult = 0)


# --- triplet ------------------------------------------------------------------------------------------------

def _triplet_batch():
    rng = np.random.default_rng(11)
    labels = np.repeat(np.arange(4), 3)
    labels = np.concatenate([labels, [9, 5, 5]])  # identity 9 has no positive
    emb = rng.normal(size=(len(labels), 6)).astype(np.float32)
    emb[:12] += 1.2 * rng.normal(size=(4, 6)).astype(np.float32).repeat(3, axis=0)  # some structure
    emb[14] = -emb[13]  # identity 5: the positive is farther than every negative (the semi-hard fallback)
    return emb, labels


@pytest.mark.parametrize('mining', ['semihard', 'batch-hard'])
def test_triplet_mining_against_brute_force(mining):
    emb, labels = _triplet_batch()
    ref, d = np_triplet(emb, labels, 0.3, mining)
    gaps = np.abs(d[:, :, None] - d[:, None, :])
    assert gaps[gaps > 0].min() > 1e-4  # no near-ties that float32 could order differently
    block = TripletLoss(10, margin=0.3, mining=mining)
    block.hybridize()
    (loss, onehot), grad = _forward_backward(block, emb, labels)
    np.testing.assert_allclose(loss.asnumpy(), ref, rtol=1e-4, atol=1e-5)
    assert ref[:12].max() > 0 and ref[12] == 0
    assert np.isfinite(grad).all() and np.abs(grad).max() > 0
    # one_hot marks the label of the nearest other sample (in-batch 1-NN)
    d_self = d + np.eye(len(labels)) * 10
    np.testing.assert_array_equal(onehot.asnumpy().argmax(axis=1), labels[d_self.argmin(axis=1)])


def test_semihard_picks_the_closest_negative_beyond_the_positive():
    # anchor 0, positive 1 at distance^2 0.5; negatives at 0.2 (hard), 0.7 (semi-hard), 1.5 (easy)
    def at(d2):  # unit vector with squared distance d2 from e0 in the e0-e1 plane
        c = 1 - d2 / 2
        return [c, math.sqrt(1 - c * c), 0]
    emb = np.array([[1, 0, 0], at(0.5), at(0.2), at(0.7), at(1.5)], np.float32)
    emb[1] = [1 - 0.25, 0, math.sqrt(1 - 0.75 ** 2)]  # the positive off the negatives' plane
    labels = np.array([0, 0, 1, 2, 3])
    loss = TripletLoss(4, margin=0.4)(_nd(emb), _nd(labels))[0].asnumpy()
    assert loss[0] == pytest.approx(0.5 - 0.7 + 0.4, abs=1e-5)  # the 0.7 one: semi-hard, inside the margin


# --- hybridised == imperative ---------------------------------------------------------------------------------

@pytest.mark.parametrize('make', [
    lambda: MarginSoftmax(6, 8, 32.0, *ARCFACE),
    lambda: MarginSoftmax(6, 8, 32.0, *MIXED),
    lambda: CenterLoss(6, 8, alpha=0.5),
    lambda: TripletLoss(6, 0.2, 'semihard'),
    lambda: TripletLoss(6, 0.2, 'batch-hard'),
], ids=['arcface', 'mixed', 'center', 'semihard', 'batch-hard'])
def test_hybridized_equals_imperative(make):
    rng = np.random.default_rng(3)
    x = _nd(rng.normal(size=(12, 8)))
    labels = _nd(np.repeat(np.arange(4), 3))
    results = []
    for hybrid in (False, True):
        mx.random.seed(0)
        block = make()
        block.initialize(mx.init.Normal(0.5))
        if hybrid:
            block.hybridize(static_alloc=True, static_shape=True)
        out, grad = _forward_backward(block, x, labels)
        results.append([o.asnumpy() for o in out] + [grad])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# --- heads on several devices ---------------------------------------------------------------------------------

class _TinyNet(nn.HybridBlock):
    """A stand-in for LightCNN: 12 inputs -> 256-d features [-> fc2 logits, features]."""

    def __init__(self, classes=None, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.body = nn.Dense(256, in_units=12)
            self.fc2 = nn.Dense(classes, in_units=256) if classes else None

    def hybrid_forward(self, F, x):
        f = self.body(x)
        return (self.fc2(f), f) if self.fc2 is not None else f


HEAD_CASES = {
    'softmax+center': dict(loss='softmax', center_loss_weight=0.1),
    'arcface+center': dict(loss='arcface', center_loss_weight=0.1),
    'cosface': dict(loss='cosface'),
    'combined': dict(loss='combined', margin_m1=1.2, margin_m2=0.2, margin_m3=0.1),
    'triplet+center': dict(loss='triplet', center_loss_weight=0.1, triplet_k=3),
    'batch-hard': dict(loss='triplet', triplet_mining='batch-hard', triplet_k=3),
}


def _head_gradients(options, contexts, x, labels, classes):
    args = parse_config(dict(options, dropout=0.0, batch_size=len(labels)))
    mx.random.seed(5)
    net = _TinyNet(classes if args.loss == 'softmax' else None)
    net.initialize(mx.init.Xavier(), ctx=contexts)
    net.hybridize(static_alloc=True, static_shape=True)
    head = build_head(args, classes, contexts)
    if head.center is not None:  # non-zero centres, the same on every device
        head.center.centers.set_data(_nd(np.random.default_rng(2).normal(size=(classes, 256))))
    data = gluon.utils.split_and_load(_nd(x), contexts, even_split=False)
    label = gluon.utils.split_and_load(_nd(labels), contexts, even_split=False)
    losses, logits = forward_backward(net, head, data, label)
    params = {'net.' + k: p for k, p in net._collect_params_with_prefix().items()}
    params.update({'head.' + k: p for k, p in head.blocks._collect_params_with_prefix().items()
                   if p.grad_req != 'null'})
    grads = {k: sum(g.asnumpy() for g in p.list_grad()) for k, p in params.items()}
    return np.concatenate([l.asnumpy() for l in losses]), np.concatenate([o.asnumpy() for o in logits]), grads


@pytest.mark.parametrize('case', list(HEAD_CASES))
def test_two_devices_give_the_gradients_of_one(case):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 3).astype(np.float32)
    x = rng.normal(size=(12, 12)).astype(np.float32)
    one = _head_gradients(HEAD_CASES[case], [mx.cpu(0)], x, labels, 5)
    two = _head_gradients(HEAD_CASES[case], [mx.cpu(0), mx.cpu(1)], x, labels, 5)
    np.testing.assert_allclose(one[0], two[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one[1], two[1], rtol=1e-5, atol=1e-6)
    assert one[2].keys() == two[2].keys()
    for key in one[2]:
        assert np.isfinite(one[2][key]).all(), key
        np.testing.assert_allclose(one[2][key], two[2][key], rtol=1e-4, atol=1e-6, err_msg=key)
    assert np.abs(one[2]['net.body.weight']).max() > 0


# --- P x K sampler ------------------------------------------------------------------------------------------

def _check_batches(sampler, labels, p, k):
    seen = np.zeros(len(labels), int)
    for batch in sampler.batches(0):
        assert len(batch) == p * k
        ids = labels[batch].reshape(p, k)
        assert (ids == ids[:, :1]).all()  # K of one identity next to each other
        assert len(set(ids[:, 0])) == p  # P different identities
        np.add.at(seen, batch, 1)
    return seen


def test_sampler_gives_p_identities_of_k_and_covers_every_image_once_when_counts_allow():
    labels = np.repeat(np.arange(6), 4)[np.random.default_rng(0).permutation(24)]  # 6 ids x 4 images
    sampler = IdentityBalancedSampler(labels, p=3, k=2, seed=1)
    assert len(sampler) == 4 and sampler.padded == 0 and sampler.filled == 0
    seen = _check_batches(sampler, labels, 3, 2)
    assert (seen == 1).all()
    assert [b.tolist() for b in sampler.batches(0)] == [b.tolist() for b in sampler.batches(0)]
    assert [b.tolist() for b in sampler.batches(0)] != [b.tolist() for b in sampler.batches(1)]
    sampler.set_epoch(0)
    assert [b.tolist() for b in sampler] == [b.tolist() for b in sampler.batches(0)]


def test_sampler_with_uneven_identities_still_covers_every_image():
    counts = [9, 5, 4, 3, 2, 1, 1]
    labels = np.repeat(np.arange(len(counts)), counts)
    sampler = IdentityBalancedSampler(labels, p=3, k=2, seed=0)
    # chunks: 5+3+2+2+1+1+1 = 15 -> 5 batches (identity 0's 5 chunks also need 5)
    assert len(sampler) == 5
    for epoch in range(4):
        seen = np.zeros(len(labels), int)
        for batch in sampler.batches(epoch):
            ids = labels[batch].reshape(3, 2)
            assert (ids == ids[:, :1]).all() and len(set(ids[:, 0])) == 3
            np.add.at(seen, batch, 1)
        assert (seen >= 1).all()  # every image at least once
        # repeats are exactly the padding of short chunks (no fill-ins needed here)
        assert seen.sum() - len(labels) == sampler.padded + sampler.filled * 2 == 5
    with pytest.raises(ParameterError, match='only 7'):
        IdentityBalancedSampler(labels, p=8, k=2)


def test_sampler_fills_the_last_batches_when_few_identities_are_left():
    labels = np.repeat(np.arange(4), [8, 2, 2, 2])
    sampler = IdentityBalancedSampler(labels, p=2, k=2, seed=3)
    assert len(sampler) == 4 and sampler.filled == 1  # 7 chunks, identity 0 needs all 4 batches
    seen = _check_batches(sampler, labels, 2, 2)
    assert (seen >= 1).all() and seen.sum() == 16


def test_identity_batches_decode_the_sampled_records(tiny_rec):
    pre = record_preprocessing(default_preprocessing('lightcnn9'), tiny_rec, 32)
    batches = IdentityBatches(tiny_rec, pre, p=3, k=2, seed=0, threads=2)
    keys, labels = batches.keys, batches.labels  # from the record headers (training.data.scan_records)
    record = mx.recordio.MXIndexedRecordIO(tiny_rec[:-4] + '.idx', tiny_rec, 'r')
    assert labels.tolist() == [int(mx.recordio.unpack(record.read_idx(k))[0].label) for k in keys]
    record.close()
    assert np.bincount(labels).tolist() == [6] * 6
    assert batches.updates == 6
    got = list(batches.epoch(0))
    assert len(got) == 6
    for batch, positions in zip(got, batches.sampler.batches(0)):
        assert batch.data[0].shape == (6, 1, 32, 32)
        np.testing.assert_array_equal(batch.label[0].asnumpy(), labels[positions])
        pixels = batch.data[0].asnumpy()
        assert 0 <= pixels.min() and pixels.max() <= 1 and pixels.std() > 0
    again = list(batches.epoch(0))  # the same crops and mirrors for the same epoch
    np.testing.assert_array_equal(got[0].data[0].asnumpy(), again[0].data[0].asnumpy())
    two = IdentityBatches(tiny_rec, pre, p=3, k=2, seed=0, num_parts=2, part_index=1, threads=1)
    assert two.updates == 3
    np.testing.assert_array_equal(next(iter(two.epoch(0))).label[0].asnumpy(),
                                  labels[batches.sampler.batches(0)[1]])


# --- training, checkpoints, resume --------------------------------------------------------------------------

def _config(rec, prefix, **overrides):
    return train_config(rec, prefix, **{'dropout': 0.3, **overrides})  # tiny runs; the data is conftest's tiny_rec


def _all_params(stem):
    net, meta = load_checkpoint(stem)
    params = {k: v.data().asnumpy() for k, v in net._collect_params_with_prefix().items()}
    head = meta.get('head', {}).get('params')
    if head:
        params.update({'head.' + k: v.asnumpy() for k, v in
                       mx.nd.load(os.path.join(os.path.dirname(stem), head)).items()})
    return params, meta


RESUME_CASES = {
    'softmax+center': dict(loss='softmax', center_loss_weight=0.01),
    'arcface': dict(loss='arcface', margin_s=16.0),
    'cosface': dict(loss='cosface', margin_s=16.0, margin_m=0.2),
    'combined': dict(loss='combined', margin_s=16.0, margin_m1=1.5, margin_m2=0.1, margin_m3=0.1,
                     center_loss_weight=0.01),
    'triplet': dict(loss='triplet', triplet_k=2, center_loss_weight=0.01),
}


@pytest.mark.parametrize('case', list(RESUME_CASES))
def test_resume_equals_a_straight_run_for_every_head(case, tiny_rec, tmp_path):
    options = dict(RESUME_CASES[case], optimizer='nag', lr_step_epochs='1', lr_factor=0.5)
    if options['loss'] != 'triplet':
        options['data_val'] = tiny_rec.replace('.rec', '_val.rec')
    straight = train(_config(tiny_rec, tmp_path / 'straight', **options), log=lambda _: None)
    train(_config(tiny_rec, tmp_path / 'resumed', num_epochs=1, **options), log=lambda _: None)
    lines = []
    resumed = train(_config(tiny_rec, tmp_path / 'resumed', load_epoch=1, **options), log=lines.append)
    assert any('resumed from' in line for line in lines)
    a, meta_a = _all_params(straight['checkpoint'])
    b, meta_b = _all_params(resumed['checkpoint'])
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert meta_a['loss'] == options['loss']
    assert meta_a['head'].pop('params') == 'straight-0002.head.params'
    assert meta_b['head'].pop('params') == 'resumed-0002.head.params'
    assert meta_a['head'] == meta_b['head']
    assert straight['history'][-1]['train_loss'] == pytest.approx(resumed['history'][-1]['train_loss'],
                                                                  rel=1e-5)
    if 'center_loss_weight' in options:
        centres = a['head.center.centers']
        assert np.abs(centres).max() > 0  # moved from zero by the update rule
        assert not a['head.center.stats'].any()
    if options['loss'] in ('arcface', 'cosface', 'combined'):
        assert meta_a['num_classes'] is None and meta_a['head']['num_classes'] == 6
        assert 'fc2.weight' not in a and a['head.margin.classifier.weight'].shape == (6, 256)
        assert 0 <= straight['history'][-1]['val_top1'] <= 1  # top-1 through the cosine classifier


def test_only_heads_with_parameters_write_a_head_file(tiny_rec, tmp_path):
    plain = train(_config(tiny_rec, tmp_path / 'plain', num_epochs=1), log=lambda _: None)['checkpoint']
    assert not os.path.exists(plain + '.head.params') and 'params' not in load_checkpoint(plain)[1]['head']
    center = train(_config(tiny_rec, tmp_path / 'center', num_epochs=1, center_loss_weight=0.01),
                   log=lambda _: None)['checkpoint']
    assert sorted(mx.nd.load(center + '.head.params')) == ['center.centers', 'center.stats']


def test_margin_checkpoint_embeds_with_extraction_and_the_api(tiny_rec, tmp_path):
    result = train(_config(tiny_rec, tmp_path / 'arc', num_epochs=1, loss='arcface'), log=lambda _: None)
    stem = result['checkpoint']
    assert os.path.exists(stem + '.head.params')
    _, meta = load_checkpoint(stem)
    assert meta['head'] == dict(loss='arcface', center_loss_weight=0.0, num_classes=6, s=64.0, m1=1.0,
                                m2=0.5, m3=0.0, params=os.path.basename(stem) + '.head.params')
    model = load_model(stem)
    images = os.path.join(os.path.dirname(tiny_rec), 'images')
    first = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(images) for f in fs)[:2]
    features = model.embed(first)
    assert features.shape == (2, 256) and np.isfinite(features).all()
    net, _ = load_checkpoint(stem, features_only=True)
    assert net(mx.nd.zeros((1, 1, 32, 32))).shape == (1, 256)


def test_loss_options_are_checked_and_named():
    def check(**options):
        check_config(parse_config(dict(dict(data_train='x.rec'), **options)))
    check(loss='arcface', margin_m=0.3, margin_s=32)
    check(loss='combined', margin_m1=2, margin_m2=0, margin_m3=0.1)
    check(loss='triplet', batch_size=12, triplet_k=3, triplet_mining='batch-hard')
    with pytest.raises(ParameterError, match=r'^margin_m1 is for loss combined, not arcface$'):
        check(loss='arcface', margin_m1=1.0)
    with pytest.raises(ParameterError, match=r'^margin_m is for loss arcface\|cosface, not combined$'):
        check(loss='combined', margin_m=0.5)
    with pytest.raises(ParameterError, match='^margin_s is for loss'):
        check(margin_s=30)
    with pytest.raises(ParameterError, match='^triplet_k is for loss triplet, not softmax$'):
        check(triplet_k=4)
    with pytest.raises(ParameterError, match='^margin_s must be greater than 0$'):
        check(loss='cosface', margin_s=0)
    with pytest.raises(ParameterError, match='^margin_m must be at least 0$'):
        check(loss='arcface', margin_m=-0.1)
    with pytest.raises(ParameterError, match='^margin_m1 must be greater than 0'):
        check(loss='combined', margin_m1=0.0)
    with pytest.raises(ParameterError, match='^center_loss_alpha must be greater than 0$'):
        check(center_loss_weight=0.1, center_loss_alpha=0)
    with pytest.raises(ParameterError, match='^center_loss_alpha is the centre update rate, at most 1'):
        check(center_loss_weight=0.1, center_loss_alpha=1.5)
    with pytest.raises(ParameterError, match='^center_loss_weight must be at least 0'):
        check(center_loss_weight=-1.0)
    with pytest.raises(ParameterError, match=r'^batch_size 10 must be P x triplet_k 4 with P >= 2'):
        check(loss='triplet', batch_size=10)
    with pytest.raises(ParameterError, match='^triplet_k must be at least 2'):
        check(loss='triplet', triplet_k=1)
    with pytest.raises(ParameterError, match='^data_val reports top-1'):
        check(loss='triplet', data_val='v.rec')


def test_cli_spells_loss_errors_as_flags(tiny_rec, repo_root):
    proc = subprocess.run([sys.executable, 'train_lightcnn.py', '--data-train', tiny_rec, '--loss', 'cosface',
                           '--margin-m2', '0.3'], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == 'error: --margin-m2 is for --loss combined, not cosface\n', proc.stderr
