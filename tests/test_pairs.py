"""Verification pairs: both input formats, LFW-format writing from any tree, determinism, clear errors."""
import os
import subprocess
import sys

import pytest

from common.errors import UsageError
from data_tools.pairs import make_pairs, read_pairs, write_pairs
from helpers import pairs_tree

LFW_SNIPPET = """2\t2
Abel_Pacheco\t1\t4
Akhmed_Zakayev\t1\t3
Abdel_Madi_Shabneh\t1\tDean_Barker\t1
Abdel_Madi_Shabneh\t1\tGiancarlo_Fisichella\t1
Zico\t1\t2
Zoe_Ball\t1\t3
Abdullah\t1\tZico\t3
Adam\t2\tZoe_Ball\t1
"""


def _write(path, text):
    path.write_text(text, encoding='utf-8')
    return str(path)


def test_read_official_lfw_format_tabs(tmp_path):
    pairs = read_pairs(_write(tmp_path / 'pairs.txt', LFW_SNIPPET))
    assert len(pairs) == 8
    assert pairs[0] == ('Abel_Pacheco/Abel_Pacheco_0001.jpg', 'Abel_Pacheco/Abel_Pacheco_0004.jpg', True, 0)
    assert pairs[2] == ('Abdel_Madi_Shabneh/Abdel_Madi_Shabneh_0001.jpg', 'Dean_Barker/Dean_Barker_0001.jpg',
                        False, 0)
    assert [p.fold for p in pairs] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [p.issame for p in pairs] == [True, True, False, False] * 2


def test_read_space_separated_lfw_equals_tab_separated(tmp_path):
    tabs = read_pairs(_write(tmp_path / 'a.txt', LFW_SNIPPET))
    spaces = read_pairs(_write(tmp_path / 'b.txt', LFW_SNIPPET.replace('\t', ' ')))
    assert tabs == spaces


def test_read_seed_pair_label_splits_ten_folds(tmp_path):
    lines = [f'{k % 2} A/A_{k:04d}.jpg B/B_{k:04d}.jpg' for k in range(20)]
    pairs = read_pairs(_write(tmp_path / 'pair.label', '\n'.join(lines) + '\n'))
    assert len(pairs) == 20
    assert pairs[1] == ('A/A_0001.jpg', 'B/B_0001.jpg', True, 0)
    assert pairs[0].issame is False
    assert [p.fold for p in pairs] == [k // 2 for k in range(20)]


@pytest.mark.parametrize('text, line', [
    ('2\t2\nA\t1\t2\nB\t1\n', 2 + 1),          # 2 fields on line 3
    ('1 A/a.jpg B/b.jpg\n2 A/a.jpg B/b.jpg\n', 2),   # label not 0/1
    ('1 A/a.jpg\n', 1),
])
def test_malformed_line_names_line_number(tmp_path, text, line):
    with pytest.raises(UsageError, match=rf':{line}:'):
        read_pairs(_write(tmp_path / 'bad.txt', text))


def test_count_mismatch_and_missing_file_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match='promises'):
        read_pairs(_write(tmp_path / 'short.txt', '10\t300\nA\t1\t2\n'))
    with pytest.raises(UsageError, match='not found'):
        read_pairs(str(tmp_path / 'absent.txt'))
    with pytest.raises(UsageError, match='empty'):
        read_pairs(_write(tmp_path / 'empty.txt', '\n\n'))


def test_make_write_read_roundtrip_non_lfw_names(tmp_path):
    root = pairs_tree(tmp_path / 'tree', [5, 4, 6, 3, 5, 2, 4, 1])
    pairs = make_pairs(root, folds=2, per_fold=5, seed=3)
    assert len(pairs) == 20
    write_pairs(str(tmp_path / 'p.txt'), pairs, 2, 5)
    text = (tmp_path / 'p.txt').read_text(encoding='utf-8')
    assert text.splitlines()[0] == '2\t5'
    back = read_pairs(str(tmp_path / 'p.txt'))
    assert back == pairs
    for p in back:  # every path is a real file; same/different agrees with the folders
        assert os.path.isfile(os.path.join(root, p.path1)) and os.path.isfile(os.path.join(root, p.path2))
        assert p.issame == (p.path1.split('/')[0] == p.path2.split('/')[0])
        assert p.path1 != p.path2
    assert len(set(back)) == len(back)
    # folds are identity-disjoint
    ids = [{q.split('/')[0] for p in back if p.fold == f for q in p[:2]} for f in (0, 1)]
    assert not ids[0] & ids[1]


