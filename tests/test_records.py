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


# ------------------------------------------------------------------ companions checked against the .rec

def _packed(tmp_path, size=40, name='d'):
    root = tmp_path / 'faces'
    if not root.exists():
        make_tree(root, bad=False)
    prefix = str(tmp_path / name)
    pack_records(str(root), prefix, size=size, workers=0, progress=False)
    return prefix


def test_matching_index_is_accepted_and_describes_every_record(tmp_path):
    from data_tools.records import check_record_index
    prefix = _packed(tmp_path)
    index = check_record_index(prefix + '.rec')
    assert index.count == 14 and index.keys.tolist() == list(range(14))
    assert index.rec_bytes == os.path.getsize(prefix + '.rec') and index.offsets[0] == 0
    records = list(iter_records(prefix + '.rec'))
    assert index.lengths.tolist() == [24 + len(buf) for _, _, buf in records]


def test_index_of_another_packing_is_refused(tmp_path):
    """The stale-idx case: a repack at another size, the old .idx left beside the new .rec."""
    from data_tools.records import check_record_index
    old = _packed(tmp_path, size=40, name='old')
    new = _packed(tmp_path, size=48, name='new')
    with pytest.raises(UsageError, match=r'old.idx does not belong to .*new.rec: line 2 \(key 1\) points at byte'):
        check_record_index(new + '.rec', old + '.idx')


