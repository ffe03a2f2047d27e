"""Deployment graphs: folded MXNet graph, clean ONNX (onnxruntime in the deploy venv), INT8 checkpoints.

ONNX runtime tests skip, saying why, without a deploy python (``.venv-deploy`` or
``$LIGHTCNN_DEPLOY_PYTHON``); the real-face INT8 test skips without ../shared/datasets or the V4 weights.
"""
import glob
import json

import mxnet as mx
import numpy as np
import pytest
import scipy.io

from common.cli import run_cli
from common.errors import UsageError
from data_tools.packing import pack_records
from data_tools.synthetic import make_synthetic_faces
from extract_features.extract_features import main as extract_main
from models import load_model
from models.deploy_graph import deploy_symbol, export_symbol, parameter_only_ops
from models.export import export_model, main as export_main, quantize_model
from models.onnx_export import describe, onnxruntime_outputs
from models.quantize import calibration_images, quantize_checkpoint, quantize_feature_net
from symbols import default_preprocessing
from symbols.checkpoint import load_checkpoint
from symbols.quantized import StoredGraphNet, load_symbol_block
from test_export import checkpoints, deploy_python  # noqa: F401  (fixtures: random LightCNN-9 + head, V4)


def _batch(network, n, seed=0):
    shape = default_preprocessing(network).data_shape
    return np.random.RandomState(seed).rand(n, *shape).astype(np.float32)


def _cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# --- folded inference graph ----------------------------------------------------------------------

@pytest.mark.parametrize('network', ['lightcnn9', 'lightcnn_v4'])
def test_folding_removes_weight_computation_and_keeps_the_function(checkpoints, network):
    net, meta = load_checkpoint(checkpoints[network], features_only=True)
    shape = meta['preprocessing'].data_shape
    graph, params = export_symbol(net, shape)
    before = parameter_only_ops(graph, params)
    # every convolutional MFM slices W and b twice and differences them: 2 x (2 slices + 1 sub)
    convs = sum(n['op'] == 'Convolution' for n in graph['nodes']) // 2
    assert len(before) == 6 * convs > 0
    folded, folded_params = deploy_symbol(net, shape)
    assert parameter_only_ops(folded, folded_params) == []
    ops = {n['op'] for n in folded['nodes']}
    assert 'slice_axis' not in ops and 'elemwise_sub' not in ops
    assert sum(n['op'] == 'Convolution' for n in folded['nodes']) == 2 * convs
    block = load_symbol_block(folded, folded_params)
    x = mx.nd.array(_batch(network, 3))
    np.testing.assert_array_equal(block(x).asnumpy(), net(x).asnumpy())  # the same float operations


# --- ONNX ------------------------------------------------------------------------------------------

def _describe(path):
    onnx = pytest.importorskip('onnx')
    return describe(onnx.load(str(path)))


@pytest.mark.parametrize('network, outputs', [('lightcnn9', [('embedding', ['N', 256]), ('logits', ['N', 6])]),
                                              ('lightcnn_v4', [('embedding', ['N', 256])])])
def test_onnx_graph_is_clean(checkpoints, tmp_path, network, outputs):
    path = export_model(checkpoints[network], 'onnx', str(tmp_path / network))['files'][0]
    info = _describe(path)
    channels = default_preprocessing(network).num_channels
    assert info['inputs'] == [('data', ['N', channels, 128, 128])]  # weights are initializers only
    assert info['outputs'] == outputs
    assert info['weight_ops'] == []
    assert not {'Slice', 'Sub', 'Identity', 'Dropout'} & set(info['ops'])
    net, _ = load_checkpoint(checkpoints[network])
    assert info['initializers'] == len(deploy_symbol(net, default_preprocessing(network).data_shape)[1])
    with open(tmp_path / f'{network}.export.json') as f:
        assert json.load(f)['outputs'] == [name for name, _ in outputs]


