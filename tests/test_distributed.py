"""dist_sync on loopback: tools.launch starts scheduler, server and two workers that stay in sync."""
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from common import threads
from symbols.checkpoint import load_checkpoint
from helpers import make_checkpoint, synthetic_rec
from tools.launch import launch, role_env


def test_role_env_binds_to_loopback_and_shares_the_cores(monkeypatch):
    monkeypatch.setattr(threads, 'USER_THREADS', None)
    monkeypatch.setattr(threads, 'physical_cores', lambda: 8)
    env = role_env('worker', 2, 1, 9123, base={})
    assert env == dict(DMLC_ROLE='worker', DMLC_PS_ROOT_URI='127.0.0.1', DMLC_PS_ROOT_PORT='9123',
                       DMLC_NUM_WORKER='2', DMLC_NUM_SERVER='1', DMLC_NODE_HOST='127.0.0.1',
                       OMP_NUM_THREADS='4')
    assert role_env('worker', 16, 1, 9123, base={})['OMP_NUM_THREADS'] == '1'
    assert role_env('server', 2, 1, 9123, base={})['OMP_NUM_THREADS'] == '1'
    monkeypatch.setattr(threads, 'USER_THREADS', '3')  # the user's choice wins
    assert role_env('worker', 2, 1, 9123, base={})['OMP_NUM_THREADS'] == '3'


def test_launcher_propagates_a_failing_worker_and_stops_the_rest():
    code = launch([sys.executable, '-c', 'import sys; sys.exit(3)'], num_workers=2, num_servers=1,
                  timeout=120, log=lambda _: None)
    assert code == 3


def _train_two_workers(tmp_path, repo_root, *options):
    """2 workers + 1 server train 1 epoch of 32 tiny records (batch 4 each) into ``tmp_path/w{rank}``."""
    rec = synthetic_rec(tmp_path, identities=4, seed=5, val_per_identity=0)
    cmd = [sys.executable, '-m', 'tools.launch', '-n', '2', '-s', '1', '--timeout', '600', '--',
           sys.executable, 'train_lightcnn.py', '--kv-store', 'dist_sync', '--data-train', rec,
           '--input-size', '32', '--batch-size', '4', '--num-epochs', '1', '--data-nthreads', '1',
           '--disp-batches', '2', '--model-prefix', str(tmp_path / 'w{rank}'), *options]
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=700)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


@pytest.mark.slow
def test_two_workers_one_server_train_in_sync(tmp_path, repo_root):
    proc = _train_two_workers(tmp_path, repo_root)
    for rank in (0, 1):
        assert f'[worker {rank}] ' in proc.stdout and f'part {rank + 1}/2' in proc.stdout
    # 32 records, global batch 8: four synchronous updates on each worker
    assert proc.stdout.count('4 updates/epoch of 8') == 2
    nets = [load_checkpoint(str(tmp_path / f'w{rank}'), epoch=1)[0] for rank in (0, 1)]
    params = [{k: v.data().asnumpy() for k, v in n._collect_params_with_prefix().items()} for n in nets]
    for key in params[0]:
        np.testing.assert_array_equal(params[0][key], params[1][key], err_msg=key)
    # the workers did train: fc2 is far from its zero-bias start
    assert np.abs(params[0]['fc2.bias']).max() > 0


@pytest.mark.slow
def test_two_workers_train_arcface_with_center_loss_in_sync(tmp_path, repo_root):
    proc = _train_two_workers(tmp_path, repo_root, '--loss', 'arcface', '--margin-s', '16',
                              '--center-loss-weight', '0.01')
    assert proc.stdout.count('4 updates/epoch of 8') == 2
    params = []
    for rank in (0, 1):
        stem = str(tmp_path / f'w{rank}-0001')
        net, meta = load_checkpoint(stem)
        assert meta['loss'] == 'arcface' and meta['num_classes'] is None
        values = {k: v.data().asnumpy() for k, v in net._collect_params_with_prefix().items()}
        values.update({'head.' + k: v.asnumpy() for k, v in mx.nd.load(stem + '.head.params').items()})
        params.append(values)
    # the margin classifier is trained by the summed gradients, the centres by the summed statistics
    for key in params[0]:
        np.testing.assert_array_equal(params[0][key], params[1][key], err_msg=key)
    assert np.abs(params[0]['head.center.centers']).max() > 0


@pytest.mark.slow
def test_two_workers_fine_tune_with_the_linear_probe_in_sync(tmp_path, repo_root):
    # every worker embeds the whole file and fits the same classifier; rank 0's weights then reach all
    source = make_checkpoint(tmp_path / 'source', num_classes=9, seed=5)
    proc = _train_two_workers(tmp_path, repo_root, '--pretrained', source, '--loss', 'arcface', '--margin-s', '16')
    assert proc.stdout.count('linear probe: 32 training faces embedded') == 2
    params = []
    for rank in (0, 1):
        stem = str(tmp_path / f'w{rank}-0001')
        net, meta = load_checkpoint(stem)
        assert meta['probe']['images'] == 32 and meta['pretrained']['stem'] == os.path.abspath(source)
        values = {k: v.data().asnumpy() for k, v in net._collect_params_with_prefix().items()}
        values.update({'head.' + k: v.asnumpy() for k, v in mx.nd.load(stem + '.head.params').items()})
        params.append(values)
    for key in params[0]:
        np.testing.assert_array_equal(params[0][key], params[1][key], err_msg=key)
