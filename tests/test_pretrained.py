"""Importing official PyTorch LightCNN checkpoints without torch.

(1) checkpoints written here byte-for-byte in torch's layouts (zip and legacy) from known arrays must
import exactly, and every malformed one must fail naming the key; (2) with torch installed, our
Gluon nets must reproduce a PyTorch forward of the same weights; (3) the real V4 weights must verify
ORL faces (AUC > 0.99) where random weights do not.
"""
import collections
import glob
import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import mxnet as mx
import numpy as np
import pytest

from common.errors import UsageError, flag
from models import pretrained
from symbols.checkpoint import load_checkpoint, save_checkpoint
from models.import_pretrained import main as import_main
from models.pretrained import build_pretrained_net, import_checkpoint
from models.torch_checkpoint import LEGACY_MAGIC, LEGACY_PROTOCOL, read_state_dict
from symbols import LightCNNInit, get_model

# --- a torch-free writer of torch's two checkpoint layouts --------------------------------------


def _torch_global(module, name):
    """A stand-in that pickles as the global ``module.name`` (torch need not be importable)."""
    return type(name, (), {'torch_global': (module, name)})


_REBUILD = _torch_global('torch._utils', '_rebuild_tensor_v2')
_STORAGE_TYPES = {np.dtype(np.float32): _torch_global('torch', 'FloatStorage'),
                  np.dtype(np.float16): _torch_global('torch', 'HalfStorage'),
                  np.dtype(np.int64): _torch_global('torch', 'LongStorage')}


class FakeStorage:
    def __init__(self, key, flat):
        self.key, self.flat = key, np.ascontiguousarray(flat).ravel()


class FakeTensor:
    """Pickles as torch does: ``_rebuild_tensor_v2(storage, offset, size, stride, False, {})``."""

    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce_ex__(self, protocol):
        return _REBUILD, self.args


class TorchLikePickler(pickle._Pickler):  # the pure-Python pickler lets us write foreign globals
    def __init__(self, file, legacy):
        super().__init__(file, protocol=2)
        self.legacy = legacy

    def save_global(self, obj, name=None):
        if not hasattr(obj, 'torch_global'):
            return super().save_global(obj, name)
        module, qualname = obj.torch_global
        self.write(pickle.GLOBAL + f'{module}\n{qualname}\n'.encode())
        self.memoize(obj)

    def persistent_id(self, obj):
        if not isinstance(obj, FakeStorage):
            return None
        pid = ('storage', _STORAGE_TYPES[obj.flat.dtype], obj.key, 'cpu', obj.flat.size)
        return pid + (None,) if self.legacy else pid


def as_tensors(state, transpose=()):
    """Arrays -> FakeTensors, one storage each; keys in ``transpose`` are stored column-major
    (strided view of a transposed storage, as ``w.t()`` saves), to exercise strides."""
    out, storages = collections.OrderedDict(), []
    for i, (key, arr) in enumerate(state.items()):
        if key in transpose:
            storage = FakeStorage(str(1000 + i), arr.T.copy())
            stride = (1, arr.shape[0])
        else:
            storage = FakeStorage(str(1000 + i), arr)
            stride = tuple(int(np.prod(arr.shape[j + 1:])) for j in range(arr.ndim))
        storages.append(storage)
        out[key] = FakeTensor(storage, 0, arr.shape, stride)
    return out, storages


def write_torch_zip(path, obj, storages, root='archive'):
    """The PyTorch >= 1.6 layout: ``root/data.pkl``, ``root/data/<key>``, ``version``, ``byteorder``."""
    data = io.BytesIO()
    TorchLikePickler(data, legacy=False).dump(obj)
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as zf:
        zf.writestr(f'{root}/data.pkl', data.getvalue())
        zf.writestr(f'{root}/byteorder', 'little')
        for storage in storages:
            little = storage.flat.astype(storage.flat.dtype.newbyteorder('<'))
            zf.writestr(f'{root}/data/{storage.key}', little.tobytes())
        zf.writestr(f'{root}/version', '3\n')


def write_torch_legacy(path, obj, storages):
    """The PyTorch < 1.6 stream: magic, protocol, sys info, object, keys, then count + raw bytes."""
    with open(path, 'wb') as f:
        for header in (LEGACY_MAGIC, LEGACY_PROTOCOL,
                       dict(protocol_version=LEGACY_PROTOCOL, little_endian=True,
                            type_sizes=dict(short=2, int=4, long=4))):
            pickle.dump(header, f, protocol=2)
        TorchLikePickler(f, legacy=True).dump(obj)
        keys = sorted(s.key for s in storages)
        pickle.dump(keys, f, protocol=2)
        by_key = {s.key: s for s in storages}
        for key in keys:
            f.write(struct.pack('<q', by_key[key].flat.size) + by_key[key].flat.tobytes())


