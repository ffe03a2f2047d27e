"""Resuming (``load_epoch``): what is restored from the checkpoint, and what is re-derived from this run.

Restored: the weights (``.params``), the per-parameter optimiser state (momentum, Adam moments:
``.states``), the epoch counter and, unless ``lr`` is given, the base learning rate.
Re-derived from *this* run's settings, never taken from the pickled optimiser:

- the LR schedule: steps and warm-up in updates of this run's ``updates_per_epoch``, its position
  ``num_update = epochs done x updates_per_epoch`` -- a changed batch size, device or worker count moves
  no LR step off its epoch boundary;
- the optimiser itself (type, ``wd``, ``mom``): a changed type is refused (its state would be another
  optimiser's) unless ``reset_optimizer``; a changed ``wd``/``mom`` is applied from the resumed epoch on
  and logged;
- the per-device copies of the state: MXNet saves device 0's (all devices hold the same state in
  synchronous data parallelism) and every device of this run gets a copy on its own context;
- data sharding: each worker reads part ``rank`` of ``num_workers`` of this run.

Everything is checked before the first step: files complete and of one save
(:func:`models.checkpoint.check_checkpoint_files`), network and input geometry, the ``.states`` read with
the restricted unpickler and matched, parameter by parameter, with the network's shapes.
"""
import os
import pickle
from dataclasses import dataclass

import mxnet as mx

from common.errors import UsageError
from symbols.checkpoint import (check_checkpoint_files, checkpoint_stem, list_epochs, load_metadata,
                               read_optimizer_file)

from .errors import ParameterError


@dataclass
class ResumePoint:
    """A checkpoint opened for resumption: ``stem``, epochs ``done``, its JSON ``meta``, and the content of
    its ``.states``: ``states`` (parameter index -> state) and the pickled ``optimizer``."""
    stem: str
    done: int
    meta: dict
    states: dict
    optimizer: mx.optimizer.Optimizer

    @property
    def optimizer_name(self):
        return type(self.optimizer).__name__.lower()


def open_resume_point(prefix, load_epoch):
    """Open ``PREFIX-NNNN`` of ``load_epoch``: the three files present, of one save, readable.

    Raises
    ------
    UsageError
        A file missing (the epochs that can be resumed are listed), truncated, from another save, or a
        ``.states`` that is not an MXNet optimiser state.
    """
    stem = checkpoint_stem(prefix, load_epoch)
    missing = [stem + ext for ext in ('.params', '.json', '.states') if not os.path.isfile(stem + ext)]
    if missing:
        epochs = [e for e in list_epochs(prefix) if os.path.isfile(checkpoint_stem(prefix, e) + '.states')]
        found = f'epochs saved under {prefix}: {", ".join(map(str, epochs))}' if epochs else \
            f'no checkpoint under {prefix}'
        cut = ' (its save did not complete)' if missing == [stem + '.json'] else ''
        raise UsageError(f'cannot resume: {" and ".join(missing)} missing{cut}; {found}')
    meta = load_metadata(stem)
    if meta.get('epoch') is not None and int(meta['epoch']) != int(load_epoch):
        raise UsageError(f'{stem}.json says epoch {meta["epoch"]}, not {load_epoch}: renamed files?')
    if 'files' in meta and '.states' not in meta['files']:
        raise UsageError(f'{stem} was saved without optimiser state; it cannot be resumed (load its weights '
                         'for fine-tuning instead)')
    check_checkpoint_files(stem, meta)
    states, optimizer = read_optimizer_file(stem + '.states')
    return ResumePoint(stem, int(load_epoch), meta, states, optimizer)


def check_network(point, args, num_classes, preprocessing, head=None):
    """The checkpoint's network, classes, loss (``head``: :mod:`training.heads`) and input (channels, side)
    must be this run's. A head replacing fc2 keeps the class count in the JSON's ``head`` entry."""
    meta = point.meta
    classes = (meta.get('head') or {}).get('num_classes', meta['num_classes'])
    if meta['network'] != args.network or int(classes or 0) != num_classes:
        raise UsageError(f'{point.stem} is a {meta["network"]} with {classes} classes, '
                         f'not {args.network} with {num_classes}')
    loss = meta.get('loss', 'softmax')
    if head is not None and loss != head.name:
        raise ParameterError(lambda n: f'{point.stem} was trained with {n("loss")} {loss}, not {head.name}: '
                                       f'resume with {n("loss")} {loss}')
    saved_bn, this_bn = bool(meta.get('embedding_bn', False)), getattr(args, 'embedding_bn', None) in ('on', True)
    if saved_bn != this_bn:
        word = {True: 'on', False: 'off'}
        raise ParameterError(lambda n: f'{point.stem} was trained with {n("embedding_bn")} {word[saved_bn]}, not '
                                       f'{word[this_bn]}: resume with {n("embedding_bn")} {word[saved_bn]}')
    saved = meta.get('preprocessing') or {}
    shape = (1 if saved.get('channels', 'gray') == 'gray' else 3, saved.get('input_size'))
    if saved.get('input_size') and shape != (preprocessing.num_channels, preprocessing.input_size):
        side = saved['input_size']
        raise ParameterError(lambda n: f'{point.stem} was trained on {shape[0]}x{side}x{side} inputs, this run '
                                       f'gives {preprocessing.data_shape[0]}x{preprocessing.input_size}x'
                                       f'{preprocessing.input_size}: give {n("input_size")} {side}')


