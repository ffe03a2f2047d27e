"""train_lightcnn.py / training.train: devices, resume, LR schedule, validation, divergence, logging."""
import csv
import os
import re
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from data_tools.pairs import make_pairs, write_pairs
from helpers import SIZE, train_config
from symbols.checkpoint import load_checkpoint
from training import TrainingDiverged, train
from training.trainer import make_lr_scheduler, parse_config

_config = train_config  # tiny runs (helpers.train_config); the data is conftest's tiny_rec


def _params(net):
    return {k: v.data().asnumpy() for k, v in net._collect_params_with_prefix().items()}


def test_two_devices_equal_one_device_for_the_same_global_batch(tiny_rec, tmp_path):
    # 36 records in batches of 18: two momentum-SGD updates, 9 + 9 samples on the two devices
    one = train(_config(tiny_rec, tmp_path / 'one', dropout=0.0, optimizer='sgd', num_epochs=1, batch_size=18),
                contexts=[mx.cpu(0)], log=lambda _: None)
    two = train(_config(tiny_rec, tmp_path / 'two', dropout=0.0, optimizer='sgd', num_epochs=1, batch_size=18),
                contexts=[mx.cpu(0), mx.cpu(1)], log=lambda _: None)
    p1 = _params(load_checkpoint(one['checkpoint'])[0])
    p2 = _params(load_checkpoint(two['checkpoint'])[0])
    init = train(_config(tiny_rec, tmp_path / 'zero', dropout=0.0, optimizer='sgd', num_epochs=1, lr=0.0,
                         batch_size=18),
                 contexts=[mx.cpu(0)], log=lambda _: None)
    p0 = _params(load_checkpoint(init['checkpoint'])[0])
    assert p1.keys() == p2.keys() == p0.keys()
    for key in p1:
        update = np.abs(p1[key] - p0[key]).max()
        assert update > 0, f'{key} was not trained'
        # Only the summation order differs (across devices, and across oneDNN's threads: ~3e-3 of the
        # update with 2 threads); a wrong split -- gradients scaled by the per-device batch, a device left
        # out of the sum -- moves weights by half the update or more. Kept to two updates on purpose:
        # MFM's max has exact ties on flat image regions, and after more steps such float-level
        # differences can tip a tie the other way and grow (both results are then equally right).
        assert np.abs(p1[key] - p2[key]).max() <= 1e-2 * update + 1e-8, key


