"""Every command line against bad input: one ``error:`` line on stderr and exit code 2, never a traceback.

Output paths under a file, naming a folder or not UTF-8; NaN, infinite, negative and zero numbers; truncated
checkpoints, empty and truncated ``.mat`` files, text files that are not what they claim. The scripts' ``main``
run in this process through :func:`common.cli.run_cli`, as ``python SCRIPT ...`` runs them, so an exception
that is not a :class:`UsageError` fails the test with its traceback.
"""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from common.cli import run_cli
from common.features_mat import write_features
from helpers import load_script, make_checkpoint, make_tree, write_tiny_rec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
    """Good and bad inputs, made once: ``T`` is the folder, names in the cases below are relative to it."""
    t = tmp_path_factory.mktemp('bad')
    make_tree(t / 'tree', bad=False)
    make_tree(t / 'lfw', lfw=True, bad=False)
    stem = make_checkpoint(t)
    write_tiny_rec(str(t / 'tree'), str(t / 'rec' / 'd'))
    (t / 'afile').write_text('x')
    (t / 'adir').mkdir()
    names = [f'Aaron_Eckhart/Aaron_Eckhart_{i:04d}.png' for i in range(1, 5)] + \
            [f'Zoe_Ball/Zoe_Ball_{i:04d}.png' for i in range(1, 5)]
    write_features(t / 'f.mat', np.random.RandomState(0).rand(8, 4), names)
    (t / 'pairs.txt').write_text('1\t2\nAaron_Eckhart\t1\t2\nZoe_Ball\t1\t2\nAaron_Eckhart\t1\tZoe_Ball\t1\n'
                                 'Aaron_Eckhart\t3\tZoe_Ball\t3\n')
    (t / 'empty.mat').write_bytes(b'')
    (t / 'trunc.mat').write_bytes((t / 'f.mat').read_bytes()[:200])
    for name, cut_json, cut_params in (('cut_params', False, True), ('cut_json', True, False)):
        (t / name).mkdir()
        json_text, params = open(stem + '.json').read(), open(stem + '.params', 'rb').read()
        (t / name / 'm.json').write_text(json_text[:20] if cut_json else json_text)
        (t / name / 'm.params').write_bytes(params[:1000] if cut_params else params)
    (t / 'cut.pth').write_bytes(b'\x80\x02}q\x00(X\x05\x00\x00\x00state')     # a legacy pickle cut short
    (t / 'bom_pairs.txt').write_bytes(b'\xef\xbb\xbf1\t1\r\nAaron_Eckhart\t1\r\n')  # 2 fields on line 2
    shutil.copy(t / 'rec' / 'd.rec', t / 'rec' / 'stale.rec')
    (t / 'rec' / 'stale.idx').write_text('0\t0\n1\t4\n')
    return t


