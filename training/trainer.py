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
from dataclasses import dataclass

import mxnet as mx
from mxnet import autograd, gluon

from common.errors import UsageError
from common.preprocessing import Preprocessing
from models.checkpoint import checkpoint_stem, load_metadata, read_optimizer_states, save_checkpoint
from symbols import LightCNNInit, default_preprocessing, get_model

from .callbacks import CallbackList, EpochLog, LogSink, MetricsCSV, ProgressBar, Speedometer
from .config import (BASE_LR, DEFAULT_NETWORK, backbone_lr_mult, base_lr, check_config, classifier_lr_mult,
                     freeze_epochs, parse_config, step_epochs)
from .data import (RecordBatches, SyntheticBatches, check_record_file, packing_summary,
                   record_iter, record_preprocessing, steps_per_epoch)
from .errors import ParameterError, TrainingDiverged
from .finetune import (TrunkSchedule, copy_backbone, network_name, pretrained_preprocessing, read_pretrained,
                       set_lr_mults)
from .heads import build_head
from .initialization import data_dependent_init, zero_classifier
from .validation import ClassificationValidation

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
        Run on worker 0 after each epoch, after top-1/top-5 on ``data_val``; their values join the epoch's
        row. ``val_pairs`` needs one that fills ``val_verification``
        (``lfw_verification.epoch_validation.PairVerification``).

    Returns
    -------
    dict
        ``history`` (one row per epoch run), ``checkpoint`` (last stem saved), ``metrics_csv``, ``epochs``,
        ``rank``, ``num_workers``, ``samples_per_sec``, ``wall_time`` (s).

    Raises
    ------
    ParameterError
        A bad option (message names the parameter); :class:`UsageError` for unusable files.
    TrainingDiverged
        The loss became NaN/inf; nothing is saved after that.
    """
    args = parse_config(config)
    if args.benchmark:
        return benchmark(args, contexts, log)
    check_config(args)
    _check_validators(args, validators)
    run = setup(args, contexts, log)
    callbacks = CallbackList(default_callbacks(run) + list(callbacks))
    validators = default_validators(args) + list(validators)
    history, start = [], time.time()
    callbacks.on_train_begin(run)
    try:
        for epoch in range(run.begin_epoch, args.num_epochs):
            callbacks.on_epoch_begin(run, epoch)
            row = train_one_epoch(run, epoch, callbacks)
            if run.rank == 0:
                row.update(validate(run, validators))
            checkpoint = save_epoch(run, epoch, row) if run.saves_after(epoch) else None
            history.append(row)
            callbacks.on_epoch_end(run, epoch, row, checkpoint)
    finally:
        run.log.close_bar()
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
    """Checked options -> a :class:`TrainingRun`: data checked, network, head, Gluon trainer, resumed."""
    contexts = list(contexts) if contexts else resolve_contexts(args.gpus)
    if args.batch_size < len(contexts):
        raise ParameterError(lambda n: f'{n("batch_size")} {args.batch_size} is smaller than the '
                                       f'{len(contexts)} devices')
    num_train = check_record_file(args.data_train)
    if args.data_val:
        check_record_file(args.data_val)
    summary = packing_summary(args.data_train)
    num_classes = args.num_classes or summary.get('num_classes')
    if not num_classes:
        raise ParameterError(lambda n: f'{n("num_classes")} is needed: no num_classes in a PREFIX.json '
                                       f'beside {args.data_train}')
    pretrained = read_pretrained(args.pretrained) if args.pretrained else None
    args = argparse.Namespace(**dict(vars(args), network=network_name(args.network, pretrained)))
    if pretrained:
        preprocessing = pretrained_preprocessing(pretrained, summary.get('record') or {}, args.data_train,
                                                 args.input_size)
    else:
        preprocessing = record_preprocessing(default_preprocessing(args.network), args.data_train,
                                             args.input_size)
    kvstore, rank, num_workers = create_kvstore(args)
    global_batch = args.batch_size * num_workers
    updates_per_epoch = steps_per_epoch(num_train, global_batch)
    data = RecordBatches(args.data_train, preprocessing, args.batch_size, updates_per_epoch, seed=args.seed,
                         num_parts=num_workers, part_index=rank, threads=args.data_nthreads)
    net = build_network(args, num_classes, preprocessing, contexts)
    copied = copy_backbone(net, pretrained) if pretrained else None
    if args.init == 'data':
        initialise_from_data(net, pretrained, args, preprocessing, contexts[0])
    head = build_head(args, num_classes)
    trainer = make_trainer(args, net, head, kvstore, updates_per_epoch)
    identities = summary.get('identities')
    meta = dict(network=args.network, num_classes=int(num_classes), preprocessing=preprocessing,
                data_train=os.path.abspath(args.data_train), batch_size=args.batch_size,
                global_batch=global_batch, optimizer=args.optimizer, dropout=args.dropout, init=args.init,
                loss=head.metadata().get('loss'), head=head.metadata(),
                pretrained=dict(pretrained.describe(), **copied) if pretrained else None,
                epoch_numbering=EPOCH_NUMBERING,
                identities=identities if len(identities or ()) <= 20000 else None)
    log = LogSink(log, prefix=f'[worker {rank}] ' if num_workers > 1 else '')
    run = TrainingRun(args=args, contexts=contexts, log=log, rank=rank, num_workers=num_workers,
                      num_train=num_train, num_classes=int(num_classes), preprocessing=preprocessing,
                      global_batch=global_batch, updates_per_epoch=updates_per_epoch, data=data, net=net,
                      head=head,
                      trainer=trainer, prefix=args.model_prefix.replace('{rank}', str(rank)),
                      saves=rank == 0 or '{rank}' in args.model_prefix, meta=meta,
                      base_lr=base_lr(args),
                      pending_broadcast=args.kv_store.startswith('dist'))
    if args.load_epoch:
        resume(run)
    return run


def resolve_contexts(gpus):
    """``'0,1'`` -> ``[mx.gpu(0), mx.gpu(1)]``; empty -> ``[mx.cpu()]``."""
    if not gpus:
        return [mx.cpu()]
    try:
        ids = [int(g) for g in str(gpus).split(',') if g.strip()]
    except ValueError:
        raise ParameterError(lambda n: f'{n("gpus")} takes device numbers like 0,1, not {gpus!r}') from None
    if ids and mx.context.num_gpus() < max(ids) + 1:
        found = mx.context.num_gpus()
        raise ParameterError(lambda n: f'{n("gpus")} {gpus}: this machine has {found} GPU(s) (the CPU build '
                                       f'of MXNet sees none); drop {n("gpus")} to train on the CPU')
    return [mx.gpu(i) for i in ids]


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

    fc2 trains at ``fc2_lr_mult`` x the lr, the rest at ``backbone_lr_mult`` x (both worked out from the
    optimiser and ``pretrained`` when not given, :mod:`training.config`).
    """
    net = get_model(args.network or DEFAULT_NETWORK, num_classes=num_classes, preprocessing=preprocessing,
                    dropout=args.dropout, return_features=True)
    mx.random.seed(args.seed)
    net.initialize(LightCNNInit(magnitude=INIT_MAGNITUDE[args.network or DEFAULT_NETWORK]), ctx=contexts)
    set_lr_mults(net, backbone_lr_mult(args), classifier_lr_mult(args))
    net.hybridize(static_alloc=True, static_shape=True)
    return net