@pytest.mark.parametrize('network', ['lightcnn9', 'lightcnn_v4'])
def test_onnxruntime_runs_clean_with_any_batch_and_matches_mxnet(checkpoints, deploy_python, tmp_path, network):
    path = export_model(checkpoints[network], 'onnx', str(tmp_path / network))['files'][0]
    net, meta = load_checkpoint(checkpoints[network], return_features=True)
    for n in (1, 5):
        batch = _batch(network, n, seed=n)
        got, log = onnxruntime_outputs(path, batch, deploy_python)
        assert log.strip() == ''  # no onnxruntime warning (weights as inputs, unused initializers ...)
        out = net(mx.nd.array(batch))
        expected = {'embedding': out[1], 'logits': out[0]} if meta.get('num_classes') else {'embedding': out}
        assert sorted(got) == sorted(expected)
        for name, value in expected.items():
            value = value.asnumpy()
            assert got[name].shape == value.shape and value.shape[0] == n
            assert np.abs(value).max() > 0.05  # a real signal
            diff = np.abs(got[name] - value).max()
            print(f'{network} {name} batch {n}: max abs diff {diff:.3g}')
            assert diff < 1e-5


# --- INT8 ------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def faces(tmp_path_factory):
    """Synthetic face-like images: 4 identities x 8 (gray PNG, 144 px)."""
    root = tmp_path_factory.mktemp('faces')
    make_synthetic_faces(str(root), 4, 8, size=144, seed=3)
    return root


@pytest.fixture(scope='module')
def int8_lightcnn9(checkpoints, faces, tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp('int8') / 'lightcnn9-int8')
    assert export_main(['--model', checkpoints['lightcnn9'], '--quantize', 'int8', '--calibration', str(faces),
                        '--calibration-count', '16', '--calibration-mode', 'naive', '--out', prefix]) is None
    return prefix


def test_int8_checkpoint_records_its_calibration(int8_lightcnn9, faces, checkpoints):
    with open(int8_lightcnn9 + '.json') as f:
        meta = json.load(f)
    q = meta['quantization']
    assert meta['network'] == 'lightcnn9' and meta['num_classes'] is None
    assert q['dtype'] == 'int8' and q['granularity'] == 'channel-wise'
    assert q['calibration']['source'] == str(faces) and q['calibration']['kind'] == 'images'
    assert q['calibration']['images'] == 16 and q['calibration']['available'] == 32
    assert q['calibration']['method'] == 'naive' and q['calibration']['skipped'] == []
    assert q['source_checkpoint'].endswith('lightcnn9')
    ops = q['operators']
    # the trunk is int8: every convolution is a quantized oneDNN conv, relus are int8 activations
    assert ops['_sg_mkldnn_conv'] == 18 and ops['_contrib_quantized_act'] == 9
    assert 'Convolution' not in ops and '_contrib_dequantize' not in ops
    graph = json.load(open(int8_lightcnn9 + '-symbol.json'))
    assert any(n['op'] == '_sg_mkldnn_conv' and n.get('attrs', {}).get('quantized') == 'true'
               for n in graph['nodes'])


def test_int8_checkpoint_round_trips_through_load_model_and_extraction(int8_lightcnn9, faces, checkpoints,
                                                                        tmp_path):
    net, meta = load_checkpoint(int8_lightcnn9)
    assert isinstance(net, StoredGraphNet) and meta['preprocessing'].channels == 'gray'
    paths = sorted(glob.glob(str(faces / '*' / '*.png')))
    model = load_model(int8_lightcnn9)
    assert model.num_classes is None
    int8 = model.embed(paths)
    fp32 = load_model(checkpoints['lightcnn9']).embed(paths)
    assert int8.shape == fp32.shape == (32, 256) and int8.dtype == np.float32
    cos = _cosine(int8, fp32)
    print(f'synthetic LightCNN-9 INT8 vs fp32 cosine: min {cos.min():.4f} mean {cos.mean():.4f}')
    assert cos.min() > 0.99
    assert not np.allclose(int8, fp32, atol=1e-4)  # it really is another (quantized) computation
    out = tmp_path / 'f.mat'
    assert extract_main(['--model', int8_lightcnn9, '--images', str(faces), '--out', str(out), '--quiet']) == 0
    mat = scipy.io.loadmat(str(out))
    assert mat['data'].shape == (32, 256)
    np.testing.assert_allclose(mat['data'], int8, rtol=0, atol=1e-5)  # same engine, same numbers


