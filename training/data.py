"""Training and validation batches from RecordIO files, plus synthetic batches for ``--benchmark``.

Iterators are rebuilt every epoch with a seed derived from ``(seed, epoch)``: the data order and the
random crops of epoch ``e`` are then the same whether a run went straight through or was resumed
from a checkpoint, which makes ``--load-epoch`` exact.
"""
import math
import os
import struct
from dataclasses import dataclass

import cv2
import mxnet as mx
import numpy as np

from common.errors import UsageError
from common.preprocessing import Preprocessing

from data_tools.dataset_info import records_info

from .errors import ParameterError


def check_record_file(rec_path):
    """Fail with one line unless ``rec_path`` and its ``.idx`` exist; returns the record count."""
    rec_path = os.fspath(rec_path)
    if not rec_path.endswith('.rec'):
        raise UsageError(f'{rec_path}: expected a .rec file (made by data_tools/pack_rec.py or im2rec)')
    if not os.path.exists(rec_path):
        raise UsageError(f'{rec_path} does not exist')
    idx = rec_path[:-4] + '.idx'
    if not os.path.exists(idx):
        raise UsageError(f'{idx} is missing: pack with data_tools/pack_rec.py or im2rec to get it')
    with open(idx) as f:
        count = sum(1 for line in f if line.strip())
    if count == 0:
        raise UsageError(f'{rec_path} holds no records')
    return count


RECORD_MAGIC = 0xced7230a  # dmlc::RecordIOWriter::kMagic: the first 4 bytes of every record
_IR_SIZE = struct.calcsize('IfQQ')  # mx.recordio's image record header: flag, label, id, id2


@dataclass
class RecordScan:
    """What :func:`scan_records` read from a ``.rec`` through its ``.idx``, without decoding every image.

    ``labels``: int64 class id of every image record (the first label when a record holds several);
    ``sample_shapes``: ``(height, width, channels)`` of the decoded sample (channels 1 or 3, alpha not
    counted); ``meta_records``: records
    without an image (insightface header/identity records), skipped by the count.
    """
    path: str
    labels: np.ndarray
    keys: np.ndarray
    sample_shapes: list
    meta_records: int = 0

    @property
    def count(self):
        return len(self.labels)

    @property
    def channels(self):
        """Channels of the decoded sample: ``{1}``, ``{3}`` (or both, for a mixed file)."""
        return sorted({c for _, _, c in self.sample_shapes})

    @property
    def min_side(self):
        return min(min(h, w) for h, w, _ in self.sample_shapes)


def scan_records(rec_path, sample=64):
    """Check every ``.idx`` entry against the ``.rec`` and read every record's label, before MXNet opens it.

    Each offset of the index must point at a record start (the RecordIO magic ``0xced7230a``, a first or
    whole part) lying inside the file; the label comes from the record's header (mx.recordio's
    ``IfQQ``: 24 bytes per record, read at once through a memory map). ``sample`` image records spread
    over the file (the first and the last included) are decoded for their size and channels. A stale,
    truncated or foreign index, which makes ``ImageRecordIter`` abort the process in C++, becomes one
    :class:`UsageError` line here.

    Returns
    -------
    RecordScan

    Raises
    ------
    UsageError
        Naming the file, the index line and what is wrong.
    """
    rec_path = os.fspath(rec_path)
    idx_path = rec_path[:-4] + '.idx'
    keys, offsets = _read_index(idx_path)
    size = os.path.getsize(rec_path)
    where = f'{idx_path} does not belong to {rec_path}'
    bad = np.flatnonzero((offsets < 0) | (offsets + 8 + _IR_SIZE > size) | (offsets % 4 != 0))
    if bad.size:
        i = bad[0]
        raise UsageError(f'{where}: line {i + 1} points at byte {offsets[i]} of a {size}-byte file '
                         f'({bad.size} such line(s)); repack, or restore the .idx written with this .rec')
    data = np.memmap(rec_path, dtype=np.uint8, mode='r')
    head = np.ascontiguousarray(data[offsets[:, None] + np.arange(8 + _IR_SIZE)])
    words = head[:, :16].view('<u4')  # magic, cflag|length, flag, label (float32 bits)
    lengths, cflags = words[:, 1] & ((1 << 29) - 1), words[:, 1] >> 29
    bad = np.flatnonzero((words[:, 0] != RECORD_MAGIC) | (cflags > 1) | (offsets + 8 + lengths > size)
                         | (lengths < _IR_SIZE))
    if bad.size:
        i = bad[0]
        raise UsageError(f'{where}: line {i + 1} (key {keys[i]}) points at byte {offsets[i]}, which is not '
                         f'the start of a record ({bad.size} of {len(offsets)} entries are wrong); repack, '
                         'or restore the .idx written with this .rec')
    flags = words[:, 2]
    labels = head[:, 12:16].copy().view('<f4')[:, 0].astype(np.float64)
    for i in np.flatnonzero(flags > 0):  # a label array follows the header: the class is its first entry
        labels[i] = _record_bytes(data, offsets[i], _IR_SIZE + 4)[_IR_SIZE:].view('<f4')[0]
    payload = lengths.astype(np.int64) - _IR_SIZE - 4 * flags.astype(np.int64)
    images = (payload > 0) | (cflags == 1)
    labels, image_keys, image_offsets = labels[images], keys[images], offsets[images]
    if not labels.size:
        raise UsageError(f'{rec_path} holds no image records')
    bad = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)) | (labels < 0))
    if bad.size:
        raise UsageError(f'{rec_path}: record {image_keys[bad[0]]} has label {labels[bad[0]]:g}, not a class '
                         f'number 0, 1, 2, ... ({bad.size} such record(s))')
    picks = sorted(set(np.linspace(0, len(labels) - 1, min(sample, len(labels))).round().astype(int)))
    shapes = [_decoded_shape(rec_path, data, image_offsets[i], image_keys[i]) for i in picks]
    return RecordScan(rec_path, labels.astype(np.int64), image_keys, shapes, int((~images).sum()))


