"""Training and validation batches from RecordIO files, plus synthetic batches for ``--benchmark``.

Files of image records only go through MXNet's ``ImageRecordIter`` (:class:`RecordBatches`); insightface
``.rec`` files, whose header and identity records hold no image, through :class:`ImageRecordBatches`, which
reads the image records alone by key.

Iterators are rebuilt every epoch with a seed derived from ``(seed, epoch)``: the data order and the
random crops of epoch ``e`` are then the same whether a run went straight through or was resumed
from a checkpoint, which makes ``--load-epoch`` exact.
"""
import math
import os
from dataclasses import replace

import mxnet as mx
import numpy as np

from common.errors import UsageError
from common.preprocessing import Preprocessing
from data_tools.dataset_info import records_info
from data_tools.records import scan_records

from .errors import ParameterError
from .sampler import IdentityBatches


def check_record_file(rec_path):
    """Fail with one line unless ``rec_path`` and its ``.idx`` exist and agree; returns the
    :class:`data_tools.records.RecordScan` (labels, sample sizes and channels) for the trainer's checks."""
    rec_path = os.fspath(rec_path)
    if not rec_path.endswith('.rec'):
        raise UsageError(f'{rec_path}: expected a .rec file (made by data_tools/pack_rec.py or im2rec)')
    if not os.path.exists(rec_path):
        raise UsageError(f'{rec_path} does not exist')
    idx = rec_path[:-4] + '.idx'
    if not os.path.exists(idx):
        raise UsageError(f'{idx} is missing: pack with data_tools/pack_rec.py or im2rec to get it')
    return scan_records(rec_path)  # .idx, .lst and PREFIX.json checked against the .rec (data_tools.records)




def record_preprocessing(base, rec_path, input_size=None, record_side=None):
    """``base`` (the network's default) adapted to how the records were packed.

    The packing JSON's record ``size`` becomes ``record_size`` (without a JSON: ``record_side``, the
    side :func:`scan_records` found); colour records (``pack_rec.py --color bgr``) train 3-channel nets on BGR
    pixels (the order of OpenCV and of LightCNN-V4), gray records 1-channel ones; ``input_size`` overrides the
    crop side.

    Raises
    ------
    ParameterError
        Gray records for a network defined on colour (LightCNN-V4), or ``input_size`` larger than the records.
    """
    record = records_info(rec_path).get('record') or {}
    record_size = int(record.get('size', record_side or base.record_size))
    channels = 'gray' if record.get('color', 'gray') == 'gray' else 'bgr'
    if channels == 'gray' and base.channels != 'gray':
        raise ParameterError(lambda n: f'{rec_path} holds gray records but the {n("network")} takes '
                                       f'{base.channels} input: pack the images with data_tools/pack_rec.py '
                                       '--color bgr')
    input_size = input_size or min(base.input_size, record_size)
    if input_size > record_size:
        raise ParameterError(lambda n: f'{n("input_size")} {input_size} is larger than the packed images '
                                       f'({record_size})')
    return Preprocessing(channels=channels, input_size=input_size, scale=base.scale, mean=base.mean,
                         record_size=record_size)


def record_iter(rec_path, preprocessing, batch_size, train, seed=0, num_parts=1, part_index=0,
                threads=4, shuffle=None):
    """An ``ImageRecordIter`` giving ``preprocessing``'s pixels (random crop+mirror when ``train``).

    Built with ``ctx='gpu'`` on every machine: batches land in pinned memory (fast copies to
    GPUs, an ordinary buffer on CPU builds) and ``threads`` decoders are honoured, where the
    ``'cpu'`` variant ignores them for OpenMP and logs a line on stderr each epoch.
    ``ImageRecordIter`` decodes colour records as RGB; for ``'bgr'`` preprocessing the batches are
    wrapped by :class:`ReversedChannels`.
    """
    rec_path = os.fspath(rec_path)
    shuffle = train if shuffle is None else shuffle
    bgr = preprocessing.channels == 'bgr'
    decoded = replace(preprocessing, channels='rgb') if bgr else preprocessing
    it = mx.io.ImageRecordIter(
        path_imgrec=rec_path, path_imgidx=rec_path[:-4] + '.idx', batch_size=batch_size,
        shuffle=shuffle, seed=seed, seed_aug=seed, num_parts=num_parts, part_index=part_index,
        preprocess_threads=threads, round_batch=train, verbose=False, ctx='gpu',
        **decoded.record_iter_args(train))
    return ReversedChannels(it) if bgr else it


