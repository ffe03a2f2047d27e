"""MTCNN in Gluon: NMS and box maths by hand, weight conversion against a numpy TF-layout reference,
detection recall and landmark sanity on the real datasets."""
import collections
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
