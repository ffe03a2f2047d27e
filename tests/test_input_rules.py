"""The shared input rules: one tree walker, one image-name rule, numeric ranges, output paths, locks,
MXNet's messages, and the preprocessing geometry that makes a raw image look like its packed record."""
import errno
import math
import multiprocessing
import os

import cv2
import numpy as np
import pytest

from common.checks import check_number
from common.cli import run_cli
from common.errors import UsageError, WriteError, mxnet_message
from common.fileio import atomic_write, check_output_path, check_output_prefix, exclusive_lock
from common.images import ImageFinder, image_key, list_images, scan_images, walk_tree
from common.preprocessing import Preprocessing, crop_resize


def _touch(root, *rels):
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'x')


# ------------------------------------------------------------------------------------------ tree walks
def test_walk_follows_links_once_and_reports_each_loop_once(tmp_path):
    _touch(tmp_path, 'a/1.jpg', 'b/2.jpg', 'b/deep/3.jpg')
    os.symlink('..', tmp_path / 'a' / 'up')                  # a loop: a/up/a/up/... never ends with os.walk
    os.symlink('../b', tmp_path / 'a' / 'also_b')            # a second path to b
    os.symlink('../b/2.jpg', tmp_path / 'a' / 'same.jpg')    # a second path to a file
    os.symlink('missing.jpg', tmp_path / 'b' / 'dangling.jpg')
    walk = walk_tree(tmp_path)
    assert walk.files == ['a/1.jpg', 'b/2.jpg', 'b/dangling.jpg', 'b/deep/3.jpg']
    assert dict(walk.ignored) == {'a/up': 'symlink loop back to .',
                                  'a/also_b': 'same folder as b (a link), listed there',
                                  'a/same.jpg': 'same file as b/2.jpg (a link), listed there'}
    files, ignored = scan_images(tmp_path)
    assert files == walk.files and ignored == walk.ignored
    assert list_images(tmp_path) == walk.files


def test_a_linked_folder_outside_the_tree_is_walked_once(tmp_path):
    _touch(tmp_path, 'outside/x/1.jpg', 'tree/a/2.jpg')
    os.symlink(tmp_path / 'outside' / 'x', tmp_path / 'tree' / 'x')
    os.symlink(tmp_path / 'outside' / 'x', tmp_path / 'tree' / 'y')
    walk = walk_tree(tmp_path / 'tree')
    assert walk.files == ['a/2.jpg', 'x/1.jpg'] and walk.ignored == [('y', 'same folder as x (a link), listed there')]


# ------------------------------------------------------------------------------------------ image names
def test_image_key_is_identity_and_file_without_extension():
    for path in ('/lfw/Ann_B/Ann_B_0001.jpg', 'Ann_B\\Ann_B_0001.png', 'Ann_B/Ann_B_0001', ' x/Ann_B/Ann_B_0001.PGM'):
        assert image_key(path) == 'Ann_B/Ann_B_0001'
    assert image_key('v1.2/a.b.jpg') == 'v1.2/a.b' and image_key('') == ''


def test_finder_takes_the_image_of_the_key_and_names_both_when_ambiguous(tmp_path):
    _touch(tmp_path, 'Ann/Ann_0001.png', 'Ann/Ann_0002.jpg', 'Ann/Ann_0002.PNG', 'Ann/Ann_0003.txt')
    finder = ImageFinder(tmp_path)
    assert finder.find('Ann/Ann_0001.jpg') == str(tmp_path / 'Ann' / 'Ann_0001.png')
    assert finder.find('Ann/Ann_0001', any_extension=True) == str(tmp_path / 'Ann' / 'Ann_0001.png')
    assert finder.find('Ann/Ann_0002.jpg') == str(tmp_path / 'Ann' / 'Ann_0002.jpg')   # a list names this file
    with pytest.raises(UsageError, match=r'Ann_0002.JPG|ambiguous: .*Ann_0002.PNG and .*Ann_0002.jpg'):
        finder.find('Ann/Ann_0002.jpg', any_extension=True)                               # a pair line names a key
    assert finder.find('Ann/Ann_0003.jpg') is None                                         # .txt is no image
    assert finder.find('Bob/Bob_0001.jpg') is None


