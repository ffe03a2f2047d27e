"""Packing face images into im2rec-compatible RecordIO: formats, splits, bad files, determinism, errors."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from common.errors import UsageError, flag
from data_tools.packing import ImageEncoder, pack_records, read_list, select_identities
from data_tools.records import iter_records
from helpers import ODD_NAMES as NAMES
from helpers import face_image, make_tree, save_image

PACK = [sys.executable, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'data_tools', 'pack_rec.py')]
def _load_json(prefix):
    with open(f'{prefix}.json', encoding='utf-8') as f:
        return json.load(f)


def _records(prefix):
    return [(label, rid, cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_UNCHANGED))
            for label, rid, buf in iter_records(f'{prefix}.rec')]


def test_tree_pack_outputs_labels_and_skips(tmp_path):
    root = tmp_path / 'faces'
    make_tree(root)
    prefix = str(tmp_path / 'out' / 'train')
    summary = pack_records(str(root), prefix, workers=0, progress=False)
    for ext in ('rec', 'idx', 'lst', 'json'):
        assert os.path.isfile(f'{prefix}.{ext}')
    assert not [f for f in os.listdir(tmp_path / 'out') if f.endswith('.part')]
    meta = _load_json(prefix)
    assert meta == summary
    assert meta['num_classes'] == 4 and meta['identities'] == sorted(NAMES)
    assert meta['splits']['train']['images'] == 14
    reasons = {os.path.basename(s['path']): s['reason'] for s in meta['skipped']}
    assert set(reasons) == {'zero.jpg', 'text.jpg', 'truncated.jpg', 'tiny.png', 'notes.txt'}
    assert reasons['zero.jpg'] == 'zero-byte file'
    assert reasons['truncated.jpg'].startswith('truncated')
    assert reasons['text.jpg'].startswith('not a decodable image')
    assert reasons['tiny.png'].startswith('too small')
    assert reasons['notes.txt'].startswith('not an image file')
    # .lst rows are im2rec's "index<TAB>label<TAB>path" and agree with the records
    rows = [line.split('\t') for line in open(f'{prefix}.lst', encoding='utf-8').read().splitlines()]
    records = _records(prefix)
    assert len(rows) == len(records) == 14
    for (index, label, path), (rlabel, rid, img) in zip(rows, records):
        assert int(index) == rid and float(label) == rlabel
        assert meta['identities'][rlabel] == path.split('/')[0]
        assert img.shape == (144, 144)  # one gray channel
    per_name = dict(zip(NAMES, (5, 4, 3, 2)))
    assert meta['images_per_identity'] == [per_name[n] for n in sorted(NAMES)]
    assert sorted(int(r[0]) for r in rows) == list(range(14))


def test_gray_records_equal_mxnet_pack_img(tmp_path):
    """Our worker's bytes are what mx.recordio.pack_img makes of the same 144x144 gray image."""
    import mxnet as mx
    path = tmp_path / 'a.png'
    save_image(path, face_image(3, 144, 144))
    jpeg, reason = ImageEncoder(144, 'gray', 95)(str(path))
    assert reason is None
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    header = mx.recordio.IRHeader(0, 2.0, 7, 0)
    ref = mx.recordio.pack_img(header, gray, quality=95, img_fmt='.jpg')
    assert mx.recordio.unpack(ref)[1] == jpeg
    _, img = mx.recordio.unpack_img(ref, iscolor=-1)
    assert img.shape == (144, 144)


def test_image_record_iter_reads_our_files(tmp_path):
    import mxnet as mx
    root = tmp_path / 'faces'
    make_tree(root, bad=False)
    prefix = str(tmp_path / 'train')
    pack_records(str(root), prefix, workers=0, progress=False)
    it = mx.io.ImageRecordIter(path_imgrec=prefix + '.rec', path_imgidx=prefix + '.idx', data_shape=(1, 128, 128),
                               rand_crop=True, rand_mirror=True, shuffle=True, batch_size=7, preprocess_threads=1)
    labels = []
    for batch in it:
        assert batch.data[0].shape == (7, 1, 128, 128)
        labels += batch.label[0].asnumpy()[:7 - batch.pad].astype(int).tolist()
    assert sorted(labels) == sorted(label for label, _, _ in iter_records(prefix + '.rec'))
    dataset = mx.gluon.data.vision.ImageRecordDataset(prefix + '.rec', flag=0)
    img, label = dataset[0]
    assert len(dataset) == 14 and img.shape == (144, 144, 1) and label == next(iter_records(prefix + '.rec'))[0]


