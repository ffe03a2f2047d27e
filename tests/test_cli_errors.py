"""Command-line misuse and edge inputs (trial report 1): one ``error:`` line, exit 2, no traceback; values.

Argparse misuse reads like every other error (``error: ... (see PROG --help)``); numeric options are refused
by the library when not finite or out of their range (the command spells the flag); inputs without rows,
roots that are files, raw file bytes in messages, closed standard output, capped threshold folds, images
without a face, the record sample ``inspect_rec.py`` decodes.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.checks import SEED_RANGE, check_seed
from common.cli import run_cli
from common.errors import ParameterError, ParameterValueError, UsageError
from common.features_mat import write_features
from common.textio import short_printable
from helpers import make_checkpoint, make_tree, run_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ['train_lightcnn.py', 'data_tools/pack_rec.py', 'data_tools/make_pairs.py', 'data_tools/inspect_rec.py',
           'data_tools/align.py', 'data_tools/make_bin.py', 'data_tools/synthetic.py',
           'extract_features/extract_features.py', 'lfw_verification/lfw_eval.py', 'lfw_verification/identify.py',
           'models/import_pretrained.py', 'models/export.py', 'identification/plot_embeddings.py',
           'identification/predict.py', 'identification/split_features.py', 'tools/launch.py']


def _run(script, argv, capsys):
    """``(exit code, stdout, stderr)`` of ``script`` run in-process as the shell would (argparse exits too)."""
    return run_script(script, argv, capsys)


def _one_error(code, err):
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    assert 'Traceback' not in err
    return lines[0]


@pytest.fixture(scope='module')
def feats(tmp_path_factory):
    """Features files: ``g.mat`` (8 identities x 6), ``p.mat`` (its probes), ``zero.mat`` (0 rows),
    ``two.mat`` (2 images of one identity), and a saved centroid classifier ``c.joblib``."""
    from identification.classifiers import fit_classifier
    tmp = tmp_path_factory.mktemp('clierr')
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 16))
    labels = [f'id{i}/{k}.jpg' for i in range(8) for k in range(6)]
    data = np.repeat(centres, 6, axis=0) + 0.3 * rng.normal(size=(48, 16))
    write_features(str(tmp / 'g.mat'), data.astype(np.float32), labels)
    write_features(str(tmp / 'p.mat'), (data + 0.1 * rng.normal(size=data.shape)).astype(np.float32), labels)
    write_features(str(tmp / 'zero.mat'), np.zeros((0, 16), np.float32), [])
    write_features(str(tmp / 'two.mat'), data[:2].astype(np.float32), labels[:2])
    fit_classifier(data, [lb.split('/')[0] for lb in labels], 'centroid', far=None).save(str(tmp / 'c.joblib'))
    return tmp


# -------------------------------------------------------------------------------------- item 17: argparse
@pytest.mark.parametrize('script, argv', [
    ('data_tools/align.py', ['--images', 'x', '--out', 'y', '--color', 'rgb']),
    ('data_tools/align.py', ['--images', 'x', '--out', 'y', '--scale', 'abc']),
    ('data_tools/pack_rec.py', ['--images', 'x', '--out', 'y', '--size', 'big']),
    ('lfw_verification/identify.py', ['--gallery', 'g.mat', '--classifier', 'rf']),
    ('identification/predict.py', ['--classifier', 'c.joblib']),            # the script's own parser.error
    ('extract_features/extract_features.py', ['--model', 'm']),            # a required group missing
    ('train_lightcnn.py', ['--bogus']),
])
def test_argparse_misuse_is_one_error_line(script, argv, capsys):
    code, _, err = _run(script, argv, capsys)
    line = _one_error(code, err)
    assert line.endswith(' --help)'), line  # '(see PROG --help)'; PROG is the script's name in a shell


def test_argparse_misuse_from_the_shell():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    run = subprocess.run([sys.executable, str(ROOT / 'data_tools' / 'pack_rec.py'), '--images', 'x', '--out', 'y',
                          '--color', 'rgb'], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 2 and run.stdout == ''
    assert run.stderr == ("error: argument --color: invalid choice: 'rgb' (choose from 'gray', 'bgr') "
                          "(see pack_rec.py --help)\n"), run.stderr


def test_every_script_uses_the_one_line_parser():
    for script in SCRIPTS:
        source = (ROOT / script).read_text()
        assert 'argparse.ArgumentParser(' not in source, script
        assert 'run_cli' in source, script


# ------------------------------------------------------------------------- item 10: closed standard output
def test_closed_stdout_is_a_quiet_exit(capsys):
    def main(argv):
        raise BrokenPipeError(32, 'Broken pipe')
    assert run_cli(main, []) == 141
    assert capsys.readouterr().err == ''


def test_predict_writes_the_csv_before_printing_into_a_closed_pipe(feats, tmp_path):
    read, write = os.pipe()
    os.close(read)  # every write to stdout fails with EPIPE, as after `| head` has exited
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    run = subprocess.run([sys.executable, str(ROOT / 'identification' / 'predict.py'), '--classifier',
                          str(feats / 'c.joblib'), '--features', str(feats / 'p.mat'), '--csv',
                          str(tmp_path / 'who.csv')], stdout=write, stderr=subprocess.PIPE, text=True, env=env,
                         timeout=300)
    os.close(write)
    assert 'Traceback' not in run.stderr and 'BrokenPipe' not in run.stderr, run.stderr
    assert run.returncode == 141
    assert len(pd.read_csv(tmp_path / 'who.csv')) == 48


def test_identify_writes_its_files_before_the_report(feats, tmp_path, monkeypatch, capsys):
    """The report is printed after every file exists (a print that fails then loses nothing)."""
    import builtins
    seen = []
    real_print = builtins.print

    def spy(*args, **kwargs):
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        return real_print(*args, **kwargs)
    monkeypatch.setattr(builtins, 'print', spy)
    argv = ['--gallery', feats / 'g.mat', '--probe', feats / 'p.mat', '--classifier', 'centroid',
            '--json', tmp_path / 'r.json', '--predictions', tmp_path / 'p.csv']
    assert _run('lfw_verification/identify.py', argv, capsys)[0] == 0
    assert seen and all(names == ['p.csv', 'r.json'] for names in seen), seen


# ---------------------------------------------------------------------------- item 9: inputs without rows
@pytest.mark.parametrize('script, argv, option', [
    ('identification/predict.py', ['--classifier', 'C', '--features', 'Z'], '--features'),
    ('lfw_verification/identify.py', ['--gallery', 'Z', '--probe', 'G'], '--gallery'),
    ('lfw_verification/identify.py', ['--gallery', 'G', '--probe', 'Z', '--classifier', 'svm'], '--probe'),
    ('identification/split_features.py', ['--features', 'Z', '--gallery', 'O/a.mat', '--probe', 'O/b.mat'],
     '--features'),
    ('identification/plot_embeddings.py', ['--features', 'Z', '--out', 'O/pl'], '--features'),
])
def test_features_without_rows(feats, tmp_path, script, argv, option, capsys):
    paths = {'C': feats / 'c.joblib', 'Z': feats / 'zero.mat', 'G': feats / 'g.mat'}
    argv = [paths.get(a, str(a).replace('O/', f'{tmp_path}/')) for a in argv]
    line = _one_error(*_run(script, argv, capsys)[::2])
    assert f'{option} {feats / "zero.mat"} holds no feature rows' in line, line


def test_classifier_refuses_zero_rows(feats):
    from identification.classifiers import load_classifier
    with pytest.raises(ParameterError, match='features holds no rows'):
        load_classifier(str(feats / 'c.joblib')).identify(np.zeros((0, 16)))


# ---------------------------------------------------------------------------- items 6, 12, 14: numeric bounds
@pytest.mark.parametrize('value, expected', [('inf', 'a finite number, got inf'), ('nan', 'a finite number'),
                                             ('1e6', '<= 2, got 1e+06'), ('1e-6', '>= 0.5, got 1e-06'),
                                             ('0', '>= 0.5, got 0'), ('-1', '>= 0.5, got -1')])
def test_align_scale_bounds(tmp_path, value, expected, capsys):
    make_tree(tmp_path / 'tree', bad=False)
    line = _one_error(*_run('data_tools/align.py', ['--images', tmp_path / 'tree', '--out', tmp_path / 'al',
                                                    '--scale', value], capsys)[::2])
    assert line.startswith('error: --scale (face size relative to the template) must be ') and expected in line
    assert not (tmp_path / 'al').exists()


def test_face_aligner_scale_is_a_parameter_and_value_error():
    from data_tools.alignment import SCALE_RANGE, FaceAligner
    for scale in (math.inf, math.nan, 1e6, 1e-6, SCALE_RANGE[1] + 0.01):
        with pytest.raises(ParameterValueError) as err:
            FaceAligner(detector=object(), scale=scale)
        assert isinstance(err.value, ValueError) and str(err.value).startswith('scale')
    assert FaceAligner(detector=object(), scale=SCALE_RANGE[1]).scale == 2.0
    with pytest.raises(ValueError, match='max_detect_side'):
        FaceAligner(detector=object(), max_detect_side=10)


def test_pack_size_and_workers_bounds(tmp_path, capsys):
    from common.workers import MAX_WORKERS
    from data_tools.packing import RECORD_SIZE_RANGE, pack_records
    make_tree(tmp_path / 'tree', bad=False)
    base = ['--images', tmp_path / 'tree', '--out', tmp_path / 'o']
    line = _one_error(*_run('data_tools/pack_rec.py', base + ['--size', '100000'], capsys)[::2])
    assert line.startswith('error: --size (side of the stored square') and '<= 1024, got 100000' in line
    assert '--images' not in line and not list(tmp_path.glob('o.*'))
    line = _one_error(*_run('data_tools/pack_rec.py', base + ['--workers', '1000000000'], capsys)[::2])
    assert f'--workers must be <= {MAX_WORKERS}' in line
    with pytest.raises(ParameterError, match=f'size .* must be >= {RECORD_SIZE_RANGE[0]}, got 8'):
        pack_records(str(tmp_path / 'tree'), str(tmp_path / 'o'), size=8)
    from data_tools.records import summarize_records
    pack_records(str(tmp_path / 'tree'), str(tmp_path / 'o'), size=RECORD_SIZE_RANGE[0], workers=0, progress=False)
    side = RECORD_SIZE_RANGE[0]
    assert summarize_records(str(tmp_path / 'o.rec'))['sizes'] == {f'{side}x{side}': 14}


@pytest.mark.parametrize('script, argv, expected', [
    ('lfw_verification/identify.py', ['--gallery', 'G', '--probe', 'G', '--seed', '-1'], '--seed must be >= 0'),
    ('lfw_verification/identify.py', ['--gallery', 'G', '--probe', 'G', '--classifier', 'centroid', '--seed',
                                      str(2 ** 40)], f'--seed must be <= {SEED_RANGE[1]}'),
    ('lfw_verification/identify.py', ['--gallery', 'G', '--probe', 'G', '--far', 'nan'], '--far must be'),
    ('identification/plot_embeddings.py', ['--features', 'G', '--out', 'O/p', '--perplexity', 'inf'],
     '--perplexity (t-SNE; capped at (images - 1) / 3) must be a finite number, got inf'),
    ('identification/plot_embeddings.py', ['--features', 'G', '--out', 'O/p', '--perplexity', '1e9'],
     'must be <= 1000'),
    ('identification/plot_embeddings.py', ['--features', 'G', '--out', 'O/p', '--seed', '-3'],
     '--seed must be >= 0, got -3'),
    ('identification/split_features.py', ['--features', 'G', '--gallery', 'O/a.mat', '--probe', 'O/b.mat',
                                          '--unknown-last', '-1'], '--unknown-last must be >= 0, got -1'),
    ('identification/predict.py', ['--classifier', 'C', '--features', 'G', '--center-crop', '0'],
     '--center-crop (pixels) must be >= 1, got 0'),
    ('identification/predict.py', ['--classifier', 'C', '--features', 'G', '--top-k', '0'],
     '--top-k must be >= 1, got 0'),
    ('data_tools/inspect_rec.py', ['nowhere.rec', '--count', '1000000000'], '--count (records on the contact sheet) '
                                                                           'must be <= 1024'),
    ('data_tools/synthetic.py', ['O/s', '--seed', '-1'], '--seed must be >= 0, got -1'),
    ('data_tools/synthetic.py', ['O/s', '--identities', '1000000000'], '--identities must be <= 100000'),
    ('data_tools/synthetic.py', ['O/s', '--size', '100000'], '--size must be <= 1024'),
    ('tools/launch.py', ['-n', '1', '--timeout', 'nan', '--', 'true'], '--timeout (seconds) must be a finite'),
    ('tools/launch.py', ['-n', '1000000000', '--', 'true'], '--num-workers must be <= '),
    ('tools/launch.py', ['-n', '1', '--port', '70000', '--', 'true'], '--port must be <= 65535'),
    ('extract_features/extract_features.py', ['--model', 'm', '--images', 'O', '--batch-size', '1000000000'],
     '--batch-size must be <= 4096'),
    ('extract_features/extract_features.py', ['--model', 'm', '--images', 'O', '--workers', '1000000000'],
     '--workers must be <= '),
    ('lfw_verification/lfw_eval.py', ['--model', 'm', '--bin', 'x.bin', '--batch-size', '1000000000'],
     '--batch-size must be <= 4096'),
    ('lfw_verification/lfw_eval.py', ['--model', 'm', '--bin', 'x.bin', '--center-crop', '0'],
     '--center-crop (pixels) must be >= 1, got 0'),
])
def test_numeric_options_are_bounded(feats, tmp_path, script, argv, expected, capsys):
    paths = {'C': feats / 'c.joblib', 'G': feats / 'g.mat'}
    argv = [paths.get(a, str(tmp_path) if a == 'O' else str(a).replace('O/', f'{tmp_path}/')) for a in argv]
    line = _one_error(*_run(script, argv, capsys)[::2])
    assert expected in line, line
    assert not list(tmp_path.iterdir())  # refused before anything is written


def test_check_seed():
    assert check_seed(0) == 0 and check_seed(SEED_RANGE[1]) == SEED_RANGE[1]
    for bad in (-1, SEED_RANGE[1] + 1, 1.5, math.nan):
        with pytest.raises(ParameterError, match='^seed must be'):
            check_seed(bad)


# ------------------------------------------------------------------------------ item 16: threshold folds
def test_threshold_folds_cap_is_said(feats, tmp_path, capsys):
    argv = ['--gallery', feats / 'g.mat', '--probe', feats / 'p.mat', '--classifier', 'centroid',
            '--threshold-folds', '100', '--json', tmp_path / 'r.json']
    code, out, err = _run('lfw_verification/identify.py', argv, capsys)
    assert code == 0, err
    t = json.load(open(tmp_path / 'r.json'))['threshold']
    assert t['threshold_folds'] == 8 and t['threshold_folds_requested'] == 100
    assert t['folds_note'] == '100 threshold folds asked, 8 used (one per gallery identity at most)'
    assert t['folds_note'] in out
    _run('lfw_verification/identify.py', argv[:-4] + ['--threshold-folds', '4', '--json', tmp_path / 's.json'],
         capsys)
    t = json.load(open(tmp_path / 's.json'))['threshold']
    assert t['threshold_folds'] == 4 and 'folds_note' not in t


# ---------------------------------------------------------------------------------------- item 18: wording
def test_image_roots_that_are_files(tmp_path, capsys):
    (tmp_path / 'fake.jpg').write_text('not an image')
    fake = tmp_path / 'fake.jpg'
    for script, argv, option in [
            ('data_tools/align.py', ['--images', fake, '--out', tmp_path / 'al'], '--images'),
            ('data_tools/pack_rec.py', ['--images', fake, '--out', tmp_path / 'o'], '--images'),
            ('data_tools/make_pairs.py', ['--images', fake, '--out', tmp_path / 'p.txt'], '--images'),
            ('extract_features/extract_features.py', ['--model', 'm', '--images', fake, '--out', tmp_path / 'f.mat'],
             '--images')]:
        line = _one_error(*_run(script, argv, capsys)[::2])
        assert line.startswith(f'error: {option} {fake} is a file, not a folder'), (script, line)
    line = _one_error(*_run('data_tools/align.py', ['--images', tmp_path / 'nope', '--out', tmp_path / 'al'],
                            capsys)[::2])
    assert line == f'error: --images {tmp_path / "nope"}: folder not found'


def test_classifier_file_of_another_format_is_one_short_printable_line(feats, capsys):
    line = _one_error(*_run('identification/predict.py', ['--classifier', feats / 'g.mat', '--features',
                                                           feats / 'p.mat'], capsys)[::2])
    assert 'is not a readable classifier file' in line and line.isprintable() and len(line) < 200 + len(str(feats))
    assert short_printable('a\x00\x01b\n\tc' + 'x' * 300, limit=20) == 'a\\x00\\x01b cxxxxx...'
    assert short_printable('plain words') == 'plain words'


def test_plot_counts_identities(feats, tmp_path, capsys):
    line = _one_error(*_run('identification/plot_embeddings.py', ['--features', feats / 'two.mat', '--out',
                                                                   tmp_path / 'pl'], capsys)[::2])
    assert 'got 2 image(s) of 1 identity' in line, line


@pytest.fixture(scope='module')
def model_setup(tmp_path_factory, feats):
    """A tiny checkpoint, a tree with one unreadable image, and a classifier fitted on its features."""
    from identification.classifiers import fit_classifier
    from models import load_model
    tmp = tmp_path_factory.mktemp('predict')
    stem = make_checkpoint(tmp)
    labels = make_tree(tmp / 'tree', lfw=True)
    feats_ = load_model(stem).embed([str(tmp / 'tree' / rel) for rel in labels])
    fit_classifier(feats_, [rel.split('/')[0] for rel in labels], 'centroid', far=None).save(str(tmp / 'c.joblib'))
    return dict(tmp=tmp, stem=stem, labels=labels)


def test_predict_unreadable_images_and_skip_missing(model_setup, tmp_path, capsys):
    s = model_setup
    base = ['--classifier', s['tmp'] / 'c.joblib', '--model', s['stem'], '--images', s['tmp'] / 'tree',
            '--csv', tmp_path / 'who.csv']
    line = _one_error(*_run('identification/predict.py', base, capsys)[::2])
    assert '1 image(s) missing or unreadable' in line and '--skip-missing' in line and '.failures' not in line
    assert not (tmp_path / 'who.csv').exists()
    code, out, err = _run('identification/predict.py', base + ['--skip-missing'], capsys)
    assert code == 0, err
    assert err.startswith('skipped 1 image(s) missing or unreadable:\n  ') and len(err.splitlines()) == 2
    assert len(pd.read_csv(tmp_path / 'who.csv')) == len(s['labels'])
    assert f'{len(s["labels"])} images' in out and '1 skipped' in out


# --------------------------------------------------------------------------------- item 19: decoded sample
def test_inspect_decodes_a_fixed_sample_spread_over_the_file(tmp_path):
    from data_tools.packing import pack_records
    from data_tools.records import summarize_records
    make_tree(tmp_path / 'tree', per_identity=(10, 10, 10, 10), bad=False)
    pack_records(str(tmp_path / 'tree'), str(tmp_path / 'o'), size=16, workers=0, progress=False)
    for decode, expected in ((7, 7), (3, 3), (64, 40), (40, 40)):
        s = summarize_records(str(tmp_path / 'o.rec'), decode=decode)
        assert s['images'] == 40 and s['decoded_sample'] == expected and s['sizes'] == {'16x16': expected}
    assert summarize_records(str(tmp_path / 'o.rec'))['decoded_sample'] == 40  # default 64: all of 40


# --------------------------------------------------------------------------- item 20: extraction alignment
class _NoFace:
    def detect(self, image, margin=None):
        return np.zeros((0, 5)), np.zeros((0, 10))


def test_extract_align_fallback_and_no_face_wording(model_setup, tmp_path, monkeypatch, capsys):
    from data_tools.alignment import FaceAligner
    from extract_features import extraction
    from symbols.inference import NO_FACE, describe_failures
    made = []

    def aligner(size, network=None, **kwargs):  # the real FaceAligner, with a detector that finds nothing
        made.append(kwargs)
        return FaceAligner(size=size, color='bgr', detector=_NoFace(), **kwargs)
    monkeypatch.setattr(extraction, 'make_aligner', aligner)
    s = model_setup
    good = [rel for rel in s['labels']]
    base = ['--model', s['stem'], '--images', s['tmp'] / 'tree', '--quiet', '--align']
    line = _one_error(*_run('extract_features/extract_features.py', base + ['--out', tmp_path / 'a.mat'],
                            capsys)[::2])
    assert f'{len(good)} image(s) with no face found' in line and '1 image(s) missing or unreadable' in line
    code, out, err = _run('extract_features/extract_features.py',
                          base + ['--out', tmp_path / 'b.mat', '--skip-missing'], capsys)
    assert code == 2 and 'no face' in err  # nothing left to embed
    code, out, err = _run('extract_features/extract_features.py',
                          base + ['--out', tmp_path / 'c.mat', '--fallback', 'center', '--skip-missing'], capsys)
    assert code == 0, err
    assert made[-1] == {'fallback': 'center'} and f'{len(good)} x 256' in out
    assert err.startswith('skipped 1 image(s) missing or unreadable:')
    line = _one_error(*_run('extract_features/extract_features.py',
                            ['--model', s['stem'], '--images', s['tmp'] / 'tree', '--fallback', 'center',
                             '--out', tmp_path / 'd.mat'], capsys)[::2])
    assert line == 'error: --fallback applies to the built-in aligner: give it with --align'
    assert describe_failures([('a', NO_FACE), ('b', 'zero-byte file'), ('c', NO_FACE)]) == \
        '1 image(s) missing or unreadable, 2 image(s) with no face found'


def test_parameter_value_error_pickles():
    import pickle
    err = pickle.loads(pickle.dumps(ParameterValueError(lambda n: f'{n("scale")} must be <= 2')))
    assert isinstance(err, ValueError) and isinstance(err, UsageError) and str(err) == 'scale must be <= 2'
