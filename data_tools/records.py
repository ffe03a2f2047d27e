"""RecordIO files: read ours, im2rec's and insightface's; write MXNet's framing without importing MXNet.

Reading (:func:`iter_records`, :func:`scan_records`) parses the same framing without MXNet, and checks
before anything else reads a ``.rec`` through its ``.idx`` that the index belongs to it
(:func:`check_record_index`): MXNet's ``ImageRecordIter`` aborts the whole process (C++ ``dmlc::Error``,
SIGABRT) on a stale, truncated or garbage index. insightface ``train.rec`` files begin with a header record
(``flag > 0``, label ``[first identity record, end of identity records]``, empty payload) and end with one
record per identity (label ``[first image, end image]``, empty payload); :func:`iter_records` skips every
record without an image payload, so those files read like plain im2rec ones.

Writing (:class:`IndexedRecordWriter`) produces byte for byte what ``mx.recordio.MXIndexedRecordIO`` writes
(dmlc-core's framing; a test holds it to MXNet's own writer) so the packer never imports MXNet: that import
alone costs ~2 CPU-seconds, a quarter of all the CPU that packing PubFig83 takes on two cores.
"""
import collections
import os
import struct
from dataclasses import dataclass

import cv2
import numpy as np

from common.checks import check_number
from common.errors import UsageError
from common.fileio import atomic_write, check_outputs
from common.images import ImageError, decode_image
from common.textio import read_lines
from data_tools.dataset_info import dataset_prefix, info_path, records_info

IR_FORMAT = 'IfQQ'      # mx.recordio._IR_FORMAT: flag, label, id, id2
_MAGIC = struct.pack('<I', 0xced7230a)  # dmlc::RecordIOWriter::kMagic


# ------------------------------------------------------------------------------------------ writing
def pack_header(label, record_id, payload):
    """``mx.recordio.pack(IRHeader(0, label, record_id, 0), payload)`` for a scalar label."""
    return struct.pack(IR_FORMAT, 0, float(label), record_id, 0) + payload


class IndexedRecordWriter:
    """Append-only ``.rec`` + ``.idx`` (``key<TAB>offset`` lines), as ``mx.recordio.MXIndexedRecordIO`` writes.

    dmlc-core frames a record as magic, ``cflag << 29 | length``, data, zero padding to 4 bytes; a payload
    holding the magic number at a 4-byte aligned offset is cut there into continuation parts (cflag 1, 2, 3)
    so readers never mistake it for a record start.
    """

    def __init__(self, idx_path, rec_path):
        self.rec = open(rec_path, 'wb', buffering=1 << 20)  # records of a few kB: one write call per MiB
        self.idx = open(idx_path, 'w', encoding='ascii', newline='\n')
        self.pos = 0

    def write_idx(self, key, buf):
        if len(buf) >= 1 << 29:
            raise ValueError('a RecordIO record must be smaller than 512 MiB')
        cuts = list(_aligned(buf, _MAGIC))
        pad = bytes(-len(buf) % 4)
        self.idx.write(f'{key}\t{self.pos}\n')
        if not cuts:  # the usual case: one part, written without joining a copy
            self.rec.write(_MAGIC + struct.pack('<I', len(buf)))
            self.rec.write(buf)
            self.rec.write(pad)
            self.pos += 8 + len(buf) + len(pad)
            return
        starts, ends = [0] + [at + 4 for at in cuts], cuts + [len(buf)]
        flags = [1] + [2] * (len(cuts) - 1) + [3]
        data = b''.join(_MAGIC + struct.pack('<I', flag << 29 | (end - start)) + buf[start:end]
                        for flag, start, end in zip(flags, starts, ends)) + pad
        self.rec.write(data)
        self.pos += len(data)

    def close(self):
        self.rec.close()
        self.idx.close()


def _aligned(buf, word):
    """Offsets of ``word`` in ``buf`` that are multiples of 4 (a JPEG rarely has any: one ``find``)."""
    at = buf.find(word)
    while at >= 0:
        if at % 4 == 0:
            yield at
        at = buf.find(word, at + 1)


