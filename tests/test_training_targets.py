"""Training against insightface data: --val-targets (.bin sets, best weights per set), validation that counts
every image once, and .rec files with header/identity records."""
import csv
import os
import shutil

import cv2
import mxnet as mx
import numpy as np
import pytest

from common.errors import UsageError
from data_tools.bin_sets import make_bin
from data_tools.pairs import make_pairs, write_pairs
from data_tools.records import scan_records
from helpers import PRE, synthetic_rec, train_config
from lfw_verification.bin_eval import evaluate_bin
from symbols.checkpoint import load_checkpoint, load_metadata
from training import train
from training.config import parse_config, val_targets
from training.data import ImageRecordOrder, image_record_batches
from training.errors import ParameterError, flag
from training.outputs import PrefixLock
from training.validation import evaluate_classification

IDS, PER_ID = 6, 8


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('targets')
    rec = synthetic_rec(root, IDS, PER_ID)
    images = root / 'images'
    pairs = str(root / 'pairs.txt')
    write_pairs(pairs, make_pairs(str(images), folds=2, per_fold=6, seed=0), 2, 6)
    tiny_bin = str(root / 'tiny.bin')
    make_bin(pairs, str(images), tiny_bin)
    other_bin = str(root / 'other.bin')
    shutil.copy(tiny_bin, other_bin)
    return dict(root=root, images=str(images), rec=rec, val=rec.replace('.rec', '_val.rec'), bin=tiny_bin,
                other=other_bin)


_config = train_config  # tiny runs (helpers.train_config)


class ConstantNet(mx.gluon.Block):
    """Logits ranking class 0 first, then 1, 2, ... for every image: top-1 hits exactly the label-0 images."""
    num_classes = IDS

    def forward(self, x):
        return mx.nd.broadcast_to(mx.nd.arange(IDS, 0, -1).reshape((1, -1)), (x.shape[0], IDS)), None


def test_validation_counts_every_record_once_when_the_batch_does_not_divide_them(data):
    scan = scan_records(data['val'])
    assert scan.count == 2 * IDS and scan.count % 8  # 12 records in batches of 8: a short last batch
    labels = scan.labels
    m = evaluate_classification(ConstantNet(), PRE, [mx.cpu()], data['val'], batch_size=8, threads=1)
    # MXNet fills the last batch with 4 black images labelled 0 and says pad=0: 16 scored, 6/16 "right"
    assert m['val_top1'] == pytest.approx(np.mean(labels == 0))  # 2 / 12
    assert m['val_top5'] == pytest.approx(np.mean(labels < 5))   # 10 / 12
    one_batch = evaluate_classification(ConstantNet(), PRE, [mx.cpu()], data['val'], batch_size=64, threads=1)
    assert one_batch == m


def _insightface_rec(path, images_root, header_last=False):
    """An insightface-layout .rec: header record 0 (label = [first identity record, end]), image records
    1..N (one class id each, no label array), then one record per identity (label = its image range), the
    header and identity records without image data."""
    names = sorted(os.listdir(images_root))
    files = [(c, os.path.join(images_root, name, f)) for c, name in enumerate(names)
             for f in sorted(os.listdir(os.path.join(images_root, name)))]
    n = len(files)
    writer = mx.recordio.MXIndexedRecordIO(path[:-4] + '.idx', path, 'w')
    header = mx.recordio.pack(mx.recordio.IRHeader(2, [n + 1, n + 1 + len(names)], 0, 0), b'')
    if not header_last:
        writer.write_idx(0, header)
    ranges = {}
    for key, (c, f) in enumerate(files, start=1):
        jpeg = cv2.imencode('.jpg', cv2.imread(f, cv2.IMREAD_COLOR))[1].tobytes()
        writer.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, float(c), key, 0), jpeg))
        ranges.setdefault(c, [key, key + 1])[1] = key + 1
    for c in range(len(names)):
        writer.write_idx(n + 1 + c, mx.recordio.pack(mx.recordio.IRHeader(2, ranges[c], 0, 0), b''))
    if header_last:
        writer.write_idx(0, header)
    writer.close()
    return path, n


@pytest.mark.parametrize('header_last', [False, True])
def test_insightface_rec_trains_and_validates_on_its_image_records_only(data, tmp_path, header_last):
    rec, n = _insightface_rec(str(tmp_path / 'ms1m.rec'), data['images'], header_last)
    scan = scan_records(rec)
    assert scan.count == n and scan.meta_records == 1 + IDS
    lines = []
    result = train(_config(rec, tmp_path / 'm', num_classes=IDS, num_epochs=1, data_val=rec), log=lines.append)
    assert any(f'{n} image records read by key, {1 + IDS} header/identity record(s)' in line for line in lines)
    row = result['history'][0]
    assert np.isfinite(row['train_loss']) and 0.0 <= row['val_top1'] <= row['val_top5'] <= 1.0
    # every image record once, no header/identity record: top-1 of the constant net is the label-0 share
    m = evaluate_classification(ConstantNet(), PRE, [mx.cpu()], rec, batch_size=8, threads=1)
    assert m['val_top1'] == pytest.approx(PER_ID / n)


def test_insightface_rec_trains_with_the_triplet_sampler(data, tmp_path):
    rec, n = _insightface_rec(str(tmp_path / 'ms1m.rec'), data['images'])
    result = train(_config(rec, tmp_path / 't', num_classes=IDS, num_epochs=1, loss='triplet', triplet_k=4),
                   log=lambda _: None)
    assert np.isfinite(result['history'][0]['train_loss'])


