"""Outputs of every command: never an input nor inside an input tree, parents created, pictures checked first.

Each command line is run in this process through :func:`common.cli.run_cli` (as ``python SCRIPT`` runs it):
an output that is one of its inputs is one ``error:`` line, exit 2, and the input is byte-identical afterwards;
a picture output in a format its writer cannot write fails before any work (the work is replaced by a function
that fails the test); missing parent folders are created; ``align.py`` holds a lock on its ``--out`` tree.
"""
import hashlib
import multiprocessing
import os
import shutil

import numpy as np
import pytest

from common.errors import UsageError
from common.features_mat import write_features
from common.fileio import check_outputs, check_outputs_apart, check_picture_path, exclusive_lock, picture_extensions
from helpers import make_checkpoint, make_tree, run_script, write_tiny_rec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = [f'Aaron_Eckhart/Aaron_Eckhart_{i:04d}.png' for i in range(1, 5)] + \
        [f'Zoe_Ball/Zoe_Ball_{i:04d}.png' for i in range(1, 5)] + \
        [f'Carl_Li/Carl_Li_{i:04d}.png' for i in range(1, 5)]


@pytest.fixture(scope='module')
def t(tmp_path_factory):
    """Inputs made once: a checkpoint, trees, features of 3 identities, pairs, a .rec, a file named afile."""
    t = tmp_path_factory.mktemp('outputs')
    make_tree(t / 'tree', bad=False)
    make_tree(t / 'lfw', lfw=True, bad=False)
    make_checkpoint(t)
    write_tiny_rec(str(t / 'tree'), str(t / 'rec' / 'd'))
    write_features(t / 'f.mat', np.random.RandomState(0).rand(len(NAMES), 4), NAMES)
    (t / 'pairs.txt').write_text('1\t2\nAaron_Eckhart\t1\t2\nZoe_Ball\t1\t2\nAaron_Eckhart\t1\tZoe_Ball\t1\n'
                                 'Aaron_Eckhart\t3\tZoe_Ball\t3\n')
    (t / 'afile').write_text('x')
    (t / 'list.txt').write_text('Aaron_Eckhart/Aaron_Eckhart_0001.png\n')
    return t


def _run(script, argv, capsys):
    """``(exit code, stderr)`` of ``python SCRIPT argv`` run in this process."""
    code, _, err = run_script(script, argv, capsys)
    return code, err


def _digest(path):
    return hashlib.sha256(open(path, 'rb').read()).hexdigest()


def _refused(script, argv, victim, capsys, *words):
    """``script argv`` exits 2 with one ``error:`` line holding ``words``; ``victim`` is left byte-identical."""
    before = _digest(victim)
    code, err = _run(script, argv, capsys)
    assert code == 2 and err.startswith('error: ') and len(err.splitlines()) == 1, err
    assert 'Traceback' not in err and all(w in err for w in words), err
    assert _digest(victim) == before
    return err


# ------------------------------------------------------------------------------ output == input: refused
def test_extract_features_never_writes_over_its_inputs(t, capsys, monkeypatch):
    import extract_features.extraction as extraction
    monkeypatch.setattr(extraction, 'load_checkpoint', lambda *a, **k: pytest.fail('the model was loaded'))
    stem = t / 'ckpt' / 'tiny'
    script = 'extract_features/extract_features.py'
    err = _refused(script, ['--model', stem, '--images', t / 'lfw', '--out', f'{stem}.params'], f'{stem}.params',
                   capsys, '--out', '--model', 'would overwrite the input')
    assert 'an output never replaces an input' in err
    image = t / 'lfw' / 'Zoe_Ball' / 'Zoe_Ball_0003.png'
    _refused(script, ['--model', stem, '--images', t / 'lfw', '--out', image], image, capsys,
             '--out', 'would overwrite the input', '--images')
    _refused(script, ['--model', stem, '--images', t / 'lfw', '--out', t / 'lfw' / 'new' / 'x.mat'], image, capsys,
             'inside the input tree')
    assert not (t / 'lfw' / 'new').exists()
    _refused(script, ['--model', stem, '--img-list', t / 'list.txt', '--root', t / 'lfw', '--out', t / 'x.mat',
                      '--csv', t / 'list.txt'], t / 'list.txt', capsys, '--csv', '--img-list')
    listed = t / 'lfw' / 'Aaron_Eckhart' / 'Aaron_Eckhart_0001.png'
    _refused(script, ['--model', stem, '--img-list', t / 'list.txt', '--root', t / 'lfw', '--out', listed],
             listed, capsys, '--out', 'would overwrite the input', '--img-list')
    _refused(script, ['--model', stem, '--images', t / 'lfw', '--out', t / 'x.mat', '--npy', t / 'x.mat'],
             t / 'f.mat', capsys, '--out and --npy are the same file')


