"""Read PyTorch checkpoints into numpy arrays without installing PyTorch.

Two layouts exist in the wild, and the official LightCNN checkpoints come in both:

- **zip** (``torch.save`` since PyTorch 1.6): a zip whose ``<root>/data.pkl`` pickles the object and
  refers to tensor storages by key; each storage is the raw little-endian file ``<root>/data/<key>``.
  PyTorch < 1.6 cannot read it and says "not a tar archive".
- **legacy** (PyTorch < 1.6, or ``_use_new_zipfile_serialization=False``): a stream of pickles -- magic
  number, protocol, system info, the object, the list of storage keys -- followed by every storage as an
  int64 element count and its raw bytes.

Only the names a checkpoint needs are resolved (tensor rebuilders, storage types, ``OrderedDict``); any
other class becomes an inert :class:`OpaqueObject`; the legacy layout's other pickles (magic number,
protocol, system info, storage keys) are plain data and may name no global at all. Reading a file never
runs code from it (:mod:`common.safe_pickle`).
"""
import collections
import io
import pickle
import struct
import zipfile

import numpy as np

from common.errors import UsageError
from common.safe_pickle import RestrictedUnpickler, UnsafePickleError, restricted_load

LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    'DoubleStorage': np.float64, 'FloatStorage': np.float32, 'HalfStorage': np.float16,
    'BFloat16Storage': 'bfloat16', 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_, 'UntypedStorage': np.uint8,
}
_TORCH_DTYPES = {
    'float64': np.float64, 'double': np.float64, 'float32': np.float32, 'float': np.float32,
    'float16': np.float16, 'half': np.float16, 'bfloat16': 'bfloat16', 'int64': np.int64,
    'long': np.int64, 'int32': np.int32, 'int': np.int32, 'int16': np.int16, 'short': np.int16,
    'int8': np.int8, 'uint8': np.uint8, 'bool': np.bool_,
}


class OpaqueObject:
    """Stand-in for a class the checkpoint names but we do not need (e.g. ``argparse.Namespace``)."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f'<{type(self).__qualname__} from checkpoint>'


class _StorageType:
    """What ``torch.FloatStorage`` etc. unpickle to: only the element type matters."""

    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype


class _TorchDtype:
    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype


class _Storage:
    """A flat storage; ``data`` is filled when its bytes are read (later, in the legacy format)."""

    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel, self.data = key, dtype, numel, None

    def set_bytes(self, raw, byteorder='little'):
        self.data = _frombuffer(raw, self.dtype, byteorder)


class _TensorRef:
    """A tensor to build from a storage once the storage's bytes are known."""

    def __init__(self, storage, offset, size, stride, dtype=None):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
        self.dtype = dtype

    def materialize(self):
        flat = self.storage.data
        if self.dtype is not None and self.dtype != self.storage.dtype:
            flat = _frombuffer(flat.tobytes(), self.dtype, 'little')
        if any(s == 0 for s in self.size):
            return np.zeros(self.size, dtype=flat.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if self.offset < 0 or any(s < 0 for s in self.stride) or last >= flat.size:
            raise UsageError(f'corrupt checkpoint: a tensor of shape {self.size} reaches element '
                             f'{last} of a storage with {flat.size}')
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.size,
            strides=tuple(s * flat.itemsize for s in self.stride), writeable=False)
        return np.array(view)  # own, contiguous copy


def _frombuffer(raw, dtype, byteorder):
    if dtype == 'bfloat16':  # numpy has no bfloat16: it is the high half of a float32
        half = np.frombuffer(raw, dtype='<u2' if byteorder == 'little' else '>u2')
        return (half.astype(np.uint32) << 16).view(np.float32)
    dt = np.dtype(dtype).newbyteorder('<' if byteorder == 'little' else '>')
    return np.frombuffer(raw, dtype=dt).astype(np.dtype(dtype), copy=False)


def _rebuild_tensor(storage, storage_offset, size, stride, *_):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    return _TensorRef(storage, storage_offset, size, stride, getattr(dtype, 'dtype', None))


def _rebuild_parameter(data, *_):
    return data


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


