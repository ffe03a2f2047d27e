"""data_tools.synthetic: deterministic procedural identities in an identity/image.png tree."""
import subprocess
import sys

import cv2
import numpy as np
import pytest

from data_tools.synthetic import identity_geometry, make_synthetic_faces, render_face


def _read_tree(root):
    return {p.relative_to(root).as_posix(): cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            for p in sorted(root.rglob('*.png'))}


def test_tree_layout_and_pixels(tmp_path):
    summary = make_synthetic_faces(tmp_path, num_identities=3, images_per_identity=4, size=64, seed=1)
    tree = _read_tree(tmp_path)
    assert summary['images'] == 12 and len(tree) == 12
    assert sorted({k.split('/')[0] for k in tree}) == ['id_0000', 'id_0001', 'id_0002']
    for img in tree.values():
        assert img.shape == (64, 64) and img.dtype == np.uint8
        assert img.std() > 10  # a drawn face, not a flat canvas


def test_same_seed_same_pixels_and_a_larger_set_extends_a_smaller_one(tmp_path):
    make_synthetic_faces(tmp_path / 'a', 2, 3, size=48, seed=7)
    make_synthetic_faces(tmp_path / 'b', 3, 4, size=48, seed=7)
    make_synthetic_faces(tmp_path / 'c', 2, 3, size=48, seed=8)
    a, b, c = (_read_tree(tmp_path / n) for n in 'abc')
    for key, img in a.items():
        np.testing.assert_array_equal(img, b[key])
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_images_vary_within_an_identity_and_identities_differ():
    geometry = identity_geometry(np.random.default_rng([0, 0]))
    other = identity_geometry(np.random.default_rng([0, 1]))
    assert geometry != other
    first = render_face(geometry, np.random.default_rng(1), size=64).astype(float)
    second = render_face(geometry, np.random.default_rng(2), size=64).astype(float)
    assert np.abs(first - second).mean() > 2  # pose, light and noise change per image


def test_rejects_empty_request_and_cli_writes(tmp_path, repo_root):
    with pytest.raises(ValueError):
        make_synthetic_faces(tmp_path, num_identities=0)
    proc = subprocess.run([sys.executable, 'data_tools/synthetic.py', str(tmp_path / 'cli'),
                           '--identities', '2', '--images', '2', '--size', '40'],
                          cwd=repo_root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / 'cli').rglob('*.png'))) == 4 and 'wrote 4 images' in proc.stdout