def test_split_features_never_writes_over_its_input(t, capsys):
    script = 'identification/split_features.py'
    args = ['--features', t / 'f.mat', '--unknown-last', '1', '--probes-per-identity', '1']
    _refused(script, args + ['--gallery', t / 'f.mat', '--probe', t / 'sp.mat'], t / 'f.mat', capsys,
             '--gallery', '--features', 'would overwrite the input')
    _refused(script, args + ['--gallery', t / 'x.mat', '--probe', t / 'x.mat'], t / 'f.mat', capsys,
             '--gallery and --probe are the same file')
    assert not (t / 'x.mat').exists() and not (t / 'sp.mat').exists()


def test_identify_never_writes_over_its_inputs(t, capsys):
    script = 'lfw_verification/identify.py'
    base = ['--gallery', t / 'f.mat', '--gallery-per-identity', '2']
    _refused(script, base + ['--json', t / 'f.mat'], t / 'f.mat', capsys, '--json', '--gallery')
    _refused(script, base + ['--classifier', 'centroid', '--save-classifier', t / 'f.mat'], t / 'f.mat', capsys,
             '--save-classifier', '--gallery')
    _refused(script, base + ['--classifier', 'centroid', '--json', t / 'r.json', '--per-class', t / 'r.json'],
             t / 'f.mat', capsys, '--json and --per-class are the same file')


def test_pack_rec_refuses_an_output_inside_its_tree(t, capsys):
    before = sorted(p for p, _, _ in os.walk(t / 'tree'))
    _refused('data_tools/pack_rec.py', ['--images', t / 'tree', '--out', t / 'tree' / 'inside' / 'p4', '--workers', '0'],
             t / 'afile', capsys, '--out', 'inside the input tree', '--images')
    assert sorted(p for p, _, _ in os.walk(t / 'tree')) == before


def test_other_commands_never_write_over_their_inputs(t, capsys, tmp_path):
    _refused('data_tools/make_pairs.py', ['--images', t / 'lfw', '--out', t / 'lfw' / 'pairs.txt', '--folds', '1',
                                          '--per-fold', '1'], t / 'afile', capsys, '--out', 'inside the input tree')
    _refused('data_tools/make_bin.py', ['--pairs', t / 'pairs.txt', '--images', t / 'lfw', '--out', t / 'pairs.txt'],
             t / 'pairs.txt', capsys, '--out', '--pairs')
    _refused('lfw_verification/lfw_eval.py', ['--features', t / 'f.mat', '--pairs', t / 'pairs.txt', '--json',
                                              t / 'f.mat'], t / 'f.mat', capsys, '--json', '--features')
    _refused('identification/predict.py', ['--classifier', t / 'afile', '--features', t / 'f.mat', '--csv',
                                           t / 'f.mat'], t / 'f.mat', capsys, '--csv', '--features')
    rec = t / 'rec' / 'd.rec'
    _refused('data_tools/inspect_rec.py', [rec, '--sheet', t / 'rec' / 'd.idx'], t / 'rec' / 'd.idx', capsys,
             '--sheet', 'would overwrite the input')
    known = tmp_path / 'p_pca.png'  # an identities file named like one of the pictures
    known.write_text('Aaron_Eckhart\n')
    _refused('identification/plot_embeddings.py', ['--features', t / 'f.mat', '--known-from', known, '--out',
                                                   tmp_path / 'p', '--only', 'pca'], known, capsys,
             '--out', '--known-from')
    # export: a checkpoint saved as m-0000 and exported to prefix m would write m-0000.params over it
    model = tmp_path / 'ck'
    model.mkdir()
    for ext in ('.json', '.params'):
        shutil.copy(t / 'ckpt' / f'tiny{ext}', model / f'm-0000{ext}')
    _refused('models/export.py', ['--model', model / 'm-0000', '--format', 'mxnet', '--out', model / 'm'],
             model / 'm-0000.params', capsys, '--out', '--model')