def test_same_inputs_same_bytes_any_worker_count(tmp_path):
    root = tmp_path / 'faces'
    make_tree(root)
    a, b, c = (str(tmp_path / n) for n in 'abc')
    pack_records(str(root), a, workers=0, progress=False, seed=5)
    pack_records(str(root), b, workers=2, progress=False, seed=5)
    pack_records(str(root), c, workers=0, progress=False, seed=6)
    for ext in ('rec', 'idx', 'lst'):
        assert open(f'{a}.{ext}', 'rb').read() == open(f'{b}.{ext}', 'rb').read()
    assert open(f'{a}.rec', 'rb').read() != open(f'{c}.rec', 'rb').read()  # seed sets the record order


def test_packing_runs_without_mxnet(tmp_path, repo_root):
    """Records are framed without MXNet (byte-identical, see test_records): its import costs ~2 CPU-seconds."""
    root = tmp_path / 'faces'
    make_tree(root, bad=False)
    code = ('import sys; sys.modules["mxnet"] = None  # any "import mxnet" now fails\n'
            'from data_tools.packing import pack_records\n'
            f'pack_records({str(root)!r}, {str(tmp_path / "p")!r}, workers=2, progress=False, val_identities=1)')
    run = subprocess.run([sys.executable, '-c', code], cwd=repo_root, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    packed = [len(list(iter_records(str(tmp_path / name)))) for name in ('p.rec', 'p_heldout.rec')]
    assert packed[1] > 0 and sum(packed) == 14


def test_packing_after_threaded_opencv_does_not_hang(tmp_path, repo_root):
    """Workers forked from a process whose OpenCV thread pool had run used to hang in cv2.setNumThreads."""
    root = tmp_path / 'faces'
    make_tree(root, bad=False)
    code = ('import cv2, numpy as np\n'
            'cv2.GaussianBlur(np.zeros((3000, 3000), np.uint8), (31, 31), 9)  # starts OpenCV\'s threads\n'
            'from data_tools.packing import pack_records\n'
            f'print(pack_records({str(root)!r}, {str(tmp_path / "p")!r}, workers=2, progress=False)["packed"])')
    run = subprocess.run([sys.executable, '-c', code], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[-1] == '14'


def test_val_and_heldout_splits(tmp_path):
    root = tmp_path / 'faces'
    make_tree(root, per_identity=(6, 5, 4, 1), bad=False)
    prefix = str(tmp_path / 'p')
    meta = pack_records(str(root), prefix, workers=0, progress=False, val_per_identity=2, seed=1)
    assert meta['splits']['val']['images'] == 2 + 2 + 2 + 0  # the 1-image identity keeps its image
    assert meta['splits']['train']['images'] == 4 + 3 + 2 + 1
    train_paths = {line.split('\t')[2] for line in open(prefix + '.lst', encoding='utf-8')}
    val_paths = {line.split('\t')[2] for line in open(prefix + '_val.lst', encoding='utf-8')}
    assert not train_paths & val_paths
    meta = pack_records(str(root), prefix, workers=0, progress=False, val_identities=1, seed=1)
    held = meta['heldout_identities']
    assert len(held) == 1 and held[0] not in meta['identities'] and meta['num_classes'] == 3
    assert {label for label, _, _ in iter_records(prefix + '_heldout.rec')} == {0}
    held_paths = {line.split('\t')[2].split('/')[0] for line in open(prefix + '_heldout.lst', encoding='utf-8')}
    assert held_paths == set(held)


def _msceleb(tmp_path):
    root = tmp_path / 'aligned'
    counts = {'m.0aaa': (3, 17), 'm.0bbb': (2, 5), 'm.0ccc': (3, 42), 'm.0ddd': (1, 9)}
    lines = []
    for mid, (n, label) in counts.items():
        for i in range(n):
            save_image(root / mid / f'{i}-FaceId-0.jpg', face_image(hash((mid, i)) % 1000))
            lines.append(f'/data/MS/aligned/{mid}/{i}-FaceId-0.jpg {label}')
    lst = tmp_path / 'clean_list.txt'
    lst.write_text('\n'.join(lines) + '\n')
    return root, lst


def test_msceleb_list_strip_prefix_top_identities(tmp_path):
    root, lst = _msceleb(tmp_path)
    prefix = str(tmp_path / 'ms')
    meta = pack_records(str(root), prefix, str(lst), strip_prefix=3, top_identities=2, workers=0, progress=False)
    # two identities with 3 images tie for the top: labels 17 and 42 kept, re-indexed densely
    assert meta['label_map'] == {'17': 0, '42': 1}
    assert meta['identities'] == ['m.0aaa', 'm.0ccc']
    assert meta['identities_dropped']['beyond_top_identities'] == 2
    assert sorted(label for label, _, _ in iter_records(prefix + '.rec')) == [0, 0, 0, 1, 1, 1]


def test_top_identities_tie_break_is_smaller_key():
    kept, _ = select_identities({5: 3, 2: 3, 9: 3, 1: 1}, top=2)
    assert kept == [2, 5]
    kept, dropped = select_identities({'a': 1, 'b': 4, 'c': 2}, min_images=2)
    assert kept == ['b', 'c'] and dropped['fewer_than_min_images'] == 1


def test_im2rec_lst_input(tmp_path):
    root = tmp_path / 'faces'
    make_tree(root, bad=False)
    rows = [f'{i}\t{float(k * 10):f}\t{name}/img 0.jpg' for i, (k, name) in enumerate(enumerate(NAMES))]
    lst = tmp_path / 'in.lst'
    lst.write_text('\n'.join(rows) + '\n', encoding='utf-8')
    assert read_list(str(lst))[1] == (f'{NAMES[1]}/img 0.jpg', 10)
    meta = pack_records(str(root), str(tmp_path / 'o'), str(lst), workers=0, progress=False)
    assert meta['num_classes'] == 4 and meta['label_map'] == {'0': 0, '10': 1, '20': 2, '30': 3}
    assert meta['identities'] == NAMES


@pytest.mark.parametrize('text, line', [('a.jpg 1\nb.jpg\n', 2), ('a.jpg 1\nb.jpg x\n', 2),
                                        ('a.jpg 1\n\nb.jpg 1.5\n', 3)])
def test_malformed_list_line_is_usage_error_with_line(tmp_path, text, line):
    lst = tmp_path / 'bad.txt'
    lst.write_text(text)
    with pytest.raises(UsageError, match=rf':{line}:'):
        read_list(str(lst))


def test_strip_prefix_too_long_and_unresolvable_list(tmp_path):
    root, lst = _msceleb(tmp_path)
    with pytest.raises(UsageError, match='strip_prefix 9 leaves nothing') as err:  # the parameter; CLIs: the flag
        read_list(str(lst), strip_prefix=9)
    assert ': --strip-prefix 9 leaves nothing' in err.value.spelled(flag)
    with pytest.raises(UsageError, match='none of the first'):
        pack_records(str(root), str(tmp_path / 'x'), str(lst), strip_prefix=0, workers=0, progress=False)


def test_missing_root_and_empty_tree(tmp_path):
    with pytest.raises(UsageError, match='not found'):
        pack_records(str(tmp_path / 'nope'), str(tmp_path / 'o'), workers=0, progress=False)
    (tmp_path / 'empty' / 'person').mkdir(parents=True)
    with pytest.raises(UsageError, match='no images'):
        pack_records(str(tmp_path / 'empty'), str(tmp_path / 'o'), workers=0, progress=False)
    assert not list(tmp_path.glob('o*'))


def test_only_bad_files_is_error_and_leaves_nothing(tmp_path):
    (tmp_path / 'faces' / 'x').mkdir(parents=True)
    (tmp_path / 'faces' / 'x' / 'a.jpg').write_bytes(b'')
    with pytest.raises(UsageError, match='no image could be packed'):
        pack_records(str(tmp_path / 'faces'), str(tmp_path / 'o'), workers=0, progress=False)
    assert not list(tmp_path.glob('o*'))


class FailAfter:
    """An image filter that 'crashes' part-way, standing in for a killed run."""

    def __init__(self, n):
        self.n = n

    def __call__(self, img):
        self.n -= 1
        if self.n < 0:
            raise RuntimeError('killed')
        return img


class DropGreenish:
    """Picklable filter: 'no face' for images whose mean green exceeds red; a stand-in for alignment."""
    input_color = 'bgr'

    def __call__(self, img):
        assert img.ndim == 3
        return None if img[:, :, 1].mean() > img[:, :, 2].mean() else img[5:-5, 5:-5]


def test_interrupted_run_leaves_no_complete_looking_output(tmp_path):
    root = tmp_path / 'faces'
    make_tree(root, bad=False)
    prefix = str(tmp_path / 'o')
    with pytest.raises(RuntimeError):
        pack_records(str(root), prefix, workers=0, progress=False, image_filter=FailAfter(5))
    assert os.listdir(tmp_path) == ['faces']


def test_image_filter_in_workers(tmp_path):
    root = tmp_path / 'faces'
    make_tree(root, bad=False)
    expected = sum(DropGreenish()(cv2.imread(str(p))) is None for p in root.rglob('img*'))
    meta = pack_records(str(root), str(tmp_path / 'o'), workers=2, progress=False, image_filter=DropGreenish())
    assert meta['skipped_by_reason'].get('no face', 0) == expected
    assert meta['splits']['train']['images'] == 14 - expected
    assert meta['options']['image_filter'] == 'DropGreenish'


def test_cli_success_and_errors(tmp_path):
    root = tmp_path / 'faces'
    make_tree(root)
    run = subprocess.run(PACK + ['--images', str(root), '--out', str(tmp_path / 'o'), '--workers', '1',
                                 '--quiet', '--color', 'bgr', '--size', '64'], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert 'packed 14 images' in run.stdout and 'skipped 5' in run.stdout
    _, _, img = _records(str(tmp_path / 'o'))[0]
    assert img.shape == (64, 64, 3)
    bad_list = tmp_path / 'l.txt'
    bad_list.write_text('a.jpg 0\nonlyonefield\n')
    for args in (['--images', str(tmp_path / 'missing'), '--out', str(tmp_path / 'x')],
                 ['--list', str(bad_list), '--images', str(root), '--out', str(tmp_path / 'x')],
                 ['--out', str(tmp_path / 'x')]):
        run = subprocess.run(PACK + args, capture_output=True, text=True)
        assert run.returncode == 2, run.stderr
        assert 'Traceback' not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    run = subprocess.run(PACK + ['--list', str(bad_list), '--images', str(root), '--out', str(tmp_path / 'x')],
                         capture_output=True, text=True)
    assert 'l.txt:2:' in run.stderr


def test_orl_pgm(orl_root, tmp_path):
    meta = pack_records(str(orl_root), str(tmp_path / 'orl'), workers=2, progress=False, val_per_identity=2)
    assert meta['num_classes'] == 40
    assert meta['splits']['train']['images'] == 320 and meta['splits']['val']['images'] == 80
    assert [s['reason'] for s in meta['skipped']] == ['not inside an identity folder'] * len(meta['skipped'])
    label, _, buf = next(iter_records(str(tmp_path / 'orl.rec')))
    assert cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_UNCHANGED).shape == (144, 144)


def test_pubfig_subset_via_list_with_spaces(pubfig_root, tmp_path):
    names = sorted(os.listdir(pubfig_root))[:10]
    lines = [f'{n}/{f} {k}' for k, n in enumerate(names) for f in sorted(os.listdir(pubfig_root / n))[:20]]
    (tmp_path / 'l.txt').write_text('\n'.join(lines) + '\n', encoding='utf-8')
    meta = pack_records(str(pubfig_root), str(tmp_path / 'pf'), str(tmp_path / 'l.txt'), workers=2,
                        progress=False, val_per_identity=2)
    assert meta['num_classes'] == 10 and meta['identities'] == names
    assert meta['splits']['train']['images'] + meta['splits']['val']['images'] + len(meta['skipped']) == 200
    assert meta['splits']['val']['images'] == 20


class _BatchFilter:
    """An image filter with ``align_batch`` (as FaceAligner): keeps bright images, drops dark ones."""

    def __init__(self):
        self.batches = []

    def _one(self, img):
        return img[4:-4, 4:-4] if img.mean() > 60 else None

    def __call__(self, img):
        return self._one(img)

    def align_batch(self, images):
        from types import SimpleNamespace
        self.batches.append(len(images))
        return [SimpleNamespace(image=self._one(img)) for img in images]


def test_encode_many_runs_a_batch_filter_once_with_the_same_results(tmp_path):
    bright, dark = np.full((60, 50, 3), 200, np.uint8), np.full((60, 50, 3), 20, np.uint8)
    cv2.imwrite(str(tmp_path / 'bright.png'), bright)
    cv2.imwrite(str(tmp_path / 'dark.png'), dark)
    (tmp_path / 'broken.jpg').write_bytes(b'not a jpeg')
    paths = [str(tmp_path / n) for n in ('bright.png', 'broken.jpg', 'dark.png', 'missing.png')]
    image_filter = _BatchFilter()
    encoder = ImageEncoder(size=32, image_filter=image_filter)
    many = encoder.encode_many(paths)
    assert image_filter.batches == [2]                      # the two decodable images, in one call
    assert many == [encoder(p) for p in paths]
    assert many[0][0] is not None and [r for _, r in many] == [None, many[1][1], 'no face', 'file not found']
    assert 'not a decodable image' in many[1][1]


# ------------------------------------------------------------------ names, links, locks, disk full, commit order

def test_tree_names_a_lst_cannot_hold_and_links_are_skipped_and_listed(tmp_path):
    root = tmp_path / 'faces'
    make_tree(root, bad=False)
    os.rename(root / 'bob', root / 'b\tob')                                    # 3 images in a tab-named folder
    os.rename(bytes(root / NAMES[0] / 'img 0.jpg'), bytes(root / NAMES[0]) + b'/img \xff.jpg')  # not UTF-8
    os.symlink('..', root / NAMES[1] / 'loop')
    os.symlink(NAMES[1], root / f'copy of {NAMES[1]}')
    meta = pack_records(str(root), str(tmp_path / 'o'), workers=0, progress=False)
    assert meta['packed'] == 14 - 3 - 1 and meta['num_classes'] == 3
    reasons = {s['path']: s['reason'] for s in meta['skipped']}
    assert reasons == {
        'b\tob/img 0.jpg': 'name contains a tab or line break, which a line-based list cannot hold',
        'b\tob/img 1.png': 'name contains a tab or line break, which a line-based list cannot hold',
        'b\tob/img 2.jpg': 'name contains a tab or line break, which a line-based list cannot hold',
        f'{NAMES[0]}/img \\xff.jpg': 'name is not valid UTF-8 (a file name in another encoding), which a UTF-8 '
                                     'list cannot hold',
        f'{NAMES[1]}/loop': 'symlink loop back to .',
        f'copy of {NAMES[1]}': f'same folder as {NAMES[1]} (a link), listed there'}
    assert len(open(tmp_path / 'o.lst', encoding='utf-8').read().splitlines()) == 10


def test_align_report_beside_the_tree_is_not_packed_as_a_skipped_file(tmp_path):
    from data_tools.alignment import FaceAligner, align_tree

    class WholeImageDetector:  # the "face" is the central square; no weights needed
        def detect(self, image, margin=None):
            h, w = image.shape[:2]
            s = min(h, w)
            pts = np.array([[0.35, 0.4], [0.65, 0.4], [0.5, 0.55], [0.38, 0.72], [0.62, 0.72]]) * s
            pts += [(w - s) / 2, (h - s) / 2]
            return np.array([[0, 0, w - 1, h - 1, 0.99]]), pts[None]
    root = tmp_path / 'faces'
    make_tree(root, bad=False)
    summary = align_tree(str(root), str(tmp_path / 'aligned'), size=64, progress=False,
                         aligner=FaceAligner(size=64, detector=WholeImageDetector()))
    assert summary['counts'] == {'aligned': 14}
    assert os.path.isfile(tmp_path / 'aligned.align_report.csv')
    meta = pack_records(str(tmp_path / 'aligned'), str(tmp_path / 'o'), size=64, workers=0, progress=False)
    assert meta['packed'] == 14 and meta['skipped'] == []


def _hold_lock(path, ready, release):
    from common.fileio import exclusive_lock
    with exclusive_lock(path):
        ready.set()
        release.wait(60)


def test_a_second_pack_into_the_same_out_fails_at_once(tmp_path):
    import multiprocessing
    root = tmp_path / 'faces'
    make_tree(root, bad=False)
    prefix = str(tmp_path / 'o')
    ctx = multiprocessing.get_context('fork')
    ready, release = ctx.Event(), ctx.Event()
    first = ctx.Process(target=_hold_lock, args=(prefix + '.lock', ready, release))  # a pack in progress
    first.start()
    try:
        assert ready.wait(30)
        with pytest.raises(UsageError, match=rf'o\.\* is being written by process {first.pid}'):
            pack_records(str(root), prefix, workers=0, progress=False)
        assert sorted(os.listdir(tmp_path)) == ['faces', 'o.lock']         # nothing of the second one
    finally:
        release.set()
        first.join(30)
    assert pack_records(str(root), prefix, workers=0, progress=False)['packed'] == 14
    assert not os.path.exists(prefix + '.lock')


def test_disk_full_while_writing_or_closing_leaves_nothing(tmp_path, monkeypatch):
    """ENOSPC from a record write, then again from close() (the buffered rest): one error, no .part left."""
    import errno

    import data_tools.packing as packing
    from common.errors import WriteError
    root = tmp_path / 'faces'
    make_tree(root, bad=False)
    writes = []

    class FullDisk(packing.IndexedRecordWriter):
        def write_idx(self, key, buf):
            writes.append(key)
            if len(writes) > 5:
                raise OSError(errno.ENOSPC, 'No space left on device')
            super().write_idx(key, buf)

        def close(self):
            raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(packing, 'IndexedRecordWriter', FullDisk)
    with pytest.raises(WriteError, match=r'cannot write .*o\.\*: No space left on device'):
        pack_records(str(root), str(tmp_path / 'out' / 'o'), workers=0, progress=False)
    assert os.listdir(tmp_path / 'out') == []


def test_disk_full_on_a_real_small_file_system(tmp_path, repo_root):
    """A 64 KiB tmpfs (needs root; skipped elsewhere): the CLI prints one error line and leaves nothing."""
    mount = tmp_path / 'small'
    mount.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip('cannot mount a tmpfs here (needs root)')
    try:
        root = tmp_path / 'faces'
        make_tree(root, per_identity=(30, 30), bad=False)
        run = subprocess.run(PACK + ['--images', str(root), '--out', str(mount / 'o'), '--workers', '0',
                                     '--quiet', '--quality', '100'], capture_output=True, text=True, cwd=repo_root)
        assert run.returncode == 2 and run.stderr.startswith('error: cannot write '), run.stderr
        assert len(run.stderr.splitlines()) == 1 and 'No space left on device' in run.stderr
        assert os.listdir(mount) == []
    finally:
        subprocess.run(['umount', str(mount)], check=True)


def test_a_kill_between_the_renames_never_leaves_a_new_rec_beside_an_old_idx(tmp_path, monkeypatch):
    from training.data import check_record_file
    root = tmp_path / 'faces'
    make_tree(root, bad=False)
    prefix = str(tmp_path / 'd')
    pack_records(str(root), prefix, size=40, workers=0, progress=False)
    real_replace = os.replace

    def killed_at_the_idx(src, dst):
        if str(dst).endswith('.idx'):
            raise KeyboardInterrupt  # stands in for a kill at the last rename
        real_replace(src, dst)
    monkeypatch.setattr(os, 'replace', killed_at_the_idx)
    with pytest.raises(KeyboardInterrupt):
        pack_records(str(root), prefix, size=48, workers=0, progress=False)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ['d.lst', 'd.rec', 'faces']     # no .idx, no .json, no .part
    with pytest.raises(UsageError, match=r'd.idx is missing'):
        check_record_file(prefix + '.rec')