def random_state(network, num_classes=None, seed=0):
    """Known arrays for every parameter of ``network`` (official key -> float32 array)."""
    net = get_model(network, num_classes=num_classes)
    rng = np.random.RandomState(seed)
    return collections.OrderedDict(
        (k, rng.standard_normal(p.shape).astype(np.float32))
        for k, p in net._collect_params_with_prefix().items())


def checkpoint(tmp_path, state, wrap=True, prefix='module.', fmt='zip', name='ckpt.pth.tar',
               transpose=(), **write_kwargs):
    tensors, storages = as_tensors(collections.OrderedDict(
        (prefix + k, v) for k, v in state.items()), transpose)
    obj = {'epoch': 12, 'arch': 'LightCNN', 'state_dict': tensors} if wrap else tensors
    path = tmp_path / name
    (write_torch_zip if fmt == 'zip' else write_torch_legacy)(path, obj, storages, **write_kwargs)
    return path


def assert_imported_exactly(stem, state):
    net, meta = load_checkpoint(stem)
    params = net._collect_params_with_prefix()
    assert sorted(params) == sorted(state)
    for key, arr in state.items():
        np.testing.assert_array_equal(params[key].data().asnumpy(), arr, err_msg=key)
    return meta


# --- (1) exact import from known arrays ----------------------------------------------------------


@pytest.mark.parametrize('fmt', ['zip', 'legacy'])
def test_nested_module_prefixed_checkpoint_imports_exactly(tmp_path, fmt):
    state = random_state('lightcnn9', num_classes=10)
    path = checkpoint(tmp_path, state, fmt=fmt, transpose=('fc1.filter.weight',))
    assert import_main([str(path), '--network', 'lightcnn9', '--out', str(tmp_path / 'm9')]) is None
    meta = assert_imported_exactly(tmp_path / 'm9', state)
    assert meta['num_classes'] == 10 and meta['network'] == 'lightcnn9'
    assert meta['preprocessing'].channels == 'gray' and meta['preprocessing'].input_size == 128
    assert meta['preprocessing'].scale == pytest.approx(1 / 255)
    assert meta['source']['format'] == fmt and meta['source']['epoch'] == 12


def test_bare_state_dict_without_classifier_v4_is_bgr(tmp_path):
    state = random_state('lightcnn_v4', seed=1)
    path = checkpoint(tmp_path, state, wrap=False, prefix='', name='v4.pth')
    result = import_checkpoint(path, 'lightcnn_v4', str(tmp_path / 'v4'))
    assert result['num_classes'] is None and result['tensors'] == len(state)
    meta = assert_imported_exactly(tmp_path / 'v4', state)
    assert meta['preprocessing'].channels == 'bgr' and meta['num_classes'] is None


def test_known_name_lands_in_runs_pretrained_unless_out_is_given(tmp_path, monkeypatch):
    """``import_pretrained.py lightcnn-v4`` writes runs/pretrained/lightcnn-v4 ($LIGHTCNN_RUNS_DIR here)."""
    state = random_state('lightcnn_v4', seed=2)
    path = checkpoint(tmp_path, state)
    monkeypatch.setattr(pretrained, 'fetch_known_checkpoint', lambda name, cache=None: str(path))
    monkeypatch.setenv('LIGHTCNN_RUNS_DIR', str(tmp_path / 'runs'))
    assert import_main(['lightcnn-v4']) is None
    assert_imported_exactly(tmp_path / 'runs' / 'pretrained' / 'lightcnn-v4', state)
    assert import_main(['lightcnn-v4', '--out', str(tmp_path / 'mine' / 'v4')]) is None  # a given path wins
    assert_imported_exactly(tmp_path / 'mine' / 'v4', state)


def test_29v2_classifier_without_bias_keeps_its_classes(tmp_path):
    state = random_state('lightcnn29v2', num_classes=13, seed=2)
    assert 'fc2.bias' not in state
    path = checkpoint(tmp_path, state, root='LightCNN_29Layers_V2_checkpoint')
    result = import_checkpoint(path, 'lightcnn29v2', str(tmp_path / 'v2'))
    assert result['num_classes'] == 13
    assert_imported_exactly(tmp_path / 'v2', state)


def test_features_only_drops_and_reports_the_classifier(tmp_path):
    state = random_state('lightcnn9', num_classes=7, seed=3)
    net, summary = build_pretrained_net(state, 'lightcnn9', features_only=True)
    assert summary == dict(num_classes=None, dropped=['fc2.weight', 'fc2.bias'],
                           tensors=len(state) - 2)
    assert 'fc2.weight' not in net._collect_params_with_prefix()