# ------------------------------------------------------------------------------ missing parents: created
def test_missing_parent_folders_are_created(t, tmp_path, capsys):
    new = tmp_path / 'new'
    code, err = _run('identification/split_features.py',
                     ['--features', t / 'f.mat', '--unknown-last', '1', '--probes-per-identity', '1',
                      '--gallery', new / 'a' / 'g.mat', '--probe', new / 'b' / 'p.mat'], capsys)
    assert code == 0, err
    assert (new / 'a' / 'g.mat').is_file() and (new / 'b' / 'p.mat').is_file()
    code, err = _run('lfw_verification/identify.py', ['--gallery', t / 'f.mat', '--gallery-per-identity', '2',
                                                      '--json', new / 'c' / 'j.json'], capsys)
    assert code == 0, err
    assert (new / 'c' / 'j.json').is_file()
    code, err = _run('identification/plot_embeddings.py', ['--features', t / 'f.mat', '--out', new / 'plots' / 'p',
                                                           '--only', 'pca'], capsys)
    assert code == 0, err
    assert (new / 'plots' / 'p_pca.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_a_prefix_naming_a_folder_is_refused(t, tmp_path, capsys):
    code, err = _run('identification/plot_embeddings.py', ['--features', t / 'f.mat', '--out', f'{tmp_path}/plots/',
                                                           '--only', 'pca'], capsys)
    assert code == 2 and err.startswith('error: --out ') and 'names a folder' in err, err
    assert not list(tmp_path.rglob('*.png'))


def test_an_output_under_a_file_names_its_option(t, capsys):
    code, err = _run('data_tools/align.py', ['--images', t / 'tree', '--out', t / 'afile' / 'x'], capsys)
    assert code == 2 and err.startswith('error: --out ') and 'afile is a file, not a folder' in err, err
    assert '--report' not in err
    cut = t / 'cut.pth'
    cut.write_bytes(b'x')
    code, err = _run('models/import_pretrained.py', [cut, '--network', 'lightcnn9', '--out', t / 'afile' / 'm8'],
                     capsys)
    assert code == 2 and err.startswith('error: --out ') and 'afile is a file, not a folder' in err, err


# ------------------------------------------------------------------------------ pictures: checked first
def test_picture_formats_are_checked_before_any_work(t, capsys, monkeypatch):
    import identification.report as report
    import data_tools.records as records
    import lfw_verification.evaluate as evaluate
    monkeypatch.setattr(report, 'load_gallery_probe', lambda *a, **k: pytest.fail('work began'))
    monkeypatch.setattr(records, 'summarize_records', lambda *a, **k: pytest.fail('work began'))
    monkeypatch.setattr(records, 'scan_records', lambda *a, **k: pytest.fail('work began'))
    monkeypatch.setattr(evaluate, 'evaluate_verification', lambda *a, **k: pytest.fail('work began'))
    cases = [('lfw_verification/identify.py', ['--gallery', t / 'f.mat', '--gallery-per-identity', '2', '--classifier',
                                               'svm', '--confusion', t / 'cm.txt'], '--confusion', '.png'),
             ('data_tools/inspect_rec.py', [t / 'rec' / 'd.rec', '--sheet', t / 'sheet.txt'], '--sheet', '.png'),
             ('lfw_verification/lfw_eval.py', ['--features', t / 'f.mat', '--pairs', t / 'pairs.txt', '--roc',
                                               t / 'roc.txt'], '--roc', '.pdf')]
    for script, argv, option, listed in cases:
        code, err = _run(script, argv, capsys)
        assert code == 2 and err.startswith(f'error: {option} ') and len(err.splitlines()) == 1, err
        assert 'cannot write a .txt picture; use one of' in err and listed in err, err
    assert not (t / 'cm.txt').exists() and not (t / 'sheet.txt').exists() and not (t / 'roc.txt').exists()


def test_picture_extensions_come_from_the_writers():
    import cv2
    assert '.png' in picture_extensions('matplotlib') and '.svg' in picture_extensions('matplotlib')
    assert all(cv2.haveImageWriter('x' + ext) for ext in picture_extensions('opencv'))
    assert check_picture_path('a/b.PNG', 'p') == 'a/b.PNG'
    with pytest.raises(UsageError, match='p a/b: cannot write a picture without an extension'):
        check_picture_path('a/b', 'p', 'opencv')


def test_a_real_contact_sheet_and_confusion_picture_are_written(t, tmp_path, capsys):
    code, err = _run('data_tools/inspect_rec.py', [t / 'rec' / 'd.rec', '--sheet', tmp_path / 's' / 'sheet.jpg'],
                     capsys)
    assert code == 0, err
    assert (tmp_path / 's' / 'sheet.jpg').read_bytes()[:2] == b'\xff\xd8'
    code, err = _run('lfw_verification/identify.py', ['--gallery', t / 'f.mat', '--gallery-per-identity', '2',
                                                      '--classifier', 'centroid', '--confusion',
                                                      tmp_path / 'c' / 'cm.svg'], capsys)
    assert code == 0, err
    assert b'<svg' in (tmp_path / 'c' / 'cm.svg').read_bytes()[:500]
    assert not [p for p in os.listdir(tmp_path / 'c') if p.endswith('.part')]


# ------------------------------------------------------------------------------ the helper itself
def test_check_outputs_apart_sees_links_and_trees(tmp_path):
    data = tmp_path / 'data'
    data.mkdir()
    (data / 'in.mat').write_bytes(b'123')
    os.link(data / 'in.mat', tmp_path / 'hard.mat')
    os.symlink(data, tmp_path / 'alias')
    for out in (tmp_path / 'hard.mat', tmp_path / 'alias' / 'in.mat', data / '..' / 'data' / 'in.mat'):
        with pytest.raises(UsageError, match='would overwrite the input'):
            check_outputs_apart({'out': str(out)}, inputs={'features': str(data / 'in.mat')})
    with pytest.raises(UsageError, match='inside the input tree'):
        check_outputs_apart({'out': str(tmp_path / 'alias' / 'new' / 'x.mat')}, trees={'images': str(data)})
    with pytest.raises(UsageError, match='overlap'):
        check_outputs_apart({}, trees={'images': str(data)}, output_trees={'out': str(tmp_path)})
    with pytest.raises(UsageError, match='a and b are the same file'):
        check_outputs_apart({'a': str(tmp_path / 'o.json'), 'b': str(tmp_path / 'alias' / '..' / 'o.json')})
    check_outputs({'out': str(tmp_path / 'fresh' / 'x.mat')}, inputs={'features': str(data / 'in.mat')},
                  trees={'images': str(data)})
    assert (tmp_path / 'fresh').is_dir() and (data / 'in.mat').read_bytes() == b'123'


# ------------------------------------------------------------------------------ align.py: one writer per tree
def _hold(path, ready, release):
    with exclusive_lock(path, 'held'):
        ready.set()
        release.wait(60)


def test_align_refuses_a_second_writer_of_the_same_tree(t, tmp_path, capsys):
    out = tmp_path / 'aligned'
    ctx = multiprocessing.get_context('fork')
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(out) + '.lock', ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        code, err = _run('data_tools/align.py', ['--images', t / 'tree', '--out', out, '--workers', '1', '--quiet'],
                         capsys)
    finally:
        release.set()
        holder.join(30)
    assert code == 2 and err == f'error: {out} is being written by process {holder.pid} (it holds {out}.lock); ' \
                                'wait for it to finish or choose another output\n', err
    assert not out.exists()