def test_resume_gives_the_same_weights_as_a_straight_run(tiny_rec, tmp_path):
    common = dict(lr_step_epochs='1', lr_factor=0.5, optimizer='nag', dropout=0.3)
    straight = train(_config(tiny_rec, tmp_path / 'straight', **common), log=lambda _: None)
    train(_config(tiny_rec, tmp_path / 'resumed', num_epochs=1, **common), log=lambda _: None)
    lines = []
    resumed = train(_config(tiny_rec, tmp_path / 'resumed', load_epoch=1, **common), log=lines.append)
    assert any('resumed from' in line for line in lines)
    assert resumed['history'][0]['epoch'] == 1
    a, meta_a = load_checkpoint(straight['checkpoint'])
    b, meta_b = load_checkpoint(resumed['checkpoint'])
    pa, pb = _params(a), _params(b)
    for key in pa:
        np.testing.assert_allclose(pa[key], pb[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert meta_a['lr_schedule']['lr'] == pytest.approx(0.005)
    assert meta_b['lr_schedule'] == meta_a['lr_schedule']
    assert meta_b['epoch'] == 2
    with open(resumed['metrics_csv']) as f:
        assert [int(r['epoch']) for r in csv.DictReader(f)] == [0, 1]


def test_lr_schedule_warmup_steps_and_fc2_multiplier(tiny_rec, tmp_path):
    args = parse_config(dict(lr=0.1, lr_step_epochs='2,4', lr_factor=0.1, warmup_epochs=1))
    sched = make_lr_scheduler(args, updates_per_epoch=10)
    assert sched(0) == pytest.approx(0.0)
    assert sched(5) == pytest.approx(0.05)
    assert sched(15) == pytest.approx(0.1)
    assert sched(25) == pytest.approx(0.01)
    assert sched(45) == pytest.approx(0.001)
    from training.trainer import build_network
    from common.preprocessing import Preprocessing
    built = build_network(parse_config(dict(fc2_lr_mult=7.0)), 6, Preprocessing(input_size=32), [mx.cpu()])
    mults = {k: p.lr_mult for k, p in built._collect_params_with_prefix().items()}
    assert mults['fc2.weight'] == 7.0 and mults['fc2.bias'] == 7.0
    assert all(v == 1.0 for k, v in mults.items() if not k.startswith('fc2'))


def test_validation_logging_csv_and_metadata(tiny_rec, tmp_path):
    lines = []
    val = tiny_rec.replace('.rec', '_val.rec')
    images = os.path.join(os.path.dirname(tiny_rec), 'images')
    pairs = str(tmp_path / 'pairs.txt')
    write_pairs(pairs, make_pairs(images, folds=2, per_fold=6, seed=0), 2, 6)
    result = train(_config(tiny_rec, tmp_path / 'v', data_val=val, num_epochs=2, save_period=2,
                           val_pairs=pairs, val_images=images), log=lines.append)
    speed = [l for l in lines if l.startswith('Epoch[0] Batch [')]
    assert speed, lines
    assert re.fullmatch(r'Epoch\[0\] Batch \[0-2\]\tSpeed: \d+\.\d\d samples/sec\t'
                        r'accuracy=\d\.\d{6}\tcross-entropy=\d+\.\d{6}', speed[0]), speed[0]
    row = result['history'][-1]
    assert 0.0 <= row['val_top1'] <= row['val_top5'] <= 1.0
    assert 0.0 <= row['val_verification'] <= 1.0
    assert result['checkpoint'].endswith('-0002')  # save_period 2: only the last epoch
    assert not os.path.exists(str(tmp_path / 'v-0001.params'))
    _, meta = load_checkpoint(result['checkpoint'])
    assert meta['network'] == 'lightcnn9' and meta['num_classes'] == 6
    assert meta['preprocessing'].input_size == 32 and meta['preprocessing'].record_size == SIZE
    assert meta['metrics']['val_top1'] == row['val_top1']
    assert any(l.startswith('Done: 2 epoch(s)') for l in lines)


def test_nan_loss_stops_with_one_line_and_keeps_last_good_checkpoint(tiny_rec, tmp_path, repo_root):
    prefix = tmp_path / 'nan'
    train(_config(tiny_rec, prefix, num_epochs=1), log=lambda _: None)
    with pytest.raises(TrainingDiverged, match='last good checkpoint: .*nan-0001'):
        train(_config(tiny_rec, prefix, load_epoch=1, num_epochs=3, lr=1e12), log=lambda _: None)
    assert not os.path.exists(f'{prefix}-0002.params')
    net, _ = load_checkpoint(str(prefix), epoch=1)
    assert all(np.isfinite(v).all() for v in _params(net).values())
    cmd = [sys.executable, 'train_lightcnn.py', '--data-train', tiny_rec, '--model-prefix',
           str(tmp_path / 'cli'), '--input-size', '32', '--batch-size', '8', '--num-epochs', '1',
           '--lr', '1e12', '--data-nthreads', '1']
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().count('\n') == 0 and proc.stderr.startswith('error: loss is nan')


def test_bad_inputs_are_one_line_errors(tmp_path, repo_root):
    cmd = [sys.executable, 'train_lightcnn.py', '--data-train', str(tmp_path / 'missing.rec')]
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1, proc.stderr
    assert 'missing.rec does not exist' in proc.stderr
    proc = subprocess.run([sys.executable, 'train_lightcnn.py', '--data-train', 'x.rec',
                           '--kv-store', 'dist_sync'], cwd=repo_root, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and 'tools.launch' in proc.stderr, proc.stderr


def test_benchmark_prints_samples_per_second(repo_root):
    proc = subprocess.run([sys.executable, 'train_lightcnn.py', '--benchmark', '--batch-size', '4',
                           '--input-size', '32', '--benchmark-batches', '2'], cwd=repo_root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r'benchmark lightcnn9 batch 4 .*: \d+\.\d\d samples/sec', proc.stdout)


def _csv_rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def test_metrics_csv_keeps_every_epoch_and_numbering_agrees(tiny_rec, tmp_path):
    lines = []
    straight = train(_config(tiny_rec, tmp_path / 'a' / 'm', num_epochs=3), log=lines.append)
    rows = _csv_rows(straight['metrics_csv'])
    assert [int(r['epoch']) for r in rows] == [0, 1, 2]
    # the CSV holds the values the run returned, and names the checkpoint saved after each epoch
    for row, hist in zip(rows, straight['history']):
        assert float(row['train_loss']) == pytest.approx(hist['train_loss'], rel=1e-9)
    assert [r['checkpoint'] for r in rows] == ['m-0001', 'm-0002', 'm-0003']
    assert [l.split(' ')[0] for l in lines if re.match(r'Epoch\[\d\] lr=', l)] == \
        ['Epoch[0]', 'Epoch[1]', 'Epoch[2]']
    _, meta = load_checkpoint(straight['checkpoint'])
    assert straight['checkpoint'].endswith('m-0003') and meta['epoch'] == 3
    assert meta['metrics']['epoch'] == 2 and 'epochs completed' in meta['epoch_numbering']

    prefix = tmp_path / 'b' / 'm'
    train(_config(tiny_rec, prefix, num_epochs=1), log=lambda _: None)
    assert [int(r['epoch']) for r in _csv_rows(f'{prefix}-metrics.csv')] == [0]
    first = _csv_rows(f'{prefix}-metrics.csv')[0]
    resumed = train(_config(tiny_rec, prefix, num_epochs=3, load_epoch=1), log=lambda _: None)
    rows = _csv_rows(resumed['metrics_csv'])
    assert [int(r['epoch']) for r in rows] == [0, 1, 2]
    assert rows[0] == first  # the row of the epoch before the resume is kept as written
    assert [h['epoch'] for h in resumed['history']] == [1, 2]


def test_metrics_rows_of_re_run_epochs_are_replaced(tmp_path):
    from training.callbacks import write_metrics_row
    path = str(tmp_path / 'sub' / 'm-metrics.csv')
    for epoch in range(4):
        write_metrics_row(path, dict(epoch=epoch, train_loss=10.0 - epoch))
    write_metrics_row(path, dict(epoch=2, train_loss=0.5, val_top1=0.25))  # resumed after 2 epochs
    rows = _csv_rows(path)
    assert [(r['epoch'], r['train_loss'], r['val_top1']) for r in rows] == \
        [('0', '10.0', ''), ('1', '9.0', ''), ('2', '0.5', '0.25')]


def test_defaults_come_from_one_table_and_help_shows_them(repo_root):
    from demo import parse_config as demo_config
    from training import DEFAULTS, build_parser
    assert vars(parse_config({})) == DEFAULTS == vars(build_parser().parse_args([]))
    assert (DEFAULTS['num_epochs'], DEFAULTS['optimizer'], DEFAULTS['batch_size']) == (30, 'adam', 64)
    demo = demo_config({})
    assert (demo.num_epochs, demo.optimizer, demo.lr, demo.batch_size) == (15, 'adam', 1e-3, 32)
    assert demo_config(['--batch-size', '64']).batch_size == 64  # a typed 64 stays 64
    assert demo_config(dict(batch_size=64)).batch_size == 64
    for action in build_parser()._actions:
        if action.option_strings and action.dest not in ('help', 'benchmark'):
            assert '(default: ' in action.help, action.dest
    proc = subprocess.run([sys.executable, 'train_lightcnn.py', '--help'], cwd=repo_root, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and '--demo-heldout' in proc.stdout and '(default: 30)' in proc.stdout


def test_library_errors_name_parameters_and_the_cli_names_flags(tiny_rec, repo_root):
    from training import ParameterError
    with pytest.raises(ParameterError, match=r'^batch_size must be at least 1$'):
        train(dict(data_train=tiny_rec, batch_size=0))
    with pytest.raises(ParameterError, match=r'^input_size 64 is larger than the packed images \(36\)$'):
        train(dict(data_train=tiny_rec, input_size=64, data_nthreads=1))
    cmd = [sys.executable, 'train_lightcnn.py', '--data-train', tiny_rec, '--batch-size', '0']
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr == 'error: --batch-size must be at least 1\n', proc.stderr
    proc = subprocess.run([sys.executable, 'train_lightcnn.py', '--demo-heldout', '2'],
                          cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith('error: the demo needs') \
        and '--demo-heldout 2' in proc.stderr, proc.stderr

