"""MTCNN in Gluon: NMS and box maths by hand, weight conversion against a numpy TF-layout reference,
detection recall and landmark sanity on the real datasets."""
import collections
import json
import os
import pickle

import numpy as np
import pytest

from common.errors import UsageError
from data_tools.mtcnn import MTCNN, NETS, nms, regress_boxes, square_boxes
from data_tools.mtcnn_weights import DEFAULT_CACHE, LAYOUT, convert_net, load_tf_weights


# ------------------------------------------------------------------------------------------ box maths

def test_nms_union_hand_computed():
    # A (0..9)^2 area 100; B shifted by 5 in x: inter 5*10 = 50, IoU 50/150 = 1/3; C far away.
    boxes = np.array([[0, 0, 9, 9, 0.9], [5, 0, 14, 9, 0.8], [30, 30, 39, 39, 0.7]])
    assert nms(boxes, 0.5).tolist() == [0, 1, 2]
    assert nms(boxes, 0.3).tolist() == [0, 2]          # 1/3 > 0.3 -> B dropped
    assert nms(boxes[[1, 0, 2]], 0.3).tolist() == [1, 2]  # best score kept whatever the order


def test_nms_min_drops_nested_box():
    # inner box (2..5)^2 inside outer (0..9)^2: IoU 16/100, IoMin 16/16 = 1
    boxes = np.array([[0, 0, 9, 9, 0.6], [2, 2, 5, 5, 0.9]])
    assert nms(boxes, 0.7, 'union').tolist() == [1, 0]
    assert nms(boxes, 0.7, 'min').tolist() == [1]
    assert nms(np.zeros((0, 5)), 0.5).size == 0


def test_square_and_regress_boxes():
    sq = square_boxes(np.array([[10., 20., 30., 60., 1.]]))
    assert sq[0, :4].tolist() == [0., 20., 40., 60.]     # 20x40 -> 40x40 around the same centre
    moved = regress_boxes(np.array([[0., 0., 9., 19., 1.]]), np.array([[0.1, -0.1, 0.2, 0.5]]))
    assert np.allclose(moved[0, :4], [1., -2., 11., 29.])  # offsets x (w+1=10, h+1=20)


# ---------------------------------------------------------------------------- weights vs TF reference

@pytest.fixture(scope='module')
def tf_weights():
    try:
        return load_tf_weights(cache_dir=DEFAULT_CACHE)
    except UsageError as err:
        pytest.skip(f'MTCNN weights unavailable (pip download mtcnn==0.1.1 failed?): {err}')


def _conv_nhwc(x, kernel, bias):
    win = np.lib.stride_tricks.sliding_window_view(x, kernel.shape[:2], axis=(1, 2))  # N,H',W',C,kh,kw
    return np.einsum('nhwcab,abco->nhwo', win, kernel) + bias


def _prelu(x, alpha):
    return np.where(x > 0, x, x * alpha.reshape(-1))


def _maxpool_nhwc(x, k, s, same):
    """TF max pooling: 'same' pads at the end first (pad_total // 2 before), with -inf."""
    if same:
        pads = []
        for n in x.shape[1:3]:
            total = max((-(-n // s) - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))
        x = np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)], constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s]
    return win.max(axis=(-1, -2))


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _tf_reference(name, w, x_nhwc):
    """The Keras graph of mtcnn 0.1.1 (network/factory.py) in numpy, on its NHWC input."""
    pools = {'pnet': [(2, 2, True)], 'rnet': [(3, 2, True), (3, 2, False)],
             'onet': [(3, 2, True), (3, 2, False), (2, 2, True)]}[name]
    h = x_nhwc
    convs = {'pnet': 3, 'rnet': 3, 'onet': 4}[name]
    for layer in range(convs):
        h = _prelu(_conv_nhwc(h, w[3 * layer], w[3 * layer + 1]), w[3 * layer + 2])
        if layer < len(pools):
            h = _maxpool_nhwc(h, *pools[layer])
    i = 3 * convs
    if name == 'pnet':
        return _softmax(_conv_nhwc(h, w[9], w[10])), _conv_nhwc(h, w[11], w[12])
    h = _prelu(h.reshape(len(h), -1) @ w[i] + w[i + 1], w[i + 2])   # TF flattens NHWC
    heads = [h @ w[j] + w[j + 1] for j in range(i + 3, len(w), 2)]
    return (_softmax(heads[0]), *heads[1:])