def test_int8_from_packed_records(checkpoints, faces, tmp_path):
    pack_records(str(faces), str(tmp_path / 'faces'), size=144, color='gray', workers=0, progress=False)
    pre = default_preprocessing('lightcnn9')
    batch, info = calibration_images(str(tmp_path / 'faces.rec'), pre, 8)
    assert batch.shape == (8, 1, 128, 128) and info['kind'] == 'records' and info['available'] == 32
    assert 0 < batch.mean() < 1
    result = quantize_checkpoint(checkpoints['lightcnn9'], str(tmp_path / 'q'), str(tmp_path / 'faces.rec'),
                                 count=8, mode='naive')
    assert result['quantization']['calibration']['kind'] == 'records'
    assert load_model(str(tmp_path / 'q')).embed((batch[:2, 0] * 255).round().astype(np.uint8)).shape == (2, 256)
    # gray records cannot calibrate a colour network (training refuses them too)
    with pytest.raises(UsageError, match='holds 1-channel images but the network takes bgr'):
        calibration_images(str(tmp_path / 'faces.rec'), default_preprocessing('lightcnn_v4'), 8)


def test_int8_calibration_uses_every_image_once(checkpoints):
    """12 images in batches of at most 8: batches of 6 (a short last batch would be padded by repeats or
    dropped), so all 12 calibrate."""
    net, meta = load_checkpoint(checkpoints['lightcnn9'], features_only=True)
    pre = meta['preprocessing']
    _, _, used = quantize_feature_net(net, pre.data_shape, _batch('lightcnn9', 12), mode='naive', batch_size=8)
    assert used == 12


def test_int8_excluded_layers_stay_fp32(checkpoints, faces, tmp_path):
    result = quantize_checkpoint(checkpoints['lightcnn9'], str(tmp_path / 'q'), str(faces), count=8, mode='naive',
                                 exclude=['mfm0_convolution0', 'mfm0_convolution1'])  # the first MFM
    graph = json.load(open(tmp_path / 'q-symbol.json'))
    convs = [n for n in graph['nodes'] if n['op'] == '_sg_mkldnn_conv']
    quantized = [n for n in convs if n.get('attrs', {}).get('quantized') == 'true']
    assert len(convs) == 18 and len(quantized) == 16
    assert result['quantization']['excluded'] == ['mfm0_convolution0', 'mfm0_convolution1']
    assert result['quantization']['operators'].get('_contrib_quantize_v2', 0) >= 1


def test_int8_library_errors_are_usage_errors(int8_lightcnn9, checkpoints, faces, tmp_path):
    with pytest.raises(UsageError, match='already quantized'):
        quantize_checkpoint(int8_lightcnn9, str(tmp_path / 'again'), str(faces), 4)
    with pytest.raises(UsageError, match='INT8 checkpoint'):
        export_model(int8_lightcnn9, 'onnx', str(tmp_path / 'x'))
    with pytest.raises(UsageError, match='CPU only'):
        load_checkpoint(int8_lightcnn9, ctx=mx.gpu(0))
    with pytest.raises(UsageError, match='prefix .* would overwrite the source checkpoint'):
        quantize_checkpoint(checkpoints['lightcnn9'], checkpoints['lightcnn9'], str(faces), 4)
    with pytest.raises(UsageError, match='exclude names no layer of the graph: nope'):
        quantize_checkpoint(checkpoints['lightcnn9'], str(tmp_path / 'q'), str(faces), 4, exclude=['nope'])
    with pytest.raises(UsageError, match="unknown dtype 'int4'"):
        quantize_model(checkpoints['lightcnn9'], str(tmp_path / 'q'), 'int4', str(faces))
    with pytest.raises(UsageError, match='needs calibration'):
        quantize_model(checkpoints['lightcnn9'], str(tmp_path / 'q'), 'int8', None)
    with pytest.raises(UsageError, match='^count must be >= 1'):
        quantize_checkpoint(checkpoints['lightcnn9'], str(tmp_path / 'q'), str(faces), 0)
    text = tmp_path / 'notes.txt'
    text.write_text('not images')
    with pytest.raises(UsageError, match='neither an image folder nor a .rec'):
        quantize_checkpoint(checkpoints['lightcnn9'], str(tmp_path / 'q'), str(text), 4)
    broken = tmp_path / 'broken' / 'id'
    broken.mkdir(parents=True)
    (broken / 'a.jpg').write_bytes(b'not a jpeg')
    with pytest.raises(UsageError, match=r'no readable image \(1 unreadable, e.g. id/a.jpg'):
        quantize_checkpoint(checkpoints['lightcnn9'], str(tmp_path / 'q'), str(broken.parent), 4)
    assert not list(tmp_path.glob('q*'))  # nothing written for a refused run