class ReversedChannels:
    """The batches of an RGB ``ImageRecordIter`` with the channel axis reversed: BGR, as OpenCV decodes.

    A pure permutation (``nd.flip`` on axis 1 of NCHW), so pixel values are the iterator's, bit for bit.
    Iterating gives ``mx.io.DataBatch`` es with the same ``label``, ``pad`` and ``index``.
    """

    def __init__(self, it):
        self.it = it

    def __iter__(self):
        for batch in self.it:
            yield mx.io.DataBatch(data=[mx.nd.flip(batch.data[0], axis=1)], label=batch.label,
                                  pad=batch.pad, index=batch.index)

    def reset(self):
        self.it.reset()


def steps_per_epoch(num_records, global_batch):
    """Updates per epoch: every record once across all workers (the last batch wraps round)."""
    return max(1, math.ceil(num_records / global_batch))


def take_batches(make_iter, count):
    """Exactly ``count`` batches, restarting the iterator if its part runs out first.

    Distributed workers must all take the same number of steps (``dist_sync`` waits for every
    worker at each update), while ``num_parts`` shards can differ by a few records.
    """
    taken = 0
    while taken < count:
        it = make_iter(taken)
        empty = True
        for batch in it:
            empty = False
            yield batch
            taken += 1
            if taken == count:
                return
        if empty:
            raise UsageError('the training iterator yielded no batch (is the .rec empty?)')


class RecordBatches:
    """One worker's training batches: exactly ``updates`` per epoch, in an order seeded by ``(seed, epoch)``.

    ``epoch(e)`` yields ``mx.io.DataBatch`` es (``data[0]``: ``(batch_size,) + data_shape`` float32 pixels,
    ``label[0]``: ``(batch_size,)`` float32 class ids) of part ``part_index`` of ``num_parts``.
    """

    def __init__(self, rec_path, preprocessing, batch_size, updates, seed=0, num_parts=1, part_index=0,
                 threads=4):
        self.rec_path, self.preprocessing, self.batch_size = rec_path, preprocessing, batch_size
        self.updates, self.seed, self.threads = updates, seed, threads
        self.num_parts, self.part_index = num_parts, part_index

    def epoch(self, epoch):
        def make_iter(offset):
            return record_iter(self.rec_path, self.preprocessing, self.batch_size, train=True,
                               seed=self.seed * 1000 + epoch + 7919 * offset, num_parts=self.num_parts,
                               part_index=self.part_index, threads=self.threads)
        return take_batches(make_iter, self.updates)


class ImageRecordOrder:
    """The order in which :class:`ImageRecordBatches` reads ``n`` image records: batches of positions.

    Training (``shuffle``): a permutation seeded by ``(seed, epoch)``, the last batch completed from its start
    (as ``ImageRecordIter``'s ``round_batch``); validation: file order, the last batch short.
    """

    def __init__(self, n, batch_size, seed=0, shuffle=True):
        self.n, self.batch_size, self.seed, self.shuffle = int(n), int(batch_size), int(seed), bool(shuffle)

    def __len__(self):
        return math.ceil(self.n / self.batch_size)

    def batches(self, epoch):
        if not self.shuffle:
            order = np.arange(self.n)
        else:
            order = np.random.default_rng((self.seed % 2 ** 32, int(epoch))).permutation(self.n)
            order = np.resize(order, len(self) * self.batch_size)  # wraps round to fill the last batch
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]


