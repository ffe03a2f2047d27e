"""LightCNN training: setup, one epoch, validation, checkpoint -- :func:`train` reads top to bottom.

:func:`train` takes the options of ``train_lightcnn.py`` (an argparse namespace, a dict or an argv list,
see :mod:`training.config`) and runs the whole job; tests call it directly, with the devices injected.
The loop's parts are plain functions of a :class:`TrainingRun` (what :func:`setup` decided): the loss comes
from a head (:mod:`training.heads`), what is printed or written from callbacks (:mod:`training.callbacks`),
per-epoch metrics from validators (:mod:`training.validation`).

Epochs are numbered as in MXNet: the log's ``Epoch[i]`` and the CSV's ``epoch`` count from 0; the checkpoint
saved after ``Epoch[i]`` is ``PREFIX-%04d`` of ``i + 1``, the epochs completed (its JSON ``epoch``), and
``load_epoch=N`` resumes after N completed epochs, continuing with ``Epoch[N]``.
"""
import argparse
import math
import os
import time
from dataclasses import dataclass, field

import mxnet as mx
from mxnet import autograd, gluon

from common.devices import parse_devices
from common.errors import UsageError, error_message, flag
from common.preprocessing import Preprocessing
from data_tools.dataset_info import records_info
from symbols import LightCNNInit, default_preprocessing, get_model
from symbols.checkpoint import checkpoint_stem, load_metadata, read_optimizer_states, save_checkpoint

from .callbacks import CallbackList, EpochLog, LogSink, MetricsCSV, ProgressBar, Speedometer
from .checks import check_records, check_same_identities, check_validators
from .config import (BASE_LR, DEFAULT_NETWORK, backbone_lr_mult, check_config, check_values, classifier_lr_mult,
                     embedding_bn,
                     freeze_epochs, parse_config, probe_epochs, step_epochs, val_targets)
from .config import base_lr as default_base_lr
from .data import (RecordBatches, SyntheticBatches, check_record_file, counted_batches, image_record_batches,
                   record_preprocessing, steps_per_epoch)
from .errors import ParameterError, TrainingDiverged
from .finetune import (TrunkSchedule, copy_backbone, network_name, pretrained_preprocessing, read_pretrained,
                       set_lr_mults)
from .heads import HEAD_PARAMS, build_head, head_params_path, network_classes, triplet_batch
from .initialization import data_dependent_init, zero_classifier
from .outputs import PrefixLock, remove_stale_temporaries
from .probe import linear_probe
from .resume import (check_network, check_optimizer, check_states, describe_changes, install_optimizer,
                     open_resume_point)
from .sampler import IdentityBatches
from .validation import BestTargetCheckpoints, BinVerification, ClassificationValidation, PairVerification

FEW_CLASSES = 1000  # below this, a margin head with the papers' s = 64 gets a note in the log
EPOCH_NUMBERING = ('epoch = epochs completed = the -NNNN suffix = what --load-epoch (load_epoch) takes; '
                   'metrics.epoch = 0-based index of the last of them, as Epoch[i] in the log '
                   "and 'epoch' in PREFIX-metrics.csv")


def train(config=None, contexts=None, log=None, callbacks=(), validators=()):
    """Train as ``train_lightcnn.py --data-train ...`` would; returns a summary dict.

    Parameters
    ----------
    config : argparse.Namespace, dict or list of str
        Options of :mod:`training.config` (dict keys use ``_`` or ``-``; missing ones take the defaults).
    contexts : list of mx.Context, optional
        Devices to split each batch over; overrides ``gpus`` (tests use several ``mx.cpu(i)``).
    log : callable, optional
        Receives each log line instead of stdout.
    callbacks : list of training.callbacks.Callback
        Run after the built-in ones (Speedometer, progress bar, epoch lines, metrics CSV).
    validators : list of callables ``(net, preprocessing, contexts) -> dict``
        Run on worker 0 after each epoch, after the built-in ones (top-1/top-5 on ``data_val``, verification
        on ``val_pairs`` and on each ``val_targets`` set: :mod:`training.validation`); their values join the
        epoch's row.

    Returns
    -------
    dict
        ``history`` (one row per epoch run), ``checkpoint`` (last stem saved), ``metrics_csv``, ``epochs``,
        ``rank``, ``num_workers``, ``samples_per_sec``, ``wall_time`` (s).

    Raises
    ------
    ParameterError
        A bad option (message names the parameter); :class:`UsageError` for unusable files, another
        training on the same ``model_prefix``, a checkpoint that cannot be written (disk full). Every input
        is checked before the first step (:mod:`training.checks`).
    TrainingDiverged
        The loss became NaN/inf; nothing is saved after that.
    """
    args = parse_config(config)
    if args.benchmark:
        check_values(args)
        return benchmark(args, contexts, log)
    check_config(args)
    validators = default_validators(args) + list(validators)
    check_validators(args, validators)
    run = setup(args, contexts, log)
    try:
        callbacks = CallbackList(default_callbacks(run) + list(callbacks))
        history, start = [], time.time()
        callbacks.on_train_begin(run)
        for epoch in range(run.begin_epoch, args.num_epochs):
            callbacks.on_epoch_begin(run, epoch)
            row = train_one_epoch(run, epoch, callbacks)
            refresh_embedding_bn(run)
            if run.rank == 0:
                row.update(validate(run, validators))
            checkpoint = save_epoch(run, epoch, row) if run.saves_after(epoch) else None
            history.append(row)
            callbacks.on_epoch_end(run, epoch, row, checkpoint)
    finally:
        run.log.close_bar()
        run.release()  # the model_prefix lock
    result = summarise(run, history, time.time() - start)
    callbacks.on_train_end(run, result)
    return result