def initialise_from_data(net, pretrained, args, preprocessing, ctx, faces=32):
    """``init='data'``: a new network's MFM filters standardised on ``faces`` training faces (centre crops,
    :mod:`training.initialization`), and the classifier zero, fine-tuned or not. A resumed run loads its
    weights afterwards, so the filters are left as they are then."""
    if not pretrained and not args.load_epoch:
        it = record_iter(args.data_train, preprocessing, faces, train=False, seed=args.seed,
                         threads=args.data_nthreads)
        data_dependent_init(net, next(iter(it)).data[0].as_in_context(ctx))
    zero_classifier(net)


def make_lr_scheduler(args, updates_per_epoch):
    """Step decay at ``lr_step_epochs`` after a linear ``warmup_epochs``, counted in updates."""
    warmup = int(round(args.warmup_epochs * updates_per_epoch))
    steps = [int(round(e * updates_per_epoch)) for e in step_epochs(args.lr_step_epochs)]
    steps = [s for s in steps if s >= 1]  # a step inside the warm-up applies when the warm-up ends
    common = dict(base_lr=base_lr(args), warmup_steps=warmup, warmup_begin_lr=0.0, warmup_mode='linear')
    if steps:
        return mx.lr_scheduler.MultiFactorScheduler(step=steps, factor=args.lr_factor, **common)
    return mx.lr_scheduler.FactorScheduler(step=2 ** 31 - 1, factor=1.0, **common)


def make_trainer(args, net, head, kvstore, updates_per_epoch):
    """Gluon trainer of the network's and the head's parameters (the kvstore reduces, the trainer updates)."""
    params = net.collect_params()
    params.update(head.collect_params())
    return gluon.Trainer(params, make_optimizer(args, updates_per_epoch), kvstore=kvstore,
                         update_on_kvstore=False)


def make_optimizer(args, updates_per_epoch):
    params = dict(learning_rate=base_lr(args), wd=args.wd,
                  lr_scheduler=make_lr_scheduler(args, updates_per_epoch))
    if args.clip_gradient:
        params['clip_gradient'] = args.clip_gradient
    if args.optimizer in ('sgd', 'nag'):
        params['momentum'] = args.mom
    return mx.optimizer.create(args.optimizer, **params)