class ImageRecordBatches(IdentityBatches):
    """Batches of the *image* records of a ``.rec``, read one by one through its ``.idx``: insightface files.

    An insightface ``.rec`` holds, besides its images, a header record (key 0, ``label[0]`` = first identity
    record) and one record per identity (its image range), all without image data; ``ImageRecordIter`` reads
    every record between the ``.idx`` offsets and fails on them. Here only the ``keys`` of image records
    (:class:`data_tools.records.RecordScan` ``keys``/``labels``) are read, with :class:`IdentityBatches`'
    decoding (``threads`` in parallel; the pixels of :class:`~common.preprocessing.Preprocessing`: random
    ``input_size`` crop and mirror when ``train``, else the centre crop) in :class:`ImageRecordOrder`.
    Worker ``part_index`` of ``num_parts`` takes every ``num_parts``-th batch; ``updates`` batches per epoch
    (``ceil(records / (batch_size x num_parts))``, as :func:`steps_per_epoch`).
    """

    def __init__(self, rec_path, preprocessing, batch_size, keys, labels, train=True, seed=0, num_parts=1,
                 part_index=0, threads=4, skipped=0):
        # not IdentityBatches.__init__: no identity sampler, the records are given
        self.rec_path, self.preprocessing = os.fspath(rec_path), preprocessing
        self.seed, self.num_parts, self.part_index, self.threads = seed, num_parts, part_index, threads
        self.keys, self.labels = [int(k) for k in keys], np.asarray(labels, np.int64)
        self.sampler = ImageRecordOrder(len(self.keys), batch_size, seed, shuffle=train)
        self.updates = math.ceil(len(self.sampler) / num_parts)
        self.train, self.skipped = bool(train), int(skipped)

    def describe(self):
        return (f'{self.rec_path}: {len(self.keys)} image records read by key, {self.skipped} header/identity '
                'record(s) without an image skipped (insightface layout; decoded here, not by ImageRecordIter)')

    def _submit(self, pool, record, epoch, number, positions):
        if self.train:
            return super()._submit(pool, record, epoch, number, positions)
        jobs = [pool.submit(self._decode, record.read_idx(self.keys[i]), self.keys[i], 0.5, 0.5, 1.0)
                for i in positions]  # the centre crop (one pixel lower/right for an odd margin), no mirror
        return jobs, self.labels[positions]


def image_record_batches(scan, preprocessing, batch_size, train=True, **options):
    """:class:`ImageRecordBatches` of a scanned ``.rec`` (``scan.keys``/``labels``: its image records only)."""
    return ImageRecordBatches(scan.path, preprocessing, batch_size, scan.keys, scan.labels, train=train,
                              skipped=scan.meta_records, **options)


def evaluation_batches(scan, preprocessing, batch_size, threads=4):
    """Centre-cropped batches of a scanned ``.rec`` in file order (validation, BN statistics): MXNet's
    ``ImageRecordIter``, or :class:`ImageRecordBatches` when the file holds records without images.
    A short last batch may be filled past the end: callers cap each batch by ``scan.count``."""
    if scan.meta_records:
        return image_record_batches(scan, preprocessing, batch_size, train=False, threads=threads).epoch(0)
    return record_iter(scan.path, preprocessing, batch_size, train=False, threads=threads)


def counted_batches(scan, preprocessing, batch_size, threads=4, limit=None):
    """``(data, label)`` NDArrays of the centre-cropped records of a scanned ``.rec`` in file order, every
    image record once: each batch of :func:`evaluation_batches` is cut to the records left (``scan.count``,
    or ``limit`` when smaller), so the filling of a short last batch is never seen."""
    left = scan.count if limit is None else min(limit, scan.count)
    for batch in evaluation_batches(scan, preprocessing, batch_size, threads):
        n = min(batch.data[0].shape[0] - (batch.pad or 0), left)
        if n <= 0:
            return
        yield batch.data[0][:n], batch.label[0][:n]
        left -= n


class SyntheticBatches:
    """Random images and labels already on the devices: measures the network, not the input."""

    def __init__(self, batch_size, data_shape, num_classes, contexts, seed=0):
        mx.random.seed(seed)
        data = mx.nd.random.uniform(0, 1, shape=(batch_size,) + tuple(data_shape))
        label = mx.nd.random.randint(0, num_classes, shape=(batch_size,)).astype('float32')
        self.data = mx.gluon.utils.split_and_load(data, contexts, even_split=False)
        self.label = mx.gluon.utils.split_and_load(label, contexts, even_split=False)
