"""Compare API: normalised embeddings, compare()/verify(), a threshold recommended by an evaluation, class names
from classify(), errors that name Python arguments."""
import json

import numpy as np
import pytest

from common.errors import UsageError
from common.features_mat import write_features
from helpers import make_checkpoint, make_tree
from lfw_verification.evaluate import evaluate_verification, recommended_threshold, write_json
from lfw_verification.synthetic import synthetic_features, synthetic_pairs
from models import load_model
from models.checkpoint import load_metadata, save_checkpoint
from symbols.inference import ImageLoadError


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('compare')
    labels = make_tree(tmp / 'imgs', per_identity=(3, 3), lfw=True)
    return dict(tmp=tmp, paths=[str(tmp / 'imgs' / rel) for rel in labels], stem=make_checkpoint(tmp / 'f'),
                cls_stem=make_checkpoint(tmp / 'c', num_classes=2))


def test_normalized_embeddings_and_cosine_compare(data):
    raw = load_model(data['stem']).embed(data['paths'])
    model = load_model(data['stem'], normalize=True)
    unit = model.embed(data['paths'])
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(model.embed(data['paths'], normalize=False), raw, rtol=1e-5, atol=1e-5)
    a, b = data['paths'][0], data['paths'][4]
    expected = float(unit[0] @ unit[4])
    assert model.compare(a, b) == pytest.approx(expected, abs=1e-6)
    assert isinstance(model.compare(a, b), float)
    many = model.compare(data['paths'][:3], data['paths'][3:6])
    assert many.shape == (3,) and many == pytest.approx(np.sum(unit[:3] * unit[3:6], axis=1), abs=1e-6)
    assert model.compare(a, data['paths'][3:6]) == pytest.approx(unit[3:6] @ unit[0], abs=1e-6)
    assert model.compare(raw[0], raw[4]) == pytest.approx(expected, abs=1e-6)  # precomputed features too
    assert model.verify(a, b, threshold=expected - 1e-3) and not model.verify(a, b, threshold=expected + 1e-3)
    with pytest.raises(UsageError, match='a holds 2 faces and b 3'):
        model.compare(data['paths'][:2], data['paths'][:3])


def test_threshold_recommended_by_an_evaluation(tmp_path):
    d, labels = synthetic_features(40, 6, noise=1.5, seed=1)
    write_features(str(tmp_path / 'f.mat'), d, labels)
    from data_tools.pairs import write_pairs
    write_pairs(str(tmp_path / 'p.txt'), synthetic_pairs(labels, 10, 30), 10, 30)
    result = evaluate_verification(str(tmp_path / 'f.mat'), str(tmp_path / 'p.txt'))
    write_json(result, str(tmp_path / 'e.json'))
    m = result['metrics']
    t = recommended_threshold(str(tmp_path / 'e.json'))
    assert t == m['threshold_at_eer']
    assert recommended_threshold(json.load(open(tmp_path / 'e.json')), far=0.01) == m['threshold_at_far'][0.01]
    with pytest.raises(UsageError, match='not measurable'):
        recommended_threshold(str(tmp_path / 'e.json'), far=1e-3)  # 300 different pairs cannot resolve it
    with pytest.raises(UsageError, match='evaluated'):
        recommended_threshold(str(tmp_path / 'e.json'), far=0.2)


def test_classify_gives_class_names(data):
    meta = load_metadata(data['cls_stem'])
    from models.checkpoint import load_checkpoint
    net, _ = load_checkpoint(data['cls_stem'])
    named = save_checkpoint(net, str(data['tmp'] / 'named'), dict(meta, identities=['Aaron', 'Zoe']))
    ids, probs = load_model(data['cls_stem']).classify(data['paths'][:3])  # still unpacks as before
    result = load_model(named).classify(data['paths'][:3])
    assert result.ids.tolist() == ids.tolist()
    assert result.names == [['Aaron', 'Zoe'][i] for i in ids]
    assert load_model(data['cls_stem']).classify(data['paths'][:1]).names == [str(ids[0])]
    assert load_model(named).class_names == ['Aaron', 'Zoe'] and load_model(data['stem']).class_names is None


def test_python_api_errors_name_python_arguments(data):
    with pytest.raises(UsageError) as err:
        load_model(data['stem'], ctx='tpu')
    assert 'ctx' in str(err.value) and '--' not in str(err.value)
    model = load_model(data['stem'])
    for kwargs, name in ((dict(center_crop=0), 'center_crop'), (dict(batch_size=0), 'batch_size'),
                         (dict(align='mtcnn'), 'align')):
        with pytest.raises(UsageError) as err:
            model.embed(data['paths'][:1], **kwargs)
        assert name in str(err.value) and '--' not in str(err.value)
    with pytest.raises(ImageLoadError) as err:
        model.embed([data['paths'][0], data['paths'][0] + '.missing'])
    assert '--' not in str(err.value) and len(err.value.failures) == 1