# ------------------------------------------------------------------------------------------ reading
RECORD_MAGIC = 0xced7230a
_IR_SIZE = struct.calcsize(IR_FORMAT)   # 24 bytes: flag, label, id, id2
_LENGTH_MASK = (1 << 29) - 1


def _read_exact(f, n, rec_path, offset):
    data = f.read(n)
    if len(data) != n:
        raise UsageError(f'{rec_path}: cut short at byte {offset + len(data)} (a record needs {n} more bytes '
                         f'there); the file is truncated or not a RecordIO file')
    return data


def _read_record(f, rec_path, offset):
    """The record starting at ``offset`` (its parts joined) and the offset after it, or ``(None, offset)`` at EOF."""
    parts = []
    while True:
        head = f.read(8)
        if not head and not parts:
            return None, offset
        if len(head) != 8:
            raise UsageError(f'{rec_path}: cut short at byte {offset + len(head)} (inside a record header); '
                             'the file is truncated')
        magic, word = struct.unpack('<II', head)
        if magic != RECORD_MAGIC:
            raise UsageError(f'{rec_path}: no RecordIO record at byte {offset} (found 0x{magic:08x}, not the '
                             f'magic 0x{RECORD_MAGIC:08x}); not a RecordIO file, or damaged')
        length, cflag = word & _LENGTH_MASK, word >> 29
        if (cflag in (0, 1)) != (not parts):
            raise UsageError(f'{rec_path}: broken record continuation at byte {offset}; the file is damaged')
        parts.append(_read_exact(f, length, rec_path, offset + 8))
        pad = -length % 4
        if pad:
            _read_exact(f, pad, rec_path, offset + 8 + length)
        offset += 8 + length + pad
        if cflag in (0, 3):
            return struct.pack('<I', RECORD_MAGIC).join(parts), offset


def unpack_record(record, rec_path='<record>'):
    """``(flag, label, id, payload)`` of an image record, as ``mx.recordio.unpack`` reads it.

    ``label`` is a float for ``flag == 0``, else the ``flag`` float32 values that follow the header.
    """
    if len(record) < _IR_SIZE:
        raise UsageError(f'{rec_path}: record shorter than an image record header; not an image .rec')
    flag, label, record_id, _ = struct.unpack(IR_FORMAT, record[:_IR_SIZE])
    payload = record[_IR_SIZE:]
    if flag > 0:
        if len(payload) < 4 * flag:
            raise UsageError(f'{rec_path}: record {record_id} announces {flag} labels but is shorter')
        label = np.frombuffer(payload, np.float32, flag)
        payload = payload[4 * flag:]
    return flag, label, record_id, payload


def iter_records(rec_path, idx_path=None, with_meta=False):
    """Yield ``(label, record_id, encoded_image_bytes)`` for every image record, in file order.

    Records are read sequentially in MXNet's framing (dmlc-core: magic, ``cflag << 29 | length``, data,
    padding), without MXNet: a damaged file is one :class:`UsageError` naming the byte, never a C++ error.

    Parameters
    ----------
    rec_path : str
        A ``.rec`` written by us, by ``im2rec`` or by insightface.
    idx_path : str, optional
        Unused for reading (records are read sequentially, which needs no index); accepted so callers
        can pass the pair they have. :func:`check_record_index` checks it.
    with_meta : bool
        Also yield records without an image payload (insightface header/identity records) as
        ``(label, id, b'')``.

    Yields
    ------
    label : int or numpy.ndarray
        Class index (an int when the header holds one integral number), else the float32 label array.
    """
    rec_path = os.fspath(rec_path)
    if not os.path.isfile(rec_path):
        raise UsageError(f'record file not found: {rec_path}')
    with open(rec_path, 'rb') as f:
        offset = 0
        while True:
            record, offset = _read_record(f, rec_path, offset)
            if record is None:
                return
            _, label, record_id, payload = unpack_record(record, rec_path)
            if not payload and not with_meta:
                continue
            yield _label(label), record_id, payload


def _label(label):
    if isinstance(label, np.ndarray):
        if label.size == 1 and float(label[0]).is_integer():
            return int(label[0])
        return label
    return int(label) if float(label).is_integer() else np.asarray([label], np.float32)