def test_strides_offsets_and_dtypes_are_read_exactly(tmp_path):
    base = np.arange(60, dtype=np.float32).reshape(6, 10)
    storage = FakeStorage('7', base)
    half = np.linspace(-2, 2, 12, dtype=np.float16).reshape(3, 4)
    longs = np.arange(-3, 5, dtype=np.int64)
    obj = {'state_dict': collections.OrderedDict([
        ('module.t', FakeTensor(storage, 0, (10, 6), (1, 10))),        # transposed view
        ('module.window', FakeTensor(storage, 23, (4, 4), (10, 1))),   # offset + row stride
        ('h', FakeTensor(FakeStorage('8', half), 0, (3, 4), (4, 1))),
        ('n', FakeTensor(FakeStorage('9', longs), 2, (5,), (1,)))])}
    storages = [storage, obj['state_dict']['h'].args[0], obj['state_dict']['n'].args[0]]
    for fmt, write in (('zip', write_torch_zip), ('legacy', write_torch_legacy)):
        write(tmp_path / fmt, obj, storages)
        state, info = read_state_dict(tmp_path / fmt)
        assert info['format'] == fmt and list(state) == ['t', 'window', 'h', 'n']
        np.testing.assert_array_equal(state['t'], base.T)
        np.testing.assert_array_equal(state['window'], base[2:6, 3:7])
        assert state['h'].dtype == np.float16 and np.array_equal(state['h'], half)
        np.testing.assert_array_equal(state['n'], longs[2:7])


@pytest.mark.parametrize('mutate, message', [
    (lambda s: s.pop('block1.0.conv2.filter.bias'), r'missing in the checkpoint: '
                                                    r'block1\.0\.conv2\.filter\.bias'),
    (lambda s: s.__setitem__('fc3.weight', np.zeros((2, 2), np.float32)), r'not in lightcnn29: '
                                                                            r'fc3\.weight'),
    (lambda s: s.__setitem__('group1.conv.filter.weight', np.zeros((192, 48, 5, 5), np.float32)),
     r'wrong shape: group1\.conv\.filter\.weight \(192, 48, 5, 5\) \(expected \(192, 48, 3, 3\)\)'),
])
def test_malformed_checkpoint_names_the_key(tmp_path, mutate, message):
    state = random_state('lightcnn29', seed=4)
    mutate(state)
    path = checkpoint(tmp_path, state)
    with pytest.raises(UsageError, match=message):
        import_checkpoint(path, 'lightcnn29', str(tmp_path / 'bad'))
    assert not (tmp_path / 'bad.params').exists()


def test_wrong_network_suggests_the_right_one(tmp_path):
    path = checkpoint(tmp_path, random_state('lightcnn29v2', num_classes=5, seed=5))
    with pytest.raises(UsageError, match='keys look like lightcnn29v2; pass network lightcnn29v2') as err:
        import_checkpoint(path, 'lightcnn29', str(tmp_path / 'x'))
    assert 'keys look like lightcnn29v2; pass --network lightcnn29v2' in err.value.spelled(flag)  # the CLI's