# --- setup ------------------------------------------------------------------------------------------------

@dataclass
class TrainingRun:
    """What :func:`setup` decided, read by the loop and the callbacks (``run`` in their signatures)."""
    args: argparse.Namespace
    contexts: list
    log: LogSink
    rank: int
    num_workers: int
    num_train: int
    num_classes: int
    preprocessing: Preprocessing
    global_batch: int  # samples per update over all workers
    updates_per_epoch: int
    data: RecordBatches  # .epoch(e): the batches of 0-based epoch e
    net: gluon.HybridBlock
    head: object  # training.heads: (outputs, label) -> (losses, logits)
    trainer: gluon.Trainer
    prefix: str  # model_prefix with {rank} filled in
    saves: bool  # this worker writes checkpoints and the metrics CSV
    meta: dict  # checkpoint JSON entries fixed for the run
    begin_epoch: int = 0
    base_lr: float = BASE_LR
    last_checkpoint: str = None
    pending_broadcast: bool = False  # dist kvstore: wait for rank 0's weights before the first push
    lock: PrefixLock = None  # held from setup to the end of train() where this worker saves
    runs: list = field(default_factory=list)  # the settings of each run that led here (checkpoint JSON)
    train_scan: object = None  # data_tools.records.RecordScan of data_train

    def release(self):
        """Free the ``model_prefix`` lock (train() does, however it ends)."""
        if self.lock is not None:
            self.lock.release()

    @property
    def metrics_csv(self):
        return self.prefix + '-metrics.csv' if self.saves else None

    def saves_after(self, epoch):
        """Whether a checkpoint is written after 0-based ``epoch``: every ``save_period``, and the last."""
        done = epoch + 1
        return self.saves and (done % self.args.save_period == 0 or done == self.args.num_epochs)

    def describe(self):
        return (f'{self.args.network}: {self.num_classes} classes, {self.num_train} training images, '
                f'{self.updates_per_epoch} updates/epoch of {self.global_batch} on {len(self.contexts)} '
                f'device(s) x {self.num_workers} worker(s), input {self.preprocessing.data_shape}'
                + (f', reading part {self.rank + 1}/{self.num_workers} of the .rec' if self.num_workers > 1
                   else ''))