@pytest.mark.parametrize('damage, message', [
    (lambda idx: b''.join(idx.splitlines(True)[:7]), r'holds records after the last one listed'),  # lines lost
    (lambda idx: idx[:len(idx) // 2], r'does not belong'),                                     # cut mid-line
    (lambda idx: b'\x89garbage\x00\xff\n', r'line 1: expected "key<TAB>offset"'),             # garbage
    (lambda idx: b'', r'is empty'),
    (lambda idx: idx + idx.splitlines(True)[-1], r'lists byte \d+ again'),                    # a line twice
    (lambda idx: idx.replace(b'\t0\n', b'\t2\n', 1), r'line 1 points at byte 2'),            # unaligned
    (lambda idx: idx + b'99\t99999999\n', r'line 15 points at byte 99999999 of a \d+-byte file'),
])
def test_damaged_index_is_one_error(tmp_path, damage, message):
    from data_tools.records import check_record_index
    prefix = _packed(tmp_path)
    idx = open(prefix + '.idx', 'rb').read()
    open(prefix + '.idx', 'wb').write(damage(idx))
    with pytest.raises(UsageError, match=message):
        check_record_index(prefix + '.rec')


def test_truncated_rec_and_missing_idx(tmp_path):
    from data_tools.records import check_record_index
    prefix = _packed(tmp_path)
    data = open(prefix + '.rec', 'rb').read()
    open(prefix + '.rec', 'wb').write(data[:len(data) - 100])
    with pytest.raises(UsageError, match='does not belong|ends inside its last record'):
        check_record_index(prefix + '.rec')
    with pytest.raises(UsageError, match='cut short'):
        list(iter_records(prefix + '.rec'))                     # the sequential reader says where
    os.remove(prefix + '.idx')
    with pytest.raises(UsageError, match=r'd.idx is missing'):
        check_record_index(prefix + '.rec')


def test_scan_reads_labels_size_and_channels_of_an_im2rec_style_file(tmp_path):
    """The label-1based case: labels 1..4 written with MXNet's own writer, no PREFIX.json."""
    from data_tools.records import scan_records
    writer = mx.recordio.MXIndexedRecordIO(str(tmp_path / 'one.idx'), str(tmp_path / 'one.rec'), 'w')
    labels = [1, 2, 3, 4, 4, 1]
    for key, label in enumerate(labels):
        img = np.full((40, 40), 30 * key, np.uint8)
        writer.write_idx(key, mx.recordio.pack_img(mx.recordio.IRHeader(0, float(label), key, 0), img, quality=90))
    writer.close()
    scan = scan_records(str(tmp_path / 'one.rec'))
    assert scan.labels.tolist() == labels and scan.label_range == (1, 4) and scan.count == 6
    assert scan.sizes == [(40, 40)] and scan.channels == [1] and scan.min_side == 40 and scan.meta_records == 0
    assert scan.keys.tolist() == list(range(6))


def test_scan_of_an_insightface_file_skips_meta_records(tmp_path):
    from data_tools.records import scan_records
    idx, rec = str(tmp_path / 'train.idx'), str(tmp_path / 'train.rec')
    writer = mx.recordio.MXIndexedRecordIO(idx, rec, 'w')
    writer.write_idx(0, mx.recordio.pack(mx.recordio.IRHeader(2, [4, 6], 0, 0), b''))
    for i, lab in enumerate([0, 1, 1], 1):
        img = np.full((112, 96, 3), 40 * i, np.uint8)
        writer.write_idx(i, mx.recordio.pack_img(mx.recordio.IRHeader(2, [float(lab), 0.5], i, 0), img, quality=90))
    writer.write_idx(4, mx.recordio.pack(mx.recordio.IRHeader(2, [1, 2], 4, 0), b''))
    writer.write_idx(5, mx.recordio.pack(mx.recordio.IRHeader(2, [2, 4], 5, 0), b''))
    writer.close()
    scan = scan_records(rec)
    assert scan.labels.tolist() == [0, 1, 1] and scan.keys.tolist() == [1, 2, 3] and scan.meta_records == 3
    assert scan.sizes == [(112, 96)] and scan.channels == [3] and scan.index.count == 6


def test_scan_refuses_labels_that_are_no_class(tmp_path):
    from data_tools.records import scan_records
    writer = mx.recordio.MXIndexedRecordIO(str(tmp_path / 'r.idx'), str(tmp_path / 'r.rec'), 'w')
    for key, label in enumerate([0.0, -1.0, 2.5]):
        img = np.zeros((8, 8), np.uint8)
        writer.write_idx(key, mx.recordio.pack_img(mx.recordio.IRHeader(0, label, key, 0), img))
    writer.close()
    with pytest.raises(UsageError, match=r'record 1 has label -1, not a class number .*2 such record'):
        scan_records(str(tmp_path / 'r.rec'))


def test_packing_summary_and_lst_of_another_packing_are_refused(tmp_path):
    import shutil
    from data_tools.records import scan_records
    a, b = _packed(tmp_path, size=40, name='a'), _packed(tmp_path, size=48, name='b')
    assert scan_records(a + '.rec').count == 14                    # all companions agree
    shutil.copy(b + '.json', a + '.json')
    with pytest.raises(UsageError, match=r'a.json describes 48x48 records but .*a.rec holds 40x40 images'):
        scan_records(a + '.rec')
    os.remove(a + '.json')
    lines = open(a + '.lst', encoding='utf-8').read().splitlines()
    open(a + '.lst', 'w', encoding='utf-8').write('\n'.join(lines[:-1]) + '\n')
    with pytest.raises(UsageError, match=r'a.lst lists 13 images but .*a.rec holds 14'):
        scan_records(a + '.rec')
    index, label, path = lines[0].split('\t')
    lines[0] = f'{index}\t{float(label) + 1:f}\t{path}'
    open(a + '.lst', 'w', encoding='utf-8').write('\n'.join(lines) + '\n')
    with pytest.raises(UsageError, match=r'a.lst, line 1: index 0 has label'):
        scan_records(a + '.rec')


def test_inspect_and_training_check_refuse_a_stale_index(tmp_path):
    from training.data import check_record_file
    old, new = _packed(tmp_path, size=40, name='old'), _packed(tmp_path, size=48, name='new')
    assert check_record_file(new + ".rec").count == 14
    os.replace(old + '.idx', new + '.idx')
    with pytest.raises(UsageError, match='does not belong'):
        check_record_file(new + '.rec')
    run = subprocess.run(INSPECT + [new + '.rec'], capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.startswith('error: ') and len(run.stderr.splitlines()) == 1
    assert 'does not belong' in run.stderr and not run.stdout


def test_scan_reads_headers_split_by_the_magic_number(tmp_path):
    """A record id equal to the RecordIO magic cuts the header itself into continuation parts."""
    from data_tools.records import scan_records
    jpg = cv2.imencode('.jpg', np.full((12, 12), 90, np.uint8))[1].tobytes()
    writer = IndexedRecordWriter(str(tmp_path / 'm.idx'), str(tmp_path / 'm.rec'))
    writer.write_idx(0, pack_header(2, 0, jpg))
    writer.write_idx(1, pack_header(3, 0xced7230a, jpg))                         # header split at byte 8
    writer.write_idx(2, mx.recordio.pack(mx.recordio.IRHeader(2, [5.0, 0xced7230a], 2, 0), jpg))  # in the array
    writer.close()
    assert [(label if isinstance(label, int) else int(label[0]), rid) for label, rid, _ in
            iter_records(str(tmp_path / 'm.rec'))] == [(2, 0), (3, 0xced7230a), (5, 2)]
    scan = scan_records(str(tmp_path / 'm.rec'))
    assert scan.labels.tolist() == [2, 3, 5] and scan.sizes == [(12, 12)] and scan.meta_records == 0