def _gluon(name, tf_weights):
    import mxnet as mx
    net = NETS[name](prefix=f'{name}_')
    params = convert_net(name, tf_weights[name])
    for key, param in net._collect_params_with_prefix().items():
        assert param.shape == params[key].shape, key
    net.initialize()
    for key, param in net._collect_params_with_prefix().items():
        param.set_data(mx.nd.array(params[key]))
    return net


def test_converted_shapes_match_the_nets(tf_weights):
    for name in NETS:
        params = convert_net(name, tf_weights[name])
        assert list(params) == LAYOUT[name]
        net = NETS[name]()
        shapes = {k: p.shape for k, p in net._collect_params_with_prefix().items()}
        assert shapes == {k: v.shape for k, v in params.items()}
    # conv HWIO (3,3,3,10) -> OIHW (10,3,3,3); R-Net dense (576,128) -> (128,576)
    assert convert_net('pnet', tf_weights['pnet'])['conv1.weight'].shape == (10, 3, 3, 3)
    assert convert_net('rnet', tf_weights['rnet'])['dense4.weight'].shape == (128, 576)


@pytest.mark.parametrize('name, shape', [('pnet', (1, 17, 23)), ('rnet', (3, 24, 24)), ('onet', (3, 48, 48))])
def test_gluon_nets_match_numpy_tf_reference(tf_weights, name, shape):
    """The TF code feeds each image transposed; our nets take it upright and must give the same outputs
    (transposed back), which checks the kernel transpose and the flatten permutation before the dense
    layers of R-Net and O-Net."""
    import mxnet as mx
    rng = np.random.RandomState(0)
    n, h, w = shape
    image = rng.uniform(-1, 1, (n, h, w, 3)).astype(np.float32)        # upright NHWC
    ref = _tf_reference(name, tf_weights[name], image.transpose(0, 2, 1, 3))  # TF sees it transposed
    out = [o.asnumpy() for o in _gluon(name, tf_weights)(mx.nd.array(image.transpose(0, 3, 1, 2)))]
    if name == 'pnet':  # maps: TF (N, W', H', C) -> ours (N, C, H', W')
        ref = [r.transpose(0, 3, 2, 1) for r in ref]
        assert out[0].shape == (n, 2, 4, 7)  # 17->15->8->6->4, 23->21->11->9->7
        out = [out[0], out[1]]
    assert len(out) == len(ref)
    for ours, theirs in zip(out, ref):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def _pnet_random(seed=0):
    """A P-Net with random weights and PReLU slopes of both signs (also > 1): the masking argument holds
    for any weights."""
    import mxnet as mx
    net = NETS['pnet']()
    net.initialize(mx.init.Uniform(0.5))
    rng = np.random.RandomState(seed)
    for name, param in net.collect_params().items():
        if name.endswith('alpha'):
            param.set_data(mx.nd.array(rng.uniform(-1.3, 1.3, param.shape)))
    return net


