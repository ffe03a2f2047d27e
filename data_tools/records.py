"""RecordIO files: read ours, im2rec's and insightface's; write MXNet's framing without importing MXNet.

Reading goes through ``mx.recordio``. insightface ``train.rec`` files begin with a header record
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

import cv2
import numpy as np

from common.errors import UsageError
from common.images import ImageError, decode_image

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
        self.rec = open(rec_path, 'wb')
        self.idx = open(idx_path, 'w', encoding='ascii', newline='\n')
        self.pos = 0

    def write_idx(self, key, buf):
        if len(buf) >= 1 << 29:
            raise ValueError('a RecordIO record must be smaller than 512 MiB')
        cuts = list(_aligned(buf, _MAGIC))
        starts, ends = [0] + [at + 4 for at in cuts], cuts + [len(buf)]
        flags = [0] if not cuts else [1] + [2] * (len(cuts) - 1) + [3]
        data = b''.join(_MAGIC + struct.pack('<I', flag << 29 | (end - start)) + buf[start:end]
                        for flag, start, end in zip(flags, starts, ends)) + bytes(-len(buf) % 4)
        self.idx.write(f'{key}\t{self.pos}\n')
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
def _open_reader(rec_path):
    import mxnet as mx
    if not os.path.isfile(rec_path):
        raise UsageError(f'record file not found: {rec_path}')
    return mx, mx.recordio.MXRecordIO(rec_path, 'r')


def iter_records(rec_path, idx_path=None, with_meta=False):
    """Yield ``(label, record_id, encoded_image_bytes)`` for every image record, in file order.

    Parameters
    ----------
    rec_path : str
        A ``.rec`` written by us, by ``im2rec`` or by insightface.
    idx_path : str, optional
        Unused for reading (records are read sequentially, which needs no index); accepted so callers
        can pass the pair they have. :func:`summarize_records` checks it.
    with_meta : bool
        Also yield records without an image payload (insightface header/identity records) as
        ``(label, id, b'')``.

    Yields
    ------
    label : int or numpy.ndarray
        Class index (an int when the header holds one integral number), else the float32 label array.
    """
    mx, reader = _open_reader(rec_path)
    try:
        while True:
            try:
                item = reader.read()
            except mx.base.MXNetError as err:
                raise UsageError(f'{rec_path}: not a readable RecordIO file ({str(err).splitlines()[0]})') from None
            if item is None:
                return
            if len(item) < struct.calcsize(IR_FORMAT):
                raise UsageError(f'{rec_path}: record shorter than an image record header; not an image .rec')
            header, payload = mx.recordio.unpack(item)
            if not payload and not with_meta:
                continue
            yield _label(header), header.id, payload
    finally:
        reader.close()


def _label(header):
    label = header.label
    if isinstance(label, np.ndarray):
        if label.size == 1 and float(label[0]).is_integer():
            return int(label[0])
        return label
    return int(label) if float(label).is_integer() else np.asarray([label], np.float32)


def class_of(label):
    """Class index of a label from :func:`iter_records` (first element of a label array)."""
    return label if isinstance(label, int) else int(label.flat[0])


def summarize_records(rec_path, idx_path=None, decode=16):
    """Counts, per-class histogram and image geometry of a ``.rec`` (any of the formats read above).

    Parameters
    ----------
    decode : int
        Records (spread over the file) decoded to report image size and channels; others are only counted.

    Returns
    -------
    dict
        ``images``, ``meta_records`` (skipped header/identity records), ``classes``, ``per_class``
        statistics, ``sizes``/``channels`` seen in the decoded sample, ``bytes_per_image`` and, with
        ``idx_path``, ``idx_entries``.
    """
    per_class = collections.Counter()
    meta = images = payload_bytes = 0
    samples = []
    for label, _, payload in iter_records(rec_path, with_meta=True):
        if not payload:
            meta += 1
            continue
        per_class[class_of(label)] += 1
        images += 1
        payload_bytes += len(payload)
        if len(samples) < decode or images % 97 == 0 and len(samples) < 4 * decode:
            samples.append(payload)
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
    if idx_path:
        with open(idx_path, encoding='ascii') as f:
            summary['idx_entries'] = sum(1 for line in f if line.strip())
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


def contact_sheet(rec_path, out_png, count=16, columns=8):
    """Save a grid of ``count`` records spread over the file, each captioned with its class; returns the path."""
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
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    if not cv2.imwrite(out_png, np.vstack(rows)):
        raise UsageError(f'cannot write {out_png} (use a .png name in a writable folder)')
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