def _read_index(idx_path):
    """``(keys, offsets)`` int64 arrays from ``key<TAB>offset`` lines."""
    keys, offsets = [], []
    try:
        with open(idx_path, 'rb') as f:
            for number, line in enumerate(f, 1):
                fields = line.split()
                if not fields:
                    continue
                try:
                    key, offset = (int(v) for v in fields)
                except ValueError:
                    raise UsageError(f'{idx_path} line {number}: expected "key<TAB>offset", not '
                                     f'{line[:40]!r}; not a RecordIO index') from None
                keys.append(key)
                offsets.append(offset)
    except OSError as err:
        raise UsageError(f'cannot read {idx_path}: {err.strerror or err}') from None
    if not keys:
        raise UsageError(f'{idx_path} is empty: the .rec has no index entries')
    return np.asarray(keys, np.int64), np.asarray(offsets, np.int64)


def _record_bytes(data, offset, want=None):
    """The payload of the record at ``offset`` (its parts joined), or its first ``want`` bytes."""
    parts, total = [], 0
    while True:
        magic, word = data[offset:offset + 8].view('<u4')
        length, cflag = int(word & ((1 << 29) - 1)), int(word >> 29)
        if magic != RECORD_MAGIC or offset + 8 + length > len(data):
            raise UsageError('record part outside the file')
        parts.append(np.asarray(data[offset + 8:offset + 8 + length]))
        total += length
        if cflag in (0, 3) or (want is not None and total >= want):
            break
        parts.append(np.frombuffer(struct.pack('<I', RECORD_MAGIC), np.uint8))  # the cut-out magic
        total += 4
        offset += 8 + length + (-length % 4)
    return np.concatenate(parts)


def _decoded_shape(rec_path, data, offset, key):
    try:
        record = _record_bytes(data, offset)
    except UsageError:
        raise UsageError(f'{rec_path}: record {key} is cut short (truncated .rec?)') from None
    flag = int(record[:4].view('<u4')[0])
    image = cv2.imdecode(record[_IR_SIZE + 4 * flag:], cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UsageError(f'{rec_path}: record {key} holds no decodable image')
    return image.shape[0], image.shape[1], 1 if image.ndim == 2 or image.shape[2] < 3 else 3  # alpha: not a colour


def record_preprocessing(base, rec_path, input_size=None, record_side=None):
    """``base`` (the network's default) adapted to how the records were packed.

    The packing JSON's record ``size`` becomes ``record_size`` (without a JSON: ``record_side``, the
    side :func:`scan_records` found) and its ``color`` the channels (``ImageRecordIter`` decodes colour
    as RGB); ``input_size`` overrides the crop side.
    """
    record = records_info(rec_path).get('record') or {}
    record_size = int(record.get('size', record_side or base.record_size))
    channels = 'gray' if record.get('color', 'gray') == 'gray' else 'rgb'
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
    """
    rec_path = os.fspath(rec_path)
    shuffle = train if shuffle is None else shuffle
    return mx.io.ImageRecordIter(
        path_imgrec=rec_path, path_imgidx=rec_path[:-4] + '.idx', batch_size=batch_size,
        shuffle=shuffle, seed=seed, seed_aug=seed, num_parts=num_parts, part_index=part_index,
        preprocess_threads=threads, round_batch=train, verbose=False, ctx='gpu',
        **preprocessing.record_iter_args(train))


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


class SyntheticBatches:
    """Random images and labels already on the devices: measures the network, not the input."""

    def __init__(self, batch_size, data_shape, num_classes, contexts, seed=0):
        mx.random.seed(seed)
        data = mx.nd.random.uniform(0, 1, shape=(batch_size,) + tuple(data_shape))
        label = mx.nd.random.randint(0, num_classes, shape=(batch_size,)).astype('float32')
        self.data = mx.gluon.utils.split_and_load(data, contexts, even_split=False)
        self.label = mx.gluon.utils.split_and_load(label, contexts, even_split=False)