def check_optimizer(point, args):
    """This run's optimiser against the pickled one; returns the changes to log (``['wd 0.0001 -> 0.001']``).

    Raises
    ------
    ParameterError
        ``optimizer`` differs from the checkpoint's without ``reset_optimizer``.
    """
    saved, name = point.optimizer, point.optimizer_name
    if name != args.optimizer and not args.reset_optimizer:
        raise ParameterError(lambda n: f'{n("optimizer")} {args.optimizer} differs from the {name} whose state '
                                       f'{point.stem}.states holds: resume with {n("optimizer")} {name}, or '
                                       f'add {n("reset_optimizer")} to start {args.optimizer} afresh from '
                                       'these weights')
    changes = []
    if name != args.optimizer:
        changes.append(f'optimizer {name} -> {args.optimizer} (fresh state)')
    if not _same(saved.wd, args.wd):
        changes.append(f'wd {saved.wd:g} -> {args.wd:g}')
    if args.optimizer in ('sgd', 'nag') and name in ('sgd', 'nag') and not _same(saved.momentum, args.mom):
        changes.append(f'mom {saved.momentum:g} -> {args.mom:g}')
    return changes


def _same(a, b):
    return abs(float(a) - float(b)) <= 1e-12 * max(abs(float(a)), abs(float(b)), 1.0)


def check_states(point, trainer, net=None):
    """Every state in the ``.states`` must belong to a parameter of the trainer with its shape.

    ``net`` only names parameters in the message by their structural names (``fc1.weight``).

    Raises
    ------
    UsageError
        More states than parameters, or a state shaped for another network.
    """
    params = list(trainer._params)  # the order Trainer numbers them in (net, then head parameters)
    indices = list(point.states)
    if not all(isinstance(i, int) and 0 <= i < len(params) for i in indices):
        raise UsageError(f'{point.stem}.states holds the state of {len(indices)} parameters, the network has '
                         f'{len(params)}: it was saved by another network')
    names = {id(p): k for k, p in net._collect_params_with_prefix().items()} if net is not None else {}
    for index, state in sorted(point.states.items()):
        param = params[index]
        for array in _arrays(state):
            if tuple(array.shape) != tuple(param.shape):
                raise UsageError(f'{point.stem}.states does not fit the network: parameter {index} '
                                 f'({names.get(id(param), param.name)}) is {tuple(param.shape)}, its state '
                                 f'{tuple(array.shape)}')


def _arrays(state):
    if isinstance(state, mx.nd.NDArray):
        return [state]
    if isinstance(state, (tuple, list)):
        return [a for s in state for a in _arrays(s)]
    return []


def install_optimizer(trainer, optimizer, states=None, saved=None):
    """Make ``optimizer`` the trainer's, on every device, with ``states`` (from a ``.states`` file) loaded.

    ``saved`` (the pickled optimiser) gives each parameter its own update count back, moved to this run's
    position (``optimizer.num_update``, re-derived from the epochs done): Adam's bias correction counts the
    updates a parameter had, so a backbone frozen for the first epochs starts at 1 when it thaws, in a
    resumed run as in a straight one; parameters the saved run never updated start from 0.

    What ``gluon.Trainer.load_states`` does, except that the optimiser is this run's rather than the
    pickled one; each device's updater gets its own copy of the states, moved to its context on first use.
    ``trainer._init_kvstore``/``_init_params``/``_init_optimizer`` are what ``load_states`` calls (MXNet
    1.9.1, its last release).
    """
    if not trainer._kv_initialized:
        trainer._init_kvstore()
    if trainer._params_to_init:
        trainer._init_params()
    if saved is not None:
        optimizer.begin_num_update = 0  # num_update (the schedule's position) stays as this run set it
        counts = getattr(saved, '_all_index_update_counts', None) or {0: getattr(saved, '_index_update_count', {})}
        shift = optimizer.num_update - getattr(saved, 'num_update', 0)  # 0 unless updates/epoch changed
        first = {i: c + shift for i, c in (counts.get(0) or next(iter(counts.values()), {})).items()}
        # every device continues from device 0's counts (they agree: each device updates every parameter)
        optimizer._all_index_update_counts = {d: dict(first) for d in set(counts) | {0}}
        optimizer._index_update_count = optimizer._all_index_update_counts[0]
    trainer._init_optimizer(optimizer, {})
    if states is not None:
        blob = pickle.dumps(states)  # our own bytes, from the restricted reader: safe to unpickle
        for updater in trainer._updaters:
            updater.set_states(blob)


def describe_changes(meta, run):
    """Log lines for the settings that changed since the checkpoint (and what was re-derived for them)."""
    lines, old = [], meta.get('lr_schedule') or {}
    before = old.get('updates_per_epoch')
    if before and before != run.updates_per_epoch:
        lines.append(f'resume: {before} -> {run.updates_per_epoch} updates/epoch (batch {meta.get("batch_size")} '
                     f'-> {run.args.batch_size}, global {meta.get("global_batch")} -> {run.global_batch}): LR '
                     'schedule re-derived in updates of this run')
    devices = meta.get('devices')
    if devices and devices != len(run.contexts):
        lines.append(f'resume: {devices} -> {len(run.contexts)} device(s): optimiser state copied to each')
    workers = meta.get('num_workers')
    if workers and workers != run.num_workers:
        lines.append(f'resume: {workers} -> {run.num_workers} worker(s): the .rec read in {run.num_workers} '
                     'part(s)')
    return lines