def test_lfw_named_tree_writes_integer_indices(tmp_path):
    root = pairs_tree(tmp_path / 'lfw', [4, 3, 3, 5], lfw_names=True)
    pairs = make_pairs(root, folds=2, per_fold=2, seed=0)
    write_pairs(str(tmp_path / 'p.txt'), pairs, 2, 2)
    body = (tmp_path / 'p.txt').read_text().splitlines()[1:]
    for line in body:
        fields = line.split('\t')
        indices = fields[1:] if len(fields) == 3 else fields[1::2]
        assert all(f.isdigit() for f in indices), line
    assert read_pairs(str(tmp_path / 'p.txt')) == pairs


def test_make_pairs_deterministic_and_seed_dependent(tmp_path):
    root = pairs_tree(tmp_path / 't', [6] * 8)
    assert make_pairs(root, 2, 10, seed=1) == make_pairs(root, 2, 10, seed=1)
    assert make_pairs(root, 2, 10, seed=1) != make_pairs(root, 2, 10, seed=2)


def test_make_pairs_impossible_request_is_usage_error(tmp_path):
    root = pairs_tree(tmp_path / 't', [2, 2, 2, 2])
    with pytest.raises(UsageError, match='matched pairs'):
        make_pairs(root, folds=2, per_fold=5)
    with pytest.raises(UsageError, match='identities'):
        make_pairs(root, folds=3, per_fold=1)
    with pytest.raises(UsageError, match='not found'):
        make_pairs(str(tmp_path / 'nope'))


def test_make_pairs_cli(tmp_path, repo_root):
    root = pairs_tree(tmp_path / 't', [4] * 6)
    out = tmp_path / 'pairs.txt'
    run = subprocess.run([sys.executable, str(repo_root / 'data_tools' / 'make_pairs.py'), '--images', root,
                          '--out', str(out), '--folds', '3', '--per-fold', '4'], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert len(read_pairs(str(out))) == 24
    bad = subprocess.run([sys.executable, str(repo_root / 'data_tools' / 'make_pairs.py'), '--images',
                          str(tmp_path / 'missing'), '--out', str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith('error:') and 'Traceback' not in bad.stderr


def test_pubfig_pairs_resolve_to_real_files(pubfig_root, tmp_path):
    pairs = make_pairs(str(pubfig_root), folds=10, per_fold=300, seed=0)
    write_pairs(str(tmp_path / 'p.txt'), pairs, 10, 300)
    back = read_pairs(str(tmp_path / 'p.txt'))
    assert len(back) == 6000 and sum(p.issame for p in back) == 3000
    assert all((pubfig_root / p.path1).is_file() and (pubfig_root / p.path2).is_file() for p in back)


def test_orl_pgm_pairs(orl_root, tmp_path):
    pairs = make_pairs(str(orl_root), folds=10, per_fold=100, seed=0)
    write_pairs(str(tmp_path / 'p.txt'), pairs, 10, 100)
    back = read_pairs(str(tmp_path / 'p.txt'))
    assert back == pairs and all(p.path1.endswith('.pgm') for p in back)


def test_pairs_from_held_out_identities(tmp_path, repo_root):
    from data_tools.packing import pack_records
    from helpers import face_image, save_image
    root = tmp_path / 'faces'
    for k in range(12):
        for i in range(4):
            save_image(root / f'id {k}' / f'{i}.jpg', face_image(10 * k + i))
    meta = pack_records(str(root), str(tmp_path / 'p'), workers=0, progress=False, val_identities=4)
    held = set(meta['heldout_identities'])
    out = tmp_path / 'pairs.txt'
    run = subprocess.run([sys.executable, str(repo_root / 'data_tools' / 'make_pairs.py'), '--images', str(root),
                          '--out', str(out), '--folds', '2', '--per-fold', '3', '--identities-from',
                          str(tmp_path / 'p.json')], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    used = {q.split('/')[0] for p in read_pairs(str(out)) for q in p[:2]}
    assert used <= held and len(used) >= 3
    assert not used & set(meta['identities'])