@pytest.mark.parametrize('case, message', [
    ('missing', 'error: --calibration {d}/missing does not exist'),
    ('empty', 'error: --calibration {d}/empty is empty: no images'),
    ('count', 'error: --calibration-count must be >= 1, not 0'),
    ('exclude', 'error: --exclude names no layer of the graph: nope'),
    ('no_calibration', '--quantize int8 needs --calibration'),
    ('int4', "argument --quantize: invalid choice: 'int4'"),
    ('both', 'argument --quantize: not allowed with argument --format'),
])
def test_int8_command_line_errors_are_one_line(checkpoints, faces, tmp_path, capsys, case, message):
    (tmp_path / 'empty').mkdir()
    base = ['--model', checkpoints['lightcnn9'], '--out', str(tmp_path / 'q')]
    argv = {'missing': ['--quantize', 'int8', '--calibration', str(tmp_path / 'missing')],
            'empty': ['--quantize', 'int8', '--calibration', str(tmp_path / 'empty')],
            'no_calibration': ['--quantize', 'int8'],
            'count': ['--quantize', 'int8', '--calibration', str(faces), '--calibration-count', '0'],
            'exclude': ['--quantize', 'int8', '--calibration', str(faces), '--exclude', 'nope'],
            'int4': ['--quantize', 'int4', '--calibration', str(tmp_path / 'empty')],
            'both': ['--format', 'onnx', '--quantize', 'int8']}[case]
    try:
        code = run_cli(export_main, base + argv)
    except SystemExit as exc:  # argparse misuse
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and 'error: ' in lines[0] and 'Traceback' not in err, err
    assert message.format(d=tmp_path) in lines[0]
    assert not list(tmp_path.glob('q*'))


@pytest.mark.slow
def test_real_v4_int8_features_match_fp32_on_real_faces(tmp_path_factory, pubfig_root, real_v4):
    """V4 quantized with entropy calibration on 24 faces of 8 identities: faces of 24 other identities keep
    cosine > 0.99 to fp32 on average. (The default, naive, gives ~0.991 on aligned faces and ~0.990 on these
    unaligned ones -- its verification accuracy is the better one, see bench_int8_accuracy.py -- so the
    correlation bar is checked with entropy, which maximises it.)"""
    stem, _ = real_v4
    names = sorted(p.name for p in pubfig_root.iterdir() if p.is_dir())
    calib = tmp_path_factory.mktemp('calib')
    for name in names[:8]:
        (calib / name).symlink_to(pubfig_root / name)
    prefix = str(tmp_path_factory.mktemp('v4int8') / 'v4-int8')
    quantize_checkpoint(stem, prefix, str(calib), count=24, mode='entropy')
    held_out = [sorted(glob.glob(str(pubfig_root / name / '*.jpg')))[0] for name in names[-24:]]
    int8 = load_model(prefix).embed(held_out, batch_size=24)
    fp32 = load_model(stem).embed(held_out, batch_size=24)
    cos = _cosine(int8, fp32)
    print(f'real V4 on PubFig83: INT8 vs fp32 cosine min {cos.min():.4f} mean {cos.mean():.4f}')
    assert cos.mean() > 0.99 and cos.min() > 0.97