@pytest.mark.parametrize('shape, spatial', [((2, 6, 5, 7), True), ((3, 6), False)])
def test_prelu_equals_mxnet_prelu(shape, spatial):
    """x + (alpha - 1) * min(x, 0) is PReLU for slopes of any sign, hybridized or not."""
    import mxnet as mx
    from mxnet.gluon import nn
    from data_tools.mtcnn import PReLU
    rng = np.random.RandomState(2)
    x = mx.nd.array(rng.uniform(-3, 3, shape))
    alpha = mx.nd.array([-1.2, -0.3, 0.0, 0.25, 1.0, 1.3])
    ours, theirs = PReLU(spatial=spatial, in_channels=6), nn.PReLU(in_channels=6)
    for block in (ours, theirs):
        block.initialize()
        block.alpha.set_data(alpha)
    expected = theirs(x).asnumpy()
    slope = alpha.asnumpy().reshape((1, -1) + (1,) * (len(shape) - 2))
    np.testing.assert_allclose(expected, np.where(x.asnumpy() > 0, x.asnumpy(), slope * x.asnumpy()), rtol=1e-6)
    np.testing.assert_allclose(ours(x).asnumpy(), expected, rtol=1e-6, atol=1e-6)
    ours.hybridize()
    np.testing.assert_allclose(ours(x).asnumpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('slopes', [(-1.2, -0.3, 0.0, 0.25, 0.9, 1.0), (-0.5, 0.0, 0.3, 1.0, 1.3, 2.0)])
def test_conv_prelu_rewrite_equals_conv_then_prelu(slopes):
    """ConvPReLU (two convolutions, ReLU and sum fused by oneDNN) is conv + PReLU for slopes of any sign,
    with (second case) and without (first case) slopes above 1, on batches of another size than the sample."""
    import mxnet as mx
    from mxnet.gluon import nn
    from data_tools.mtcnn import ConvPReLU, PReLU
    rng = np.random.RandomState(3)
    conv, prelu = nn.Conv2D(6, 3, in_channels=4), PReLU(in_channels=6)
    conv.initialize(mx.init.Uniform(0.5))
    conv.bias.set_data(mx.nd.array(rng.uniform(-0.5, 0.5, 6)))
    prelu.initialize()
    prelu.alpha.set_data(mx.nd.array(slopes))
    fused = ConvPReLU(conv, prelu)
    assert fused.rescale == (max(slopes) > 1)
    fused.optimize_for(mx.nd.zeros((1, 4, 9, 9)), backend='MKLDNN', static_alloc=True)
    for shape in [(5, 4, 11, 13), (2, 4, 9, 9)]:
        x = mx.nd.array(rng.uniform(-2, 2, shape))
        expected = prelu(conv(x)).asnumpy()
        assert (expected < 0).any() and (expected > 0).any()
        np.testing.assert_allclose(fused(x).asnumpy(), expected, rtol=1e-5, atol=1e-5)


def test_fused_nets_equal_the_plain_nets(tf_weights):
    """load_nets' nets (layers rewritten, padded to 16 channels, oneDNN fusion) give the plain nets' outputs,
    P-Net with and without a mask."""
    import mxnet as mx
    from data_tools.mtcnn import MASKED, load_nets
    fused, plain = load_nets(fuse=True), load_nets(fuse=False)
    assert all(fused[name]._fused and not plain[name]._fused for name in fused)
    assert fused['rnet']._fused[1].linear.weight.shape[0] == 32               # 28 channels padded
    rng = np.random.RandomState(4)
    mask = np.zeros((7, 1, 35, 35), np.float32)
    mask[:, :, 30:] = MASKED
    for name, side, extra in [('pnet', 37, []), ('pnet_masked', 37, [mx.nd.array(mask)]), ('rnet', 24, []),
                              ('onet', 48, [])]:
        x = mx.nd.array(rng.uniform(-1, 1, (7, 3, side, side)))
        for ours, theirs in zip(fused[name](x, *extra), plain[name](x, *extra)):
            np.testing.assert_allclose(ours.asnumpy(), theirs.asnumpy(), rtol=1e-4, atol=1e-5)


def test_pnet_padded_batch_with_mask_equals_each_level_alone():
    """Levels of odd and even sides, zero-padded into one batch, give every output cell of the level alone;
    without the mask the ceil-mode pool sees padding at odd edges and cells there change."""
    import mxnet as mx
    from data_tools.mtcnn import MASKED, pnet_output_side
    net = _pnet_random()
    rng = np.random.RandomState(1)
    levels = [rng.uniform(-1, 1, (3, h, w)).astype(np.float32) for h, w in [(17, 23), (24, 12), (31, 32), (12, 13)]]
    side = 32
    batch = np.zeros((len(levels), 3, side, side), np.float32)
    mask = np.full((len(levels), 1, side - 2, side - 2), MASKED, np.float32)
    for k, level in enumerate(levels):
        batch[k, :, :level.shape[1], :level.shape[2]] = level
        mask[k, :, :level.shape[1] - 2, :level.shape[2] - 2] = 0
    masked = [o.asnumpy() for o in net(mx.nd.array(batch), mx.nd.array(mask))]
    unmasked = [o.asnumpy() for o in net(mx.nd.array(batch))]
    differs = False
    for k, level in enumerate(levels):
        alone = [o.asnumpy()[0] for o in net(mx.nd.array(level[None]))]
        ho, wo = pnet_output_side(level.shape[1]), pnet_output_side(level.shape[2])
        assert alone[0].shape == (2, ho, wo)
        for ours, theirs, plain in zip(masked, alone, unmasked):
            np.testing.assert_allclose(ours[k, :, :ho, :wo], theirs, rtol=1e-5, atol=1e-6)
            differs |= not np.allclose(plain[k, :, :ho, :wo], theirs, rtol=1e-5, atol=1e-6)
    assert differs  # the mask is what makes padding harmless


def test_first_conv_layer_matches_numpy(tf_weights):
    import mxnet as mx
    net = _gluon('pnet', tf_weights)
    image = np.random.RandomState(1).uniform(-1, 1, (1, 15, 20, 3)).astype(np.float32)
    ours = net.conv1(mx.nd.array(image.transpose(0, 3, 1, 2))).asnumpy()
    w = tf_weights['pnet']
    theirs = _conv_nhwc(image.transpose(0, 2, 1, 3), w[0], w[1]).transpose(0, 3, 2, 1)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------------------------- real images

def _sane(points):
    return (points[:2, 1].max() < points[2, 1] < points[3:, 1].min()
            and points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0])


