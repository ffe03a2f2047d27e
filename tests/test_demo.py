"""The embedded demo end to end (reduced size) and a short real-data run on ORL faces."""
import os

import pytest

from data_tools.packing import pack_records
from training import train
from demo import run_demo


@pytest.mark.slow
def test_reduced_demo_beats_chance_and_writes_its_outputs(tmp_path):
    lines = []
    summary = run_demo(dict(work_dir=str(tmp_path / 'demo'), demo_identities=30, demo_heldout=10,
                            demo_images=12, demo_size=72, input_size=64, num_epochs=3,
                            data_nthreads=1), log=lines.append)
    for key in ('features', 'pairs_file', 'roc', 'metrics_csv'):
        assert os.path.getsize(summary[key]) > 0, key
    assert os.path.exists(summary['checkpoint'] + '.params')
    assert summary['checkpoint'].endswith('lightcnn9-0003')
    assert summary['pairs'] >= 100
    assert summary['accuracy'] > 0.6, summary  # chance is 0.5 (balanced pairs)
    assert any(l.startswith('demo: verification on 10 held-out identities') for l in lines)
    assert any(summary['roc'] in l for l in lines)


@pytest.mark.slow
def test_short_orl_training_learns_identities(orl_root, tmp_path):
    prefix = str(tmp_path / 'orl')
    # 36 px records / 32 px crops (the classic ORL resolution) keep this to about a minute
    packed = pack_records(str(orl_root), prefix, size=36, val_per_identity=2, workers=0,
                          progress=False)
    assert packed['num_classes'] == 40 and packed['splits']['val']['images'] == 80
    result = train(dict(data_train=prefix + '.rec', data_val=prefix + '_val.rec',
                        model_prefix=str(tmp_path / 'm' / 'orl'), input_size=32, batch_size=16,
                        num_epochs=20, optimizer='adam', lr=5e-4, dropout=0.0, save_period=20,
                        data_nthreads=1, disp_batches=5),
                   log=lambda _: None)
    history = result['history']
    assert history[-1]['train_loss'] < 0.8 * history[0]['train_loss']
    # 80 held-out images of 40 people: chance top-1 is 1/40
    assert history[-1]['val_top1'] > 0.2, [(h['train_loss'], h['val_top1']) for h in history]
