"""Python embedding API: load_model(...).embed / .classify on the extraction engine."""
import cv2
import mxnet as mx
import numpy as np
import pytest

from common.errors import UsageError
from models import load_model
from symbols.checkpoint import load_checkpoint
from symbols.inference import ImageLoadError
from helpers import PRE, make_checkpoint, make_tree


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('api')
    root = tmp / 'imgs'
    labels = make_tree(root, per_identity=(3, 3), lfw=True)
    return dict(tmp=tmp, root=root, paths=[str(root / rel) for rel in labels],
                feat_stem=make_checkpoint(tmp / 'f'), cls_stem=make_checkpoint(tmp / 'c', num_classes=5))


def reference(stem, paths, flip=False):
    """Direct forward; ``paths`` may hold decoded arrays (then ``Preprocessing.decoded``)."""
    net, meta = load_checkpoint(stem, features_only=True)
    pre = meta['preprocessing']
    imgs = [pre.decoded(p) if isinstance(p, np.ndarray) else pre.load(p) for p in paths]
    out = net(mx.nd.array(meta['preprocessing'].to_batch(imgs))).asnumpy()
    if flip:
        out += net(mx.nd.array(meta['preprocessing'].to_batch([i[:, ::-1] for i in imgs]))).asnumpy()
    return out


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * np.abs(b).max())


def test_embed_paths_and_arrays(data):
    model = load_model(data['feat_stem'])
    feats = model.embed(data['paths'], batch_size=4)
    assert feats.shape == (len(data['paths']), 256) and feats.dtype == np.float32
    close(feats, reference(data['feat_stem'], data['paths']))
    bgr = [cv2.imread(p) for p in data['paths'][:3]]
    # BGR arrays go through Preprocessing.decoded (cvtColor may differ from the decoder's own
    # gray conversion by a grey level, so compare with the same path, not with the files)
    close(model.embed(bgr), reference(data['feat_stem'], bgr))
    gray = cv2.imread(data['paths'][0], cv2.IMREAD_GRAYSCALE)
    close(model.embed(gray), feats[:1])                      # a single 2-d array is one image
    close(model.embed(gray[:, :, None]), feats[:1])
    close(model.embed(data['paths'][1]), feats[1:2])          # a single path too
    two = data['paths'][:2]
    close(model.embed(two, flip=True), reference(data['feat_stem'], two, flip=True))
    assert model.embed([]).shape == (0, 256)


def test_embed_errors(data):
    model = load_model(data['feat_stem'])
    with pytest.raises(ImageLoadError) as err:
        model.embed(data['paths'][:2] + [str(data['root'] / 'Zoe_Ball' / 'Zoe_Ball_9999.jpg')])
    assert len(err.value.failures) == 1
    with pytest.raises(UsageError):
        model.classify(data['paths'][:1])                    # no classifier in this checkpoint
    with pytest.raises(UsageError):
        model.embed([1.5])


def test_classify_matches_logits_and_embed_uses_features(data):
    model = load_model(data['cls_stem'], ctx='cpu')
    ids, probs = model.classify(data['paths'], batch_size=4)
    assert probs.shape == (len(data['paths']), 5) and ids.shape == (len(data['paths']),)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    net, meta = load_checkpoint(data['cls_stem'])
    pre = meta['preprocessing']
    logits = net(mx.nd.array(pre.to_batch([pre.load(p) for p in data['paths']]))).asnumpy()
    np.testing.assert_array_equal(ids, logits.argmax(axis=1))
    close(model.embed(data['paths']), reference(data['cls_stem'], data['paths']))
    assert model.preprocessing == PRE


@pytest.mark.slow
def test_real_v4_weights_separate_orl_identities(orl_root, real_v4):
    """With the imported official V4 weights, same-person cosine beats different-person cosine."""
    stem, _ = real_v4
    model = load_model(stem)
    ids = [f's{i}' for i in range(1, 7)]
    paths = [str(orl_root / s / f'{k}.pgm') for s in ids for k in (1, 2, 3)]
    feats = model.embed(paths, batch_size=8, flip=True)
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    sim = unit @ unit.T
    person = np.repeat(np.arange(len(ids)), 3)
    same = person[:, None] == person[None, :]
    off_diag = ~np.eye(len(paths), dtype=bool)
    assert sim[same & off_diag].mean() > sim[~same].mean() + 0.2
