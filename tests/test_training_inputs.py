"""Training against bad input and changed conditions (issue 14, training side).

Option ranges, records checked against the settings (labels, size, channels, a foreign .idx), every input
checked before the first step, resume re-deriving what depends on this run's settings (LR schedule in
updates, per-device optimiser state, optimiser settings), checkpoints committed as one, the prefix lock,
disk full and temporaries of killed runs.
"""
import csv
import errno
import json
import os
import shutil
import struct
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest

from common.errors import UsageError
from data_tools.pairs import make_pairs, read_pairs, write_pairs
from helpers import SIZE, synthetic_rec
from models.checkpoint import file_digest, list_epochs, load_checkpoint, load_metadata
from training import Callback, ParameterError, train
from training.config import parse_config
from training.data import scan_records
from training.outputs import PrefixLock

QUIET = dict(log=lambda _: None)


@pytest.fixture(scope='module')
def other_rec(tmp_path_factory):
    """The same kind of data packed at 44 px: its offsets differ from tiny_rec's (conftest)."""
    return synthetic_rec(tmp_path_factory.mktemp('other'), size=44, seed=4, val_per_identity=0)


def _config(rec, prefix, **overrides):
    config = dict(data_train=rec, model_prefix=str(prefix), input_size=32, batch_size=12, optimizer='sgd',
                  num_epochs=1, lr=0.01, data_nthreads=1, disp_batches=100, seed=1)
    config.update(overrides)
    return config


def _raw_rec(prefix, labels, size=40, channels=1, seed=0):
    """An im2rec-style .rec/.idx without PREFIX.json, written by MXNet's own writer; returns the .rec."""
    rng = np.random.default_rng(seed)
    rec = mx.recordio.MXIndexedRecordIO(f'{prefix}.idx', f'{prefix}.rec', 'w')
    for key, label in enumerate(labels):
        img = rng.integers(0, 256, (size, size) if channels == 1 else (size, size, 3), dtype=np.uint8)
        header = mx.recordio.IRHeader(0, float(label), key, 0)
        rec.write_idx(key, mx.recordio.pack_img(header, cv2.GaussianBlur(img, (5, 5), 2), img_fmt='.png'))
    rec.close()
    return f'{prefix}.rec'


class _Steps(Callback):
    """Counts training steps: the checks must fail before the first one."""

    def __init__(self):
        self.batches = 0

    def on_batch_end(self, run, epoch, nbatch):
        self.batches += 1


def _fails_before_the_first_step(config, error, match, validators=()):
    steps = _Steps()
    with pytest.raises(error, match=match):
        train(config, callbacks=[steps], validators=validators, **QUIET)
    assert steps.batches == 0


# --- option ranges: one table, one line ------------------------------------------------------------------

@pytest.mark.parametrize('name, value, message', [
    ('dropout', -0.5, 'dropout must be at least 0 and below 1'),
    ('dropout', 1.0, 'dropout must be at least 0 and below 1'),
    ('mom', -1.0, 'mom must be at least 0 and below 1'),
    ('wd', -1.0, 'wd must be at least 0'),
    ('lr', -0.1, 'lr must be at least 0'),
    ('input_size', 0, r'input_size must be at least 16 \(four 2x2 poolings\)'),
    ('num_classes', 0, 'num_classes must be at least 2'),
    ('lr_factor', 0.0, 'lr_factor must be greater than 0'),
    ('warmup_epochs', -1.0, 'warmup_epochs must be at least 0'),
    ('seed', -1, 'seed must be at least 0 and below 1e'),
    ('lr', float('nan'), 'lr must be a finite number, not nan'),
    ('wd', float('inf'), 'wd must be a finite number, not inf'),
    ('fc2_lr_mult', float('-inf'), 'fc2_lr_mult must be a finite number, not -inf'),
    ('batch_size', 1.5, 'batch_size must be an integer, not 1.5'),
    ('mom', '0.9', "mom must be a number, not '0.9'"),
    ('lr_step_epochs', '2,nan', "lr_step_epochs takes epochs above 0 like 10,20, not '2,nan'"),
    ('lr_step_epochs', '-1', "lr_step_epochs takes epochs above 0"),
])
def test_option_values_outside_their_range_are_refused_by_the_library(tiny_rec, tmp_path, name, value, message):
    with pytest.raises(ParameterError, match='^' + message):
        train(_config(tiny_rec, tmp_path / 'm', **{name: value}), **QUIET)
    assert not os.path.exists(tmp_path / 'm.lock')  # refused before anything was opened