# ------------------------------------------------------------------------------------------ the index
@dataclass
class RecordIndex:
    """A ``.idx`` checked against its ``.rec`` (:func:`check_record_index`).

    ``keys`` and ``offsets`` (int64, in ``.idx`` line order), ``lengths`` (bytes of each record, all its
    parts), ``rec_bytes`` (size of the ``.rec``).
    """
    rec_path: str
    idx_path: str
    keys: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    rec_bytes: int

    @property
    def count(self):
        """Index entries = records in the ``.rec`` (insightface header/identity records included)."""
        return len(self.keys)


def index_path(rec_path):
    """``data/casia.rec`` -> ``data/casia.idx``."""
    rec_path = os.fspath(rec_path)
    return (rec_path[:-4] if rec_path.endswith('.rec') else rec_path) + '.idx'


def read_index(idx_path):
    """``(keys, offsets)`` int64 arrays of a ``key<TAB>offset`` index.

    Raises
    ------
    UsageError
        Missing, unreadable, empty, or a line that is not two integers (its number is named).
    """
    try:
        with open(idx_path, 'rb') as f:
            raw = f.read()
    except FileNotFoundError:
        raise UsageError(f'{idx_path} is missing: pack with data_tools/pack_rec.py or im2rec to get it') from None
    except OSError as err:
        raise UsageError(f'cannot read {idx_path}: {err.strerror or err}') from None
    lines = raw.split(b'\n')
    fields = [line.split() for line in lines]
    if all(len(f) == 2 for f in fields if f):
        try:
            values = np.array([f for f in fields if f], dtype=np.int64).reshape(-1, 2)
        except (ValueError, OverflowError):
            values = None
    else:
        values = None
    if values is None:
        for number, f in enumerate(fields, 1):
            if f and (len(f) != 2 or not all(v.isdigit() for v in f)):
                raise UsageError(f'{idx_path}, line {number}: expected "key<TAB>offset", got '
                                 f'{lines[number - 1][:40]!r}; not a RecordIO index (or damaged)')
        raise UsageError(f'{idx_path}: not a RecordIO index (values out of range)')
    if not len(values):
        raise UsageError(f'{idx_path} is empty: its .rec has no index entries (repack)')
    return values[:, 0].copy(), values[:, 1].copy()


def _part_lengths(data, offset):
    """Bytes of the record at ``offset`` (parts joined) and the offset after it; ``None`` when it leaves the file."""
    total, first = 0, True
    size = len(data)
    while True:
        if offset + 8 > size:
            return None
        magic, word = data[offset:offset + 8].view('<u4')
        length, cflag = int(word & _LENGTH_MASK), int(word >> 29)
        if magic != RECORD_MAGIC or (cflag in (0, 1)) != first or offset + 8 + length > size:
            return None
        total += length + (0 if first else 4)
        offset += 8 + length + (-length % 4)
        first = False
        if cflag in (0, 3):
            return total, offset