def test_image_record_order_covers_every_record_each_epoch():
    order = ImageRecordOrder(10, 4, seed=5)
    first, again, second = order.batches(0), order.batches(0), order.batches(1)
    assert [len(b) for b in first] == [4, 4, 4] and len(order) == 3
    assert set(np.concatenate(first)) == set(range(10))  # the last batch wraps round to the start
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, second))
    plain = ImageRecordOrder(10, 4, shuffle=False).batches(3)
    assert [b.tolist() for b in plain] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_image_record_batches_read_only_image_keys(data, tmp_path):
    rec, n = _insightface_rec(str(tmp_path / 'x.rec'), data['images'])
    scan = scan_records(rec)
    batches = image_record_batches(scan, PRE, 8, train=False, threads=1)
    seen = [b.label[0].asnumpy() for b in batches.epoch(0)]
    assert sum(len(s) for s in seen) == n and batches.updates == -(-n // 8)
    np.testing.assert_array_equal(np.concatenate(seen), scan.labels)


def _csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def test_val_targets_log_each_set_and_keep_the_best_weights_per_set(data, tmp_path):
    prefix = tmp_path / 'run'
    lines = []
    result = train(_config(data['rec'], prefix, num_epochs=2, save_period=2,
                           val_targets=f'{data["bin"]},{data["other"]}'), log=lines.append)
    history = result['history']
    for name in ('tiny', 'other'):
        values = [row[f'val_{name}'] for row in history]
        assert all(0.0 <= v <= 1.0 for v in values)
        best_epoch = int(np.argmax(values))  # the first epoch reaching the maximum
        meta = load_metadata(f'{prefix}-best-{name}')
        assert meta['best']['value'] == values[best_epoch] and meta['best']['epoch'] == best_epoch + 1
        assert meta['best']['key'] == f'val_{name}' and meta['metrics']['epoch'] == best_epoch
        assert not os.path.exists(f'{prefix}-best-{name}.states')
    assert [row['val_tiny'] for row in history] == [row['val_other'] for row in history]  # the same set
    rows = _csv(result['metrics_csv'])
    assert [float(r['val_tiny']) for r in rows] == pytest.approx([row['val_tiny'] for row in history])
    assert any('best val_tiny so far' in line for line in lines)
    # the kept weights give the logged accuracy when the .bin is scored from the saved checkpoint
    net, meta = load_checkpoint(f'{prefix}-best-tiny')
    assert meta['num_classes'] == IDS
    scored = evaluate_bin(f'{prefix}-best-tiny', data['bin'], progress=False)['metrics']['accuracy_mean']
    assert scored == pytest.approx(load_metadata(f'{prefix}-best-tiny')['best']['value'], abs=1e-9)


def test_resumed_run_keeps_the_best_of_the_epochs_before(data, tmp_path):
    prefix = tmp_path / 'r'
    train(_config(data['rec'], prefix, num_epochs=1, val_targets=data['bin']), log=lambda _: None)
    train(_config(data['rec'], prefix, num_epochs=3, load_epoch=1, val_targets=data['bin']), log=lambda _: None)
    values = [float(r['val_tiny']) for r in _csv(f'{prefix}-metrics.csv')]
    assert len(values) == 3
    best = load_metadata(f'{prefix}-best-tiny')['best']
    assert best['value'] == pytest.approx(max(values)) and best['epoch'] == int(np.argmax(values)) + 1


def test_val_targets_values_are_checked_before_any_work(data, tmp_path):
    assert val_targets(None) == [] and val_targets('') == []
    assert val_targets(f'{data["bin"]}, x/cfp_fp.bin') == [('tiny', data['bin']), ('cfp_fp', 'x/cfp_fp.bin')]
    for bad, match in (('lfw.txt', 'takes insightface .bin files'), ('a/lfw.bin,b/lfw.bin', 'lfw'),
                       ('verification.bin', 'built-in'), ('.bin', 'takes insightface')):
        with pytest.raises(ParameterError, match=match) as err:
            val_targets(bad)
        assert 'val_targets' in str(err.value) and '--val-targets' in err.value.spelled(flag)
    with pytest.raises(ParameterError, match='val_targets'):
        train(_config(data['rec'], tmp_path / 'p', val_targets='lfw.txt'), log=lambda _: None)
    with pytest.raises(UsageError, match='not found'):  # read before the first step: no checkpoint written
        train(_config(data['rec'], tmp_path / 'q', val_targets=str(tmp_path / 'missing.bin')), log=lambda _: None)
    assert not list(tmp_path.glob('q-*.params'))
    assert parse_config(['--val-targets', data['bin']]).val_targets == data['bin']


def test_an_unwritable_model_prefix_is_named_as_the_command_line_spells_it(tmp_path):
    """(Not --val-targets: a fix found on the way.) The message is rendered again for the CLI after the
    ``except`` block that caught the OSError has ended."""
    (tmp_path / 'file').write_text('x')
    with pytest.raises(ParameterError) as err:
        PrefixLock(str(tmp_path / 'file' / 'run'))
    assert err.value.spelled(flag).startswith('--model-prefix ') and 'cannot write in' in str(err.value)