def test_edge_values_are_accepted(tiny_rec, tmp_path):
    result = train(_config(tiny_rec, tmp_path / 'm', dropout=0.0, mom=0.0, wd=0.0, warmup_epochs=0.0,
                           seed=0, num_classes=6), **QUIET)
    assert [row['epoch'] for row in result['history']] == [0]


def test_load_epoch_must_leave_epochs_to_train(tiny_rec, tmp_path):
    for num_epochs in (2, 1):
        with pytest.raises(ParameterError, match=r'^num_epochs \d leaves nothing to train after load_epoch 2: '
                                                 r'it counts every epoch, those done included \(give 3 or more\)'):
            train(_config(tiny_rec, tmp_path / 'm', load_epoch=2, num_epochs=num_epochs), **QUIET)
    with pytest.raises(ParameterError, match='^reset_optimizer goes with load_epoch'):
        train(_config(tiny_rec, tmp_path / 'm', reset_optimizer=True), **QUIET)


def test_the_command_line_prints_one_line_with_flags(tiny_rec, tmp_path, repo_root):
    base = [sys.executable, 'train_lightcnn.py', '--data-train', tiny_rec, '--model-prefix', str(tmp_path / 'm')]
    for extra, line in [(['--dropout', '-0.5'], 'error: --dropout must be at least 0 and below 1\n'),
                        (['--lr', 'nan'], 'error: --lr must be a finite number, not nan\n'),
                        (['--load-epoch', '3', '--num-epochs', '3'],
                         'error: --num-epochs 3 leaves nothing to train after --load-epoch 3: it counts every '
                         'epoch, those done included (give 4 or more)\n')]:
        proc = subprocess.run(base + extra, cwd=repo_root, capture_output=True, text=True, timeout=120)
        assert (proc.returncode, proc.stderr, proc.stdout) == (2, line, ''), extra


# --- records against the settings ----------------------------------------------------------------------

def test_scan_reads_every_label_and_the_image_geometry(tiny_rec):
    scan = scan_records(tiny_rec)
    reader = mx.recordio.MXIndexedRecordIO(tiny_rec[:-4] + '.idx', tiny_rec, 'r')
    want = [int(mx.recordio.unpack(reader.read_idx(k))[0].label) for k in reader.keys]
    reader.close()
    assert scan.count == len(want) == 36
    assert scan.labels.tolist() == want and sorted(set(want)) == list(range(6))
    assert scan.channels == [1] and scan.min_side == SIZE
    assert {shape for shape in scan.sample_shapes} == {(SIZE, SIZE, 1)}


def test_scan_joins_records_cut_at_the_magic_number(tmp_path):
    # a payload holding the RecordIO magic at a 4-byte boundary is stored in parts (cflag 1, 3)
    png = cv2.imencode('.png', np.full((20, 24), 7, np.uint8))[1].tobytes()
    payload = png + bytes(-(24 + len(png)) % 4) + struct.pack('<I', 0xced7230a) + b'tail'
    rec = mx.recordio.MXIndexedRecordIO(str(tmp_path / 'c.idx'), str(tmp_path / 'c.rec'), 'w')
    for key in range(3):
        rec.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, float(2 - key), key, 0), payload))
    rec.close()
    raw = (tmp_path / 'c.rec').read_bytes()
    assert struct.unpack('<I', raw[4:8])[0] >> 29 == 1  # really cut into parts
    scan = scan_records(str(tmp_path / 'c.rec'))
    assert scan.labels.tolist() == [2, 1, 0]
    assert scan.sample_shapes == [(20, 24, 1)] * 3