def check_record_index(rec_path, idx_path=None, chunk=1 << 16):
    """Check that a ``.idx`` describes exactly its ``.rec``, before MXNet opens either.

    Every offset must lie inside the ``.rec``, on a 4-byte boundary, at a record start (the RecordIO magic
    ``0xced7230a``, a whole or first part) whose length stays inside the file; and the records so listed
    must tile the file -- first at byte 0, each ending where the next begins, the last at the end -- so the
    count matches and no record is listed twice or left out. A stale ``.idx`` (from an earlier packing), a
    truncated or a garbage one, or a truncated ``.rec``, is one :class:`UsageError` naming the line.
    ``ImageRecordIter`` would abort the process in C++ (SIGABRT) on any of them.

    Parameters
    ----------
    rec_path : str
    idx_path : str, optional
        Default: the ``.idx`` beside ``rec_path``.
    chunk : int
        Headers read per vectorised step (bounds memory for millions of records).

    Returns
    -------
    RecordIndex

    Raises
    ------
    UsageError
    """
    rec_path = os.fspath(rec_path)
    idx_path = index_path(rec_path) if idx_path is None else os.fspath(idx_path)
    if not os.path.isfile(rec_path):
        raise UsageError(f'{rec_path} does not exist' if not os.path.exists(rec_path)
                         else f'{rec_path} is not a file')
    keys, offsets = read_index(idx_path)
    size = os.path.getsize(rec_path)
    where = f'{idx_path} does not belong to {rec_path}'
    fix = 'repack, or restore the .idx written with this .rec'
    if size == 0:
        raise UsageError(f'{rec_path} is empty, but {idx_path} lists {len(keys)} records; {fix}')
    bad = np.flatnonzero((offsets < 0) | (offsets + 8 > size) | (offsets % 4 != 0))
    if bad.size:
        i = int(bad[0])
        raise UsageError(f'{where}: line {i + 1} points at byte {offsets[i]} of a {size}-byte file '
                         f'({bad.size} such line(s)); {fix}')
    data = np.memmap(rec_path, dtype=np.uint8, mode='r')
    lengths = np.empty(len(offsets), np.int64)
    ends = np.empty(len(offsets), np.int64)
    step = np.arange(8)
    for start in range(0, len(offsets), chunk):
        part = offsets[start:start + chunk]
        words = np.ascontiguousarray(data[part[:, None] + step]).view('<u4')
        length, cflag = (words[:, 1] & _LENGTH_MASK).astype(np.int64), words[:, 1] >> 29
        wrong = (words[:, 0] != RECORD_MAGIC) | (cflag > 1) | (part + 8 + length > size)
        if wrong.any():
            i = start + int(np.flatnonzero(wrong)[0])
            raise UsageError(f'{where}: line {i + 1} (key {keys[i]}) points at byte {offsets[i]}, which is not '
                             f'the start of a record in the .rec ({int(wrong.sum())} of the {start + len(part)} '
                             f'entries checked so far are wrong); {fix}')
        lengths[start:start + len(part)] = length
        ends[start:start + len(part)] = part + 8 + length + (-length % 4)
        for j in np.flatnonzero(cflag == 1):  # a payload holding the magic: walk its parts
            walked = _part_lengths(data, int(part[j]))
            if walked is None:
                i = start + int(j)
                raise UsageError(f'{rec_path}: the record at byte {offsets[i]} (line {i + 1} of {idx_path}) '
                                 f'is cut short; the .rec is truncated or damaged; {fix}')
            lengths[start + j], ends[start + j] = walked
    order = np.argsort(offsets, kind='stable')
    starts, stops = offsets[order], ends[order]
    if starts[0] != 0:
        raise UsageError(f'{where}: the first record, at byte 0, is not listed (the first listed starts at '
                         f'byte {starts[0]}); {fix}')
    repeated = np.flatnonzero(starts[1:] == starts[:-1])
    if repeated.size:
        i = int(order[repeated[0] + 1])
        raise UsageError(f'{where}: line {i + 1} lists byte {offsets[i]} again; {fix}')
    gap = np.flatnonzero(stops[:-1] != starts[1:])
    if gap.size:
        g = int(gap[0])
        raise UsageError(f'{where}: the record at byte {starts[g]} ends at byte {stops[g]} but the next one '
                         f'listed starts at byte {starts[g + 1]}; the .idx lists {len(keys)} records, not '
                         f'the ones in the .rec; {fix}')
    if stops[-1] != size:
        more = 'holds records after the last one listed' if stops[-1] < size else 'ends inside its last record'
        raise UsageError(f'{where}: the .rec ({size} bytes) {more} (the .idx covers {stops[-1]} bytes, '
                         f'{len(keys)} records); {fix}')
    return RecordIndex(rec_path, idx_path, keys, offsets, lengths, size)