@pytest.fixture(scope='module')
def detector(tf_weights):
    return MTCNN()


def test_detector_on_orl_face_and_pickling(detector, orl_root):
    from common.images import read_image
    image = read_image(orl_root / 's1' / '1.pgm', 'gray')
    boxes, points = detector.detect(image)
    assert len(boxes) == 1 and boxes[0, 4] > 0.9 and _sane(points[0])
    x1, y1, x2, y2 = boxes[0, :4]
    eyes_mouth = points[0]
    assert 0 <= x1 < eyes_mouth[0, 0] and eyes_mouth[1, 0] < x2 and y1 < eyes_mouth[0, 1] < eyes_mouth[3, 1] < y2
    clone = pickle.loads(pickle.dumps(detector))
    assert clone._nets is None                                  # nets are not pickled, reload lazily
    boxes2, points2 = clone.detect(image)
    np.testing.assert_allclose(boxes2, boxes, atol=1e-3)
    np.testing.assert_allclose(points2, points, atol=1e-3)


def test_no_face_in_blank_image(detector):
    boxes, points = detector.detect(np.full((120, 100), 128, np.uint8))
    assert boxes.shape == (0, 5) and points.shape == (0, 5, 2)


@pytest.mark.slow
def test_recall_and_landmarks_orl_all_and_pubfig_subset(detector, orl_root, pubfig_root):
    """>= 99 % of images give a face (with the aligner's retry on a padded frame), landmarks in order,
    eye distance consistent within an identity."""
    from common.images import list_images, read_image
    from data_tools.alignment import FaceAligner
    aligner = FaceAligner(detector=detector)
    for root, per_id in [(orl_root, 10), (pubfig_root, 3)]:
        by_id = collections.defaultdict(list)
        for rel in list_images(root):
            by_id[os.path.dirname(rel)].append(rel)
        files = [r for k in sorted(by_id) for r in by_id[k][:per_id]]
        found, sane, eye = 0, 0, collections.defaultdict(list)
        for rel in files:
            result = aligner.align(read_image(os.path.join(root, rel), 'bgr'))
            if result.status == 'aligned':
                found += 1
                sane += _sane(result.landmarks)
                eye[os.path.dirname(rel)].append(np.linalg.norm(result.landmarks[1] - result.landmarks[0]))
        assert found / len(files) >= 0.99, (root, found, len(files))
        assert sane / found >= 0.98
        spread = np.median([np.std(v) / np.mean(v) for v in eye.values() if len(v) > 1])
        assert spread < 0.15, spread


@pytest.mark.slow
def test_batched_detector_matches_reference(detector, orl_root, pubfig_root):
    """Every box and landmark of tests/fixtures/mtcnn_reference.json -- found by the unbatched cascade before
    batching (120 ORL + 83 PubFig83 images, made by make_mtcnn_reference.py) -- comes out of
    ``detect_batch`` on mixed-size batches (ORL 92x112 beside PubFig83 100x100: padded P-Net buckets), and
    out of ``detect`` one image at a time, to the fixture's rounding (1e-3 px)."""
    from common.images import read_image
    with open(os.path.join(os.path.dirname(__file__), 'fixtures', 'mtcnn_reference.json')) as f:
        reference = json.load(f)['images']
    roots = {'orl_faces': orl_root, 'pubfig83': pubfig_root}
    orl = [r for r in reference if r['dataset'] == 'orl_faces']
    pubfig = [r for r in reference if r['dataset'] == 'pubfig83']
    assert len(orl) == 120 and len(pubfig) == 83
    mixed = [r for pair in zip(orl, pubfig) for r in pair] + orl[len(pubfig):]
    images = [read_image(os.path.join(roots[r['dataset']], r['path']), 'bgr') for r in mixed]
    found = []
    for start in range(0, len(images), 16):
        chunk = images[start:start + 16]
        batch = detector.detect_batch(chunk)
        retry = [k for k, (boxes, _) in enumerate(batch) if not len(boxes)]
        results = [(0.0, boxes, points) for boxes, points in batch]
        for k, (boxes, points) in zip(retry, detector.detect_batch([chunk[k] for k in retry], margin=0.25)):
            results[k] = (0.25, boxes, points)
        found += results
    singles = {k: detector.detect(images[k], margin=mixed[k]['margin']) for k in range(0, len(images), 10)}
    for k, (ref, (margin, boxes, points)) in enumerate(zip(mixed, found)):
        where = f"{ref['dataset']}/{ref['path']}"
        assert margin == ref['margin'], where
        expected_boxes = np.asarray(ref['boxes'], float).reshape(-1, 5)
        expected_points = np.asarray(ref['landmarks'], float).reshape(-1, 5, 2)
        for got_boxes, got_points in [(boxes, points)] + ([singles[k]] if k in singles else []):
            assert got_boxes.shape == expected_boxes.shape, where
            np.testing.assert_allclose(got_boxes, expected_boxes, atol=1.5e-3, err_msg=where)
            np.testing.assert_allclose(got_points, expected_points, atol=1.5e-3, err_msg=where)


