"""bench/bench_transfer.py: the protocol's split and the one evaluation, on generated data with known answers.

The training and embedding parts are the benchmark's run, not tested here.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

from common.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(ROOT / 'bench'))
import bench_transfer as bt  # noqa: E402  (a script beside harness.py, imported by path like the benches)


def _tree(tmp_path, counts):
    for k, n in enumerate(counts):
        folder = tmp_path / f'id{k:02d}'
        folder.mkdir()
        for i in range(n):
            (folder / f'{i}.jpg').write_bytes(b'x')
        (folder / 'notes.txt').write_text('not an image')
    (tmp_path / 'align_report.json').write_text('{}')  # files beside the folders are not identities
    return bt.list_identity_images(str(tmp_path))


def test_split_known_first_unknown_last_test_drawn_per_identity(tmp_path):
    tree = _tree(tmp_path, [6, 7, 8, 9, 5, 4])
    assert sorted(tree) == [f'id{k:02d}' for k in range(6)] and len(tree['id00']) == 6
    split = bt.split_identities(tree, known=4, unknown=2, test_per_identity=2, seed=0)
    assert split.known == ['id00', 'id01', 'id02', 'id03']
    assert split.unknown_identities == ['id04', 'id05']
    assert {n for _, n in split.unknown} == {'id04', 'id05'} and len(split.unknown) == 9
    for name, total in zip(split.known, [6, 7, 8, 9]):
        test = [p for p, n in split.test if n == name]
        train = [p for p, n in split.train if n == name]
        assert len(test) == 2 and len(train) == total - 2 and not set(test) & set(train)
    # a seed redraws the test images; one identity's draw does not depend on which others are listed
    again = bt.split_identities(tree, known=4, unknown=2, test_per_identity=2, seed=0)
    assert again.test == split.test
    assert bt.split_identities(tree, 4, 2, 2, seed=1).test != split.test
    fewer = bt.split_identities({n: tree[n] for n in ['id00', 'id04', 'id05']}, 1, 2, 2, seed=0)
    assert fewer.test == [t for t in split.test if t[1] == 'id00']


def test_split_refuses_what_cannot_work(tmp_path):
    tree = _tree(tmp_path, [3, 5, 5])
    with pytest.raises(UsageError, match='known 2 \\+ unknown 2'):
        bt.split_identities(tree, known=2, unknown=2, test_per_identity=1)
    with pytest.raises(UsageError, match="'id00' has 3 images"):
        bt.split_identities(tree, known=1, unknown=2, test_per_identity=3)
    with pytest.raises(UsageError, match='does not exist'):
        bt.list_identity_images(str(tmp_path / 'missing'))


def test_subsample_caps_per_identity_and_keeps_order():
    items = [(f'{n}/{i}.jpg', n) for n in 'AB' for i in range(10)] + [('C/0.jpg', 'C')]
    kept = bt.subsample(items, 3, seed=0)
    assert [sum(1 for _, n in kept if n == x) for x in 'ABC'] == [3, 3, 1]
    assert kept == [it for it in items if it in kept]  # order of the input
    assert bt.subsample(items, 0) == items


def _basis(n, dim=64):
    return np.eye(dim)[:n]


def _known_answer_embeddings(rng, n_known=8, per_gallery=4, per_test=5, n_unknown=6, per_unknown=4):
    """Orthogonal identity directions: every answer of :func:`bt.evaluate` follows from the construction."""
    e = _basis(n_known + n_unknown)
    gallery = np.repeat(e[:n_known], per_gallery, axis=0) * rng.uniform(0.5, 2.0, (n_known * per_gallery, 1))
    gallery_ids = np.repeat([f'k{i}' for i in range(n_known)], per_gallery)
    test, test_ids = [], []
    for k in range(n_known):
        for j in range(per_test):
            # the first test image of every identity leans towards the next identity: wrong top-1, true top-2
            v = 0.8 * e[(k + 1) % n_known] + 0.6 * e[k] if j == 0 else e[k] + 0.05 * rng.standard_normal(len(e[k]))
            test.append(v * rng.uniform(0.5, 2.0))
            test_ids.append(f'k{k}')
    unknown = np.repeat(e[n_known:], per_unknown, axis=0)
    unknown_ids = np.repeat([f'u{i}' for i in range(n_unknown)], per_unknown)
    return gallery, gallery_ids, np.array(test), np.array(test_ids), unknown, unknown_ids


def test_evaluate_known_answers():
    rng = np.random.default_rng(0)
    g, gid, t, tid, u, uid = _known_answer_embeddings(rng)
    m = bt.evaluate(g, gid, t, tid, u, uid, far=0.05, folds=3, seed=0)
    assert m['top1'] == pytest.approx(4 / 5)  # 1 of 5 test images per identity leans to another
    assert m['top5'] == 1.0
    # gallery: genuine 1, best other-identity 0 -> threshold between them (the midpoint candidate)
    assert m['open_set_threshold'] == pytest.approx(0.5)
    # accepted: every known test image (score >= 0.8 > 0.5), of which 4/5 correct; unknowns score 0: rejected
    n_test, n_unknown = len(tid), len(uid)
    assert m['open_set_accuracy'] == pytest.approx((0.8 * n_test + n_unknown) / (n_test + n_unknown))
    assert m['open_set_far'] == 0.0 and m['open_set_dir'] == pytest.approx(0.8)
    # unknown identities are orthogonal: perfect separation
    assert m['auc'] == 1.0 and m['verification_accuracy'] == 1.0
    assert m['n_pairs_auc'] == n_unknown * (n_unknown - 1) // 2
    # 3 folds of 2 identities of 4 images: 8 images -> 28 pairs per fold
    assert m['n_pairs_folds'] == 3 * 28


def test_evaluate_auc_is_the_pair_ranking_probability():
    rng = np.random.default_rng(1)
    ids = np.repeat([f'u{i}' for i in range(6)], 5)
    centres = rng.standard_normal((6, 16))
    unknown = centres[np.repeat(np.arange(6), 5)] + 1.5 * rng.standard_normal((30, 16))
    g = rng.standard_normal((4, 16))
    m = bt.evaluate(g, ['a', 'a', 'b', 'b'], g[:2], ['a', 'b'], unknown, ids, folds=3)
    x = unknown / np.linalg.norm(unknown, axis=1, keepdims=True)
    i, j = np.triu_indices(30, 1)
    s = np.sum(x[i] * x[j], axis=1)
    same = ids[i] == ids[j]
    pos, neg = s[same], s[~same]
    expected = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        len(pos) * len(neg))
    assert m['auc'] == pytest.approx(expected, abs=1e-12)
    assert 0.5 < m['auc'] < 1.0  # noisy enough to be neither chance nor perfect


def test_open_set_threshold_at_far_on_training_stand_ins():
    # 2 identities, 10 gallery images each; their best other-identity scores are spread, so the
    # threshold moves with the target false-accept rate
    rng = np.random.default_rng(2)
    e = _basis(2, 8)
    mix = rng.uniform(0.0, 0.9, 20)
    gallery = np.array([e[k // 10] + m * e[1 - k // 10] for k, m in enumerate(mix)])
    ids = np.repeat(['a', 'b'], 10)
    loose, strict = bt.open_set_threshold(gallery, ids, 0.5), bt.open_set_threshold(gallery, ids, 0.0)
    assert loose < strict
    from identification.cosine import identity_scores
    scores, names = identity_scores(gallery, ids, gallery, 'centroid')
    impostor = np.where(names[None, :] == ids[:, None], -np.inf, scores).max(axis=1)
    assert (impostor > strict).sum() == 0 and (impostor > loose).mean() <= 0.5
    assert (impostor > loose).mean() > 0.3  # not stricter than asked: the lowest such threshold


def test_identity_folds_deal_identities_round_robin():
    folds = bt.identity_folds([f'u{i}' for i in range(20)] * 3, 10, seed=0)
    counts = np.bincount(list(folds.values()))
    assert len(folds) == 20 and counts.tolist() == [2] * 10
    assert bt.identity_folds([f'u{i}' for i in range(20)], 10, seed=1) != folds
    with pytest.raises(UsageError, match='cannot fill 10 folds'):
        bt.identity_folds(['a', 'b', 'c'], 10)


def test_unavailable_options_are_reported_not_passed():
    config = bt.CONFIGS['scratch_softmax']
    before = {'network', 'optimizer', 'lr', 'fc2_lr_mult', 'warmup_epochs'}
    options, missing = config.training_options(before)
    assert 'loss' not in options and missing == []  # softmax is what a trainer without --loss does
    options, missing = config.training_options(before | {'loss'})
    assert options['loss'] == 'softmax' and missing == []
    _, missing = bt.CONFIGS['v4_arcface'].training_options(before)
    assert set(missing) == {'pretrained', 'loss'}
    _, missing = bt.CONFIGS['v4_softmax_frozen'].training_options(before | {'loss'})
    assert set(missing) == {'pretrained', 'freeze_epochs'}


def test_budget_clock_counts_this_process_cpu_time_not_waiting():
    import time
    cpu, wall = bt.Clock('cpu'), bt.Clock('wall')
    time.sleep(0.3)  # waiting (another process's turn on a shared machine) costs wall time, not CPU
    assert wall.spent() >= 0.3 and cpu.spent() < 0.1
    x = 0.0
    while cpu.cpu() < 0.2:  # busy: both advance
        x += 1.0
    assert cpu.spent() >= 0.2 and cpu.wall() >= 0.5
    info = cpu.info()
    assert info['budget_clock'] == 'cpu' and info['cpu_seconds'] >= 0.2 and info['train_seconds'] >= 0.5
    assert info['mean_load'] >= 0 and len(cpu.load) == 2  # sampled at each spent()
    with pytest.raises(UsageError, match='cpu or wall'):
        bt.Clock('gpu')
    assert bt.build_parser().parse_args([]).budget_clock == 'cpu'