_TORCH_FUNCTIONS = {
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v3'): _rebuild_tensor_v3,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    ('collections', 'OrderedDict'): _ordered_dict,
    ('torch.nn.modules.module', '_IncompatibleKeys'): _ordered_dict,
}


class _RestrictedUnpickler(RestrictedUnpickler):
    """Unpickler that resolves torch's tensor machinery to numpy and nothing else to real code."""

    def __init__(self, file, persistent_load, source):
        # latin1: Python 2 era checkpoints
        super().__init__(file, source=source, encoding='latin1', persistent_load=persistent_load)
        self.skipped_classes = set()

    def find_class(self, module, name):
        if (module, name) in _TORCH_FUNCTIONS:
            return _TORCH_FUNCTIONS[(module, name)]
        if module in ('torch', 'torch.storage', 'torch.cuda') and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        if module == 'torch' and name in _TORCH_DTYPES:
            return _TorchDtype(name, _TORCH_DTYPES[name])
        self.skipped_classes.add(f'{module}.{name}')
        return type(name, (OpaqueObject,), {'__module__': module})


def _as_str(value):
    return value.decode('ascii') if isinstance(value, bytes) else value


def _materialize(obj):
    """Replace every :class:`_TensorRef` inside dicts, lists and tuples by its numpy array."""
    if isinstance(obj, _TensorRef):
        return obj.materialize()
    if isinstance(obj, dict):
        for key in list(obj):
            obj[key] = _materialize(obj[key])
        return obj
    if isinstance(obj, list):
        return [_materialize(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(v) for v in obj)
    return obj


def _storage_from_pid(pid, storages):
    """Build (or reuse) the storage a persistent id names; returns it and any legacy view."""
    if not isinstance(pid, tuple) or _as_str(pid[0]) != 'storage':
        raise UsageError(f'unsupported object in checkpoint: persistent id {pid[:1]!r}')
    storage_type, key, _location, numel = pid[1:5]
    key = _as_str(key)
    dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else np.uint8
    if key not in storages:
        storages[key] = _Storage(key, dtype, int(numel))
    view = pid[5] if len(pid) > 5 else None
    return storages[key], view


def _load_zip(path, zf):
    pkl = [n for n in zf.namelist() if n.endswith('/data.pkl') or n == 'data.pkl']
    if len(pkl) != 1:
        raise UsageError(f'{path} is a zip file but not a PyTorch checkpoint (no single data.pkl)')
    root = pkl[0][:-len('data.pkl')]
    byteorder = 'little'
    if root + 'byteorder' in zf.namelist():
        byteorder = zf.read(root + 'byteorder').decode().strip()
    storages = {}

    def persistent_load(pid):
        storage, _ = _storage_from_pid(pid, storages)
        if storage.data is None:
            name = f'{root}data/{storage.key}'
            try:
                storage.set_bytes(zf.read(name), byteorder)
            except KeyError:
                raise UsageError(f'{path}: storage {name} is missing (truncated file?)') from None
        return storage

    unpickler = _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), persistent_load, path)
    return _materialize(unpickler.load()), 'zip'


