"""Shared test fixtures: repo root on sys.path, the real datasets in ../shared when present."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get('LIGHTCNN_SHARED_DATASETS', ROOT.parent / 'shared' / 'datasets'))


def _dataset(name):
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f'needs the real dataset {path} (../shared/datasets is absent on this machine)')
    return path


@pytest.fixture
def orl_root():
    """AT&T/ORL faces: 40 identities x 10 PGM (92x112 gray)."""
    return _dataset('orl_faces')


@pytest.fixture
def pubfig_root():
    """PubFig83: 83 identities, 13,838 JPEG 100x100."""
    return _dataset('pubfig83')


@pytest.fixture
def repo_root():
    return ROOT
