"""Closed- and open-set identification (identification/cosine.py, gallery.py; identify.py)."""
import json

import numpy as np
import pandas as pd
import pytest

from common.cli import run_cli
from common.errors import UsageError
from common.features_mat import write_features
from identification.cosine import identify, identity_scores, open_set_table
from identification.gallery import identity_of, split_by_index
from lfw_verification import identify as identify_cli
from lfw_verification.synthetic import synthetic_features


def test_identity_of():
    assert identity_of('/lfw_patch/Aaron_Eckhart/Aaron_Eckhart_0001.jpg') == 'Aaron_Eckhart'
    with pytest.raises(UsageError, match='no identity folder'):
        identity_of('lonely.jpg')


def test_split_by_index_first_k_per_identity_and_unknowns():
    labels = [f'{n}/{n}_{i:04d}.jpg' for n in 'ABCDE' for i in (3, 1, 2)]
    gallery, probe, counts = split_by_index(labels, 1, unknown_fraction=0.4, seed=0)
    g_labels, p_labels = [labels[r] for r in gallery], [labels[r] for r in probe]
    unknown = {label.split('/')[0] for label in p_labels} - {label.split('/')[0] for label in g_labels}
    assert counts == {'identities': 5, 'unknown_identities': 2, 'gallery_only_identities': 0}
    assert len(unknown) == 2 and len(g_labels) == 3 and len(p_labels) == 12
    assert all(label.endswith('_0001.jpg') for label in g_labels)  # by label order, not file order
    again = split_by_index(labels, 1, unknown_fraction=0.4, seed=0)
    assert again[0].tolist() == gallery.tolist()
    with pytest.raises(UsageError, match='leaves'):
        split_by_index(labels, 3)


def test_identity_scores_match_brute_force():
    rng = np.random.default_rng(0)
    gallery, probe = rng.normal(size=(7, 5)), rng.normal(size=(4, 5))
    ids = np.array(['b', 'a', 'b', 'c', 'a', 'c', 'c'])
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    cos = unit(probe) @ unit(gallery).T
    scores, names = identity_scores(gallery, ids, probe, 'image')
    assert names.tolist() == ['a', 'b', 'c']
    assert np.allclose(scores, np.stack([cos[:, ids == n].max(axis=1) for n in names], axis=1))
    centroid, _ = identity_scores(gallery, ids, probe, 'centroid')
    cents = unit(np.stack([unit(gallery)[ids == n].mean(axis=0) for n in names]))
    assert np.allclose(centroid, unit(probe) @ cents.T)


def test_open_set_table_hand_computed():
    top1 = np.array([0.9, 0.6, 0.4, 0.7, 0.2])
    correct = np.array([True, False, True, False, False])
    known = np.array([True, True, True, False, False])
    row = open_set_table(top1, correct, known, [0.5])[0]
    # known accepted+correct: 0.9 only -> DIR 1/3; unknown accepted: 0.7 -> FAR 1/2; accuracy (1 + 1) / 5
    assert row == {'threshold': 0.5, 'dir': pytest.approx(1 / 3), 'far': 0.5, 'accuracy': 0.4}


def test_identify_closed_and_open_set():
    gallery = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.9, 0.1, 0.0]])
    gallery_ids = np.array(['A', 'B', 'A'])
    probe = np.array([[1.0, 0.05, 0.0], [0.1, 1.0, 0.0], [0.0, 0.3, 1.0], [0.2, 0.0, 1.0]])
    probe_ids = np.array(['A', 'B', 'X', 'Y'])
    result = identify(gallery, gallery_ids, probe, probe_ids, far=0.0)
    assert result['closed_set']['image'] == {'top1': 1.0, 'top5': 1.0}
    assert result['closed_set']['centroid']['top1'] == 1.0
    assert result['n_known_probes'] == 2 and result['n_unknown_probes'] == 2
    o = result['open_set']['image']
    assert o['at_threshold']['far'] == 0.0 and o['at_threshold']['dir'] == 1.0
    pred = result['predictions']
    assert pred['image_open_set'].tolist() == ['A', 'B', 'unknown', 'unknown']
    assert pred['image_top5'][0] == 'A;B'


