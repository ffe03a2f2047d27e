"""Checkpoint format shared by training, extraction, import and export (beside the networks it rebuilds).

A checkpoint is a stem ``runs/NAME-0007`` (trained, epoch 7) or ``runs/pretrained/NAME`` (imported) with
- ``STEM.params``: ``net.save_parameters`` (structural names = official PyTorch keys),
- ``STEM.json``: network, classes, preprocessing, epoch, metrics -- everything needed to rebuild it,
- ``STEM.states``: optimiser state (training checkpoints only), for exact resumption.

The files of a checkpoint commit as one: each is written under a temporary name (:mod:`common.fileio`,
removed on any failure, disk full included); the old ``STEM.json`` is deleted before the new files are
renamed into place, and the new one, renamed last, records the size and SHA-256 of ``.params`` and
``.states`` (``files``). :func:`check_checkpoint_files` compares them on every load, so a run killed between
two renames, or files of different runs side by side, are refused instead of mixed.
``models.checkpoint`` re-exports these names for existing scripts.
"""
import glob
import json
import os
import re
import shutil

import mxnet as mx

from common.errors import UsageError, error_message
from common.fileio import temporary_name
from common.preprocessing import Preprocessing
from common.safe_pickle import restricted_load
from common.wheels import sha256_of

from .model_zoo import get_model
from .quantized import is_quantized, load_stored_graph

FORMAT = 'lightcnn-gluon-checkpoint'


def checkpoint_stem(prefix, epoch=None):
    return prefix if epoch is None else f'{prefix}-{int(epoch):04d}'


def file_digest(path):
    """``{'bytes': size, 'sha256': hex digest}`` of a file, as a checkpoint JSON records its companions."""
    return {'bytes': os.path.getsize(path), 'sha256': sha256_of(path)}


def save_checkpoint(net, prefix, meta, epoch=None, trainer=None, extra=None):
    """Write ``.params`` (+ ``.states``) and ``.json`` for ``net`` as one checkpoint; returns the stem.

    ``extra`` maps further files of the checkpoint, by suffix (``'.head.params'`` for ``STEM.head.params``,
    a training head's weights), to their writers ``write(path)``; they commit with the others. With
    ``net=None`` the ``.params`` writer comes from ``extra`` too (a stored-graph checkpoint,
    :mod:`symbols.quantized`: ``'.params'`` and ``'-symbol.json'``).

    Raises
    ------
    UsageError
        The files cannot be written (disk full, no permission): no temporary file is left, and an
        earlier checkpoint of the same stem is either intact or no longer listed (its JSON gone).
    """
    stem = checkpoint_stem(prefix, epoch)
    meta = dict(meta, format=FORMAT, version=1, epoch=epoch)
    if isinstance(meta.get('preprocessing'), Preprocessing):
        meta['preprocessing'] = meta['preprocessing'].to_dict()
    writers = {'.params': net.save_parameters} if net is not None else {}
    if trainer is not None:
        writers['.states'] = trainer.save_states
    writers.update(extra or {})
    if '.params' not in writers:
        raise ValueError('save_checkpoint needs a net or a .params writer in extra')
    temporary = {ext: temporary_name(stem + ext) for ext in list(writers) + ['.json']}
    try:
        os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
        for ext, write in writers.items():
            write(temporary[ext])
        meta['files'] = {ext: file_digest(temporary[ext]) for ext in writers}
        with open(temporary['.json'], 'w', encoding='utf-8') as f:
            json.dump(meta, f, indent=1, sort_keys=True)
        if os.path.lexists(stem + '.json'):
            os.remove(stem + '.json')  # the old checkpoint stops counting before its files are replaced
        for ext in writers:
            os.replace(temporary[ext], stem + ext)
        os.replace(temporary['.json'], stem + '.json')  # last: its presence marks a complete checkpoint
    except (OSError, mx.MXNetError) as err:
        raise UsageError(f'cannot write checkpoint {stem}: {error_message(err)}{_free_space(stem)}') from None
    finally:
        for path in temporary.values():
            if os.path.lexists(path):
                os.remove(path)
    return stem


def _free_space(stem):
    """`` (12 kB free there)`` when the disk of ``stem`` is (nearly) full: MXNet's write error does not say."""
    try:
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(stem))).free
    except OSError:
        return ''
    return f' ({free // 1024} kB free there)' if free < 256 << 20 else ''


