"""insightface .bin verification sets: read (Python 2 and 3 pickles, safely), write, make from pairs, score."""
import json
import os
import pickle
import struct
import subprocess
import sys

import cv2
import numpy as np
import pytest

from common.cli import run_cli
from common.errors import UsageError
from common.safe_pickle import UnsafePickleError
from data_tools.bin_sets import bin_folds, load_bin, make_bin, write_bin
from data_tools.pairs import make_pairs, read_pairs, write_pairs
from helpers import make_checkpoint

IMAGES = [bytes([k]) * (40 + 300 * (k % 2)) + b'\xff\xd9' for k in range(6)]  # short and >255-byte payloads
ISSAME = [True, False, True]


def py2_pickle(images, issame):
    """The bytes Python 2's cPickle writes for ``(list of str, list of bool)`` at protocol 2 (insightface's
    ``pickle.dump(..., protocol=pickle.HIGHEST_PROTOCOL)`` under Python 2): str as SHORT_BINSTRING/BINSTRING."""
    out = b'\x80\x02' + b']q\x00('                       # PROTO 2, EMPTY_LIST, BINPUT 0, MARK
    for img in images:
        out += (b'U' + bytes([len(img)]) if len(img) < 256 else b'T' + struct.pack('<i', len(img))) + img
    out += b'e' + b']q\x01(' + b''.join(b'\x88' if s else b'\x89' for s in issame) + b'e'
    return out + b'\x86q\x02.'                           # TUPLE2, BINPUT 2, STOP


def test_python3_pickles_read_at_every_protocol(tmp_path):
    for protocol in (2, 3, 4, 5):  # protocol 2 carries bytes through _codecs.encode
        path = tmp_path / f'p{protocol}.bin'
        path.write_bytes(pickle.dumps((IMAGES, ISSAME), protocol=protocol))
        images, issame = load_bin(path)
        assert images == IMAGES and issame.dtype == bool and issame.tolist() == ISSAME


def test_python2_pickle_reads_byte_for_byte(tmp_path):
    data = py2_pickle(IMAGES, ISSAME)
    with pytest.raises(UnicodeDecodeError):  # what a plain Python 3 pickle.load does with it
        pickle.loads(data)
    path = tmp_path / 'py2.bin'
    path.write_bytes(data)
    images, issame = load_bin(path)
    assert images == IMAGES and issame.tolist() == ISSAME


def test_numpy_payloads_and_numpy_issame(tmp_path):
    path = tmp_path / 'np.bin'
    path.write_bytes(pickle.dumps(([np.frombuffer(b, np.uint8) for b in IMAGES], np.array(ISSAME)), protocol=2))
    images, issame = load_bin(path)
    assert images == IMAGES and issame.tolist() == ISSAME


def test_crafted_bin_with_os_system_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.bin'
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(UnsafePickleError, match='os.system'):
        load_bin(path)
    assert not marker.exists()
    # the same, hidden inside a well-formed (bins, issame) tuple, as pickle.dumps writes it
    class Evil:
        def __reduce__(self):
            return os.system, (f'touch {marker}',)

    path.write_bytes(pickle.dumps(([IMAGES[0], Evil()], [True])))
    with pytest.raises(UnsafePickleError, match='system'):
        load_bin(path)
    assert not marker.exists()


@pytest.mark.parametrize('obj, message', [
    (([b'a', b'b', b'c'], [True]), '3 images for 1 pairs'),
    (([b'a', b'b'],), 'pickle of \\(bins, issame_list\\)'),
    (([b'a', 7], [True]), 'image 1 is a int'),
    (([b'a', b'b'], ['yes']), "issame_list\\[0\\] is 'yes'"),
    (([], []), 'holds no pairs'),
    (([b'a', b''], [True]), 'empty image'),
])
def test_malformed_sets_are_usage_errors(tmp_path, obj, message):
    path = tmp_path / 'bad.bin'
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(UsageError, match=message):
        load_bin(path)
    with pytest.raises(UsageError, match='not found'):
        load_bin(tmp_path / 'absent.bin')
    (tmp_path / 'text.bin').write_text('hello')
    with pytest.raises(UsageError, match='not a readable pickle'):
        load_bin(tmp_path / 'text.bin')


def test_write_bin_round_trip_and_shared_images_stored_once(tmp_path):
    big = bytes(range(256)) * 400
    write_bin(tmp_path / 'a.bin', [big, IMAGES[0], big, IMAGES[1]], [False, True])
    images, issame = load_bin(tmp_path / 'a.bin')
    assert images == [big, IMAGES[0], big, IMAGES[1]] and issame.tolist() == [False, True]
    assert os.path.getsize(tmp_path / 'a.bin') < 1.5 * len(big)  # pickle's memo: one copy of the shared image
    with pytest.raises(UsageError, match='two images per pair'):
        write_bin(tmp_path / 'b.bin', IMAGES[:3], [True])