def setup(args, contexts=None, log=None):
    """Checked options -> a :class:`TrainingRun`: every input checked, network, head, Gluon trainer, resumed.

    Takes the ``model_prefix`` lock (:class:`training.outputs.PrefixLock`) where this worker saves; the
    caller frees it with ``run.release()``. Nothing here starts training: everything that can be checked
    before the first step is (:mod:`training.checks`).
    """
    contexts = list(contexts) if contexts else resolve_contexts(args.gpus)
    if args.batch_size < len(contexts):
        raise ParameterError(lambda n: f'{n("batch_size")} {args.batch_size} is smaller than the '
                                       f'{len(contexts)} devices')
    kvstore, rank, num_workers = create_kvstore(args)
    log = LogSink(log, prefix=f'[worker {rank}] ' if num_workers > 1 else '')
    prefix = args.model_prefix.replace('{rank}', str(rank))
    saves = rank == 0 or '{rank}' in args.model_prefix
    lock = PrefixLock(prefix) if saves else None
    try:
        return _setup(args, contexts, log, kvstore, rank, num_workers, prefix, saves, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _check_pretrained_kept(source_stem, prefix, begin_epoch, num_epochs):
    """Refuse a run whose checkpoints (``prefix-%04d`` for epochs ``begin_epoch+1 .. num_epochs``) would
    replace the ``pretrained`` checkpoint it starts from (fine-tuning ``runs/a-0002`` into ``runs/a``)."""
    for epoch in range(begin_epoch + 1, num_epochs + 1):
        stem = checkpoint_stem(prefix, epoch)
        if os.path.realpath(stem) == os.path.realpath(source_stem):
            raise ParameterError(lambda n: f'{n("model_prefix")} {prefix} would overwrite epoch {epoch}, the '
                                           f'{n("pretrained")} checkpoint {source_stem} this run starts from: '
                                           f'choose another {n("model_prefix")}')


def _resumed_source(point, pretrained, log):
    """The checkpoint JSON's ``pretrained`` entry of a resumed fine-tuning run (its defaults then apply:
    :func:`training.config.fine_tuning`), or ``None``.

    Raises
    ------
    ParameterError
        ``pretrained`` given and another checkpoint than the one the resumed run started from.
    """
    source = (point.meta.get('pretrained') if point is not None else None) or None
    if source is None:
        return None
    if pretrained is None:
        log(f'resuming a run fine-tuned from {source.get("stem")}: its fine-tuning settings apply')
    elif os.path.realpath(pretrained.stem) != os.path.realpath(str(source.get('stem'))):
        raise ParameterError(lambda n: f'{n("pretrained")} {pretrained.stem} is not the checkpoint the resumed run '
                                       f'{point.stem} started from ({source.get("stem")}): drop '
                                       f'{n("pretrained")} or give that one')
    return source


def _setup(args, contexts, log, kvstore, rank, num_workers, prefix, saves, lock):
    if lock is not None:
        removed = remove_stale_temporaries(prefix)
        if removed:
            log(f'removed {len(removed)} temporary file(s) of an interrupted run: {", ".join(removed)}')
    point = open_resume_point(prefix, args.load_epoch) if args.load_epoch else None
    scan = check_record_file(args.data_train)
    summary = records_info(args.data_train)
    num_classes = args.num_classes or summary.get('num_classes')
    if not num_classes:
        raise ParameterError(lambda n: f'{n("num_classes")} is needed: no num_classes in a PREFIX.json '
                                       f'beside {args.data_train}')
    if num_classes < 2:
        raise ParameterError(lambda n: f'{n("num_classes")} must be at least 2 (PREFIX.json of '
                                       f'{args.data_train} says {num_classes})')
    pretrained = read_pretrained(args.pretrained) if args.pretrained else None
    if pretrained and saves:
        _check_pretrained_kept(pretrained.stem, prefix, args.load_epoch or 0, args.num_epochs)
    resumed_from = _resumed_source(point, pretrained, log)
    network = args.network or (point.meta.get('network') if point is not None and not pretrained else None)
    args = argparse.Namespace(**dict(vars(args), network=network_name(network, pretrained),
                                     resumed_pretrained=resumed_from))
    if pretrained:
        preprocessing = pretrained_preprocessing(pretrained, summary.get('record') or {}, args.data_train,
                                                 args.input_size)
    else:
        preprocessing = record_preprocessing(default_preprocessing(args.network), args.data_train,
                                             args.input_size, record_side=scan.min_side)
    classes_from = '' if args.num_classes else ' (from PREFIX.json)'
    check_records(scan, num_classes, preprocessing, classes_from, log)
    if args.data_val:
        check_records(check_record_file(args.data_val), num_classes, preprocessing, classes_from)
        check_same_identities(args.data_train, args.data_val)
    num_train = scan.count
    global_batch = args.batch_size * num_workers
    updates_per_epoch = steps_per_epoch(num_train, global_batch)
    if args.loss == 'triplet':  # P x K identity-balanced batches; their count sets the updates
        data = IdentityBatches(args.data_train, preprocessing, *triplet_batch(args), seed=args.seed,
                               num_parts=num_workers, part_index=rank, threads=args.data_nthreads, scan=scan)
        updates_per_epoch = data.updates
        log(data.describe())
    elif scan.meta_records:  # header/identity records without images (insightface): read the images by key
        data = image_record_batches(scan, preprocessing, args.batch_size, seed=args.seed, num_parts=num_workers,
                                    part_index=rank, threads=args.data_nthreads)
        updates_per_epoch = data.updates
        log(data.describe())
    else:
        data = RecordBatches(args.data_train, preprocessing, args.batch_size, updates_per_epoch,
                             seed=args.seed, num_parts=num_workers, part_index=rank,
                             threads=args.data_nthreads)
    bn_from = point.meta if point is not None else (pretrained.meta if pretrained else None)
    args.embedding_bn = 'on' if embedding_bn(args, bn_from) else 'off'
    net = build_network(args, network_classes(args, num_classes), preprocessing, contexts)
    copied = copy_backbone(net, pretrained) if pretrained else None
    if args.init == 'data':
        initialise_from_data(net, scan, args, preprocessing, contexts[0], fresh=not (pretrained or point))
    head = build_head(args, num_classes, contexts)
    if getattr(head, 'margin', None) is not None and args.margin_s is None and num_classes < FEW_CLASSES:
        log(f'note: margin_s ({flag("margin_s")}) is {head.margin.s:g}, the papers\' value for thousands of '
            f'identities; with {num_classes} classes it saturates the softmax: give 16 (README: Why these '
            'defaults)')
    if point is not None:  # the probe ran before the run's first epoch: the head it fitted is loaded, its numbers kept
        probe = point.meta.get('probe')
    else:
        probe = linear_probe(net, head, scan, preprocessing, contexts, probe_epochs(args), wd=args.wd,
                             threads=args.data_nthreads, seed=args.seed, log=log) if probe_epochs(args) else None
    if args.fc2_lr_mult is None:
        saved = (point.meta.get('lr_schedule') or {}).get('fc2_lr_mult') if point is not None else None
        args.fc2_lr_mult = saved if saved is not None else classifier_lr_mult(
            args, (probe or {}).get('feature_scale') if head.uses_fc2 else None)
        set_lr_mults(net, backbone_lr_mult(args), args.fc2_lr_mult)
    trainer = make_trainer(args, net, head, kvstore, updates_per_epoch)
    identities = summary.get('identities')
    meta = dict(network=args.network, num_classes=net.num_classes, preprocessing=preprocessing,
                embedding_bn=args.embedding_bn == 'on',
                data_train=os.path.abspath(args.data_train), batch_size=args.batch_size,
                global_batch=global_batch, optimizer=args.optimizer, dropout=args.dropout, init=args.init,
                wd=args.wd, mom=args.mom, devices=len(contexts), num_workers=num_workers,
                loss=head.name, head=head.metadata(), probe=probe,
                pretrained=dict(pretrained.describe(), **copied) if pretrained else resumed_from,
                epoch_numbering=EPOCH_NUMBERING,
                identities=identities if len(identities or ()) <= 20000 else None)
    run = TrainingRun(args=args, contexts=contexts, log=log, rank=rank, num_workers=num_workers,
                      num_train=num_train, num_classes=int(num_classes), preprocessing=preprocessing,
                      global_batch=global_batch, updates_per_epoch=updates_per_epoch, data=data, net=net,
                      head=head,
                      trainer=trainer, prefix=prefix, saves=saves, meta=meta,
                      base_lr=default_base_lr(args),
                      pending_broadcast=args.kv_store.startswith('dist'), lock=lock, train_scan=scan)
    if point is not None:
        resume(run, point)
    return run


def resolve_contexts(gpus):
    """``'0,1'`` -> ``[mx.gpu(0), mx.gpu(1)]``; empty -> ``[mx.cpu()]`` (:func:`common.devices.parse_devices`)."""
    return parse_devices(gpus, 'gpus')


def create_kvstore(args):
    """``(kvstore or its name, rank, num_workers)``; dist stores need the launcher's DMLC_* variables."""
    if not args.kv_store.startswith('dist'):
        return args.kv_store, 0, 1
    kv = mx.kv.create(args.kv_store)
    return kv, kv.rank, kv.num_workers


# Xavier magnitude of LightCNNInit per network, chosen so that the logits of a 128 px input have a standard
# deviation near 0.8 at initialisation. With magnitude 3 for all, the residual nets start at 5 (29), 28 (29v2)
# and 87 (V4), and training diverged within the first epochs. What --init xavier keeps; --init data rescales
# the filters afterwards (README, Training: Network, Defaults that learn).
INIT_MAGNITUDE = {'lightcnn9': 3.0, 'lightcnn29': 2.0, 'lightcnn29v2': 1.5, 'lightcnn_v4': 1.0}


def build_network(args, num_classes, preprocessing, contexts):
    """LightCNN with fc2 (returning logits and features), initialised, lr multipliers set, hybridised.

    ``num_classes=None`` (a head replacing fc2, :func:`training.heads.network_classes`): the feature net.
    fc2 trains at ``fc2_lr_mult`` x the lr, the rest at ``backbone_lr_mult`` x (both worked out from the
    optimiser and ``pretrained`` when not given, :mod:`training.config`).
    """
    net = get_model(args.network or DEFAULT_NETWORK, num_classes=num_classes, preprocessing=preprocessing,
                    dropout=args.dropout, return_features=True,
                    embedding_bn=getattr(args, 'embedding_bn', None) in ('on', True))
    mx.random.seed(args.seed)
    net.initialize(LightCNNInit(magnitude=INIT_MAGNITUDE[args.network or DEFAULT_NETWORK]), ctx=contexts)
    set_lr_mults(net, backbone_lr_mult(args), classifier_lr_mult(args))
    net.hybridize(static_alloc=True, static_shape=True)
    return net


def initialise_from_data(net, scan, args, preprocessing, ctx, fresh, faces=32):
    """``init='data'``: a ``fresh`` network's MFM filters standardised on the first ``faces`` training faces
    (centre crops, :mod:`training.initialization`), and the classifier ``fc2`` zero, fine-tuned or not. A
    resumed run loads its weights afterwards."""
    if fresh:
        faces, _ = next(counted_batches(scan, preprocessing, faces, args.data_nthreads, limit=faces))
        data_dependent_init(net, faces.as_in_context(ctx))
    zero_classifier(net)


def make_lr_scheduler(args, updates_per_epoch, base_lr=None):
    """Step decay at ``lr_step_epochs`` after a linear ``warmup_epochs``, counted in updates.

    ``base_lr`` (default: ``lr``, else the optimiser's default) is the rate before any step. The scheduler
    is a function of the update count alone, so one built for a resumed run answers for any position.
    """
    if base_lr is None:
        base_lr = default_base_lr(args)
    warmup, steps = schedule_steps(args, updates_per_epoch)
    common = dict(base_lr=base_lr, warmup_steps=warmup, warmup_begin_lr=0.0, warmup_mode='linear')
    if steps:
        return mx.lr_scheduler.MultiFactorScheduler(step=steps, factor=args.lr_factor, **common)
    return mx.lr_scheduler.FactorScheduler(step=2 ** 31 - 1, factor=1.0, **common)


def schedule_steps(args, updates_per_epoch):
    """``(warmup_steps, steps)``: the warm-up and the LR steps after it, in updates of ``updates_per_epoch``."""
    warmup = int(round(args.warmup_epochs * updates_per_epoch))
    steps = [int(round(e * updates_per_epoch)) for e in step_epochs(args.lr_step_epochs)]
    return warmup, [s for s in steps if s >= 1]  # a step inside the warm-up applies when the warm-up ends


def make_trainer(args, net, head, kvstore, updates_per_epoch):
    """Gluon trainer of the network's and the head's parameters (the kvstore reduces, the trainer updates)."""
    params = net.collect_params()
    params.update(head.collect_params())
    return gluon.Trainer(params, make_optimizer(args, updates_per_epoch), kvstore=kvstore,
                         update_on_kvstore=False)


def make_optimizer(args, updates_per_epoch, base_lr=None, begin_num_update=0):
    """The optimiser of ``args`` with its LR schedule; ``begin_num_update`` is its position (resuming)."""
    if base_lr is None:
        base_lr = default_base_lr(args)
    params = dict(learning_rate=base_lr, wd=args.wd, begin_num_update=begin_num_update,
                  lr_scheduler=make_lr_scheduler(args, updates_per_epoch, base_lr))
    if args.clip_gradient:
        params['clip_gradient'] = args.clip_gradient
    if args.optimizer in ('sgd', 'nag'):
        params['momentum'] = args.mom
    return mx.optimizer.create(args.optimizer, **params)


def resume(run, point):
    """Continue from ``point`` (:func:`training.resume.open_resume_point`) after ``point.done`` epochs.

    Weights and per-parameter optimiser state are loaded; the optimiser and its LR schedule are rebuilt
    from this run's settings at position ``done x updates_per_epoch`` (:mod:`training.resume`). Without
    ``lr`` the checkpoint's base LR continues; an explicit ``lr`` becomes the base of the schedule (steps
    already passed still apply). The run then continues with ``Epoch[done]``.
    """
    args, done = run.args, point.done
    check_network(point, args, run.num_classes, run.preprocessing, run.head)
    changes = check_optimizer(point, args)
    fresh = args.reset_optimizer or point.optimizer_name != args.optimizer
    if not fresh:
        check_states(point, run.trainer, run.net)
    try:
        run.net.load_parameters(point.stem + '.params', ctx=run.contexts)
    except (AssertionError, mx.MXNetError) as err:
        raise UsageError(f'{point.stem}.params does not fit {args.network}: {error_message(err)}') from None
    if run.head.has_parameters:
        run.head.load_parameters(head_params_path(point.stem), ctx=run.contexts)
    saved = point.meta.get('lr_schedule') or {}
    run.base_lr = args.lr if args.lr is not None else saved.get('base_lr', default_base_lr(args))
    optimizer = make_optimizer(args, run.updates_per_epoch, run.base_lr,
                               begin_num_update=done * run.updates_per_epoch)
    install_optimizer(run.trainer, optimizer, None if fresh else point.states, None if fresh else point.optimizer)
    run.begin_epoch, run.last_checkpoint = done, point.stem
    run.runs = list(point.meta.get('runs') or [])
    for line in describe_changes(point.meta, run):
        run.log(line)
    if args.reset_optimizer and not changes:
        changes.append('optimiser state reset')
    if changes:
        run.log(f'resume: {", ".join(changes)}, from Epoch[{done}] on')
    run.log(f'resumed from {point.stem} after {done} completed epoch(s), continuing with Epoch[{done}] '
            f'(lr {run.trainer.learning_rate:.3g}, schedule at update {run.trainer.optimizer.num_update} '
            f'= {done} x {run.updates_per_epoch} updates/epoch)')


def default_callbacks(run):
    """Speedometer lines, progress bar, epoch lines and summary, and (where this worker saves) the CSV."""
    callbacks = [Speedometer(run.num_workers), ProgressBar(), EpochLog(),
                 TrunkSchedule(freeze_epochs(run.args), backbone_lr_mult(run.args))]
    if run.saves:
        callbacks.append(MetricsCSV(run.metrics_csv))
        if val_targets(run.args.val_targets):  # worker 0 validates; a {rank} prefix keeps per-worker files
            callbacks.append(BestTargetCheckpoints(val_targets(run.args.val_targets)))
    return callbacks


def default_validators(args):
    """Top-1/top-5 on ``data_val``, verification on ``val_pairs`` and on each ``val_targets`` set, as the
    options ask."""
    validators = []
    if args.data_val:
        validators.append(ClassificationValidation(args.data_val, args.batch_size, args.data_nthreads))
    if args.val_pairs:
        validators.append(PairVerification(args.val_pairs, args.val_images))
    validators += [BinVerification(path, name) for name, path in val_targets(args.val_targets)]
    return validators


# --- one epoch --------------------------------------------------------------------------------------------

def train_one_epoch(run, epoch, callbacks):
    """``updates_per_epoch`` updates of 0-based ``epoch``; returns its row of the metrics.

    Returns
    -------
    dict
        ``epoch``, ``lr`` (at the end), ``train_loss`` (mean cross-entropy), ``train_accuracy`` (fraction),
        ``time`` (s), ``samples_per_sec`` (over all workers).
    """
    mx.random.seed(run.args.seed * 1000 + epoch, ctx='all')  # dropout masks: the same after a resume
    interval, total = _Meters(run.contexts), _Meters(run.contexts)
    tic = time.time()
    for nbatch, batch in enumerate(run.data.epoch(epoch)):
        losses, logits, labels = train_step(run, batch)
        interval.update(losses, logits, labels)
        callbacks.on_batch_end(run, epoch, nbatch)
        if (nbatch + 1) % run.args.disp_batches == 0:
            values = interval.read()  # the one device sync between log lines
            check_finite(run, values, epoch, nbatch)
            callbacks.on_interval_end(run, epoch, nbatch, interval.samples, values)
            total.absorb(interval)
            interval.reset()
    total.absorb(interval)
    values = total.read()
    check_finite(run, values, epoch, run.updates_per_epoch - 1)
    elapsed = time.time() - tic
    samples = run.updates_per_epoch * run.global_batch
    return dict(epoch=epoch, lr=run.trainer.learning_rate, train_loss=values['cross_entropy'],
                train_accuracy=values['accuracy'], time=round(elapsed, 3),
                samples_per_sec=samples / max(elapsed, 1e-9))


def forward_backward(net, head, data, label):
    """Loss and gradients of one batch already split over the devices; returns ``(losses, logits)``.

    The head sees the outputs of all devices at once (the triplet loss mines the whole batch).
    """
    with autograd.record():
        losses, logits = head([net(x) for x in data], label)
    autograd.backward(losses)
    return losses, logits


def train_step(run, batch):
    """One update on one batch of the record iterator; returns ``(losses, logits, labels)`` per device."""
    data = gluon.utils.split_and_load(batch.data[0], run.contexts, even_split=False)
    label = gluon.utils.split_and_load(batch.label[0], run.contexts, even_split=False)
    losses, logits = forward_backward(run.net, run.head, data, label)
    if run.pending_broadcast:
        broadcast_before_first_push(run.trainer)
        run.pending_broadcast = False
    if run.args.clip_norm:
        clipped_step(run.trainer, run.global_batch, run.args.clip_norm)
    else:
        run.trainer.step(run.global_batch)
    run.head.after_update()
    return losses, logits, label


def clipped_step(trainer, batch_size, max_norm):
    """``trainer.step(batch_size)`` with the gradient rescaled to an L2 norm of at most ``max_norm``.

    The norm is that of the batch-mean gradient over all trained parameters (all workers' and devices'
    samples, after the reduction), as ``torch.nn.utils.clip_grad_norm_`` (Pascanu et al., "On the
    difficulty of training recurrent neural networks", ICML 2013). Computed on the device without a host
    sync; a NaN gradient stays NaN, and the loss check reports it.
    """
    trainer.allreduce_grads()
    params = [p for p in trainer._params if p.grad_req != 'null' and p.lr_mult != 0]  # not center.stats
    if params:
        first = [p.list_grad()[0] for p in params]
        ctx = first[0].context
        total = mx.nd.add_n(*[(g.as_in_context(ctx) ** 2).sum() for g in first])
        norm = mx.nd.sqrt(total) / batch_size
        scale = mx.nd.minimum(max_norm / (norm + 1e-12), mx.nd.ones_like(norm))
        per_ctx = {}
        for param in params:
            for grad in param.list_grad():
                factor = per_ctx.setdefault(grad.context, scale.as_in_context(grad.context))
                mx.nd.broadcast_mul(grad, factor.reshape((1,) * grad.ndim), out=grad)
    trainer.update(batch_size)


def broadcast_before_first_push(trainer):
    """Give every worker rank 0's weights through the kvstore, and wait, before any gradient is pushed.

    Gluon's Trainer broadcasts lazily inside the first ``step()``, and in MXNet 1.9.1 nothing orders those
    pulls before the same step's gradient pushes (the engine ops share no variable). On a loaded machine a
    worker's pull could reach the server after both workers' gradients for that key were summed, and the
    sum came back as that layer's *weights* (fc1 of LightCNN-9 in ~1 of 5 two-worker runs; a single worker
    is exposed too: its own push can overtake its pull). The private ``_init_kvstore``/``_init_params`` are
    what ``step()`` calls; 1.9.1 is MXNet's last release.
    """
    if not trainer._kv_initialized:
        trainer._init_kvstore()
    if trainer._params_to_init:
        trainer._init_params()
    mx.nd.waitall()  # also after a resume, whose load_states() already issued the broadcast


class _Meters:
    """Loss / correct / sample counts kept as device arrays; read (one sync) only when logging."""

    def __init__(self, contexts):
        self.contexts = contexts
        self.reset()

    def reset(self):
        self.loss = [mx.nd.zeros((1,), ctx=c) for c in self.contexts]
        self.correct = [mx.nd.zeros((1,), ctx=c) for c in self.contexts]
        self.samples = 0

    def update(self, losses, logits, labels):
        for i, (loss, out, label) in enumerate(zip(losses, logits, labels)):
            self.loss[i] += loss.sum()
            self.correct[i] += (out.argmax(axis=1) == label).sum()
            self.samples += label.shape[0]

    def absorb(self, other):
        """Add ``other``'s counts (still on the devices) to these."""
        self.loss = [a + b for a, b in zip(self.loss, other.loss)]
        self.correct = [a + b for a, b in zip(self.correct, other.correct)]
        self.samples += other.samples

    def read(self):
        loss = sum(float(x.asscalar()) for x in self.loss)
        correct = sum(float(x.asscalar()) for x in self.correct)
        n = max(self.samples, 1)
        return dict(accuracy=correct / n, cross_entropy=loss / n)


def check_finite(run, values, epoch, nbatch):
    """Raise :class:`TrainingDiverged` (naming the last good checkpoint) if the mean loss is NaN/inf."""
    if not math.isfinite(values['cross_entropy']):
        where = (f'last good checkpoint: {run.last_checkpoint}' if run.last_checkpoint
                 else 'no checkpoint saved yet')
        loss = values['cross_entropy']
        raise TrainingDiverged(lambda n: f'loss is {loss} at Epoch[{epoch}] batch {nbatch + 1}; stopped '
                                         f'({where}); lower {n("lr")} or add {n("warmup_epochs")}')


# --- validation and checkpoint ----------------------------------------------------------------------------

PRECISE_BN_IMAGES = 1024  # training images whose embeddings set the embedding BN's statistics each epoch


def refresh_embedding_bn(run, images=PRECISE_BN_IMAGES):
    """Set the embedding BatchNorm's running mean/variance to the exact statistics of the current weights.

    "Precise BN" (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021, Sec. 3): training normalises with
    batch statistics, extraction and validation with the running ones, and an exponential average lags
    weights that move fast. LightCNN's 256-d feature before the BN has a large common component (mean ~100,
    per-unit std ~4) that Adam moves freely (the BN makes the loss blind to it): on ORL after 4 epochs the
    running mean lagged the true one by ~7 std and ArcFace's validation top-1 read 5 % instead of 75 %.
    The statistics are taken over the first ``images`` images of ``data_train`` in file order, centre crops
    (the same images on every worker, so ``dist_sync`` workers keep identical copies), on the first device,
    then copied to every device. Nothing happens without an embedding BN.
    """
    bn = getattr(run.net, 'embedding_bn', None)
    if bn is None:
        return
    args, ctx = run.args, run.contexts[0]
    features = [run.net.embed(x.as_in_context(ctx)) for x, _ in counted_batches(
        run.train_scan, run.preprocessing, min(args.batch_size, images), args.data_nthreads, limit=images)]
    if not features:
        return
    f = mx.nd.concat(*features, dim=0)
    mean = f.mean(axis=0)
    bn.running_mean.set_data(mean)
    bn.running_var.set_data(mx.nd.mean(mx.nd.square(f - mean), axis=0))


def validate(run, validators):
    """The metrics of every validator for the current weights, merged into one dict.

    Validators get the network followed by the head's classifier where the head replaced fc2.
    """
    values = {}
    net = run.head.evaluation_net(run.net)
    for validator in validators:
        values.update(validator(net, run.preprocessing, run.contexts))
    return values


def save_epoch(run, epoch, row):
    """Checkpoint after 0-based ``epoch``: ``PREFIX-%04d`` of ``epoch + 1`` (epochs completed); its stem.

    The JSON records the schedule that ran (``lr_schedule``: steps and warm-up in this run's updates, the
    position ``num_update``) and ``runs``: the settings of every run that led to it, one entry per resume.
    """
    args = run.args
    warmup, steps = schedule_steps(args, run.updates_per_epoch)
    schedule = dict(lr=run.trainer.learning_rate, num_update=run.trainer.optimizer.num_update,
                    base_lr=run.base_lr, lr_step_epochs=step_epochs(args.lr_step_epochs),
                    lr_factor=args.lr_factor, warmup_epochs=args.warmup_epochs,
                    updates_per_epoch=run.updates_per_epoch, fc2_lr_mult=args.fc2_lr_mult,
                    steps=steps, warmup_steps=warmup,
                    backbone_lr_mult=backbone_lr_mult(args), freeze_epochs=freeze_epochs(args),
                    clip_norm=args.clip_norm, clip_gradient=args.clip_gradient)
    this_run = dict(epochs=[run.begin_epoch, epoch + 1], batch_size=args.batch_size,
                    global_batch=run.global_batch, devices=len(run.contexts), num_workers=run.num_workers,
                    updates_per_epoch=run.updates_per_epoch, optimizer=args.optimizer, base_lr=run.base_lr,
                    wd=args.wd, mom=args.mom, reset_optimizer=bool(args.reset_optimizer))
    meta = dict(run.meta, metrics=row, lr_schedule=schedule, runs=run.runs + [this_run])
    extra = {}
    if run.head.has_parameters:  # STEM.head.params, committed with the other files of the checkpoint
        meta['head'] = dict(meta['head'], params=os.path.basename(head_params_path(
            checkpoint_stem(run.prefix, epoch + 1))))
        extra[HEAD_PARAMS] = run.head.save_parameters
    run.last_checkpoint = save_checkpoint(run.net, run.prefix, meta, epoch=epoch + 1, trainer=run.trainer,
                                          extra=extra)
    return run.last_checkpoint


def summarise(run, history, wall_time):
    samples = len(history) * run.updates_per_epoch * run.global_batch
    seconds = sum(row['time'] for row in history)
    return dict(history=history, checkpoint=run.last_checkpoint, metrics_csv=run.metrics_csv,
                epochs=run.args.num_epochs, rank=run.rank, num_workers=run.num_workers,
                samples_per_sec=samples / max(seconds, 1e-9), wall_time=wall_time)


# --- benchmark --------------------------------------------------------------------------------------------

def benchmark(args, contexts=None, log=None):
    """Forward+backward+update speed on synthetic batches; returns samples/sec."""
    log = LogSink(log)
    contexts = list(contexts) if contexts else resolve_contexts(args.gpus)
    args = argparse.Namespace(**dict(vars(args), network=network_name(args.network)))
    pre = default_preprocessing(args.network)
    if args.input_size:
        pre = type(pre)(channels=pre.channels, input_size=args.input_size)
    num_classes = args.num_classes or 1000
    net = build_network(args, network_classes(args, num_classes), pre, contexts)
    head = build_head(args, num_classes, contexts)
    trainer = make_trainer(args, net, head, args.kv_store, 1000)
    batches = SyntheticBatches(args.batch_size, pre.data_shape, num_classes, contexts, args.seed)

    def step():
        forward_backward(net, head, batches.data, batches.label)
        trainer.step(args.batch_size)
        head.after_update()

    for _ in range(2):  # warm-up: graph building and memory planning
        step()
    mx.nd.waitall()
    tic = time.time()
    for _ in range(args.benchmark_batches):
        step()
    mx.nd.waitall()
    speed = args.benchmark_batches * args.batch_size / (time.time() - tic)
    log(f'benchmark {args.network} batch {args.batch_size} input {pre.data_shape} on '
        f'{",".join(str(c) for c in contexts)}: {speed:.2f} samples/sec (forward+backward+update)')
    return dict(samples_per_sec=speed, network=args.network, batch_size=args.batch_size)
