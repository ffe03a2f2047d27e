"""What the training loop reports, as callbacks: Speedometer lines, progress bar, epoch lines, metrics CSV.

The loop (:func:`training.trainer.train`) calls, in this order::

    on_train_begin(run)
    for each epoch:  on_epoch_begin(run, epoch)
                     for each batch: on_batch_end(run, epoch, nbatch)
                         every disp_batches: on_interval_end(run, epoch, nbatch, samples, values)
                     on_epoch_end(run, epoch, row, checkpoint)
    on_train_end(run, result)

``run`` is the :class:`~training.trainer.TrainingRun` built by setup, ``epoch`` is 0-based (as MXNet's
``Epoch[i]``), ``row`` the epoch's metrics and ``checkpoint`` the stem saved after it (``PREFIX-%04d`` of
``epoch + 1``, the epochs completed) or ``None``. The loop owns control flow (when to stop, save, validate);
a callback reports, or changes the run between epochs (e.g. unfreezing layers in ``on_epoch_begin``).
As in insightface's ``arcface_torch/utils/utils_callbacks.py``, each concern is one small class.
"""
import csv
import os
import sys
import time

from common.errors import UsageError
from common.fileio import atomic_write


class Callback:
    """Base class: every hook does nothing."""

    def on_train_begin(self, run):
        pass

    def on_epoch_begin(self, run, epoch):
        pass

    def on_batch_end(self, run, epoch, nbatch):
        pass

    def on_interval_end(self, run, epoch, nbatch, samples, values):
        """``samples`` trained on this worker since the last interval; ``values`` their mean metrics."""

    def on_epoch_end(self, run, epoch, row, checkpoint):
        pass

    def on_train_end(self, run, result):
        pass


class CallbackList(Callback):
    """Calls each callback's hook in the order given."""

    def __init__(self, callbacks):
        self.callbacks = list(callbacks)

    def _each(self, hook, *args):
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    def on_train_begin(self, run):
        self._each('on_train_begin', run)

    def on_epoch_begin(self, run, epoch):
        self._each('on_epoch_begin', run, epoch)

    def on_batch_end(self, run, epoch, nbatch):
        self._each('on_batch_end', run, epoch, nbatch)

    def on_interval_end(self, run, epoch, nbatch, samples, values):
        self._each('on_interval_end', run, epoch, nbatch, samples, values)

    def on_epoch_end(self, run, epoch, row, checkpoint):
        self._each('on_epoch_end', run, epoch, row, checkpoint)

    def on_train_end(self, run, result):
        self._each('on_train_end', run, result)


class LogSink:
    """Log lines to stdout (through the tqdm bar while one is shown), or to a callable.

    ``prefix`` starts every line (``[worker 1] `` in distributed runs).
    """

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

    def open_bar(self, total, desc):
        """A tqdm bar on stderr when it is a terminal and lines go to stdout; else ``None``."""
        if self.sink is None and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
        return self.bar

    def close_bar(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def speedometer_line(epoch, first, last, speed, values):
    """Exactly ``mx.callback.Speedometer``'s format, so existing log parsers keep working.

    ``Epoch[%d] Batch [%d-%d]\\tSpeed: %.2f samples/sec`` then ``\\t%s=%f`` per metric (``_`` -> ``-``).
    """
    msg = 'Epoch[%d] Batch [%d-%d]\tSpeed: %.2f samples/sec' % (epoch, first, last, speed)
    return msg + ''.join('\t%s=%f' % (k.replace('_', '-'), v) for k, v in values.items())


class Speedometer(Callback):
    """One :func:`speedometer_line` every ``--disp-batches``; speed in samples/sec over all workers."""

    def __init__(self, num_workers=1):
        self.num_workers = num_workers
        self.tic = None

    def on_epoch_begin(self, run, epoch):
        self.tic = time.time()

    def on_interval_end(self, run, epoch, nbatch, samples, values):
        speed = samples / max(time.time() - self.tic, 1e-9) * self.num_workers
        first = nbatch + 1 - run.args.disp_batches
        run.log(speedometer_line(epoch, first, nbatch + 1, speed, values))
        self.tic = time.time()


class ProgressBar(Callback):
    """tqdm bar of the epoch's updates (only when stderr is a terminal and lines go to stdout)."""

    def __init__(self):
        self.bar = None

    def on_epoch_begin(self, run, epoch):
        self.bar = run.log.open_bar(run.updates_per_epoch, f'epoch {epoch}')

    def on_batch_end(self, run, epoch, nbatch):
        if self.bar is not None:
            self.bar.update(1)

    def on_epoch_end(self, run, epoch, row, checkpoint):
        run.log.close_bar()
        self.bar = None


class EpochLog(Callback):
    """The setup line, one line per epoch (``Epoch[i] lr=...``), each save, and the final summary."""

    def on_train_begin(self, run):
        run.log(run.describe())

    def on_epoch_end(self, run, epoch, row, checkpoint):
        run.log(f'Epoch[{epoch}] ' + '\t'.join(f'{k}={v:.6g}' if isinstance(v, float) else f'{k}={v}'
                                               for k, v in row.items() if k != 'epoch'))
        if checkpoint:
            run.log(f'Saved checkpoint to {checkpoint}.params')

    def on_train_end(self, run, result):
        history = result['history']
        if not history:
            return
        last = history[-1]
        best = max((h.get('val_top1', -1) for h in history), default=-1)
        run.log(f'Done: {len(history)} epoch(s) in {result["wall_time"]:.1f}s, '
                f'{result["samples_per_sec"]:.1f} samples/sec, final loss {last["train_loss"]:.4f}, '
                f'train accuracy {last["train_accuracy"]:.4f}'
                + (f', best val top-1 {best:.4f}' if best >= 0 else '')
                + (f'; checkpoint {result["checkpoint"]}' if result['checkpoint'] else ''))


class MetricsCSV(Callback):
    """``PREFIX-metrics.csv``: one row per epoch, ``epoch`` 0-based as in the log.

    The ``checkpoint`` column names the checkpoint saved after that epoch (``PREFIX-%04d`` of epochs
    completed, empty if none was). A resumed run replaces the rows of the epochs it re-runs.
    """

    def __init__(self, path):
        self.path = path

    def on_epoch_end(self, run, epoch, row, checkpoint):
        write_metrics_row(self.path, dict(row, checkpoint=os.path.basename(checkpoint) if checkpoint else ''))


def write_metrics_row(path, row):
    """Write ``row`` into the CSV at ``path``: rows with ``epoch >= row['epoch']`` go, all others stay.

    Those rows are from a run being resumed from an earlier checkpoint, whose later epochs it re-runs.
    Columns are the union of all rows' keys, in first-seen order; the file is replaced atomically (a
    failed write, disk full included, leaves the previous file and no temporary; :class:`UsageError`).
    """
    rows = []
    if os.path.exists(path):
        try:
            with open(path, newline='') as f:
                rows = [r for r in csv.DictReader(f) if int(r['epoch']) < int(row['epoch'])]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UsageError(f'{path} is not a readable metrics CSV ({type(err).__name__}: {err}); move it '
                             'away to start a new one') from None
    rows.append(dict(row))
    fields = list(dict.fromkeys(k for r in rows for k in r))
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_write(path, 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    except OSError as err:
        raise UsageError(f'cannot write {path}: {err.strerror or err}') from None