def test_bin_folds_are_kfold_blocks():
    from sklearn.model_selection import KFold
    for n in (10, 40, 6000, 37):
        expected = np.empty(n, int)
        for k, (_, test) in enumerate(KFold(n_splits=10, shuffle=False).split(np.zeros(n))):
            expected[test] = k
        assert bin_folds(n).tolist() == expected.tolist()


# ----------------------------------------------------------------------------------- made from pairs
def _tree(root, n_ids=20, per_id=3, seed=0):
    rng = np.random.default_rng(seed)
    for k in range(n_ids):
        os.makedirs(root / f'Person_{k:02d}', exist_ok=True)
        for i in range(per_id):
            cv2.imwrite(str(root / f'Person_{k:02d}' / f'{i}.png'), rng.integers(0, 256, (40, 46, 3), np.uint8))
    return root


@pytest.fixture(scope='module')
def made(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('bin')
    root = _tree(tmp / 'faces')
    pairs_path = str(tmp / 'pairs.txt')
    write_pairs(pairs_path, make_pairs(str(root), folds=10, per_fold=2, seed=0), 10, 2)
    out = str(tmp / 'faces.bin')
    summary = make_bin(pairs_path, str(root), out)
    return dict(tmp=tmp, root=root, pairs=pairs_path, bin=out, summary=summary, stem=make_checkpoint(tmp))


def test_made_bin_holds_the_pairs_images_in_order(made):
    pairs = read_pairs(made['pairs'])
    images, issame = load_bin(made['bin'])
    assert issame.tolist() == [p.issame for p in pairs]
    for k, p in enumerate(pairs):
        assert images[2 * k] == (made['root'] / p.path1).read_bytes()
        assert images[2 * k + 1] == (made['root'] / p.path2).read_bytes()
    s = made['summary']
    assert (s['pairs'], s['same'], s['different']) == (40, 20, 20)
    assert s['distinct_images'] == len({q for p in pairs for q in p[:2]}) and 'fold_note' not in s
    assert bin_folds(len(pairs)).tolist() == [p.fold for p in pairs]  # LFW-style folds = insightface blocks


def test_bin_scores_exactly_like_the_pairs_file_it_came_from(made):
    from extract_features.extraction import extract_to_mat
    from lfw_verification.bin_eval import evaluate_bin
    from lfw_verification.evaluate import evaluate_verification, to_json_dict
    mat = str(made['tmp'] / 'pairs_features.mat')
    extract_to_mat(made['stem'], mat, pairs=made['pairs'], root=str(made['root']), progress=False)
    via_pairs = evaluate_verification(mat, made['pairs'])
    via_bin = evaluate_bin(made['stem'], made['bin'], progress=False)
    a, b = via_pairs['metrics'], via_bin['metrics']
    assert a['fold_accuracies'] == b['fold_accuracies'] and a['fold_thresholds'] == pytest.approx(
        b['fold_thresholds'], abs=1e-9)
    for key in ('accuracy_mean', 'accuracy_std', 'auc', 'eer', 'optimistic_accuracy', 'threshold_at_eer'):
        assert a[key] == pytest.approx(b[key], abs=1e-9), key
    np.testing.assert_allclose(a['roc']['tpr'], b['roc']['tpr'])
    # same JSON keys (the bin's config adds what it embedded with)
    ja, jb = to_json_dict(via_pairs), to_json_dict(via_bin)
    assert set(ja['metrics']) == set(jb['metrics']) and set(ja['config']) <= set(jb['config'])
    assert via_bin['config']['n_pair_images'] == made['summary']['distinct_images']


def test_make_bin_and_lfw_eval_bin_clis(made, repo_root, tmp_path):
    out = tmp_path / 'cli.bin'
    run = subprocess.run([sys.executable, str(repo_root / 'data_tools' / 'make_bin.py'), '--pairs', made['pairs'],
                          '--images', str(made['root']), '--out', str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == open(made['bin'], 'rb').read()
    from lfw_verification import lfw_eval
    js = tmp_path / 'r.json'
    assert run_cli(lfw_eval.main, ['--model', made['stem'], '--bin', str(out), '--json', str(js), '--quiet']) == 0
    saved = json.load(open(js))
    assert set(saved['metrics']['tar_at_far']) == {'0.01', '0.001', '0'}
    assert saved['config']['bin'] == str(out) and saved['metrics']['n_pairs'] == 40
    missing = subprocess.run([sys.executable, str(repo_root / 'data_tools' / 'make_bin.py'), '--pairs',
                              made['pairs'], '--images', str(tmp_path), '--out', str(out)],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.startswith('error:') and 'not under' in missing.stderr
    with pytest.raises(SystemExit):
        lfw_eval.main(['--bin', str(out)])  # --bin without --model: argparse error, exit 2


def test_undecodable_image_in_bin_is_named(made, tmp_path):
    from lfw_verification.bin_eval import evaluate_bin
    images, issame = load_bin(made['bin'])
    images[3] = b'not an image'
    write_bin(tmp_path / 'bad.bin', images, issame)
    with pytest.raises(UsageError, match=r'image 3 \(pair 1\)'):
        evaluate_bin(made['stem'], str(tmp_path / 'bad.bin'), progress=False)