# ------------------------------------------------------------------------------------------ labels, geometry
@dataclass
class RecordScan:
    """What :func:`scan_records` read from a ``.rec`` through its checked ``.idx``, without decoding all images.

    ``labels``: int64 class of every image record (the first label when a record holds several), in
    ``.idx`` order; ``keys``: their index keys; ``sample_shapes``: ``(height, width, channels)`` of the
    decoded sample (channels 1 or 3; alpha not counted); ``meta_records``: records without an image
    (insightface header/identity records); ``index``: the :class:`RecordIndex`.
    """
    path: str
    labels: np.ndarray
    keys: np.ndarray
    sample_shapes: list
    meta_records: int = 0
    index: RecordIndex = None

    @property
    def count(self):
        """Image records."""
        return len(self.labels)

    @property
    def channels(self):
        """Channels of the decoded sample: ``[1]``, ``[3]`` (or both, for a mixed file)."""
        return sorted({c for _, _, c in self.sample_shapes})

    @property
    def min_side(self):
        """Shortest image side in the sample (pixels)."""
        return min(min(h, w) for h, w, _ in self.sample_shapes)

    @property
    def sizes(self):
        """``(height, width)`` of the sample, sorted and distinct."""
        return sorted({(h, w) for h, w, _ in self.sample_shapes})

    @property
    def label_range(self):
        """``(lowest, highest)`` label."""
        return int(self.labels.min()), int(self.labels.max())


def _record_at(data, offset, want=None):
    """Bytes of the record at ``offset`` (parts joined; the index was checked), or its first ``want`` bytes."""
    out = []
    while True:
        word = int(data[offset + 4:offset + 8].view('<u4')[0])
        length, cflag = word & _LENGTH_MASK, word >> 29
        out.append(bytes(data[offset + 8:offset + 8 + length]))
        if cflag in (0, 3) or (want is not None and sum(map(len, out)) >= want):
            return struct.pack('<I', RECORD_MAGIC).join(out)
        offset += 8 + length + (-length % 4)


def _decoded_shape(rec_path, record, key):
    _, _, _, payload = unpack_record(record, rec_path)
    image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UsageError(f'{rec_path}: record {key} holds no decodable image')
    return image.shape[0], image.shape[1], 1 if image.ndim == 2 or image.shape[2] < 3 else 3


def scan_records(rec_path, idx_path=None, sample=64, check_companions=True):
    """Labels of every record and the image geometry of a sample, read cheaply after checking the index.

    The ``.idx`` is checked first (:func:`check_record_index`); then only each record's 24-byte header is
    read (``IfQQ``: flag, label, id, id2 -- the label array's first value when ``flag > 0``), through a
    memory map; ``sample`` image records spread over the file (the first and last included) are decoded
    for their size and channels. With ``check_companions``, ``PREFIX.json`` and the ``.lst`` beside the
    ``.rec`` are compared with what it holds (:func:`check_record_companions`).

    This is what a trainer needs before its first step: labels against ``num_classes``
    (``scan.label_range``), channels against the network (``scan.channels``), record size against the
    input size (``scan.min_side``).

    Returns
    -------
    RecordScan

    Raises
    ------
    UsageError
        A bad ``.idx`` or ``.rec``; a label that is not a class number (negative, fractional, NaN);
        no image records; an undecodable sampled record; companions describing another packing.
    """
    index = check_record_index(rec_path, idx_path)
    rec_path = index.rec_path
    data = np.memmap(rec_path, dtype=np.uint8, mode='r')
    count = index.count
    short = np.flatnonzero(index.lengths < _IR_SIZE)
    if short.size:
        raise UsageError(f'{rec_path}: record {index.keys[short[0]]} is shorter than an image record header; '
                         'not an image .rec')
    flags = np.empty(count, np.int64)
    labels = np.empty(count, np.float64)
    first_part = np.empty(count, np.int64)
    head = np.arange(8 + _IR_SIZE)             # framing (magic, cflag|length) + IfQQ header
    chunk = 1 << 16
    for start in range(0, count, chunk):
        part = index.offsets[start:start + chunk]
        words = np.ascontiguousarray(data[part[:, None] + head])
        first_part[start:start + len(part)] = words[:, 4:8].copy().view('<u4')[:, 0] & _LENGTH_MASK
        flags[start:start + len(part)] = words[:, 8:12].copy().view('<u4')[:, 0]
        labels[start:start + len(part)] = words[:, 12:16].copy().view('<f4')[:, 0]
    split_header = first_part < _IR_SIZE  # the magic inside the header itself: read the joined record
    for i in np.flatnonzero(split_header):
        record = _record_at(data, int(index.offsets[i]), _IR_SIZE)
        flags[i], labels[i] = struct.unpack('<If', record[:8])
    arrays = flags > 0                        # the class is the first value of the label array after the header
    direct = arrays & (first_part >= _IR_SIZE + 4)
    if direct.any():
        at = index.offsets[direct] + 8 + _IR_SIZE
        labels[direct] = np.ascontiguousarray(data[at[:, None] + np.arange(4)]).view('<f4')[:, 0]
    for i in np.flatnonzero(arrays & ~direct):
        record = _record_at(data, int(index.offsets[i]), _IR_SIZE + 4)
        if len(record) < _IR_SIZE + 4:
            raise UsageError(f'{rec_path}: record {index.keys[i]} announces labels it does not hold')
        labels[i] = np.frombuffer(record[_IR_SIZE:_IR_SIZE + 4], '<f4')[0]
    payload = index.lengths - _IR_SIZE - 4 * flags
    images = payload > 0
    labels, keys, offsets = labels[images], index.keys[images], index.offsets[images]
    if not labels.size:
        raise UsageError(f'{rec_path} holds no image records')
    bad = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)) | (labels < 0))
    if bad.size:
        raise UsageError(f'{rec_path}: record {keys[bad[0]]} has label {labels[bad[0]]:g}, not a class number '
                         f'0, 1, 2, ... ({bad.size} such record(s))')
    picks = sorted(set(np.linspace(0, len(labels) - 1, min(sample, len(labels))).round().astype(int).tolist()))
    shapes = [_decoded_shape(rec_path, _record_at(data, int(offsets[i])), keys[i]) for i in picks]
    scan = RecordScan(rec_path, labels.astype(np.int64), keys, shapes, int((~images).sum()), index)
    if check_companions:
        check_record_companions(scan)
    return scan