def test_weights_from_local_npy_or_wheel_and_bad_files(tf_weights, tmp_path):
    import zipfile
    from data_tools.mtcnn_weights import WEIGHTS_MEMBER, WHEEL_NAME, converted_params
    wheel = os.path.join(DEFAULT_CACHE, WHEEL_NAME)
    if not os.path.isfile(wheel):
        pytest.skip('wheel not cached (weights came from $LIGHTCNN_MTCNN_WEIGHTS)')
    npy = tmp_path / 'w.npy'
    npy.write_bytes(zipfile.ZipFile(wheel).read(WEIGHTS_MEMBER))
    from_npy = load_tf_weights(str(npy))
    for name in NETS:
        for a, b in zip(from_npy[name], tf_weights[name]):
            np.testing.assert_array_equal(a, b)
    paths = converted_params(str(npy), cache_dir=str(tmp_path / 'cache'))
    assert sorted(os.path.basename(p) for p in paths.values()) == ['onet.params', 'pnet.params', 'rnet.params']
    bad = tmp_path / 'bad.npy'
    bad.write_bytes(b'nothing here')
    with pytest.raises(UsageError, match='holds no MTCNN weights'):
        load_tf_weights(str(bad))
    with pytest.raises(UsageError, match='not found'):
        load_tf_weights(str(tmp_path / 'missing.npy'))


@pytest.mark.slow
def test_aligned_crops_unchanged_by_batching(detector, orl_root, pubfig_root):
    """FaceAligner.align_batch on mixed chunks gives the crop the unbatched cascade's landmarks give
    (tests/fixtures/mtcnn_reference.json, the face the aligner chooses warped to the template): the same face,
    the same pixels but where the fixture's 1e-3 px rounding of the landmarks moves a sample across
    warpAffine's 1/32 px fixed-point grid (measured: <= 1 % of the pixels, by <= 5 grey levels)."""
    from common.images import read_image
    from data_tools.alignment import FaceAligner, choose_face
    with open(os.path.join(os.path.dirname(__file__), 'fixtures', 'mtcnn_reference.json')) as f:
        reference = json.load(f)['images']
    roots = {'orl_faces': orl_root, 'pubfig83': pubfig_root}
    images = [read_image(os.path.join(roots[r['dataset']], r['path']), 'bgr') for r in reference]
    aligner = FaceAligner(size=144, detector=detector)
    results = []
    for start in range(0, len(images), 32):
        results += aligner.align_batch(images[start:start + 32])
    worst = 0
    assert len(results) == len(reference) == 203
    for ref, image, result in zip(reference, images, results):
        boxes = np.asarray(ref['boxes'], float).reshape(-1, 5)
        points = np.asarray(ref['landmarks'], float).reshape(-1, 5, 2)
        assert result.status == 'aligned', ref['path']
        k = choose_face(boxes, image.shape)
        assert result.chosen == k
        expected, _ = aligner.warp(image, points[k])
        diff = np.abs(result.image.astype(int) - expected.astype(int))
        assert (diff > 0).mean() < 0.02 and diff.max() <= 8, (ref['path'], (diff > 0).mean(), diff.max())
        worst = max(worst, diff.mean())
    assert worst < 0.02
