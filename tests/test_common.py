"""The shared pieces: image decoding with reasons, the one preprocessing definition, CLI conventions."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from common.cli import ArgumentParser, run_cli
from common.errors import UsageError
from common.images import ImageError, decode_image, encode_jpeg, list_images, read_image
from common.preprocessing import Preprocessing
from common.threads import physical_cores


def _jpeg(img):
    return cv2.imencode('.jpg', img)[1].tobytes()


def test_decode_reasons_for_bad_bytes(tmp_path):
    img = np.random.RandomState(0).randint(0, 255, (40, 30), np.uint8)
    good = _jpeg(img)
    assert decode_image(good).shape == (40, 30)
    assert decode_image(good, 'bgr').shape == (40, 30, 3)
    for buf, reason in [(b'', 'zero-byte'), (good[: len(good) // 2], 'truncated JPEG'),
                        (b'not an image at all', 'not a decodable image')]:
        with pytest.raises(ImageError, match=reason):
            decode_image(buf)
    with pytest.raises(ImageError, match='file not found'):
        read_image(tmp_path / 'missing.jpg')
    (tmp_path / 'tiny.png').write_bytes(cv2.imencode('.png', img[:5, :5])[1].tobytes())
    with pytest.raises(ImageError, match='too small'):
        read_image(tmp_path / 'tiny.png', min_size=8)


@pytest.mark.parametrize('quality', [40, 75, 95, 100])
def test_encode_jpeg_gives_opencvs_bytes(quality):
    rng = np.random.RandomState(quality)
    smooth = cv2.GaussianBlur(rng.randint(0, 256, (150, 133, 3)).astype(np.uint8), (9, 9), 3)
    for img in (smooth, smooth[:, :, 1], smooth[::-1, 7:], rng.randint(0, 256, (144, 144)).astype(np.uint8)):
        expected = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
        assert encode_jpeg(img, quality) == expected
    decoded = decode_image(encode_jpeg(smooth, quality), 'bgr')  # channel order kept, not swapped
    assert np.abs(decoded.astype(int) - smooth).mean() < 8


def _threads_seen(repo_root, code, **env):
    """OMP_NUM_THREADS as a fresh interpreter sees it after ``code`` (OMP variables from ``env`` only)."""
    base = {k: v for k, v in os.environ.items() if k not in ('OMP_NUM_THREADS', 'MXNET_OMP_MAX_THREADS')}
    run = subprocess.run([sys.executable, '-c', code + '; import os; print(os.environ.get("OMP_NUM_THREADS"))'],
                         cwd=repo_root, env={**base, **env}, capture_output=True, text=True, check=True)
    return run.stdout.split()[-1]


THREADS_FIRST = 'from common.threads import default_compute_threads; default_compute_threads()'  # scripts' idiom


def test_command_lines_use_every_physical_core_unless_told(repo_root):
    """MXNet alone would use half the cores on x86; every script sizes it first with default_compute_threads()."""
    cores = physical_cores()
    assert 1 <= cores <= os.cpu_count()
    assert _threads_seen(repo_root, THREADS_FIRST) == str(cores)
    assert _threads_seen(repo_root, THREADS_FIRST, OMP_NUM_THREADS='3') == '3'
    assert _threads_seen(repo_root, THREADS_FIRST, MXNET_OMP_MAX_THREADS='3') == 'None'
    assert _threads_seen(repo_root, 'import mxnet; ' + THREADS_FIRST) == 'None'  # too late to change: left alone


def _compute_env_seen(repo_root, **env):
    base = {k: v for k, v in os.environ.items()
            if k not in ('OMP_NUM_THREADS', 'MXNET_OMP_MAX_THREADS', 'OMP_WAIT_POLICY', 'GOMP_SPINCOUNT')}
    code = ('import json; from common.threads import compute_env, default_compute_threads; '
            'stages = {s: compute_env(s, 2) for s in ("align", "train", None)}; default_compute_threads(); '
            'import os; stages["main"] = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}; '
            'print(json.dumps(stages))')
    run = subprocess.run([sys.executable, '-c', code], cwd=repo_root, env={**base, **env}, capture_output=True,
                         text=True, check=True)
    return json.loads(run.stdout.splitlines()[-1])


def test_threads_per_stage_and_the_users_settings_win(repo_root):
    """MTCNN workers get one thread each, other stages a share of the cores, all a passive OpenMP wait; the
    user's OMP_NUM_THREADS / OMP_WAIT_POLICY (or MXNET_OMP_MAX_THREADS) always win."""
    share = str(max(1, physical_cores() // 2))
    seen = _compute_env_seen(repo_root)
    assert seen['align'] == {'OMP_NUM_THREADS': '1', 'OMP_WAIT_POLICY': 'PASSIVE'}
    assert seen['train'] == seen['null'] == {'OMP_NUM_THREADS': share, 'OMP_WAIT_POLICY': 'PASSIVE'}
    assert seen['main'] == {'OMP_NUM_THREADS': str(physical_cores()), 'OMP_WAIT_POLICY': 'PASSIVE'}
    seen = _compute_env_seen(repo_root, OMP_NUM_THREADS='3', OMP_WAIT_POLICY='ACTIVE')
    assert seen['align'] == seen['train'] == seen['main'] == {'OMP_NUM_THREADS': '3', 'OMP_WAIT_POLICY': 'ACTIVE'}
    seen = _compute_env_seen(repo_root, MXNET_OMP_MAX_THREADS='3')
    assert seen['align'] == {'OMP_WAIT_POLICY': 'PASSIVE'}      # MXNet reads the user's variable instead
    assert seen['main'] == {'OMP_NUM_THREADS': None, 'OMP_WAIT_POLICY': 'PASSIVE'}


def test_importing_library_code_sets_no_threads(repo_root):
    """Only a command decides the threads: importing the shared modules (or a stage) changes nothing."""
    assert _threads_seen(repo_root, 'import common, common.cli, common.errors, common.paths, common.threads') == 'None'
    assert _threads_seen(repo_root, 'import models, data_tools.packing') == 'None'


def test_default_locations_are_under_runs_and_movable(monkeypatch, repo_root, tmp_path):
    from common.paths import cache_dir, runs_dir
    monkeypatch.delenv('LIGHTCNN_RUNS_DIR', raising=False)
    monkeypatch.delenv('LIGHTCNN_CACHE', raising=False)
    assert runs_dir('pretrained', 'v4') == str(repo_root / 'runs' / 'pretrained' / 'v4')
    assert cache_dir('mtcnn') == str(repo_root / 'runs' / 'cache' / 'mtcnn')
    monkeypatch.setenv('LIGHTCNN_RUNS_DIR', str(tmp_path / 'r'))
    assert runs_dir('export', 'v4') == str(tmp_path / 'r' / 'export' / 'v4')
    assert cache_dir() == str(tmp_path / 'r' / 'cache')
    monkeypatch.setenv('LIGHTCNN_CACHE', str(tmp_path / 'c'))
    assert cache_dir('mtcnn') == str(tmp_path / 'c' / 'mtcnn')
    assert not (tmp_path / 'r').exists()  # nothing is created until a command writes there


def test_list_images_is_recursive_sorted_and_by_extension(tmp_path):
    for rel in ['b/2.JPG', 'b/1.png', 'a/x y/ü.pgm', 'a/notes.txt', 'top.jpeg']:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b'x')
    assert list_images(tmp_path) == ['a/x y/ü.pgm', 'b/1.png', 'b/2.JPG', 'top.jpeg']


def test_fit_geometry():
    pre = Preprocessing(input_size=128)
    exact = np.arange(128 * 128, dtype=np.uint32).reshape(128, 128).astype(np.uint8)
    assert pre.fit(exact) is exact                                         # used as it is
    big = np.zeros((144, 144), np.uint8)
    big[8:136, 8:136] = 255
    assert np.all(pre.fit(big) == 255)                                     # 144 -> centre 128, as validation
    small = np.full((100, 80), 7, np.uint8)
    assert pre.fit(small).shape == (128, 128)                              # scaled up on the shorter side
    lfw = np.zeros((250, 250), np.uint8)
    lfw[50:200, 50:200] = 200
    assert np.all(pre.fit(lfw, center_crop=150) == 200)                    # central 150 square, resized


def test_channels_scaling_and_record_iter_args():
    bgr = np.zeros((128, 128, 3), np.uint8)
    bgr[..., 0] = 255                                                      # pure blue
    gray = Preprocessing(channels='gray').decoded(bgr)
    assert gray.shape == (128, 128, 1) and gray.max() == cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).max()
    rgb = Preprocessing(channels='rgb').decoded(bgr)
    assert rgb[0, 0].tolist() == [0, 0, 255]
    batch = Preprocessing(channels='bgr', mean=127.5, scale=1 / 127.5).to_batch([bgr, bgr])
    assert batch.shape == (2, 3, 128, 128) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0, :, 0, 0], [1.0, -1.0, -1.0])
    train = Preprocessing().record_iter_args(train=True)
    assert train['data_shape'] == (1, 128, 128) and train['rand_crop'] and train['rand_mirror']
    assert not Preprocessing().record_iter_args(train=False)['rand_crop']
    with pytest.raises(ValueError, match='RGB'):
        Preprocessing(channels='bgr').record_iter_args(train=True)
    assert Preprocessing.from_dict(Preprocessing(input_size=96).to_dict()) == Preprocessing(input_size=96)