def check_record_companions(scan):
    """Compare ``PREFIX.json`` and the ``.lst`` beside a ``.rec`` with what it holds (a :class:`RecordScan`).

    * ``PREFIX.json`` (the packing summary, :mod:`data_tools.dataset_info`): the split's image count, the
      record ``size`` (every sampled image ``size`` x ``size``) and ``color`` (channels) must match.
    * ``PREFIX.lst`` (im2rec's ``index<TAB>label<TAB>path``): one line per image record, each index a
      record key with the same label. A ``.lst`` in another layout (insightface's) is not compared.

    Raises
    ------
    UsageError
        Naming the companion, what it says and what the ``.rec`` holds: it is from another packing.
    """
    rec_path = scan.path
    info = records_info(rec_path)
    json_path = info_path(dataset_prefix(rec_path))
    fix = 'it is from another packing: repack, or restore the files written together'
    if info:
        split = next((name for name, entry in (info.get('splits') or {}).items()
                      if os.path.basename(str(entry.get('rec', ''))) == os.path.basename(rec_path)), None)
        images = (info.get('splits') or {}).get(split, {}).get('images') if split else None
        if images is not None and int(images) != scan.count:
            raise UsageError(f'{json_path} says {os.path.basename(rec_path)} holds {images} images, but it holds '
                             f'{scan.count}: {fix}')
        record = info.get('record') or {}
        shown = ', '.join(f'{w}x{h}' for h, w in scan.sizes[:3])
        if 'size' in record and any((h, w) != (record['size'],) * 2 for h, w in scan.sizes):
            raise UsageError(f'{json_path} describes {record["size"]}x{record["size"]} records but {rec_path} '
                             f'holds {shown} images: {fix}')
        if 'color' in record and scan.channels != [1 if record['color'] == 'gray' else 3]:
            raise UsageError(f'{json_path} describes {record["color"]} records but {rec_path} holds '
                             f'{"/".join(map(str, scan.channels))}-channel images: {fix}')
    lst_path = os.fspath(rec_path)[:-4] + '.lst' if rec_path.endswith('.rec') else None
    if lst_path and os.path.isfile(lst_path):
        listed = _read_im2rec_lst(lst_path)
        if listed is None:
            return
        if len(listed) != scan.count:
            raise UsageError(f'{lst_path} lists {len(listed)} images but {rec_path} holds {scan.count}: {fix}')
        by_key = dict(zip(scan.keys.tolist(), scan.labels.tolist()))
        for key, (label, n) in listed.items():
            if by_key.get(key) != label:
                got = by_key.get(key)
                raise UsageError(f'{lst_path}, line {n}: index {key} has label {label:g}, but '
                                 + (f'record {key} of {rec_path} has label {got}' if got is not None
                                    else f'{rec_path} has no record {key}') + f': {fix}')


