"""Reading RecordIO made by us, im2rec and insightface; our writer equals MXNet's byte for byte; inspect_rec."""
import os
import struct
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest

from common.errors import UsageError
from data_tools.packing import pack_records
from data_tools.records import IndexedRecordWriter, iter_records, pack_header, summarize_records

from helpers import make_tree

INSPECT = [sys.executable, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'data_tools', 'inspect_rec.py')]
MAGIC = struct.pack('<I', 0xced7230a)


def _payloads():
    """Plain payloads of every length mod 4, and ones holding the magic number aligned and not."""
    rng = np.random.RandomState(0)
    plain = [rng.bytes(n) for n in (0, 1, 2, 3, 4, 5, 17, 1000)]
    tricky = [MAGIC, MAGIC + b'abcd', b'abcd' + MAGIC, b'ab' + MAGIC + b'cd', MAGIC * 3 + b'xy',
              b'1234' + MAGIC + b'z' * 7, b'x' + MAGIC * 2 + b'yyy', b'abcd' + MAGIC + b'ef' + MAGIC + b'gh' + MAGIC]
    return plain + tricky


def test_writer_equals_mxnet_indexed_recordio(tmp_path):
    ours = IndexedRecordWriter(str(tmp_path / 'a.idx'), str(tmp_path / 'a.rec'))
    theirs = mx.recordio.MXIndexedRecordIO(str(tmp_path / 'b.idx'), str(tmp_path / 'b.rec'), 'w')
    for key, payload in enumerate(_payloads()):
        record = pack_header(key % 3, key, payload)
        assert record == mx.recordio.pack(mx.recordio.IRHeader(0, float(key % 3), key, 0), payload)
        ours.write_idx(key, record)
        theirs.write_idx(key, record)
    ours.close()
    theirs.close()
    assert (tmp_path / 'a.rec').read_bytes() == (tmp_path / 'b.rec').read_bytes()
    assert (tmp_path / 'a.idx').read_text() == (tmp_path / 'b.idx').read_text()
    reader = mx.recordio.MXIndexedRecordIO(str(tmp_path / 'a.idx'), str(tmp_path / 'a.rec'), 'r')
    for key, payload in reversed(list(enumerate(_payloads()))):  # random access through the index
        header, got = mx.recordio.unpack(reader.read_idx(key))
        assert got == payload and header.id == key and header.label == key % 3


def test_writer_rejects_oversized_record(tmp_path):
    writer = IndexedRecordWriter(str(tmp_path / 'a.idx'), str(tmp_path / 'a.rec'))
    with pytest.raises(ValueError, match='512 MiB'):
        writer.write_idx(0, bytes(1 << 29))
    writer.close()


def test_reads_im2rec_made_files(tmp_path):
    root = tmp_path / 'faces'
    make_tree(root, bad=False)
    prefix = str(tmp_path / 'im')
    im2rec = [sys.executable, '-m', 'mxnet.tools.im2rec']
    subprocess.run(im2rec + ['--list', '--recursive', '--', prefix, str(root)], check=True, capture_output=True)
    subprocess.run(im2rec + ['--resize', '144', '--color', '0', '--num-thread', '1', '--', prefix, str(root)],
                   check=True, capture_output=True)
    listed = {}
    for line in open(prefix + '.lst', encoding='utf-8'):
        index, label, path = line.rstrip('\n').split('\t')
        listed[int(index)] = (int(float(label)), path)
    got = list(iter_records(prefix + '.rec', prefix + '.idx'))
    assert len(got) == len(listed) == 14
    for label, rid, buf in got:
        assert label == listed[rid][0]
        img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_UNCHANGED)
        assert img.ndim == 2 and min(img.shape) == 144
    s = summarize_records(prefix + '.rec', prefix + '.idx')
    assert s['images'] == 14 and s['classes'] == 4 and s['channels'] == [1] and s['idx_entries'] == 14


def test_insightface_layout_skips_header_and_identity_records(tmp_path):
    """Record 0: header (label [first identity record, end]); then images; then one record per identity."""
    idx, rec = str(tmp_path / 'train.idx'), str(tmp_path / 'train.rec')
    writer = mx.recordio.MXIndexedRecordIO(idx, rec, 'w')
    labels = [0, 0, 1, 1, 1]
    n = len(labels)
    writer.write_idx(0, mx.recordio.pack(mx.recordio.IRHeader(2, [n + 1, n + 3], 0, 0), b''))
    for i, lab in enumerate(labels, 1):
        img = np.full((112, 112, 3), 40 * i, np.uint8)
        writer.write_idx(i, mx.recordio.pack_img(mx.recordio.IRHeader(0, float(lab), i, 0), img, quality=90))
    writer.write_idx(n + 1, mx.recordio.pack(mx.recordio.IRHeader(2, [1, 3], n + 1, 0), b''))
    writer.write_idx(n + 2, mx.recordio.pack(mx.recordio.IRHeader(2, [3, 6], n + 2, 0), b''))
    writer.close()
    got = list(iter_records(rec, idx))
    assert [label for label, _, _ in got] == labels and [rid for _, rid, _ in got] == [1, 2, 3, 4, 5]
    s = summarize_records(rec, idx)
    assert s['images'] == 5 and s['meta_records'] == 3 and s['classes'] == 2
    assert s['sizes'] == {'112x112': 5} and s['channels'] == [3] and s['idx_entries'] == 8


def test_array_labels_and_bad_files(tmp_path):
    rec = str(tmp_path / 'multi.rec')
    w = mx.recordio.MXRecordIO(rec, 'w')
    w.write(mx.recordio.pack(mx.recordio.IRHeader(0, [3.0, 0.5], 0, 0), b'payload'))
    w.close()
    (label, _, buf), = list(iter_records(rec))
    assert isinstance(label, np.ndarray) and label.tolist() == [3.0, 0.5] and buf == b'payload'
    with pytest.raises(UsageError, match='not found'):
        list(iter_records(str(tmp_path / 'missing.rec')))
    (tmp_path / 'junk.rec').write_bytes(b'\x00' * 64)
    with pytest.raises(UsageError):
        list(iter_records(str(tmp_path / 'junk.rec')))


def test_inspect_cli_summary_and_sheet(tmp_path):
    root = tmp_path / 'faces'
    make_tree(root, bad=False)
    prefix = str(tmp_path / 'p')
    pack_records(str(root), prefix, workers=0, progress=False)
    sheet = tmp_path / 'sheet.png'
    run = subprocess.run(INSPECT + [prefix + '.rec', '--sheet', str(sheet), '--count', '6'],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert '14 images, 4 classes' in run.stdout and '144x144' in run.stdout and 'gray' in run.stdout
    assert 'index: 14 entries' in run.stdout and 'NOT' not in run.stdout
    img = cv2.imread(str(sheet))
    assert img.shape == (2 * 144, 3 * 144, 3) or img.shape == (144, 6 * 144, 3)
    run = subprocess.run(INSPECT + [str(tmp_path / 'none.rec')], capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.startswith('error:')