def test_unreadable_files_are_one_line_errors(tmp_path, capsys):
    (tmp_path / 'empty.pth').write_bytes(b'')
    (tmp_path / 'text.pth').write_text('hello')
    with zipfile.ZipFile(tmp_path / 'other.zip', 'w') as zf:
        zf.writestr('readme.txt', 'x')
    for name, message in (('empty.pth', 'not a PyTorch checkpoint'),
                          ('text.pth', 'not a PyTorch checkpoint'),
                          ('other.zip', 'no single data.pkl'), ('absent.pth', 'not found')):
        with pytest.raises(UsageError, match=message):
            read_state_dict(tmp_path / name)
    script = os.path.join(os.path.dirname(__file__), '..', 'models', 'import_pretrained.py')
    done = subprocess.run([sys.executable, script, str(tmp_path / 'text.pth'), '--network',
                           'lightcnn9', '--out', str(tmp_path / 'o')], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count('\n') == 1
    assert done.stderr.startswith('error: ') and 'text.pth' in done.stderr


def test_pickled_code_is_never_run(tmp_path):
    class Evil:
        def __reduce__(self):
            return os.system, ('touch ' + str(tmp_path / 'pwned'),)
    obj = {'state_dict': {'a': Evil()}}
    data = io.BytesIO()
    pickle.dump(obj, data, protocol=2)
    with zipfile.ZipFile(tmp_path / 'evil.pth', 'w') as zf:
        zf.writestr('archive/data.pkl', data.getvalue())
    with pytest.raises(UsageError, match="entries that are not tensors: a"):
        read_state_dict(tmp_path / 'evil.pth')
    assert not (tmp_path / 'pwned').exists()


# --- (2) parity with a PyTorch forward (optional) ----------------------------------------------


def test_fake_writer_matches_what_torch_reads(tmp_path):
    """Our torch-free writer really is torch's layout: torch.load reads it to the same arrays."""
    torch = pytest.importorskip('torch')
    state = random_state('lightcnn9', seed=6)
    for fmt in ('zip', 'legacy'):
        path = checkpoint(tmp_path, state, fmt=fmt, name=fmt, transpose=('fc1.filter.weight',))
        loaded = torch.load(path, map_location='cpu', weights_only=True)['state_dict']
        for key, arr in state.items():
            np.testing.assert_array_equal(loaded['module.' + key].numpy(), arr, err_msg=key)


@pytest.mark.parametrize('network, classes, legacy', [
    ('lightcnn9', 11, False), ('lightcnn29', None, False), ('lightcnn29v2', 9, False),
    ('lightcnn_v4', None, False), ('lightcnn9', None, True), ('lightcnn29v2', None, True)])
def test_features_match_pytorch_forward(tmp_path, network, classes, legacy):
    torch = pytest.importorskip('torch')
    from symbols.torch_reference import REFERENCE_NETS, features
    torch.manual_seed(0)
    ref = REFERENCE_NETS[network](**({'num_classes': classes or 5}
                                     if network != 'lightcnn_v4' else {}))
    sd = collections.OrderedDict(('module.' + k, v) for k, v in ref.state_dict().items())
    if not classes:
        sd = collections.OrderedDict((k, v) for k, v in sd.items() if '.fc2.' not in k)
    path = tmp_path / 'ref.pth.tar'
    torch.save({'epoch': 1, 'state_dict': sd}, path, _use_new_zipfile_serialization=not legacy)
    result = import_checkpoint(path, network, str(tmp_path / 'ours'))
    assert result['format'] == ('legacy' if legacy else 'zip') and result['num_classes'] == classes
    net, meta = load_checkpoint(tmp_path / 'ours', features_only=True)
    batch = np.random.RandomState(1).rand(3, *meta['preprocessing'].data_shape).astype(np.float32)
    expected = features(ref, batch)
    got = net(mx.nd.array(batch)).asnumpy()
    assert got.shape == expected.shape == (3, 256)
    assert np.abs(expected).max() > 1e-3  # a real signal, not zeros matching zeros
    assert np.abs(got - expected).max() < 1e-4


# --- (3) the real V4 weights on ORL --------------------------------------------------------------


def _orl_verification(model, paths, labels):
    feats = model.embed(paths)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    sims = feats @ feats.T
    upper = np.triu_indices(len(paths), 1)
    same = (labels[:, None] == labels[None, :])[upper]
    scores = sims[upper]
    from sklearn.metrics import roc_auc_score
    return roc_auc_score(same, scores), scores[same].mean(), scores[~same].mean()


@pytest.mark.slow
def test_real_v4_verifies_orl_and_random_weights_do_not(real_v4, orl_root, tmp_path):
    from models import load_model
    paths = sorted(glob.glob(str(orl_root / '*' / '*.pgm')))
    labels = np.array([os.path.basename(os.path.dirname(p)) for p in paths])
    assert len(paths) == 400
    auc, same, diff = _orl_verification(load_model(real_v4[0]), paths, labels)
    print(f'ORL, real V4: AUC {auc:.5f}, mean cosine same {same:.3f} / different {diff:.3f}')
    assert auc > 0.99 and same > diff + 0.3

    rand = get_model('lightcnn_v4')
    rand.initialize(LightCNNInit())
    save_checkpoint(rand, str(tmp_path / 'random'), dict(network='lightcnn_v4', num_classes=None,
                                                        preprocessing={'channels': 'bgr'}))
    r_auc, r_same, r_diff = _orl_verification(load_model(str(tmp_path / 'random')), paths, labels)
    print(f'ORL, random V4: AUC {r_auc:.5f}, mean cosine same {r_same:.3f} / different {r_diff:.3f}')
    assert r_auc < 0.95 and r_auc < auc - 0.05
    assert r_same - r_diff < 0.1  # random features barely separate identities


def test_real_v4_matches_pytorch(real_v4):
    torch = pytest.importorskip('torch')
    from symbols.torch_reference import REFERENCE_NETS, features
    ref = REFERENCE_NETS['lightcnn_v4']()
    ckpt = torch.load(real_v4[1], map_location='cpu', weights_only=True)['state_dict']
    ref.load_state_dict({k.replace('module.', ''): v for k, v in ckpt.items()})
    net, _ = load_checkpoint(real_v4[0])
    batch = np.random.RandomState(2).rand(2, 3, 128, 128).astype(np.float32)
    assert np.abs(net(mx.nd.array(batch)).asnumpy() - features(ref, batch)).max() < 1e-4