CASES = {
    'data_tools/pack_rec.py': [
        ['--images', 'T/tree', '--out', 'T/afile/o'],                  # output under a file
        ['--images', 'T/tree', '--out', 'T/adir/'],                    # output prefix naming a folder
        ['--images', 'T/tree', '--out', 'T/o\udcff'],                  # not UTF-8
        ['--images', 'T/tree', '--out', 'T/o', '--size', '0'],
        ['--images', 'T/tree', '--out', 'T/o', '--size', 'abc'],
        ['--images', 'T/tree', '--out', 'T/o', '--quality', '101'],
        ['--images', 'T/tree', '--out', 'T/o', '--val-ratio', 'nan'],
        ['--images', 'T/tree', '--out', 'T/o', '--val-identities', 'inf'],
        ['--images', 'T/tree', '--out', 'T/o', '--val-identities', '-1'],
        ['--images', 'T/tree', '--out', 'T/o', '--top-identities', '-1'],
        ['--images', 'T/tree', '--out', 'T/o', '--val-per-identity', '-1'],
        ['--images', 'T/tree', '--out', 'T/o', '--min-images-per-identity', '0'],
        ['--images', 'T/tree', '--out', 'T/o', '--strip-prefix', '-1'],
        ['--images', 'T/tree', '--out', 'T/o', '--workers', '-1'],
        ['--images', 'T/tree', '--out', 'T/o', '--list', 'T/f.mat'],   # binary "list"
        ['--images', 'T/missing', '--out', 'T/o'],
    ],
    'data_tools/inspect_rec.py': [
        ['T/afile'], ['T/adir'], ['T/empty.mat'], ['T/rec/stale.rec'], ['T/rec/d.rec', '--count', '-1'],
        ['T/rec/d.rec', '--sheet', 'T/afile/s.png'], ['T/rec/d.rec', '--sheet', 'T/adir'],
    ],
    'data_tools/make_pairs.py': [
        ['--images', 'T/lfw', '--out', 'T/afile/p.txt', '--folds', '1', '--per-fold', '1'],
        ['--images', 'T/lfw', '--out', 'T/adir', '--folds', '1', '--per-fold', '1'],
        ['--images', 'T/lfw', '--out', 'T/p.txt', '--folds', '-1'],
        ['--images', 'T/lfw', '--out', 'T/p.txt', '--per-fold', '0'],
        ['--images', 'T/lfw', '--out', 'T/p.txt', '--identities-from', 'T/empty.mat'],
        ['--images', 'T/lfw', '--out', 'T/p.txt', '--identities-from', 'T/f.mat'],
    ],
    'data_tools/align.py': [
        ['--images', 'T/tree', '--out', 'T/afile'],
        ['--images', 'T/tree', '--out', 'T/al', '--report', 'T/afile/r'],
        ['--images', 'T/tree', '--out', 'T/al', '--workers', '0'],
        ['--images', 'T/tree', '--out', 'T/al', '--max-detect-side', '-5'],
        ['--images', 'T/tree', '--out', 'T/tree/x'],
    ],
    'extract_features/extract_features.py': [
        ['--model', 'STEM', '--images', 'T/lfw', '--out', 'T/adir'],
        ['--model', 'STEM', '--images', 'T/lfw', '--out', 'T/afile/x.mat'],
        ['--model', 'STEM', '--images', 'T/lfw', '--out', 'T/x\udcff.mat'],
        ['--model', 'STEM', '--images', 'T/lfw', '--out', 'T/x.mat', '--batch-size', '0'],
        ['--model', 'STEM', '--images', 'T/lfw', '--out', 'T/x.mat', '--center-crop', '-1'],
        ['--model', 'STEM', '--images', 'T/lfw', '--out', 'T/x.mat', '--workers', '-1'],
        ['--model', 'STEM', '--images', 'T/lfw', '--out', 'T/x.mat', '--epoch', '-1'],
        ['--model', 'T/cut_params/m', '--images', 'T/lfw', '--out', 'T/x.mat'],
        ['--model', 'T/cut_json/m', '--images', 'T/lfw', '--out', 'T/x.mat'],
        ['--model', 'STEM', '--pairs', 'T/bom_pairs.txt', '--root', 'T/lfw', '--out', 'T/x.mat'],
        ['--model', 'STEM', '--img-list', 'T/f.mat', '--out', 'T/x.mat'],
    ],
    'lfw_verification/lfw_eval.py': [
        ['--features', 'T/empty.mat', '--pairs', 'T/pairs.txt'],
        ['--features', 'T/trunc.mat', '--pairs', 'T/pairs.txt'],
        ['--features', 'T/f.mat', '--pairs', 'T/pairs.txt', '--pca', '0'],
        ['--features', 'T/f.mat', '--pairs', 'T/pairs.txt', '--json', 'T/adir'],
        ['--features', 'T/f.mat', '--pairs', 'T/pairs.txt', '--json', 'T/afile/x.json'],
        ['--features', 'T/f.mat', '--pairs', 'T/pairs.txt', '--roc', 'T/r.txt'],   # a missing folder is created now
        ['--features', 'T/f.mat', '--pairs', 'T/f.mat'],
    ],
    'lfw_verification/identify.py': [
        ['--gallery', 'T/empty.mat', '--gallery-per-identity', '1'],
        ['--gallery', 'T/f.mat', '--gallery-per-identity', '1', '--far', 'nan'],
        ['--gallery', 'T/f.mat', '--gallery-per-identity', '-1'],
        ['--gallery', 'T/f.mat', '--gallery-per-identity', '1', '--unknown-fraction', 'nan'],
        ['--gallery', 'T/f.mat', '--gallery-per-identity', '1', '--predictions', 'T/adir'],
        ['--gallery', 'T/f.mat', '--gallery-per-identity', '1', '--json', 'T/afile/j.json'],
    ],
    'models/import_pretrained.py': [
        ['T/cut.pth', '--network', 'lightcnn9', '--out', 'T/imp'],
        ['T/f.mat', '--network', 'lightcnn9', '--out', 'T/imp'],
        ['T/adir', '--network', 'lightcnn9', '--out', 'T/imp'],
    ],
    'models/export.py': [
        ['--model', 'T/cut_params/m', '--format', 'mxnet', '--out', 'T/ex/a'],
        ['--model', 'T/cut_json/m', '--format', 'mxnet', '--out', 'T/ex/a'],
        ['--model', 'STEM', '--format', 'mxnet', '--out', 'T/afile/a'],
        ['--model', 'STEM', '--format', 'mxnet', '--out', 'T/adir/'],
    ],
}


@pytest.mark.parametrize('script, argv', [(s, a) for s, cases in CASES.items() for a in cases],
                         ids=lambda v: ' '.join(v) if isinstance(v, list) else v)
def test_bad_input_is_one_error_line_and_exit_2(inputs, script, argv, capsys):
    stem = str(inputs / 'ckpt' / 'tiny')
    argv = [a.replace('STEM', stem).replace('T/', f'{inputs}/') for a in argv]
    try:
        code = run_cli(load_script(script).main, argv)
    except SystemExit as exit_:  # argparse's misuse exit
        code = exit_.code
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    assert 'Traceback' not in err


def test_non_utf8_argument_from_the_shell(inputs):
    """A real process given a file name in Latin-1 (``o\\xff``): one line, exit 2."""
    out = os.fsencode(str(inputs)) + b'/o\xff'
    run = subprocess.run([sys.executable, os.path.join(ROOT, 'data_tools', 'pack_rec.py'), '--images',
                          str(inputs / 'tree'), '--out', out, '--workers', '0'], capture_output=True)
    assert run.returncode == 2 and run.stderr.startswith(b'error: ') and len(run.stderr.splitlines()) == 1
    assert b'not valid UTF-8' in run.stderr and not os.path.exists(out + b'.rec')
