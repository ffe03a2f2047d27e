"""Honest pair statistics (few identities per fold warned with numbers; distinct identities and images
reported) and list formats told apart by what is unambiguous (im2rec .lst vs insightface .lst vs path label)."""
import subprocess
import sys

import pytest

from common.errors import UsageError
from data_tools.packing import detect_list_format, pack_records, read_list
from data_tools.pairs import MIN_IDENTITIES_PER_FOLD, few_identities_warning, make_pairs, pairs_report
from data_tools.records import iter_records
from helpers import face_image, pairs_tree, save_image


def test_few_identities_warning_numbers():
    text = few_identities_warning(20, 10)
    assert '20 identities in 10 folds = 2 per fold' in text and 'same two people' in text
    assert f'at least {MIN_IDENTITIES_PER_FOLD} identities per fold' in text and '--folds 4' in text
    assert '1 pair of people' in text
    assert 'only 6 pairs of people' in few_identities_warning(40, 10)  # 4 per fold: 4*3/2
    assert few_identities_warning(50, 10) is None and few_identities_warning(83, 10) is None


def test_pairs_report_counts_distinct_identities_and_images(tmp_path):
    root = pairs_tree(tmp_path / 't', [3, 3, 3, 3, 3, 3])
    pairs = make_pairs(root, folds=3, per_fold=3, seed=0)
    r = pairs_report(pairs)
    used = {q for p in pairs for q in p[:2]}
    assert r['images'] == len(used) and r['identities'] == len({q.split('/')[0] for q in used})
    assert (r['pairs'], r['same'], r['different'], r['folds']) == (18, 9, 9, 3)
    # 2 identities per fold: every mismatched pair of a fold is between the same two people
    assert [f['people_pairs'] for f in r['per_fold']] == [1, 1, 1]
    assert all(f['identities'] == 2 for f in r['per_fold'])


def test_make_pairs_cli_warns_with_numbers(tmp_path, repo_root):
    root = pairs_tree(tmp_path / 't', [4] * 6)
    run = subprocess.run([sys.executable, str(repo_root / 'data_tools' / 'make_pairs.py'), '--images', root,
                          '--out', str(tmp_path / 'p.txt'), '--folds', '3', '--per-fold', '4'],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert '6 distinct identities' in run.stdout and 'distinct images' in run.stdout
    assert run.stderr.startswith('warning: 6 identities in 3 folds = 2 per fold')
    assert f'at least {MIN_IDENTITIES_PER_FOLD} identities per fold' in run.stderr
    many = pairs_tree(tmp_path / 'm', [3] * 10)
    quiet = subprocess.run([sys.executable, str(repo_root / 'data_tools' / 'make_pairs.py'), '--images', many,
                            '--out', str(tmp_path / 'q.txt'), '--folds', '2', '--per-fold', '4'],
                           capture_output=True, text=True)
    assert quiet.returncode == 0 and 'warning' not in quiet.stderr


def _insightface_tree(tmp_path):
    root = tmp_path / 'faces_emore'
    lines = []
    for label, name in enumerate(['id 0', 'id1', 'id2']):
        for i in range(3):
            save_image(root / name / f'{i}.jpg', face_image(label * 10 + i))
            extra = '' if i else '\t10\t12\t90\t96' + ''.join(f'\t{v}' for v in range(10))  # bbox + landmarks
            lines.append(f'1\t{root / name / f"{i}.jpg"}\t{label}{extra}')
    lst = tmp_path / 'train.lst'
    lst.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    return root, lst


def test_insightface_lst_is_read_as_such_and_packs(tmp_path):
    root, lst = _insightface_tree(tmp_path)
    entries = read_list(str(lst))
    assert entries[0] == (str(root / 'id 0' / '0.jpg'), 0) and entries[-1][1] == 2 and len(entries) == 9
    meta = pack_records(str(root), str(tmp_path / 'o'), str(lst), workers=0, progress=False)
    # absolute list paths: an identity is named by its (absolute) folder
    assert meta['num_classes'] == 3 and meta['identities'] == [str(root / n) for n in ('id 0', 'id1', 'id2')]
    assert sorted(label for label, _, _ in iter_records(str(tmp_path / 'o.rec'))) == [0] * 3 + [1] * 3 + [2] * 3


@pytest.mark.parametrize('lines, fmt, line', [
    (['0\t3\ta/b.jpg', '1\t4\tc.jpg'], 'im2rec', 1),
    (['1\ta/b.jpg\t3', '0\tc.jpg\t4\t1\t2\t3\t4'], 'insightface', 1),
    (['a/b.jpg 3'], 'path label', 1),
    (['7\t1\t5', '1\tx/y.jpg\t5'], 'insightface', 2),   # line 1 reads either way (a numeric path), line 2 tells
    (['7\t1\t5'], 'im2rec', None),                      # nothing tells: im2rec assumed, and said so
])
def test_list_format_detection(lines, fmt, line):
    assert detect_list_format(list(enumerate(lines, 1))) == (fmt, line)


def test_errors_name_the_format_assumed(tmp_path):
    lst = tmp_path / 'mixed.lst'
    lst.write_text('1\ta/b.jpg\t0\n1\tc/d.jpg\tx\n')
    with pytest.raises(UsageError, match=r':2: label must be .*insightface \.lst.*line 1 shows'):
        read_list(str(lst))
    lst.write_text('0\t3\ta/b.jpg\n1\ta/c.jpg\t4\n')  # an insightface line inside an im2rec list
    with pytest.raises(UsageError, match=r':2: not a line of this format.*im2rec \.lst'):
        read_list(str(lst))