def _read_im2rec_lst(lst_path):
    """``{index: (label, line)}`` of an im2rec ``.lst``, or ``None`` when the file is in another layout."""
    listed = {}
    for n, line in read_lines(lst_path, '.lst file'):
        if not line.strip():
            continue
        fields = line.split('\t')
        try:
            index, label = int(fields[0]), float(fields[1])
        except (ValueError, IndexError):
            return None
        if len(fields) < 3:
            return None
        listed[index] = (label, n)
    return listed


def class_of(label):
    """Class index of a label from :func:`iter_records` (first element of a label array)."""
    return label if isinstance(label, int) else int(label.flat[0])


def summarize_records(rec_path, idx_path=None, decode=64):
    """Counts, per-class histogram and image geometry of a ``.rec`` (any of the formats read above).

    Parameters
    ----------
    decode : int
        Image records decoded to report image size and channels: ``decode`` of them (all when the file holds
        fewer) evenly spread over the file, the first included; others are only counted. Read in one pass
        keeping at most ``2 * decode`` payloads (every ``stride``-th image, the stride doubling as needed).

    Returns
    -------
    dict
        ``images``, ``meta_records`` (skipped header/identity records), ``classes``, ``per_class``
        statistics, ``sizes``/``channels`` seen in the decoded sample, ``bytes_per_image`` and, with
        ``idx_path``, ``idx_entries``.
    """
    index = check_record_index(rec_path, idx_path) if idx_path else None
    per_class = collections.Counter()
    check_number(decode, 'decode', minimum=1, integer=True)
    meta = images = payload_bytes = 0
    kept, stride = [], 1  # payloads of images 0, stride, 2 * stride, ... (evenly spread whatever the count)
    for label, _, payload in iter_records(rec_path, with_meta=True):
        if not payload:
            meta += 1
            continue
        per_class[class_of(label)] += 1
        if images % stride == 0:
            kept.append(payload)
            if len(kept) > 2 * decode:
                kept, stride = kept[::2], stride * 2
        images += 1
        payload_bytes += len(payload)
    if not images and not meta:
        raise UsageError(f'{rec_path} holds no records (an empty file)')
    picks = np.unique(np.linspace(0, len(kept) - 1, min(decode, len(kept))).round().astype(int)) if kept else []
    samples = [kept[k] for k in picks]
    shapes, undecodable = collections.Counter(), 0
    for payload in samples:
        try:
            img = decode_image(payload, 'bgr' if _is_colour(payload) else 'gray')
            shapes[(img.shape[1], img.shape[0], 1 if img.ndim == 2 else img.shape[2])] += 1
        except ImageError:
            undecodable += 1
    counts = np.array(sorted(per_class.values()) or [0])
    summary = {
        'rec': rec_path, 'images': images, 'meta_records': meta, 'classes': len(per_class),
        'label_range': [min(per_class), max(per_class)] if per_class else None,
        'per_class': {'min': int(counts.min()), 'median': float(np.median(counts)), 'mean': float(counts.mean()),
                      'max': int(counts.max()),
                      'histogram': _histogram(counts) if per_class else {}},
        'decoded_sample': len(samples), 'undecodable_in_sample': undecodable,
        'sizes': {f'{w}x{h}': n for (w, h, _), n in shapes.items()},
        'channels': sorted({c for (_, _, c) in shapes}),
        'bytes_per_image': round(payload_bytes / images, 1) if images else 0,
    }
    if index is not None:
        summary['idx_entries'] = index.count
    return summary


def _is_colour(payload):
    """True when a JPEG/PNG payload stores colour (so it is decoded as such, not forced to gray)."""
    import cv2
    img = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED)
    return img is not None and img.ndim == 3 and img.shape[2] >= 3