def test_cli_errors_are_one_line_exit_2(capsys):
    assert run_cli(lambda argv: (_ for _ in ()).throw(UsageError('missing root /x')), []) == 2
    assert capsys.readouterr().err == 'error: missing root /x\n'
    with pytest.raises(SystemExit) as exit_info:
        ArgumentParser(prog='tool').parse_args(['--bogus'])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('error: ') and '--bogus' in err and 'tool --help' in err, err


SCRIPTS = ['train_lightcnn.py', 'data_tools/pack_rec.py', 'data_tools/make_pairs.py', 'data_tools/inspect_rec.py',
           'data_tools/align.py', 'extract_features/extract_features.py', 'lfw_verification/lfw_eval.py',
           'lfw_verification/identify.py', 'models/import_pretrained.py', 'models/export.py',
           'data_tools/make_bin.py', 'identification/plot_embeddings.py', 'identification/predict.py',
           'identification/split_features.py']


@pytest.mark.parametrize('script', SCRIPTS)
def test_every_script_runs_from_the_root_and_misuse_is_exit_2(repo_root, tmp_path, script):
    ok = subprocess.run([sys.executable, script, '--help'], cwd=repo_root, capture_output=True, text=True)
    assert ok.returncode == 0 and 'usage' in ok.stdout.lower()
    bad = subprocess.run([sys.executable, str(repo_root / script), '--no-such-option'], cwd=tmp_path,
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert 'Traceback' not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


# Runs ``SCRIPT --help`` and prints whether MXNet was imported and the value VARIABLE had when it was (or at
# the end); RUN_NAME 'main' runs the command, anything else only imports the script as a module.
_ENV_SPY = """
import os, runpy, sys
script, variable, run_name = sys.argv[1:4]
seen = []
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == 'mxnet' and not seen:
            seen.append(os.environ.get(variable))
sys.meta_path.insert(0, Spy())
sys.argv = [script, '--help']
try:
    runpy.run_path(script, run_name='__main__' if run_name == 'main' else run_name)
except SystemExit:
    pass
print('mxnet' in sys.modules, seen[0] if seen else os.environ.get(variable))
"""


def _env_when_mxnet_loads(script, variable, run_name, cwd, env):
    """``(mxnet loaded: 'True'/'False', value of variable)`` for ``script`` run by :data:`_ENV_SPY`."""
    run = subprocess.run([sys.executable, '-c', _ENV_SPY, str(script), variable, run_name], cwd=cwd, env=env,
                         capture_output=True, text=True, check=True)
    return tuple(run.stdout.split()[-2:])


@pytest.mark.parametrize('script', SCRIPTS)
def test_every_script_sizes_threads_before_mxnet(repo_root, tmp_path, script):
    env = {k: v for k, v in os.environ.items() if k not in ('OMP_NUM_THREADS', 'MXNET_OMP_MAX_THREADS')}
    mxnet_loaded, threads = _env_when_mxnet_loads(repo_root / script, 'OMP_NUM_THREADS', 'main', tmp_path, env)
    assert threads == str(physical_cores()), f'{script}: OMP_NUM_THREADS={threads} (mxnet loaded: {mxnet_loaded})'


@pytest.mark.parametrize('script', SCRIPTS)
def test_every_command_waits_passively_and_importing_it_does_not(repo_root, tmp_path, script):
    """OMP_WAIT_POLICY=PASSIVE from a command's first statement, before MXNet loads (libgomp's spinning
    threads made small networks collapse on a busy machine, common/threads.py); importing the script as a
    module leaves the environment alone."""
    env = {k: v for k, v in os.environ.items() if k not in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT')}
    seen = {run_name: _env_when_mxnet_loads(repo_root / script, 'OMP_WAIT_POLICY', run_name, tmp_path, env)[1]
            for run_name in ('main', 'imported_script')}
    assert seen == {'main': 'PASSIVE', 'imported_script': 'None'}, script


@pytest.mark.parametrize('command', [['-m', 'tools.launch'], ['bench/run_all.py'], ['bench/bench_eval.py'],
                                     ['bench/bench_pack.py'], ['bench/bench_input.py'], ['bench/bench_extract.py'],
                                     ['bench/bench_train.py'], ['bench/bench_align.py'],
                                     ['bench/bench_alignment_accuracy.py'], ['bench/bench_busy.py']])
def test_tools_and_benchmarks_start_from_any_folder(repo_root, tmp_path, command):
    """No sys.path edits: the installed project (pip install -r requirements.txt) is found from anywhere."""
    args = command if command[0] == '-m' else [str(repo_root / command[0])]
    for cwd in (repo_root, tmp_path):
        run = subprocess.run([sys.executable, *args, '--help'], cwd=cwd, capture_output=True, text=True)
        assert run.returncode == 0 and 'usage' in run.stdout.lower(), run.stderr[-500:]
