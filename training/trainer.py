"""LightCNN training: data-parallel devices, step LR with warm-up, exact resume, validation, ps-lite.

:func:`train` takes the options of ``train_lightcnn.py`` (an argparse namespace, a dict or an argv
list) and runs the whole job; tests call it directly, with the device list injected.
"""
import argparse
import csv
import math
import os
import sys
import time

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from common.cli import ArgumentParser
from common.devices import parse_devices
from common.errors import UsageError
from common.fileio import atomic_write
from common.verification import pair_rows, pair_scores, verification_metrics
from data_tools.dataset_info import records_info
from data_tools.pairs import read_pairs
from symbols import LightCNNInit, default_preprocessing, get_model, get_model_list
from symbols.checkpoint import checkpoint_stem, load_metadata, read_optimizer_states, save_checkpoint
from symbols.inference import Embedder, embed_images, items_from_pairs

from .data import (SyntheticBatches, check_record_file, record_iter, record_preprocessing,
                   steps_per_epoch, take_batches)

NETWORKS = [n for n in get_model_list() if n != 'lightcnn_v4']  # V4 is BGR: no record training


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the message names the last good checkpoint."""


def build_parser(prog='train_lightcnn.py'):
    """Options of ``train_lightcnn.py``; :func:`train` accepts the same names as a dict."""
    p = ArgumentParser(prog=prog, description='Train LightCNN on RecordIO face data (MXNet Gluon). '
                       'Without --data-train: run the built-in synthetic demo.')
    d = p.add_argument_group('data')
    d.add_argument('--data-train', help='training PREFIX.rec (with PREFIX.idx; PREFIX.json from '
                   'data_tools/pack_rec.py gives the class count)')
    d.add_argument('--data-val', help='validation .rec: top-1/top-5 every epoch')
    d.add_argument('--val-pairs', help='LFW-format pairs.txt: verification accuracy every epoch')
    d.add_argument('--val-images', help='image root the --val-pairs paths are relative to')
    d.add_argument('--num-classes', type=int, help='classes of fc2 (default: from PREFIX.json)')
    d.add_argument('--data-nthreads', type=int, default=4, help='decoding threads (default 4)')
    d.add_argument('--input-size', type=int, help='crop side (default 128, or the record side)')
    n = p.add_argument_group('network')
    n.add_argument('--network', default='lightcnn9', choices=NETWORKS)
    n.add_argument('--dropout', type=float, default=0.5, help='dropout before fc2 (default 0.5)')
    o = p.add_argument_group('optimisation')
    o.add_argument('--optimizer', choices=['sgd', 'nag', 'adam'], help='default sgd (the demo: adam)')
    o.add_argument('--lr', type=float, help='base learning rate (default 0.01, demo 1e-3; resuming: the '
                   "checkpoint's schedule, or this base lr from the resumed update on)")
    o.add_argument('--mom', type=float, default=0.9, help='momentum (sgd, nag)')
    o.add_argument('--wd', type=float, default=1e-4)
    o.add_argument('--batch-size', type=int, default=64, help='per machine, split over its devices')
    o.add_argument('--num-epochs', type=int, help='default 30 (the demo: 15)')
    o.add_argument('--lr-step-epochs', default='', help='e.g. 10,20: multiply the lr by --lr-factor there')
    o.add_argument('--lr-factor', type=float, default=0.1)
    o.add_argument('--warmup-epochs', type=float, default=0.0, help='linear warm-up from 0')
    o.add_argument('--fc2-lr-mult', type=float, default=10.0,
                   help='lr multiplier of the classifier (official recipe: 10)')
    o.add_argument('--seed', type=int, default=0, help='initialisation, data order, augmentation')
    r = p.add_argument_group('devices')
    r.add_argument('--gpus', help='e.g. 0,1 (data parallel); default: CPU')
    r.add_argument('--kv-store', default='device',
                   choices=['device', 'local', 'dist_sync', 'dist_device_sync'])
    c = p.add_argument_group('checkpoints and logging')
    c.add_argument('--model-prefix', default='models/lightcnn',
                   help='checkpoints PREFIX-NNNN.params/.json/.states and PREFIX-metrics.csv')
    c.add_argument('--save-period', type=int, default=1, help='save every N epochs (and the last)')
    c.add_argument('--load-epoch', type=int, help='resume from PREFIX-NNNN: weights, optimiser, LR')
    c.add_argument('--disp-batches', type=int, default=20, help='Speedometer line every N batches')
    c.add_argument('--benchmark', action='store_true', help='synthetic batches, prints samples/sec')
    c.add_argument('--benchmark-batches', type=int, default=10)
    e = p.add_argument_group('demo (no --data-train)')
    e.add_argument('--work-dir', default='models/demo', help='demo data, checkpoints and results')
    e.add_argument('--demo-identities', type=int, default=70, help='synthetic identities in all')
    e.add_argument('--demo-heldout', type=int, default=30, help='of them held out for verification')
    e.add_argument('--demo-images', type=int, default=16, help='images per identity')
    e.add_argument('--demo-size', type=int, default=72,
                   help='side of the rendered images (default 72, cropped to 64)')
    return p


def parse_config(config):
    """Namespace from a namespace, a dict of option names (``lr`` or ``lr-step-epochs``) or an argv list."""
    parser = build_parser()
    if isinstance(config, argparse.Namespace):
        return config
    if config is None or isinstance(config, (list, tuple)):
        return parser.parse_args(config)
    args = parser.parse_args([])
    for key, value in dict(config).items():
        name = key.replace('-', '_')
        if not hasattr(args, name):
            raise UsageError(f'unknown training option {key!r}')
        setattr(args, name, value)
    return args


def resolve_contexts(gpus):
    """``'0,1'`` -> ``[mx.gpu(0), mx.gpu(1)]``; empty -> ``[mx.cpu()]`` (:func:`common.devices.parse_devices`)."""
    return parse_devices(gpus, '--gpus')


def _step_epochs(text):
    try:
        steps = sorted({float(s) for s in str(text).split(',') if s.strip()})
    except ValueError:
        raise UsageError(f'--lr-step-epochs takes epochs like 10,20, not {text!r}') from None
    return steps


DEFAULT_LR = 0.01


def make_lr_scheduler(args, updates_per_epoch):
    """Step decay at ``--lr-step-epochs`` after a linear ``--warmup-epochs``, counted in updates."""
    base_lr = DEFAULT_LR if args.lr is None else args.lr
    warmup = int(round(args.warmup_epochs * updates_per_epoch))
    steps = [int(round(e * updates_per_epoch)) for e in _step_epochs(args.lr_step_epochs)]
    steps = [s for s in steps if s > warmup]
    common = dict(base_lr=base_lr, warmup_steps=warmup, warmup_begin_lr=0.0, warmup_mode='linear')
    if steps:
        return mx.lr_scheduler.MultiFactorScheduler(step=steps, factor=args.lr_factor, **common)
    return mx.lr_scheduler.FactorScheduler(step=2 ** 31 - 1, factor=1.0, **common)


def make_optimizer(args, updates_per_epoch):
    params = dict(learning_rate=DEFAULT_LR if args.lr is None else args.lr, wd=args.wd,
                  lr_scheduler=make_lr_scheduler(args, updates_per_epoch))
    if args.optimizer in ('sgd', 'nag'):
        params['momentum'] = args.mom
    return mx.optimizer.create(args.optimizer, **params)


class _Log:
    """Lines to stdout (through tqdm when a bar is shown on a terminal), or to a callable."""

    def __init__(self, sink=None, prefix=''):
        self.sink, self.prefix, self.bar = sink, prefix, None

    def __call__(self, msg):
        msg = self.prefix + msg
        if self.sink is not None:
            self.sink(msg)
        elif self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def progress(self, total, desc):
        if self.sink is None and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
        return self.bar

    def close_bar(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _Meters:
    """Loss / correct / sample counts kept as device arrays; read (one sync) only when logging."""

    def __init__(self, contexts):
        self.contexts = contexts
        self.reset()

    def reset(self):
        self.loss = [mx.nd.zeros((1,), ctx=c) for c in self.contexts]
        self.correct = [mx.nd.zeros((1,), ctx=c) for c in self.contexts]
        self.samples = 0

    def update(self, losses, outputs, labels):
        for i, (loss, out, label) in enumerate(zip(losses, outputs, labels)):
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


def _speedometer_line(epoch, first, last, speed, values):
    # exactly mx.callback.Speedometer's format, so existing log parsers keep working
    msg = 'Epoch[%d] Batch [%d-%d]\tSpeed: %.2f samples/sec' % (epoch, first, last, speed)
    return msg + ''.join('\t%s=%f' % (k.replace('_', '-'), v) for k, v in values.items())


def _create_kvstore(args):
    """``(kvstore or its name, rank, num_workers)``; dist stores need the launcher's DMLC_* variables."""
    if not args.kv_store.startswith('dist'):
        return args.kv_store, 0, 1
    kv = mx.kv.create(args.kv_store)
    return kv, kv.rank, kv.num_workers


