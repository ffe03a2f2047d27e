"""Checkpoint format shared by training, extraction, import and export.

A checkpoint is a stem ``models/NAME-0007`` (trained, epoch 7) or ``models/NAME`` (imported) with
- ``STEM.params``: ``net.save_parameters`` (structural names = official PyTorch keys),
- ``STEM.json``: network, classes, preprocessing, epoch, metrics -- everything needed to rebuild it,
- ``STEM.states``: optimiser state (training checkpoints only), for exact resumption.
Files are written under temporary names and renamed, so a killed run never leaves a half checkpoint.
"""
import glob
import json
import os
import re

import mxnet as mx

from common.errors import UsageError
from common.safe_pickle import restricted_load
from common.preprocessing import Preprocessing
from symbols import get_model

FORMAT = 'lightcnn-gluon-checkpoint'


def checkpoint_stem(prefix, epoch=None):
    return prefix if epoch is None else f'{prefix}-{int(epoch):04d}'


def _atomic(path, write):
    tmp = f'{path}.tmp{os.getpid()}'
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(net, prefix, meta, epoch=None, trainer=None):
    """Write ``.params`` (+ ``.states``) and ``.json`` for ``net``; returns the stem."""
    stem = checkpoint_stem(prefix, epoch)
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    meta = dict(meta, format=FORMAT, version=1, epoch=epoch)
    if isinstance(meta.get('preprocessing'), Preprocessing):
        meta['preprocessing'] = meta['preprocessing'].to_dict()
    _atomic(stem + '.params', net.save_parameters)
    if trainer is not None:
        _atomic(stem + '.states', trainer.save_states)

    def write_json(path):
        with open(path, 'w') as f:
            json.dump(meta, f, indent=1, sort_keys=True)
    _atomic(stem + '.json', write_json)  # written last: its presence marks a complete checkpoint
    return stem


def list_epochs(prefix):
    """Epochs with a complete checkpoint under ``prefix``, ascending."""
    found = []
    for path in glob.glob(glob.escape(prefix) + '-*.json'):
        m = re.fullmatch(re.escape(prefix) + r'-(\d{4,})\.json', path)
        if m and os.path.exists(path[:-5] + '.params'):
            found.append(int(m.group(1)))
    return sorted(found)


def resolve_checkpoint(spec, epoch=None):
    """Turn what a user typed into a checkpoint stem.

    Accepts ``PREFIX`` with ``epoch``, a stem (``models/x-0003`` or imported ``models/v4``), a
    ``.params`` or ``.json`` file, or a bare training prefix (its latest epoch).
    """
    spec = os.fspath(spec)
    if epoch is not None:
        stem = checkpoint_stem(spec, epoch)
    elif spec.endswith(('.params', '.json')):
        stem = spec.rsplit('.', 1)[0]
    elif os.path.exists(spec + '.params'):
        stem = spec
    else:
        epochs = list_epochs(spec)
        if not epochs:
            raise UsageError(f'no checkpoint at {spec!r} (expected {spec}.params + .json, '
                             f'or {spec}-NNNN.params from training)')
        stem = checkpoint_stem(spec, epochs[-1])
    for ext in ('.params', '.json'):
        if not os.path.exists(stem + ext):
            raise UsageError(f'checkpoint file {stem + ext} is missing')
    return stem


def _optimizer_state_globals():
    """What MXNet's ``Trainer.save_states`` pickles: optimiser and LR-scheduler classes, NDArrays."""
    allowed = {('mxnet.ndarray.ndarray', 'NDArray'), ('builtins', 'bytearray')}
    for base in (mx.optimizer.Optimizer, mx.lr_scheduler.LRScheduler):
        todo = [base]
        while todo:
            cls = todo.pop()
            allowed.add((cls.__module__, cls.__qualname__))
            todo += cls.__subclasses__()
    return allowed


def read_optimizer_states(path):
    """Check a ``.states`` file before MXNet unpickles it; returns the pickled optimiser.

    ``.states`` is a pickle (``(states, optimizer)``); MXNet reads it with plain ``pickle.loads``, which
    would run code a crafted file names. Here only optimiser/scheduler classes and NDArrays may appear.

    Raises
    ------
    UsageError
        Unreadable, not an optimiser state, or naming any other global (UnsafePickleError).
    """
    try:
        with open(path, 'rb') as f:
            obj = restricted_load(f, _optimizer_state_globals(), source=str(path))
    except OSError as err:
        raise UsageError(f'cannot read {path}: {err.strerror or err}') from None
    if not (isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[1], mx.optimizer.Optimizer)):
        raise UsageError(f'{path} is not an MXNet optimiser state saved with its optimiser')
    return obj[1]


def load_metadata(stem):
    with open(stem + '.json') as f:
        meta = json.load(f)
    if meta.get('format') != FORMAT or 'network' not in meta:
        raise UsageError(f'{stem}.json is not a {FORMAT} file')
    return meta


def build_from_metadata(meta, features_only=False, **kwargs):
    """The network ``meta`` describes, uninitialised; ``features_only`` drops the classifier."""
    pre = Preprocessing.from_dict(meta.get('preprocessing', {}))
    classes = None if features_only else meta.get('num_classes')
    return get_model(meta['network'], num_classes=classes, preprocessing=pre, **kwargs), pre


def load_checkpoint(spec, epoch=None, ctx=None, features_only=False, **kwargs):
    """Load a checkpoint; returns ``(net, meta)`` with ``meta['preprocessing']`` a Preprocessing.

    ``features_only`` builds the 256-d feature net and ignores a stored classifier. An INT8
    checkpoint (``quantization`` in its JSON, :mod:`models.quantize`) loads as its stored feature graph.
    """
    stem = resolve_checkpoint(spec, epoch)
    meta = load_metadata(stem)
    if meta.get('quantization'):  # INT8 feature net: a stored graph, not a rebuilt network
        from models.quantize import load_quantized
        return load_quantized(stem, meta, ctx)
    net, pre = build_from_metadata(meta, features_only, **kwargs)
    try:
        net.load_parameters(stem + '.params', ctx=ctx or mx.cpu(), ignore_extra=features_only)
    except (AssertionError, mx.MXNetError) as err:
        first = str(err).strip().splitlines()[0]
        raise UsageError(f'{stem}.params does not fit {meta["network"]}: {first}') from None
    meta = dict(meta, preprocessing=pre, stem=stem)
    return net, meta