def _load_legacy(path, f):
    def data_pickle(what):  # the legacy layout's plain-data pickles: no global may appear in them
        return restricted_load(f, source=f'{path} ({what})', encoding='latin1')

    try:
        magic = data_pickle('magic number')
    except UnsafePickleError:
        raise
    except UsageError:
        magic = None
    if magic != LEGACY_MAGIC:
        f.seek(0)
        head = f.read(262)
        if len(head) > 261 and head[257:262] == b'ustar':
            raise UsageError(f'{path} is a tar-format checkpoint (PyTorch < 0.4); load it once with '
                             f'PyTorch and torch.save it again')
        raise UsageError(f'{path} is not a PyTorch checkpoint (neither zip nor legacy pickle format)')
    protocol = data_pickle('protocol version')
    if protocol != LEGACY_PROTOCOL:
        raise UsageError(f'{path}: unsupported legacy checkpoint protocol {protocol}')
    sys_info = data_pickle('system info')
    if not isinstance(sys_info, dict):
        raise UsageError(f'{path}: corrupt legacy checkpoint (system info is a {type(sys_info).__name__})')
    byteorder = 'little' if sys_info.get('little_endian', True) else 'big'
    storages = {}

    def persistent_load(pid):
        if _as_str(pid[0]) == 'module':
            return OpaqueObject(*pid[1:])
        storage, view = _storage_from_pid(pid, storages)
        if view is not None:  # only PyTorch < 0.4 wrote storage views
            raise UsageError(f'{path} uses storage views (PyTorch < 0.4); re-save it with newer '
                             f'PyTorch')
        return storage

    unpickler = _RestrictedUnpickler(f, persistent_load, path)
    obj = unpickler.load()
    keys = data_pickle('storage keys')
    if not isinstance(keys, (list, tuple)):
        raise UsageError(f'{path}: corrupt legacy checkpoint (storage keys are a {type(keys).__name__})')
    keys = [_as_str(k) for k in keys]
    for key in keys:
        if key not in storages:
            raise UsageError(f'{path}: storage {key} is listed but never used (corrupt file?)')
        storage = storages[key]
        (count,) = struct.unpack('<q' if byteorder == 'little' else '>q', f.read(8))
        itemsize = 2 if storage.dtype == 'bfloat16' else np.dtype(storage.dtype).itemsize
        raw = f.read(count * itemsize)
        if len(raw) != count * itemsize:
            raise UsageError(f'{path} is truncated: storage {key} needs {count * itemsize} bytes')
        storage.set_bytes(raw, byteorder)
    return _materialize(obj), 'legacy'


def load_torch_file(path):
    """Unpickle a PyTorch checkpoint with every tensor as a numpy array.

    Returns
    -------
    (object, str)
        The saved object (usually a dict) and the format, ``'zip'`` or ``'legacy'``.
    """
    path = str(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                return _load_zip(path, zf)
        with open(path, 'rb') as f:
            return _load_legacy(path, f)
    except FileNotFoundError:
        raise UsageError(f'checkpoint {path} not found') from None
    except IsADirectoryError:
        raise UsageError(f'checkpoint {path} is a directory, not a file') from None
    except (pickle.UnpicklingError, EOFError, struct.error, zipfile.BadZipFile) as err:
        raise UsageError(f'{path} is not a readable PyTorch checkpoint ({err})') from None


def extract_state_dict(obj, source='checkpoint'):
    """The ``name -> array`` mapping inside a loaded checkpoint, with ``module.`` prefixes removed.

    Accepts a bare state_dict or a dict holding one under ``state_dict``, ``model_state_dict`` or
    ``model`` (as the official LightCNN ``train.py`` and common trainers save it). DataParallel's
    ``module.`` prefix is stripped (repeatedly, for nested wrappers).
    """
    state = obj
    if isinstance(obj, dict):
        for key in ('state_dict', 'model_state_dict', 'model', 'net'):
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
    if not isinstance(state, dict) or not state:
        raise UsageError(f'{source} holds no state_dict (found {type(state).__name__})')
    arrays, skipped = collections.OrderedDict(), []
    for name, value in state.items():
        if not isinstance(value, np.ndarray):
            skipped.append(str(name))
            continue
        name = str(name)
        while name.startswith('module.'):
            name = name[len('module.'):]
        if name in arrays:
            raise UsageError(f'{source}: key {name!r} appears twice once "module." is removed')
        arrays[name] = value
    if skipped:
        raise UsageError(f'{source}: state_dict entries that are not tensors: {", ".join(skipped)}')
    return arrays


def read_state_dict(path):
    """``(state_dict, info)`` of a PyTorch checkpoint file: arrays by name, plus format and extras."""
    obj, fmt = load_torch_file(path)
    state = extract_state_dict(obj, source=str(path))
    info = {'format': fmt}
    if isinstance(obj, dict):
        for key in ('epoch', 'arch', 'prec1', 'best_prec1'):
            value = obj.get(key)
            if isinstance(value, (int, float, str)):
                info[key] = value
            elif isinstance(value, np.ndarray) and value.size == 1:
                info[key] = value.item()
    return state, info