def build_network(args, num_classes, preprocessing, contexts):
    """LightCNN with fc2 (returning logits and features), initialised, fc2 lr boosted, hybridised."""
    net = get_model(args.network, num_classes=num_classes, preprocessing=preprocessing,
                    dropout=args.dropout, return_features=True)
    mx.random.seed(args.seed)
    net.initialize(LightCNNInit(), ctx=contexts)
    for param in net.fc2.collect_params().values():
        param.lr_mult = args.fc2_lr_mult
    net.hybridize(static_alloc=True, static_shape=True)
    return net


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


def evaluate_classification(net, args, preprocessing, contexts, rec_path):
    """Top-1 / top-5 of ``net`` on a ``.rec`` (centre crops, every record once)."""
    it = record_iter(rec_path, preprocessing, args.batch_size, train=False,
                     threads=args.data_nthreads)
    k = min(5, net.num_classes)
    top1 = [mx.nd.zeros((1,), ctx=c) for c in contexts]
    topk = [mx.nd.zeros((1,), ctx=c) for c in contexts]
    total = 0
    for batch in it:
        n = batch.data[0].shape[0] - batch.pad
        data = gluon.utils.split_and_load(batch.data[0][:n], contexts, even_split=False)
        label = gluon.utils.split_and_load(batch.label[0][:n], contexts, even_split=False)
        for i, (x, y) in enumerate(zip(data, label)):
            logits = net(x)[0]
            best = logits.topk(k=k, axis=1)
            hits = (best == y.reshape((-1, 1)))
            top1[i] += hits[:, 0].sum()
            topk[i] += hits.sum()
        total += n
    total = max(total, 1)
    return dict(val_top1=sum(float(v.asscalar()) for v in top1) / total,
                val_top5=sum(float(v.asscalar()) for v in topk) / total)