def resume(run):
    """Load the weights, optimiser state and LR schedule saved after ``load_epoch`` completed epochs.

    The run then continues with ``Epoch[load_epoch]``. An explicit ``lr`` different from the checkpoint's
    base restarts the schedule from that base at the current update (e.g. to fine-tune).
    """
    args = run.args
    done = int(args.load_epoch)
    stem = checkpoint_stem(run.prefix, done)
    for ext in ('.params', '.json', '.states'):
        if not os.path.exists(stem + ext):
            raise UsageError(f'cannot resume: {stem}{ext} is missing')
    meta = load_metadata(stem)
    if meta['network'] != args.network or int(meta['num_classes']) != run.num_classes:
        raise UsageError(f'{stem} is a {meta["network"]} with {meta["num_classes"]} classes, '
                         f'not {args.network} with {run.num_classes}')
    run.net.load_parameters(stem + '.params', ctx=run.contexts)
    read_optimizer_states(stem + '.states')  # refuses a crafted pickle before MXNet unpickles it
    run.trainer.load_states(stem + '.states')
    run.base_lr = meta.get('lr_schedule', {}).get('base_lr', BASE_LR)
    if args.lr is not None and args.lr != run.base_lr:
        run.trainer.optimizer.lr_scheduler = make_lr_scheduler(args, run.updates_per_epoch)
        run.base_lr = args.lr
    run.begin_epoch, run.last_checkpoint = done, stem
    run.log(f'resumed from {stem} after {done} completed epoch(s), continuing with Epoch[{done}] '
            f'(lr {run.trainer.learning_rate:.3g}, {run.trainer.optimizer.num_update} updates done)')


def default_callbacks(run):
    """Speedometer lines, progress bar, epoch lines and summary, and (where this worker saves) the CSV."""
    callbacks = [Speedometer(run.num_workers), ProgressBar(), EpochLog(),
                 TrunkSchedule(freeze_epochs(run.args), backbone_lr_mult(run.args))]
    if run.saves:
        callbacks.append(MetricsCSV(run.metrics_csv))
    return callbacks


def default_validators(args):
    if not args.data_val:
        return []
    return [ClassificationValidation(args.data_val, args.batch_size, args.data_nthreads)]


def _check_validators(args, validators):
    if args.val_pairs and not any('val_verification' in getattr(v, 'metrics', ()) for v in validators):
        raise ParameterError(lambda n: f'{n("val_pairs")} needs a validator that fills val_verification: '
                                       'validators=[lfw_verification.epoch_validation.PairVerification('
                                       'val_pairs, val_images)] (train_lightcnn.py passes it)')


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
    """Loss and gradients of one batch already split over the devices; returns ``(losses, logits)``."""
    with autograd.record():
        outputs = [head(net(x), y) for x, y in zip(data, label)]
    losses = [loss for loss, _ in outputs]
    autograd.backward(losses)
    return losses, [logits for _, logits in outputs]


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
    return losses, logits, label


def clipped_step(trainer, batch_size, max_norm):
    """``trainer.step(batch_size)`` with the gradient rescaled to an L2 norm of at most ``max_norm``.

    The norm is that of the batch-mean gradient over all trained parameters (all workers' and devices'
    samples, after the reduction), as ``torch.nn.utils.clip_grad_norm_`` (Pascanu et al., "On the
    difficulty of training recurrent neural networks", ICML 2013). Computed on the device without a host
    sync; a NaN gradient stays NaN, and the loss check reports it.
    """
    trainer.allreduce_grads()
    params = [p for p in trainer._params if p.grad_req != 'null']
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

def validate(run, validators):
    """The metrics of every validator for the current weights, merged into one dict."""
    values = {}
    for validator in validators:
        values.update(validator(run.net, run.preprocessing, run.contexts))
    return values


def save_epoch(run, epoch, row):
    """Checkpoint after 0-based ``epoch``: ``PREFIX-%04d`` of ``epoch + 1`` (epochs completed); its stem."""
    args = run.args
    schedule = dict(lr=run.trainer.learning_rate, num_update=run.trainer.optimizer.num_update,
                    base_lr=run.base_lr, lr_step_epochs=step_epochs(args.lr_step_epochs),
                    lr_factor=args.lr_factor, warmup_epochs=args.warmup_epochs,
                    updates_per_epoch=run.updates_per_epoch, fc2_lr_mult=classifier_lr_mult(args),
                    backbone_lr_mult=backbone_lr_mult(args), freeze_epochs=freeze_epochs(args),
                    clip_norm=args.clip_norm, clip_gradient=args.clip_gradient)
    meta = dict(run.meta, metrics=row, lr_schedule=schedule)
    run.last_checkpoint = save_checkpoint(run.net, run.prefix, meta, epoch=epoch + 1, trainer=run.trainer)
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
    net = build_network(args, num_classes, pre, contexts)
    head = build_head(args, num_classes)
    trainer = make_trainer(args, net, head, args.kv_store, 1000)
    batches = SyntheticBatches(args.batch_size, pre.data_shape, num_classes, contexts, args.seed)

    def step():
        forward_backward(net, head, batches.data, batches.label)
        trainer.step(args.batch_size)

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