def test_pairs_resolve_a_png_tree_like_the_evaluator_matches_it(tmp_path):
    from common.verification import pair_rows
    from data_tools.pairs import read_pairs
    from symbols.inference import items_from_pairs
    _touch(tmp_path, 'Ann/Ann_0001.png', 'Ann/Ann_0002.png', 'Bob/Bob_0001.png')
    pairs_file = tmp_path / 'pairs.txt'
    pairs_file.write_text('1\t1\nAnn\t1\t2\nAnn\t2\tBob\t1\n')
    items = items_from_pairs(str(pairs_file), str(tmp_path))
    assert [i.label for i in items] == ['Ann/Ann_0001.png', 'Ann/Ann_0002.png', 'Bob/Bob_0001.png']
    assert all(os.path.isfile(i.source) for i in items)
    idx1, idx2 = pair_rows([i.label for i in items], read_pairs(str(pairs_file)))
    assert idx1.tolist() == [0, 1] and idx2.tolist() == [1, 2]
    _touch(tmp_path, 'Ann/Ann_0002.jpg')
    with pytest.raises(UsageError, match='ambiguous'):
        items_from_pairs(str(pairs_file), str(tmp_path))


# ------------------------------------------------------------------------------------------ numbers
@pytest.mark.parametrize('value, kwargs, message', [
    (float('nan'), {}, 'finite'), (math.inf, {'minimum': 0}, 'finite'), (-1, {'minimum': 1}, '>= 1, got -1'),
    (0, {'above': 0}, '> 0'), (1.0, {'below': 1}, '< 1'), (2.5, {'integer': True}, 'whole'),
    (101, {'maximum': 100}, '<= 100'), (True, {}, 'number'), ('3', {}, 'number'), (None, {}, 'number')])
def test_check_number_refuses(value, kwargs, message):
    with pytest.raises(UsageError, match=message):
        check_number(value, 'x', **kwargs)


def test_check_number_accepts():
    assert check_number(3, 'x', minimum=1, integer=True) == 3
    assert check_number(0.5, 'x', minimum=0, below=1) == 0.5
    assert check_number(None, 'x', minimum=1, optional=True) is None


# ------------------------------------------------------------------------------------------ outputs
def test_output_paths_are_checked_before_work(tmp_path):
    (tmp_path / 'afile').write_text('x')
    with pytest.raises(UsageError, match='is a folder'):
        check_output_path(tmp_path)
    with pytest.raises(UsageError, match='afile is a file, not a folder'):
        check_output_path(tmp_path / 'afile' / 'sub' / 'x.mat')
    with pytest.raises(UsageError, match='does not exist'):
        check_output_path(tmp_path / 'new' / 'x.json', create_folder=False)
    assert not (tmp_path / 'new').exists()
    assert check_output_path(str(tmp_path / 'new' / 'x.json')) and (tmp_path / 'new').is_dir()
    with pytest.raises(UsageError, match='not valid UTF-8'):
        check_output_path(str(tmp_path) + '/o\udcff.json')
    with pytest.raises(UsageError, match='names a folder'):
        check_output_prefix(str(tmp_path) + '/')


def test_disk_full_is_one_line_and_still_an_oserror(tmp_path, capsys):
    def fill(argv):
        with atomic_write(tmp_path / 'out.json', 'w') as f:
            f.write('x')
            raise OSError(errno.ENOSPC, 'No space left on device')
    assert run_cli(fill, []) == 2
    assert capsys.readouterr().err == f'error: cannot write {tmp_path / "out.json"}: No space left on device\n'
    assert os.listdir(tmp_path) == []
    with pytest.raises(OSError) as info:
        fill([])
    assert isinstance(info.value, WriteError) and info.value.errno == errno.ENOSPC


def _hold(path, ready, release):
    with exclusive_lock(path, 'the test output'):
        ready.set()
        release.wait(30)