def evaluate_pairs(net, preprocessing, contexts, pairs_path, images_root):
    """Verification accuracy (10-fold, threshold chosen on the other folds) on LFW-format pairs.

    The same engine (:mod:`symbols.inference`) and scoring (:mod:`common.verification`) as
    ``extract_features.py`` + ``lfw_eval.py``, without the files.
    """
    pairs = read_pairs(pairs_path)
    embedder = Embedder(net, preprocessing, contexts[0], batch_size=64, hybridize=False)
    extraction = embed_images(embedder, items_from_pairs(pairs_path, images_root))
    idx1, idx2 = pair_rows(extraction.labels, pairs)
    scores = pair_scores(extraction.features.astype(np.float64), idx1, idx2)
    return verification_metrics(scores, np.array([p.issame for p in pairs], dtype=bool),
                                np.array([p.fold for p in pairs]))


def _append_csv(path, row, begin_epoch):
    """Per-epoch metrics CSV; rows of epochs being re-run after a resume are replaced."""
    rows = []
    if os.path.exists(path):
        with open(path, newline='') as f:
            rows = [r for r in csv.DictReader(f) if int(r['epoch']) < begin_epoch]
    rows.append({k: row[k] for k in row})
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_write(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def train(config=None, contexts=None, log=None):
    """Train as ``train_lightcnn.py`` would; returns a summary dict (paths, metrics, speed).

    Parameters
    ----------
    config : argparse.Namespace, dict or list of str
        Options of :func:`build_parser` (dict keys use ``_`` or ``-``).
    contexts : list of mx.Context, optional
        Devices to split each batch over; overrides ``--gpus`` (tests use several ``mx.cpu(i)``).
    log : callable, optional
        Receives each log line instead of stdout.
    """
    args = parse_config(config)
    if args.num_epochs is None:
        args.num_epochs = 30
    if args.optimizer is None:
        args.optimizer = 'sgd'
    if args.benchmark:
        return benchmark(args, contexts, log)
    if not args.data_train:
        raise UsageError('--data-train PREFIX.rec is required (run without arguments for the demo)')
    if args.kv_store.startswith('dist') and 'DMLC_ROLE' not in os.environ:
        raise UsageError(f'--kv-store {args.kv_store} needs the DMLC_* environment of a launcher: '
                         'python -m tools.launch -n WORKERS -s SERVERS -- python train_lightcnn.py ...')
    if bool(args.val_pairs) != bool(args.val_images):
        raise UsageError('--val-pairs and --val-images go together')
    for name in ('batch_size', 'num_epochs', 'save_period', 'disp_batches', 'data_nthreads'):
        if getattr(args, name) < 1:
            raise UsageError(f'--{name.replace("_", "-")} must be at least 1')
    contexts = list(contexts) if contexts else resolve_contexts(args.gpus)
    if args.batch_size < len(contexts):
        raise UsageError(f'--batch-size {args.batch_size} is smaller than the {len(contexts)} devices')
    num_train = check_record_file(args.data_train)
    if args.data_val:
        check_record_file(args.data_val)
    summary = records_info(args.data_train)
    num_classes = args.num_classes or summary.get('num_classes')
    if not num_classes:
        raise UsageError(f'--num-classes is needed: no num_classes in a PREFIX.json beside {args.data_train}')
    preprocessing = record_preprocessing(default_preprocessing(args.network), args.data_train,
                                         args.input_size)

    kvstore, rank, num_workers = _create_kvstore(args)
    log = _Log(log, prefix=f'[worker {rank}] ' if num_workers > 1 else '')
    global_batch = args.batch_size * num_workers
    updates_per_epoch = steps_per_epoch(num_train, global_batch)
    net = build_network(args, num_classes, preprocessing, contexts)
    trainer = gluon.Trainer(net.collect_params(), make_optimizer(args, updates_per_epoch),
                            kvstore=kvstore, update_on_kvstore=False)

    begin_epoch, base_lr = 0, DEFAULT_LR if args.lr is None else args.lr
    if args.load_epoch:
        begin_epoch, base_lr = _resume(net, trainer, args, num_classes, contexts, updates_per_epoch)
        log(f'resumed from {checkpoint_stem(args.model_prefix, args.load_epoch)} '
            f'(lr {trainer.learning_rate:.3g}, {trainer.optimizer.num_update} updates done)')
    saves = rank == 0 or '{rank}' in args.model_prefix
    prefix = args.model_prefix.replace('{rank}', str(rank))
    csv_path = prefix + '-metrics.csv'
    meta = dict(network=args.network, num_classes=int(num_classes), preprocessing=preprocessing,
                data_train=os.path.abspath(args.data_train), batch_size=args.batch_size,
                global_batch=global_batch, optimizer=args.optimizer, dropout=args.dropout,
                identities=(summary.get('identities') if len(summary.get('identities') or ()) <= 20000
                            else None))
    log(f'{args.network}: {num_classes} classes, {num_train} training images, '
        f'{updates_per_epoch} updates/epoch of {global_batch} on {len(contexts)} device(s) '
        f'x {num_workers} worker(s), input {preprocessing.data_shape}'
        + (f', reading part {rank + 1}/{num_workers} of the .rec' if num_workers > 1 else ''))

    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    meters, epoch_meters = _Meters(contexts), _Meters(contexts)
    history, last_saved, total_samples, total_time = [], None, 0, 0.0
    if args.load_epoch:
        last_saved = checkpoint_stem(args.model_prefix, args.load_epoch)
    train_start = time.time()
    sync_before_first_push = args.kv_store.startswith('dist')
    for epoch in range(begin_epoch, args.num_epochs):
        mx.random.seed(args.seed * 1000 + epoch, ctx='all')  # dropout masks: same after a resume

        def make_iter(offset, epoch=epoch):
            return record_iter(args.data_train, preprocessing, args.batch_size, train=True,
                               seed=args.seed * 1000 + epoch + 7919 * offset, num_parts=num_workers,
                               part_index=rank, threads=args.data_nthreads)

        meters.reset()
        epoch_meters.reset()
        tic = interval_tic = time.time()
        bar = log.progress(updates_per_epoch, f'epoch {epoch}')
        for nbatch, batch in enumerate(take_batches(make_iter, updates_per_epoch)):
            data = gluon.utils.split_and_load(batch.data[0], contexts, even_split=False)
            label = gluon.utils.split_and_load(batch.label[0], contexts, even_split=False)
            with autograd.record():
                outputs = [net(x)[0] for x in data]
                losses = [loss_fn(out, y) for out, y in zip(outputs, label)]
            autograd.backward(losses)
            if sync_before_first_push:
                broadcast_before_first_push(trainer)
                sync_before_first_push = False
            trainer.step(global_batch)
            meters.update(losses, outputs, label)
            if bar is not None:
                bar.update(1)
            if (nbatch + 1) % args.disp_batches == 0:
                values = meters.read()
                _check_finite(values, epoch, nbatch, last_saved, log)
                epoch_meters.absorb(meters)
                speed = meters.samples / max(time.time() - interval_tic, 1e-9) * num_workers
                log(_speedometer_line(epoch, nbatch + 1 - args.disp_batches, nbatch + 1, speed, values))
                meters.reset()
                interval_tic = time.time()
        epoch_meters.absorb(meters)
        train_values = epoch_meters.read()
        _check_finite(train_values, epoch, updates_per_epoch - 1, last_saved, log)
        log.close_bar()
        elapsed = time.time() - tic
        total_time += elapsed
        total_samples += updates_per_epoch * global_batch
        row = dict(epoch=epoch, lr=trainer.learning_rate, train_loss=train_values['cross_entropy'],
                   train_accuracy=train_values['accuracy'], time=round(elapsed, 3),
                   samples_per_sec=updates_per_epoch * global_batch / max(elapsed, 1e-9))
        if rank == 0 and args.data_val:
            row.update(evaluate_classification(net, args, preprocessing, contexts, args.data_val))
        if rank == 0 and args.val_pairs:
            metrics = evaluate_pairs(net, preprocessing, contexts, args.val_pairs, args.val_images)
            row['val_verification'] = (metrics['accuracy_mean'] if metrics['accuracy_mean'] is not None
                                       else metrics['optimistic_accuracy'])
        log(f'Epoch[{epoch}] ' + '\t'.join(f'{k}={v:.6g}' if isinstance(v, float) else f'{k}={v}'
                                           for k, v in row.items() if k != 'epoch'))
        history.append(row)
        done = epoch + 1
        if saves and (done % args.save_period == 0 or done == args.num_epochs):
            schedule = dict(lr=trainer.learning_rate, num_update=trainer.optimizer.num_update,
                            base_lr=base_lr, lr_step_epochs=_step_epochs(args.lr_step_epochs),
                            lr_factor=args.lr_factor, warmup_epochs=args.warmup_epochs,
                            updates_per_epoch=updates_per_epoch, fc2_lr_mult=args.fc2_lr_mult)
            last_saved = save_checkpoint(net, prefix, dict(meta, metrics=row, lr_schedule=schedule),
                                         epoch=done, trainer=trainer)
            _append_csv(csv_path, row, begin_epoch)
            log(f'Saved checkpoint to {last_saved}.params')
    result = dict(history=history, checkpoint=last_saved, metrics_csv=csv_path if saves else None,
                  epochs=args.num_epochs, rank=rank, num_workers=num_workers,
                  samples_per_sec=total_samples / max(total_time, 1e-9),
                  wall_time=time.time() - train_start)
    if history:
        last = history[-1]
        best = max((h.get('val_top1', -1) for h in history), default=-1)
        log(f'Done: {len(history)} epoch(s) in {result["wall_time"]:.1f}s, '
            f'{result["samples_per_sec"]:.1f} samples/sec, final loss {last["train_loss"]:.4f}, '
            f'train accuracy {last["train_accuracy"]:.4f}'
            + (f', best val top-1 {best:.4f}' if best >= 0 else '')
            + (f'; checkpoint {last_saved}' if last_saved else ''))
    return result


def _check_finite(values, epoch, nbatch, last_saved, log):
    if not math.isfinite(values['cross_entropy']):
        log.close_bar()
        where = f'last good checkpoint: {last_saved}' if last_saved else 'no checkpoint saved yet'
        raise TrainingDiverged(f'loss is {values["cross_entropy"]} at epoch {epoch} batch {nbatch + 1}; '
                               f'stopped ({where}); lower --lr or add --warmup-epochs')


def _resume(net, trainer, args, num_classes, contexts, updates_per_epoch):
    """Load weights, optimiser state and LR schedule of ``--load-epoch``.

    Returns the next epoch and the base learning rate now in force.
    """
    stem = checkpoint_stem(args.model_prefix, args.load_epoch)
    for ext in ('.params', '.json', '.states'):
        if not os.path.exists(stem + ext):
            raise UsageError(f'cannot resume: {stem}{ext} is missing')
    meta = load_metadata(stem)
    if meta['network'] != args.network or int(meta['num_classes']) != int(num_classes):
        raise UsageError(f'{stem} is a {meta["network"]} with {meta["num_classes"]} classes, '
                         f'not {args.network} with {num_classes}')
    net.load_parameters(stem + '.params', ctx=contexts)
    read_optimizer_states(stem + '.states')  # refuses a crafted pickle before MXNet unpickles it
    trainer.load_states(stem + '.states')
    base_lr = meta.get('lr_schedule', {}).get('base_lr', DEFAULT_LR)
    if args.lr is not None and args.lr != base_lr:
        # an explicit new --lr: same step epochs and position, new base (e.g. to fine-tune)
        trainer.optimizer.lr_scheduler = make_lr_scheduler(args, updates_per_epoch)
        base_lr = args.lr
    return int(args.load_epoch), base_lr


def benchmark(args, contexts=None, log=None):
    """Forward+backward+update speed on synthetic batches; returns samples/sec."""
    log = _Log(log)
    contexts = list(contexts) if contexts else resolve_contexts(args.gpus)
    pre = default_preprocessing(args.network)
    if args.input_size:
        pre = type(pre)(channels=pre.channels, input_size=args.input_size)
    num_classes = args.num_classes or 1000
    net = build_network(args, num_classes, pre, contexts)
    trainer = gluon.Trainer(net.collect_params(), make_optimizer(args, 1000), kvstore=args.kv_store,
                            update_on_kvstore=False)
    batches = SyntheticBatches(args.batch_size, pre.data_shape, num_classes, contexts, args.seed)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    def step():
        with autograd.record():
            losses = [loss_fn(net(x)[0], y) for x, y in zip(batches.data, batches.label)]
        autograd.backward(losses)
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