def test_identify_without_unknowns_picks_no_threshold():
    data, labels = synthetic_features(6, 3, dim=16, noise=0.3)
    ids = np.array([label.split('/')[0] for label in labels])
    result = identify(data[::3], ids[::3], data, ids)
    assert result['open_set']['image']['threshold'] is None
    assert result['closed_set']['image']['top1'] == 1.0
    with pytest.raises(UsageError, match='no probe identity'):
        identify(data[:3], ids[:3], data[3:6], ids[3:6])


def test_cli_split_mode_writes_csv_and_json(tmp_path, capsys):
    data, labels = synthetic_features(30, 5, dim=32, noise=1.0, seed=1)
    write_features(tmp_path / 'all.mat', data, labels)
    argv = ['--gallery', str(tmp_path / 'all.mat'), '--gallery-per-identity', '2', '--unknown-fraction', '0.2',
            '--far', '0.05', '--predictions', str(tmp_path / 'p.csv'), '--json', str(tmp_path / 's.json')]
    assert run_cli(identify_cli.main, argv) == 0
    out = capsys.readouterr().out
    assert 'closed set, image' in out and 'accuracy vs threshold' in out
    table = pd.read_csv(tmp_path / 'p.csv')
    assert len(table) == 24 * 3 + 6 * 5  # known identities keep 3 probes each; unknown ones give all 5
    assert (~table['known']).sum() == 30
    assert set(table['image_open_set'][~table['known']]) <= set(table['image_top1']) | {'unknown'}
    summary = json.loads((tmp_path / 's.json').read_text())
    assert summary['open_set']['image']['at_threshold']['far'] <= 0.05
    assert summary['split']['unknown_identities'] == 6


def test_cli_gallery_and_probe_files(tmp_path, capsys):
    data, labels = synthetic_features(10, 4, dim=16, noise=0.5, seed=2)
    write_features(tmp_path / 'g.mat', data[::4], labels[::4])
    probe_rows = [i for i in range(len(labels)) if i % 4]
    write_features(tmp_path / 'p.mat', data[probe_rows], [labels[i] for i in probe_rows])
    assert run_cli(identify_cli.main, ['--gallery', str(tmp_path / 'g.mat'), '--probe', str(tmp_path / 'p.mat')]) == 0
    assert 'probes 30 (30 known, 0 unknown)' in capsys.readouterr().out


def test_cli_needs_exactly_one_probe_source(tmp_path, capsys):
    data, labels = synthetic_features(4, 2, dim=8)
    write_features(tmp_path / 'g.mat', data, labels)
    assert run_cli(identify_cli.main, ['--gallery', str(tmp_path / 'g.mat')]) == 2
    assert 'either --probe' in capsys.readouterr().err
    argv = ['--gallery', str(tmp_path / 'g.mat'), '--probe', str(tmp_path / 'g.mat'), '--gallery-per-identity', '1']
    assert run_cli(identify_cli.main, argv) == 2


def test_images_skipped_at_extraction_are_named(tmp_path, capsys):
    data, labels = synthetic_features(4, 3, dim=8, noise=0.3, seed=1)
    write_features(tmp_path / 'g.mat', data[1:], labels[1:], [(labels[0], 'zero-byte file')])
    assert run_cli(identify_cli.main, ['--gallery', str(tmp_path / 'g.mat'), '--gallery-per-identity', '1',
                                       '--json', str(tmp_path / 'r.json')]) == 0
    out = capsys.readouterr().out
    assert f'1 image(s) were skipped at extraction and take no part (recorded in the .mat):\n  {labels[0]}: ' \
           'zero-byte file' in out
    summary = json.loads((tmp_path / 'r.json').read_text())
    assert summary['skipped_at_extraction'] == [{'image': labels[0], 'reason': 'zero-byte file'}]
    assert summary['n_probe'] == 12 - 1 - 4                 # 11 images, 4 enrolled (one per identity)
