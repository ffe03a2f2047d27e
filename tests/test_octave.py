"""lfw_eval.m in GNU Octave gives the Python evaluator's numbers on the same .mat + pairs files."""
import re
import shutil
import subprocess

import numpy as np
import pytest

from common.features_mat import write_features
from common.verification import image_key
from data_tools.pairs import write_pairs
from lfw_verification.evaluate import evaluate_verification
from lfw_verification.synthetic import synthetic_features, synthetic_pairs, write_pair_label

OCTAVE = shutil.which('octave-cli')
pytestmark = pytest.mark.skipif(OCTAVE is None, reason='GNU Octave is not installed (apt-get install -y '
                                '--no-install-recommends octave); the .m evaluator cannot be checked')
M_FILES = ('lfw_eval.m', 'lfw_read_pairs.m', 'lfw_image_key.m', 'lfw_best_threshold.m', 'lfw_roc.m')


def _octave(repo_root, code, cwd):
    script = f"addpath('{repo_root / 'lfw_verification'}'); {code}"
    return subprocess.run([OCTAVE, '--no-gui', '--norc', '--no-history', '--eval', script],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def _cases(root):
    """(name, features, pairs) files covering both formats, ties, prefixes, spaces and odd fold counts."""
    data, labels = synthetic_features(50, 6, dim=24, noise=1.3, seed=7)
    data[1] = data[0]  # identical images: tied scores (cosine 1 and repeated impostor scores)
    data[7] = data[6]
    pairs = synthetic_pairs(labels, folds=10, per_fold=15, seed=7)
    prefixed = [f'/lfw_patch/{label[:-4]}.png' for label in labels]  # prefix and extension differ from pairs
    write_features(root / 'f.mat', data, prefixed)
    write_pairs(root / 'pairs.txt', pairs, 10, 15)
    write_pair_label(root / 'pair.label', pairs)
    # five folds of 30: another fold layout over the same images
    write_pairs(root / 'five.txt', pairs, 5, 30)
    # PubFig-like tree: names with spaces, files not named Name_%04d (written as file names, tab-separated)
    spaced = [label.replace('Name_', 'Person ').split('/')[0] + f'/{k % 6 + 100}.jpg' for k, label in enumerate(labels)]
    write_features(root / 'spaced.mat', data, spaced)
    rename = dict(zip(labels, spaced))
    write_pairs(root / 'spaced.txt', [p._replace(path1=rename[p.path1], path2=rename[p.path2]) for p in pairs], 10, 15)
    return [('official', 'f.mat', 'pairs.txt'), ('label', 'f.mat', 'pair.label'),
            ('five', 'f.mat', 'five.txt'), ('spaced', 'spaced.mat', 'spaced.txt')]


def _parse(stdout):
    results, name = {}, None
    for line in stdout.splitlines():
        m = re.match(r'CASE (\w+)', line)
        if m:
            name = m.group(1)
            results[name] = {}
        m = re.match(r'(\w+)=(.*)', line)
        if m and name:
            results[name][m.group(1)] = np.array([float(v) for v in m.group(2).split()])
    return results


def test_octave_matches_python(repo_root, tmp_path):
    cases = _cases(tmp_path)
    code = ''.join(
        f"fprintf('CASE {name}\\n'); r = lfw_eval('{feat}', '{pairs}'); "
        "fprintf('fold_acc=%s\\n', sprintf('%.17g ', r.fold_acc)); "
        "fprintf('fold_threshold=%s\\n', sprintf('%.17g ', r.fold_threshold)); "
        "fprintf('summary=%.17g %.17g %.17g %.17g %.17g %.17g\\n', r.acc_mean, r.acc_std, r.eer, r.auc, "
        "r.optimistic_acc, r.optimistic_threshold); "
        for name, feat, pairs in cases)
    run = _octave(repo_root, code, tmp_path)
    assert run.returncode == 0, run.stderr
    assert 'ACC (10-fold)' in run.stdout and 'EER' in run.stdout and 'AUC' in run.stdout
    octave = _parse(run.stdout)
    assert set(octave) == {name for name, _, _ in cases}
    for name, feat, pairs in cases:
        m = evaluate_verification(str(tmp_path / feat), str(tmp_path / pairs))['metrics']
        o = octave[name]
        # accuracies are counts / n and thresholds midpoints of the same rounded scores: exactly equal
        assert o['fold_acc'].tolist() == m['fold_accuracies'], name
        assert o['fold_threshold'].tolist() == m['fold_thresholds'], name
        acc_mean, acc_std, eer, auc, opt_acc, opt_threshold = o['summary']
        assert (opt_acc, opt_threshold) == (m['optimistic_accuracy'], m['optimistic_threshold']), name
        # means and trapezoid sums may differ in the last bit (summation order)
        assert acc_mean == pytest.approx(m['accuracy_mean'], abs=1e-12), name
        assert acc_std == pytest.approx(m['accuracy_std'], abs=1e-12), name
        assert eer == pytest.approx(m['eer'], abs=1e-12), name
        assert auc == pytest.approx(m['auc'], abs=1e-12), name
    assert 0.5 < octave['official']['summary'][0] < 1.0  # a non-trivial case
    assert len(octave['five']['fold_acc']) == 5


def test_octave_reports_missing_images(repo_root, tmp_path):
    data, labels = synthetic_features(4, 2, dim=8)
    write_features(tmp_path / 'f.mat', data, labels)
    (tmp_path / 'p.label').write_text('1 Ghost/Ghost_0001.jpg Ghost/Ghost_0002.jpg\n'
                                      '0 Name_000/Name_000_0001.jpg Name_001/Name_001_0001.jpg\n')
    run = _octave(repo_root, "lfw_eval('f.mat', 'p.label');", tmp_path)
    assert run.returncode != 0
    assert '2 images named by the pairs are not in the features file' in run.stderr


def test_m_files_avoid_octave_only_syntax(repo_root):
    """MATLAB must run the same files: no '!=' / '!', '#' comments, end* keywords, '++', '+=', printf, "..."."""
    octave_only = re.compile(r'!=|^\s*#|\bend(function|if|for|while|switch|_try_catch)\b|\+\+|\+=|-=|'
                             r'\bprintf\s*\(|\bfflush\b|\bunwind_protect\b|"')
    for name in M_FILES:
        for number, line in enumerate((repo_root / 'lfw_verification' / name).read_text().splitlines(), 1):
            code = line.split('%')[0]
            code = re.sub(r"'[^']*'", "''", code)  # ignore string literals
            assert not octave_only.search(code), f'{name}:{number}: {line}'


def test_octave_reads_the_extraction_writer_output(repo_root, tmp_path):
    extraction = pytest.importorskip('extract_features')
    data, labels = synthetic_features(20, 4, dim=16, noise=1.0, seed=5)
    result = extraction.Extraction(features=data, labels=labels, indices=np.arange(len(labels)),
                                   skipped=[('Gone/Gone_0001.jpg', 'zero-byte file')])
    extraction.save_features(str(tmp_path / 'x.mat'), result)
    write_pair_label(tmp_path / 'p.label', synthetic_pairs(labels, folds=4, per_fold=5, seed=5))
    run = _octave(repo_root, "r = lfw_eval('x.mat', 'p.label'); fprintf('AUC=%.17g\\n', r.auc);", tmp_path)
    assert run.returncode == 0, run.stderr
    auc = float(re.search(r'AUC=(\S+)', run.stdout).group(1))
    python = evaluate_verification(str(tmp_path / 'x.mat'), str(tmp_path / 'p.label'))['metrics']
    assert auc == pytest.approx(python['auc'], abs=1e-12)


def test_octave_image_key_equals_python(repo_root, tmp_path):
    paths = ['/lfw_patch/A/A_0001.jpg', 'C:\\lfw\\A\\A_0001.jpg ', 'a//b/c.d.jpg', 'Adam Sandler/103.jpg',
             'name/.hidden', 'solo.jpg', 'x/y/', 'Name/Name_0001.']
    (tmp_path / 'paths.txt').write_text('\n'.join(paths))
    code = ("p = regexp(fileread('paths.txt'), '\\n', 'split'); k = lfw_image_key(p); "
            "fprintf('KEY[%s]\\n', k{:});")
    run = _octave(repo_root, code, tmp_path)
    assert run.returncode == 0, run.stderr
    assert re.findall(r'KEY\[(.*)\]', run.stdout) == [image_key(p) for p in paths]