def _histogram(counts):
    """Number of classes by images-per-class bucket (1, 2, 3-5, 6-10, 11-20, 21-50, 51-100, >100)."""
    edges = [(1, 1), (2, 2), (3, 5), (6, 10), (11, 20), (21, 50), (51, 100), (101, None)]
    out = {}
    for lo, hi in edges:
        n = int(((counts >= lo) & (counts <= (hi if hi else counts.max()))).sum())
        if n:
            out[f'{lo}' if lo == hi else (f'>{lo - 1}' if hi is None else f'{lo}-{hi}')] = n
    return out


def check_sheet_output(rec_path, out_png):
    """Check, before any work, the contact sheet ``out_png`` of ``rec_path``: a picture format OpenCV writes,
    not the ``.rec`` or one of its companions (:func:`common.fileio.check_outputs`; its folder is created)."""
    rec_path = os.fspath(rec_path)
    stem = rec_path[:-4] if rec_path.endswith('.rec') else rec_path
    check_outputs({'out_png': out_png}, inputs={'rec_path': [rec_path, index_path(rec_path), stem + '.lst',
                                                             info_path(stem)]},
                  pictures={'out_png': 'opencv'})
    return out_png


SHEET_MAX = 1024  # tiles on a contact sheet: 128 rows of 8 at 144 px is an 18,432 px tall PNG already


def check_sheet_count(count):
    """Return ``count`` when it is a whole number of tiles in 1..``SHEET_MAX``, else raise
    :class:`~common.errors.ParameterError` naming ``count``."""
    return check_number(count, 'count', minimum=1, maximum=SHEET_MAX, integer=True,
                        qualifier=' (records on the contact sheet)')


def contact_sheet(rec_path, out_png, count=16, columns=8):
    """Save a grid of ``count`` records spread over the file, each captioned with its class; returns the path.

    ``count`` is 1..``SHEET_MAX`` (:func:`check_sheet_count`); a file with fewer records shows them all.
    ``out_png`` is checked first (:func:`check_sheet_output`) and written atomically.
    """
    check_sheet_count(count)
    check_sheet_output(rec_path, out_png)
    total = sum(1 for _ in iter_records(rec_path))
    if total == 0:
        raise UsageError(f'{rec_path} has no image records')
    wanted = set(np.linspace(0, total - 1, min(count, total)).round().astype(int).tolist())
    tiles = []
    for k, (label, _, payload) in enumerate(iter_records(rec_path)):
        if k in wanted:
            try:
                img = decode_image(payload, 'bgr')
            except ImageError:
                img = np.zeros((144, 144, 3), np.uint8)
            img = cv2.resize(img, (144, 144))
            cv2.putText(img, str(class_of(label)), (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 0), 1)
            tiles.append(img)
    columns = min(columns, len(tiles))
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)]
    ok, encoded = cv2.imencode(os.path.splitext(out_png)[1], np.vstack(rows))
    if not ok:
        raise UsageError(f'cannot encode the contact sheet as {out_png}')
    with atomic_write(out_png) as f:
        f.write(encoded.tobytes())
    return out_png


def format_summary(s):
    """Human-readable lines for :func:`summarize_records`."""
    pc = s['per_class']
    lines = [f"{s['rec']}: {s['images']} images, {s['classes']} classes"
             + (f" (labels {s['label_range'][0]}..{s['label_range'][1]})" if s['label_range'] else '')
             + (f", {s['meta_records']} header/identity records skipped" if s['meta_records'] else ''),
             f"images per class: min {pc['min']}, median {pc['median']:g}, mean {pc['mean']:.1f}, max {pc['max']}",
             'classes by images per class: ' + ', '.join(f'{k}: {v}' for k, v in pc['histogram'].items()),
             f"image size in {s['decoded_sample']} decoded records: "
             + ', '.join(f'{k} ({n})' for k, n in s['sizes'].items())
             + f"; mode {'/'.join('gray' if c == 1 else f'{c}-channel colour' for c in s['channels'])}"
             + f"; {s['bytes_per_image']:.0f} bytes/image"
             + (f"; {s['undecodable_in_sample']} undecodable" if s['undecodable_in_sample'] else '')]
    if 'idx_entries' in s:
        ok = s['idx_entries'] == s['images'] + s['meta_records']
        lines.append(f"index: {s['idx_entries']} entries" + ('' if ok else ' -- does NOT match the records'))
    return '\n'.join(lines)