def test_exclusive_lock_refuses_a_second_writer_and_frees_on_exit(tmp_path):
    lock = tmp_path / 'out.lock'
    ctx = multiprocessing.get_context('fork')
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(lock), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(UsageError, match=rf'the test output is being written by process {holder.pid}'):
            with exclusive_lock(lock, 'the test output'):
                pass
    finally:
        release.set()
        holder.join(30)
    with exclusive_lock(lock):
        assert lock.exists()
    assert not lock.exists()                   # removed on release: nothing left beside the outputs


# ------------------------------------------------------------------------------------------ MXNet messages
def test_mxnet_message_is_the_reason_not_the_preamble():
    import mxnet as mx
    with pytest.raises(mx.MXNetError) as info:
        mx.nd.ones((2, 3)).reshape((4, 4))
    assert str(info.value).startswith('Traceback')           # what printing its first line showed
    message = mxnet_message(info.value)
    assert message.startswith('NDArray.Reshape: Check failed') and 'target shape size is larger' in message
    text = ('Traceback (most recent call last):\n  File "../src/io.cc", line 9\n'
            'MXNetError: Check failed: fi->Read(&header): Invalid NDArray file format\nStack trace:\n  [bt] (0) x')
    assert mxnet_message(text) == 'Check failed: fi->Read(&header): Invalid NDArray file format'


# ------------------------------------------------------------------------------------------ geometry
def test_raw_images_get_the_record_geometry():
    pre = Preprocessing(input_size=128, record_size=144)
    lfw = np.random.RandomState(0).randint(0, 255, (250, 250), np.uint8)
    expected = cv2.resize(lfw, (144, 144), interpolation=cv2.INTER_AREA)[8:136, 8:136]
    np.testing.assert_array_equal(pre.fit(lfw), expected)                   # scale to 144, centre 128
    orl = np.random.RandomState(1).randint(0, 255, (112, 92), np.uint8)
    np.testing.assert_array_equal(pre.fit(orl), crop_resize(orl, 144)[8:136, 8:136])
    crop = np.random.RandomState(2).randint(0, 255, (128, 128), np.uint8)
    assert pre.fit(crop) is crop                                            # already a network input
    np.testing.assert_array_equal(pre.fit(lfw, center_crop=150),            # explicit crop: as before
                                  cv2.resize(lfw[50:200, 50:200], (128, 128), interpolation=cv2.INTER_AREA))


def test_a_raw_image_and_its_packed_record_give_the_same_network_input(tmp_path, monkeypatch):
    """Pack losslessly (PNG records), read the record as validation does (ImageRecordIter, centre crop),
    and load the raw file with the checkpoint's preprocessing: the float batches are identical."""
    import mxnet as mx

    import data_tools.packing as packing
    rng = np.random.RandomState(3)
    raw = {}
    for ident, (h, w) in (('a', (250, 250)), ('b', (100, 100)), ('c', (112, 92))):
        img = cv2.GaussianBlur(rng.randint(0, 255, (h, w)).astype(np.uint8), (5, 5), 2)
        (tmp_path / 'faces' / ident).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / 'faces' / ident / '1.png'), img)
        raw[ident] = str(tmp_path / 'faces' / ident / '1.png')
    monkeypatch.setattr(packing, 'encode_jpeg', lambda img, quality: cv2.imencode('.png', img)[1].tobytes())
    packing.pack_records(str(tmp_path / 'faces'), str(tmp_path / 'd'), size=48, workers=0, progress=False,
                         shuffle=False, min_size=16)
    pre = Preprocessing(channels='gray', input_size=40, record_size=48)
    it = mx.io.ImageRecordIter(path_imgrec=str(tmp_path / 'd.rec'), path_imgidx=str(tmp_path / 'd.idx'),
                               batch_size=3, **pre.record_iter_args(train=False))
    from_records = next(iter(it)).data[0].asnumpy()
    from_raw = pre.to_batch([pre.load(raw[k]) for k in ('a', 'b', 'c')])
    assert from_raw.shape == from_records.shape == (3, 1, 40, 40)
    np.testing.assert_array_equal(from_raw, from_records)