def test_an_index_of_another_packing_is_one_error_before_mxnet_opens_the_rec(tiny_rec, other_rec, tmp_path):
    rec = str(tmp_path / 'd.rec')
    shutil.copy(other_rec, rec)
    shutil.copy(tiny_rec[:-4] + '.idx', tmp_path / 'd.idx')
    with pytest.raises(UsageError, match=r'd\.idx does not belong to .*d\.rec: line \d+ \(key \d+\) points at '
                                         r'byte \d+, which is not the start of a record'):
        scan_records(rec)
    _fails_before_the_first_step(_config(rec, tmp_path / 'm'), UsageError, 'does not belong to')
    # cut short: the last entries point past the end
    shutil.copy(tiny_rec[:-4] + '.idx', tmp_path / 'd.idx')
    data = open(tiny_rec, 'rb').read()
    (tmp_path / 'd.rec').write_bytes(data[:len(data) // 2])
    with pytest.raises(UsageError, match=r'line \d+ points at byte \d+ of a \d+-byte file \(\d+ such line'):
        scan_records(rec)
    # not an index at all
    (tmp_path / 'd.idx').write_text('hello world\n')
    with pytest.raises(UsageError, match=r'd\.idx, line 1: expected "key<TAB>offset"'):
        scan_records(rec)


def test_labels_outside_num_classes_stop_training_before_the_first_step(tmp_path, repo_root):
    rec = _raw_rec(tmp_path / 'one_based', [1, 2, 3, 4] * 4)
    message = (r'one_based\.rec: label 4 outside 0\.\.3 for num_classes 4 \(4 record\(s\), first key 3; labels '
               r'in the file run 1\.\.4; they look numbered from 1')
    _fails_before_the_first_step(_config(rec, tmp_path / 'm', num_classes=4), ParameterError, message)
    assert sorted(os.listdir(tmp_path)) == ['one_based.idx', 'one_based.rec']  # no checkpoint (the lock file goes with the lock)
    proc = subprocess.run([sys.executable, 'train_lightcnn.py', '--data-train', rec, '--num-classes', '4',
                           '--model-prefix', str(tmp_path / 'c')], cwd=repo_root, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1 and \
        'label 4 outside 0..3 for --num-classes 4' in proc.stderr, proc.stderr
    # fractional labels are no class number
    rec = _raw_rec(tmp_path / 'frac', [0, 1, 1.5, 2])
    with pytest.raises(UsageError, match=r'frac\.rec: record 2 has label 1\.5, not a class number'):
        scan_records(rec)


def test_record_size_and_channels_against_input_and_packing_json(tiny_rec, tmp_path):
    # no PREFIX.json: the records' own side is the record size, and the default crop fits inside it
    rec = _raw_rec(tmp_path / 'raw', [0, 1, 2] * 4, size=20)
    lines = []
    result = train(_config(rec, tmp_path / 'm', num_classes=3, input_size=None), log=lines.append)
    _, meta = load_checkpoint(result['checkpoint'])
    assert (meta['preprocessing'].record_size, meta['preprocessing'].input_size) == (20, 20)
    _fails_before_the_first_step(_config(rec, tmp_path / 'm2', num_classes=3, input_size=24), ParameterError,
                                 r'input_size 24 is larger than the packed images \(20\)')
    # colour records, gray network: read as gray, and said so
    rec = _raw_rec(tmp_path / 'colour', [0, 1, 2] * 4, size=20, channels=3)
    lines = []
    train(_config(rec, tmp_path / 'c', num_classes=3, input_size=16), log=lines.append)
    assert any(l.startswith('note: ') and 'holds colour images; the network reads them as gray' in l
               for l in lines), lines
    # a PREFIX.json of another packing beside the .rec
    shutil.copy(tiny_rec, tmp_path / 'mixed.rec')
    shutil.copy(tiny_rec[:-4] + '.idx', tmp_path / 'mixed.idx')
    summary = json.load(open(tiny_rec[:-4] + '.json'))
    summary['record']['size'] = 48
    (tmp_path / 'mixed.json').write_text(json.dumps(summary))
    _fails_before_the_first_step(_config(str(tmp_path / 'mixed.rec'), tmp_path / 'x'), UsageError,
                                 r'mixed\.json describes 48x48 records but .*mixed\.rec holds 36x36 images')


# --- every input before the first step -----------------------------------------------------------------

def test_a_bad_validation_rec_stops_before_the_first_step(tiny_rec, other_rec, tmp_path):
    val = str(tmp_path / 'v_val.rec')
    shutil.copy(tiny_rec.replace('.rec', '_val.rec'), val)
    shutil.copy(other_rec[:-4] + '.idx', tmp_path / 'v_val.idx')
    _fails_before_the_first_step(_config(tiny_rec, tmp_path / 'm', data_val=val), UsageError,
                                 r'v_val\.idx does not belong to')
    bad_labels = _raw_rec(tmp_path / 'l_val', [0, 9], size=SIZE)
    _fails_before_the_first_step(_config(tiny_rec, tmp_path / 'm', data_val=bad_labels), ParameterError,
                                 r'l_val\.rec: label 9 outside 0\.\.5 for num_classes 6 \(from PREFIX\.json\)')


def test_missing_or_broken_pair_images_stop_before_the_first_step(tiny_rec, tmp_path):
    images = os.path.join(os.path.dirname(tiny_rec), 'images')
    copy = tmp_path / 'images'
    shutil.copytree(images, copy)
    pairs = str(tmp_path / 'pairs.txt')
    write_pairs(pairs, make_pairs(str(copy), folds=2, per_fold=6, seed=0), 2, 6)
    named = list(dict.fromkeys(path for pair in read_pairs(pairs) for path in pair[:2]))
    os.remove(copy / named[0])
    (copy / named[1]).write_bytes(b'not an image')
    config = _config(tiny_rec, tmp_path / 'm', val_pairs=pairs, val_images=str(copy))
    _fails_before_the_first_step(config, UsageError, r'^2 of the \d+ images .*pairs\.txt names cannot be used '
                                                     r'under .*: .* \(not found\), .* \(not a decodable image')


def test_an_output_folder_under_a_file_is_refused(tiny_rec, tmp_path):
    (tmp_path / 'file').write_text('x')
    _fails_before_the_first_step(_config(tiny_rec, tmp_path / 'file' / 'm'), ParameterError,
                                 r'^model_prefix .*file/m: cannot write in .*file \(a file is in the way')


@pytest.fixture(scope='module')
def one_epoch(tiny_rec, tmp_path_factory):
    """A 1-epoch checkpoint (batch 12, sgd) to resume or break: ``(folder, prefix)``; copy before changing."""
    folder = tmp_path_factory.mktemp('one')
    train(_config(tiny_rec, folder / 'm', num_epochs=1), **QUIET)
    return folder


def _copy_run(one_epoch, tmp_path):
    shutil.copytree(one_epoch, tmp_path / 'run')
    return tmp_path / 'run' / 'm'


@pytest.mark.parametrize('damage, match', [
    ('drop .states', r'cannot resume: .*m-0001\.states missing; no checkpoint under'),
    ('truncate .params', r'm-0001\.params does not belong to .*m-0001\.json \(\d+ bytes where .*recorded \d+\)'),
    ('truncate .states', r'm-0001\.states does not belong to .*m-0001\.json'),
    ('truncate .json', r'm-0001\.json is not readable JSON \(truncated\?\)'),
    ('truncate .states, legacy json', r'm-0001\.states is not a readable pickle'),
    ('truncate .params, legacy json', r'm-0001\.params does not fit lightcnn9'),
])
def test_a_damaged_checkpoint_is_one_error_before_the_first_step(tiny_rec, one_epoch, tmp_path, damage, match):
    prefix = _copy_run(one_epoch, tmp_path)
    stem = f'{prefix}-0001'
    what = damage.split(',')[0].split(' ')[1]
    if damage.startswith('drop'):
        os.remove(stem + what)
    else:
        data = open(stem + what, 'rb').read()
        open(stem + what, 'wb').write(data[:len(data) // 2])
    if damage.endswith('legacy json'):  # a JSON from before the files record: the readers still catch it
        meta = json.load(open(stem + '.json'))
        del meta['files']
        json.dump(meta, open(stem + '.json', 'w'))
    _fails_before_the_first_step(_config(tiny_rec, prefix, load_epoch=1, num_epochs=2), UsageError, match)


# --- resume: re-derived from this run's settings ------------------------------------------------------

def _lrs(result):
    return {row['epoch']: row['lr'] for row in result['history']}


def test_resume_with_another_batch_size_keeps_the_lr_on_epoch_boundaries(tiny_rec, tmp_path):
    schedule = dict(lr=0.001, lr_step_epochs='2', lr_factor=0.1, warmup_epochs=0.5, optimizer='sgd')
    straight = train(_config(tiny_rec, tmp_path / 's', batch_size=6, num_epochs=3, **schedule), **QUIET)
    train(_config(tiny_rec, tmp_path / 'r', batch_size=12, num_epochs=1, **schedule), **QUIET)
    lines = []
    resumed = train(_config(tiny_rec, tmp_path / 'r', batch_size=6, num_epochs=3, load_epoch=1, **schedule),
                    log=lines.append)
    assert _lrs(straight) == pytest.approx({0: 0.001, 1: 0.001, 2: 0.0001}, rel=1e-9)
    assert _lrs(resumed) == pytest.approx({1: 0.001, 2: 0.0001}, rel=1e-9)
    assert 'resume: 3 -> 6 updates/epoch (batch 12 -> 6, global 12 -> 6): LR schedule re-derived in updates ' \
           'of this run' in lines
    assert any(l.startswith('resumed from ') and 'continuing with Epoch[1]' in l and
               'schedule at update 6 = 1 x 6 updates/epoch' in l for l in lines), lines
    # the JSON records the schedule that ran, in this run's updates, and both runs' settings
    meta = load_metadata(resumed['checkpoint'])
    assert resumed['checkpoint'].endswith('r-0003') and meta['epoch'] == 3
    s = meta['lr_schedule']
    assert (s['updates_per_epoch'], s['steps'], s['warmup_steps'], s['num_update']) == (6, [12], 3, 18)
    assert meta['lr_schedule'] == load_metadata(straight['checkpoint'])['lr_schedule']
    assert [(r['epochs'], r['batch_size'], r['updates_per_epoch']) for r in meta['runs']] == \
        [([0, 1], 12, 3), ([1, 3], 6, 6)]
    # one epoch numbering across the log, the CSV and the checkpoints, through a resume
    with open(resumed['metrics_csv']) as f:
        rows = list(csv.DictReader(f))
    assert [(r['epoch'], r['checkpoint']) for r in rows] == [('0', 'r-0001'), ('1', 'r-0002'), ('2', 'r-0003')]
    epoch_lines = [l.split(' ')[0] for l in lines if l.startswith('Epoch[') and ' lr=' in l]
    saved = [os.path.basename(l.split(' ')[-1]) for l in lines if l.startswith('Saved checkpoint to')]
    assert (epoch_lines, saved) == (['Epoch[1]', 'Epoch[2]'], ['r-0002.params', 'r-0003.params'])


def test_resume_on_another_number_of_devices_maps_the_optimiser_state(tiny_rec, tmp_path):
    # 36 records, batch 18: two updates an epoch; momentum state saved on one device, resumed on two
    common = dict(batch_size=18, dropout=0.0, optimizer='nag', lr=0.01)
    straight = train(_config(tiny_rec, tmp_path / 's', num_epochs=2, **common), contexts=[mx.cpu(0)], **QUIET)
    train(_config(tiny_rec, tmp_path / 'r', num_epochs=1, **common), contexts=[mx.cpu(0)], **QUIET)
    lines = []
    resumed = train(_config(tiny_rec, tmp_path / 'r', num_epochs=2, load_epoch=1, **common),
                    contexts=[mx.cpu(0), mx.cpu(1)], log=lines.append)
    assert 'resume: 1 -> 2 device(s): optimiser state copied to each' in lines
    one = train(_config(tiny_rec, tmp_path / 'z', num_epochs=1, **common), contexts=[mx.cpu(0)], **QUIET)
    p1, p2, p0 = (_params(load_checkpoint(r['checkpoint'])[0]) for r in (straight, resumed, one))
    for key in p1:
        update = np.abs(p1[key] - p0[key]).max()
        assert update > 0, key
        # as test_training's device test: only the order of float sums differs; a momentum lost or
        # doubled on one device moves the second epoch's weights by a large part of its update
        assert np.abs(p1[key] - p2[key]).max() <= 2e-2 * update + 1e-8, key
    assert load_metadata(resumed['checkpoint'])['devices'] == 2


def _params(net):
    return {k: v.data().asnumpy() for k, v in net._collect_params_with_prefix().items()}


def test_a_changed_optimizer_is_refused_unless_reset_and_wd_mom_changes_are_applied(tiny_rec, one_epoch, tmp_path):
    prefix = _copy_run(one_epoch, tmp_path)
    _fails_before_the_first_step(_config(tiny_rec, prefix, load_epoch=1, num_epochs=2, optimizer='adam'),
                                 ParameterError, r'^optimizer adam differs from the sgd whose state .*m-0001\.'
                                                 r'states holds: resume with optimizer sgd, or add reset_optimizer')
    lines = []
    result = train(_config(tiny_rec, prefix, load_epoch=1, num_epochs=2, optimizer='adam', reset_optimizer=True),
                   log=lines.append)
    assert any('resume: optimizer sgd -> adam (fresh state), from Epoch[1] on' in l for l in lines), lines
    meta = load_metadata(result['checkpoint'])
    assert meta['optimizer'] == 'adam' and meta['runs'][-1]['reset_optimizer'] is True

    class Spy(Callback):
        def on_train_begin(self, run):
            self.opt = run.trainer.optimizer

    prefix = _copy_run(one_epoch, tmp_path / 'b')
    spy, lines = Spy(), []
    result = train(_config(tiny_rec, prefix, load_epoch=1, num_epochs=2, wd=1e-3, mom=0.5), log=lines.append,
                   callbacks=[spy])
    assert (type(spy.opt).__name__, spy.opt.wd, spy.opt.momentum) == ('SGD', 1e-3, 0.5)
    assert 'resume: wd 0.0001 -> 0.001, mom 0.9 -> 0.5, from Epoch[1] on' in lines
    meta = load_metadata(result['checkpoint'])
    assert (meta['wd'], meta['mom']) == (1e-3, 0.5)
    assert [(r['wd'], r['mom']) for r in meta['runs']] == [(1e-4, 0.9), (1e-3, 0.5)]


def test_states_of_another_network_are_refused(tiny_rec, one_epoch, tmp_path):
    config = _config(tiny_rec, _copy_run(one_epoch, tmp_path) , load_epoch=1, num_epochs=2)
    stem = config['model_prefix'] + '-0001'
    for network, input_size, match in [
            ('lightcnn29', 32, r'm-0001\.states holds the state of \d+ parameters, the network has 22: it was '
                               r'saved by another network'),
            ('lightcnn9', 16, r'm-0001\.states does not fit the network: parameter 21 \(fc1\.[\w.]*weight\) '
                              r'is \(512, 512\), its state \(512, 128\)')]:
        other = train(_config(tiny_rec, tmp_path / network, network=network, input_size=input_size), **QUIET)
        shutil.copy(other['checkpoint'] + '.states', stem + '.states')
        _fails_before_the_first_step(config, UsageError, r'm-0001\.states does not belong to')  # the record
        meta = json.load(open(stem + '.json'))
        meta['files']['.states'] = file_digest(stem + '.states')  # even with a record that agrees
        json.dump(meta, open(stem + '.json', 'w'))
        _fails_before_the_first_step(config, UsageError, match)


# --- checkpoints commit as one; one run per prefix; disk full; stale temporaries --------------------

def test_files_of_two_runs_side_by_side_are_refused(tiny_rec, one_epoch, tmp_path):
    other = train(_config(tiny_rec, tmp_path / 'o', seed=7), **QUIET)
    prefix = _copy_run(one_epoch, tmp_path)
    shutil.copy(other['checkpoint'] + '.params', f'{prefix}-0001.params')  # killed after one rename
    match = r'm-0001\.params does not belong to .*m-0001\.json \(its SHA-256 differs'
    _fails_before_the_first_step(_config(tiny_rec, prefix, load_epoch=1, num_epochs=2), UsageError, match)
    with pytest.raises(UsageError, match=match):
        load_checkpoint(str(prefix), epoch=1)


def test_a_save_killed_between_renames_leaves_no_listed_checkpoint(tiny_rec, one_epoch, tmp_path, monkeypatch):
    prefix = _copy_run(one_epoch, tmp_path)
    real = os.replace
    calls = []

    def killed_after_one(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a kill between two renames leaves (without running more code)
        real(src, dst)

    monkeypatch.setattr(os, 'replace', killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        train(_config(tiny_rec, prefix, num_epochs=1), **QUIET)  # re-run of epoch 1 over the old files
    monkeypatch.setattr(os, 'replace', real)
    assert calls[0].endswith('m-0001.params')
    assert list_epochs(str(prefix)) == []  # the old JSON went first: nothing half-new is listed
    leftovers = [f for f in os.listdir(prefix.parent) if f.endswith('.part')]
    assert leftovers == []
    _fails_before_the_first_step(_config(tiny_rec, prefix, load_epoch=1, num_epochs=2), UsageError,
                                 r'cannot resume: .*m-0001\.json missing \(its save did not complete\); no '
                                 r'checkpoint under')


def test_a_second_training_on_the_same_prefix_fails_at_once(tiny_rec, tmp_path, repo_root):
    prefix = tmp_path / 'm'
    holder = subprocess.Popen([sys.executable, '-c', 'import sys, time; '
                               'from training.outputs import PrefixLock; lock = PrefixLock(sys.argv[1]); '
                               'print("locked", flush=True); time.sleep(120)', str(prefix)],
                              cwd=repo_root, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        _fails_before_the_first_step(_config(tiny_rec, prefix), UsageError,
                                     rf'm \(another training\) is being written by process {holder.pid} \(it holds .*m\.lock\)')
        proc = subprocess.run([sys.executable, 'train_lightcnn.py', '--data-train', tiny_rec, '--model-prefix',
                               str(prefix), '--input-size', '32'], cwd=repo_root, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2 and proc.stderr.count('\n') == 1 and '(another training) is being written by' in proc.stderr
    finally:
        holder.kill()
        holder.wait()
    assert not any(name.startswith('m-') for name in os.listdir(tmp_path))
    with PrefixLock(prefix):  # the kernel freed it with the process
        pass
    train(_config(tiny_rec, prefix), **QUIET)  # and train() frees its own when done
    with PrefixLock(prefix):
        pass


def test_disk_full_while_saving_is_one_error_and_leaves_nothing(tiny_rec, tmp_path, monkeypatch):
    def full(self, fname):
        with open(fname, 'wb') as f:
            f.write(b'\0' * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(mx.gluon.Trainer, 'save_states', full)
    with pytest.raises(UsageError, match=r'^cannot write checkpoint .*m-0001: No space left on device'
                                         r'( \(\d+ kB free there\))?$'):
        train(_config(tiny_rec, tmp_path / 'm'), **QUIET)
    assert sorted(os.listdir(tmp_path)) == []  # nothing half-written, and the lock file went with the lock
    # the metrics CSV: the previous file stays, no temporary
    monkeypatch.undo()
    train(_config(tiny_rec, tmp_path / 'm'), **QUIET)
    before = open(tmp_path / 'm-metrics.csv').read()

    def full_csv(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    import training.callbacks
    monkeypatch.setattr(training.callbacks.csv, 'DictWriter', full_csv)
    with pytest.raises(UsageError, match=r'^cannot write .*m-metrics\.csv: No space left on device$'):
        train(_config(tiny_rec, tmp_path / 'm'), **QUIET)
    assert open(tmp_path / 'm-metrics.csv').read() == before
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.part')]


def test_temporaries_of_a_killed_run_are_removed_when_the_next_takes_the_prefix(tiny_rec, tmp_path):
    stale = ['m-0001.params.4242-0.part', 'm-0002.states.tmp4242', 'm-metrics.csv.tmp']
    kept = ['m-other-0001.params.4242-0.part', 'notes.tmp1']  # another prefix's, the user's
    for name in stale + kept:
        (tmp_path / name).write_bytes(b'half')
    lines = []
    train(_config(tiny_rec, tmp_path / 'm'), log=lines.append)
    assert lines[0].startswith('removed 3 temporary file(s) of an interrupted run: ')
    left = set(os.listdir(tmp_path))
    assert not left & set(stale) and set(kept) <= left
    assert parse_config({}).reset_optimizer is False


def test_validation_records_from_another_packing_are_refused(tmp_path):
    """Same class count, other people: val_top1 would be meaningless, so training refuses before any step."""
    from common.errors import flag
    from data_tools.synthetic import make_synthetic_faces
    from helpers import train_config, write_tiny_rec
    make_synthetic_faces(str(tmp_path / 'a'), 4, 4, size=SIZE, seed=1)
    shutil.copytree(tmp_path / 'a', tmp_path / 'b')
    for folder in sorted((tmp_path / 'b').iterdir()):
        folder.rename(folder.with_name('zz_' + folder.name))  # same sort order and count, other identities
    train_rec = write_tiny_rec(str(tmp_path / 'a'), str(tmp_path / 'ra'), val_per_identity=1)
    other_val = write_tiny_rec(str(tmp_path / 'b'), str(tmp_path / 'rb'), val_per_identity=1)[:-4] + '_val.rec'
    own_val = train_rec[:-4] + '_val.rec'
    with pytest.raises(ParameterError, match="packed with other identities .*class 0 is 'zz_id_0000' there") as err:
        train(train_config(train_rec, tmp_path / 'x', data_val=other_val, num_epochs=1), log=lambda _: None)
    assert err.value.spelled(flag).startswith(f'--data-val {other_val} was packed with other identities than '
                                              f'--data-train {train_rec}')
    assert not list(tmp_path.glob('x-*'))  # refused before the first step
    result = train(train_config(train_rec, tmp_path / 'y', data_val=own_val, num_epochs=1), log=lambda _: None)
    assert 0 <= result['history'][-1]['val_top1'] <= 1
