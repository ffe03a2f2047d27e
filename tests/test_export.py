"""Export for deployment: MXNet symbol/params via SymbolBlock, ONNX via onnxruntime.

onnxruntime cannot live next to MXNet 1.9.1 (it needs numpy >= 1.24), so ONNX parity runs it in the
deploy environment (``requirements-deploy.txt``) found through ``$LIGHTCNN_DEPLOY_PYTHON`` or
``.venv-deploy``; those tests skip, saying so, when there is none.
"""
import glob
import hashlib
import os

import mxnet as mx
import numpy as np
import pytest

from common.cli import run_cli
from common.errors import UsageError
from symbols.checkpoint import load_checkpoint, save_checkpoint
from models.export import (DEPLOY_PYTHON_ENV, ONNX_OPSET, export_model, find_deploy_python,
                           main as export_main, run_onnxruntime)
from symbols import LightCNNInit, default_preprocessing, get_model


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """Random-weight lightcnn9 (with a classifier, which export must drop) and lightcnn_v4.

    Weights are scaled so features are O(1) as in trained nets (V4's 19 MFM layers at full Xavier scale
    reach ~1e2, where float32 rounding alone approaches an absolute 1e-4).
    """
    root = tmp_path_factory.mktemp('models')
    stems = {}
    for network, classes, init in (('lightcnn9', 6, {}), ('lightcnn_v4', None, dict(magnitude=1.5, bias=0.0))):
        net = get_model(network, num_classes=classes)
        net.initialize(LightCNNInit(**init))
        stems[network] = save_checkpoint(net, str(root / network), dict(
            network=network, num_classes=classes, preprocessing=default_preprocessing(network)))
    return stems


@pytest.fixture
def deploy_python():
    python = find_deploy_python()
    if python is None:
        pytest.skip(f'no deploy python with onnxruntime: set {DEPLOY_PYTHON_ENV} or create '
                    '.venv-deploy (pip install -r requirements-deploy.txt)')
    return python


def _features(stem, batch):
    net, _ = load_checkpoint(stem, features_only=True)
    return net(mx.nd.array(batch)).asnumpy()


def _batch(network, n=3, seed=0):
    shape = default_preprocessing(network).data_shape
    return np.random.RandomState(seed).rand(n, *shape).astype(np.float32)


def _sha(path):
    return hashlib.sha256(open(path, 'rb').read()).hexdigest()


@pytest.mark.parametrize('network', ['lightcnn9', 'lightcnn_v4'])
def test_mxnet_export_loads_as_symbolblock_with_equal_features(checkpoints, network, monkeypatch):
    stem = checkpoints[network]
    monkeypatch.setenv('LIGHTCNN_RUNS_DIR', os.path.dirname(stem))  # default prefix: runs/export/NAME
    before = _sha(stem + '.params')
    result = export_model(stem, 'mxnet')
    prefix = stem.replace(network, f'export/{network}')
    assert result['files'][:2] == [prefix + '-symbol.json', prefix + '-0000.params']
    assert _sha(stem + '.params') == before  # default prefix never overwrites the checkpoint
    block = mx.gluon.SymbolBlock.imports(prefix + '-symbol.json', ['data'], prefix + '-0000.params')
    batch = _batch(network)
    out = block(mx.nd.array(batch)).asnumpy()
    assert out.shape == (3, 256)
    np.testing.assert_allclose(out, _features(stem, batch), rtol=0, atol=1e-6)


def test_onnx_export_is_valid_opset13_with_dynamic_batch(checkpoints, tmp_path):
    onnx = pytest.importorskip('onnx')
    export_model(checkpoints['lightcnn9'], 'onnx', str(tmp_path / 'm9'))
    model = onnx.load(str(tmp_path / 'm9.onnx'))
    onnx.checker.check_model(model)
    assert [o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')] == [ONNX_OPSET]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [1, 128, 128] and not dims[0].dim_value


@pytest.mark.parametrize('network', ['lightcnn9', 'lightcnn_v4'])
def test_onnxruntime_matches_mxnet(checkpoints, deploy_python, tmp_path, network):
    files = export_model(checkpoints[network], 'onnx', str(tmp_path / network))['files']
    batch = _batch(network, n=4, seed=1)
    got = run_onnxruntime(files[0], batch, deploy_python)
    expected = _features(checkpoints[network], batch)
    assert got.shape == expected.shape == (4, 256)
    assert np.abs(expected).max() > 0.5  # a real signal
    diff = np.abs(got - expected).max()
    print(f'{network}: onnxruntime vs MXNet max abs diff {diff:.3g}')
    assert diff < 1e-4


def test_export_cli_check_reports_the_difference(checkpoints, deploy_python, tmp_path, capsys):
    assert export_main(['--model', checkpoints['lightcnn9'], '--format', 'onnx', '--check',
                        '--out', str(tmp_path / 'cli'), '--deploy-python', deploy_python]) is None
    out = capsys.readouterr().out
    assert 'onnxruntime vs MXNet: max abs difference' in out and (tmp_path / 'cli.onnx').exists()


def test_export_errors_are_usage_errors(checkpoints, tmp_path):
    with pytest.raises(UsageError, match='no checkpoint'):
        export_model(str(tmp_path / 'absent'), 'mxnet')
    with pytest.raises(UsageError, match='check compares onnxruntime with MXNet: use it with fmt onnx'):
        export_model(checkpoints['lightcnn9'], 'mxnet', str(tmp_path / 'x'), check=True)
    with pytest.raises(UsageError, match='does not exist'):
        export_model(checkpoints['lightcnn9'], 'onnx', str(tmp_path / 'y'), check=True,
                     deploy_python=str(tmp_path / 'no-python'))


@pytest.mark.slow
def test_real_v4_onnx_matches_mxnet_on_orl_faces(tmp_path_factory, deploy_python, orl_root, real_v4):
    stem, _ = real_v4
    out = tmp_path_factory.mktemp('export') / 'lightcnn-v4'
    files = export_model(stem, 'onnx', str(out))['files']
    pre = default_preprocessing('lightcnn_v4')
    paths = sorted(glob.glob(str(orl_root / '*' / '1.pgm')))[:8]
    batch = pre.to_batch([pre.load(p) for p in paths])
    got = run_onnxruntime(files[0], batch, deploy_python)
    expected = _features(stem, batch)
    diff = np.abs(got - expected).max()
    print(f'real V4 on ORL: onnxruntime vs MXNet max abs diff {diff:.3g}')
    assert np.abs(expected).max() > 1e-2 and diff < 1e-4


def test_export_takes_a_training_prefix_and_epoch(tmp_path, capsys):
    net = get_model('lightcnn9', num_classes=3)
    net.initialize(LightCNNInit())
    meta = dict(network='lightcnn9', num_classes=3, preprocessing=default_preprocessing('lightcnn9'))
    save_checkpoint(net, str(tmp_path / 'run-0002'), meta)
    assert run_cli(export_main, ['--model', str(tmp_path / 'run'), '--epoch', '2', '--format', 'mxnet',
                          '--out', str(tmp_path / 'e2')]) == 0
    assert (tmp_path / 'e2-symbol.json').exists()
    capsys.readouterr()
    assert run_cli(export_main, ['--model', str(tmp_path / 'run'), '--epoch', '3', '--format', 'mxnet']) == 2
    assert "no checkpoint at" in capsys.readouterr().err