def check_checkpoint_files(stem, meta):
    """Refuse ``.params``/``.states`` files that are not the ones ``STEM.json`` recorded (size, SHA-256).

    JSON files written before the ``files`` record existed are accepted as they are.

    Raises
    ------
    UsageError
        A companion is missing, truncated or from another save.
    """
    for ext, want in (meta.get('files') or {}).items():
        path = stem + ext
        if not os.path.isfile(path):
            raise UsageError(f'checkpoint file {path} is missing ({stem}.json lists it)')
        size = os.path.getsize(path)
        if size != want.get('bytes'):
            problem = f'{size} bytes where {stem}.json recorded {want.get("bytes")}'
        elif sha256_of(path) != want.get('sha256'):
            problem = f'its SHA-256 differs from the one {stem}.json recorded'
        else:
            continue
        raise UsageError(f'{path} does not belong to {stem}.json ({problem}): the checkpoint was not saved '
                         'as one (a run killed while saving, or files from different runs); use another epoch')


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


# every file a checkpoint STEM may have: '-symbol.json' is the graph of an INT8 one (symbols.quantized.SYMBOL_SUFFIX)
CHECKPOINT_SUFFIXES = ('.json', '.params', '.states', '.head.params', '-symbol.json')


def checkpoint_files(spec, epoch=None):
    """The files of the checkpoint ``spec`` names (what a command reading it must never write over).

    The stem :func:`resolve_checkpoint` finds, else (no such checkpoint yet: loading will say so) the stem
    ``spec`` spells; with every suffix a checkpoint may have (:data:`CHECKPOINT_SUFFIXES`) and ``spec`` itself.
    """
    spec = os.fspath(spec)
    try:
        stem = resolve_checkpoint(spec, epoch)
    except UsageError:
        stem = spec.rsplit('.', 1)[0] if spec.endswith(('.params', '.json')) else checkpoint_stem(spec, epoch)
    return [spec] + [stem + ext for ext in CHECKPOINT_SUFFIXES]


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


def read_optimizer_file(path):
    """Check a ``.states`` file before MXNet unpickles it; returns ``(states, optimizer)``.

    ``.states`` is a pickle (``(states, optimizer)``, as ``gluon.Trainer.save_states`` writes it); MXNet reads
    it with plain ``pickle.loads``, which would run code a crafted file names. Here only optimiser/scheduler
    classes and NDArrays may appear. ``states`` maps a parameter's index in the trainer to its state (an
    NDArray, a tuple of them, or ``None``).

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
    if not (isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], dict)
            and isinstance(obj[1], mx.optimizer.Optimizer)):
        raise UsageError(f'{path} is not an MXNet optimiser state saved with its optimiser')
    return obj


def read_optimizer_states(path):
    """The optimiser pickled in a ``.states`` file, checked as :func:`read_optimizer_file` does."""
    return read_optimizer_file(path)[1]


def load_metadata(stem):
    """``STEM.json`` as a dict; a missing, truncated, unreadable or foreign file is one :class:`UsageError`."""
    try:
        with open(stem + '.json', encoding='utf-8-sig') as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise UsageError(f'checkpoint file {stem}.json is missing') from None
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise UsageError(f'{stem}.json is not readable JSON (truncated?): {err}') from None
    if not isinstance(meta, dict) or meta.get('format') != FORMAT or 'network' not in meta:
        raise UsageError(f'{stem}.json is not a {FORMAT} file')
    return meta


def build_from_metadata(meta, features_only=False, **kwargs):
    """The network ``meta`` describes, uninitialised; ``features_only`` drops the classifier."""
    pre = Preprocessing.from_dict(meta.get('preprocessing', {}))
    classes = None if features_only else meta.get('num_classes')
    kwargs.setdefault('embedding_bn', bool(meta.get('embedding_bn', False)))  # symbols.lightcnn.EmbeddingBN
    return get_model(meta['network'], num_classes=classes, preprocessing=pre, **kwargs), pre


def load_checkpoint(spec, epoch=None, ctx=None, features_only=False, **kwargs):
    """Load a checkpoint; returns ``(net, meta)`` with ``meta['preprocessing']`` a Preprocessing.

    ``features_only`` builds the 256-d feature net and ignores a stored classifier. An INT8 checkpoint
    (``quantization`` in its JSON, :mod:`symbols.quantized`) loads as its stored feature graph, whatever
    ``features_only`` and ``kwargs`` say (it has no classifier).
    """
    stem = resolve_checkpoint(spec, epoch)
    meta = load_metadata(stem)
    check_checkpoint_files(stem, meta)
    if is_quantized(meta):
        return load_stored_graph(stem, meta, ctx)
    net, pre = build_from_metadata(meta, features_only, **kwargs)
    try:
        net.load_parameters(stem + '.params', ctx=ctx or mx.cpu(), ignore_extra=features_only)
    except (AssertionError, mx.MXNetError) as err:
        raise UsageError(f'{stem}.params does not fit {meta["network"]} or is damaged: {error_message(err)}') from None
    meta = dict(meta, preprocessing=pre, stem=stem)
    return net, meta
