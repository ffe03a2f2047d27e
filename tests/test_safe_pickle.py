"""No pickle read from a user's file may run code: PyTorch legacy checkpoints (every one of their
five pickles), MXNet ``.states`` on resume, MTCNN ``.npy`` weights. Each crafted file names
``os.system`` and must be refused with one error line before anything is called."""
import io
import os
import pickle
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

from common.errors import UsageError
from common.safe_pickle import UnsafePickleError, load_npy_object, restricted_loads
from symbols.checkpoint import read_optimizer_states
from models.torch_checkpoint import LEGACY_MAGIC, LEGACY_PROTOCOL, read_state_dict


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


SYS_INFO = {'protocol_version': LEGACY_PROTOCOL, 'little_endian': True,
            'type_sizes': {'short': 2, 'int': 4, 'long': 4}}


@pytest.mark.parametrize('position', range(5))
def test_legacy_checkpoint_refuses_code_in_every_pickle(tmp_path, position):
    marker = tmp_path / 'RAN'
    parts = [LEGACY_MAGIC, LEGACY_PROTOCOL, SYS_INFO, {'state_dict': {}}, []]
    parts[position] = Payload(marker)
    path = tmp_path / 'evil.pth.tar'
    path.write_bytes(b''.join(pickle.dumps(p, protocol=2) for p in parts))
    with pytest.raises(UsageError):
        read_state_dict(path)
    assert not marker.exists()


def test_import_cli_refuses_crafted_checkpoint_with_one_line(tmp_path):
    marker = tmp_path / 'RAN'
    path = tmp_path / 'evil.pth.tar'
    path.write_bytes(b''.join(pickle.dumps(p, protocol=2) for p in
                              [LEGACY_MAGIC, Payload(marker), SYS_INFO, {'state_dict': {}}, []]))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, os.path.join(root, 'models', 'import_pretrained.py'), str(path),
                           '--network', 'lightcnn9', '--out', str(tmp_path / 'out')],
                          capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count('\n') == 1 and 'refusing' in done.stderr
    assert not marker.exists()


def test_restricted_loads_allows_only_listed_globals():
    assert restricted_loads(pickle.dumps({'a': [1, 2.5, 'x']})) == {'a': [1, 2.5, 'x']}
    data = pickle.dumps(collections_ordered := __import__('collections').OrderedDict(a=1))
    with pytest.raises(UnsafePickleError, match='collections.OrderedDict'):
        restricted_loads(data)
    assert restricted_loads(data, {('collections', 'OrderedDict')}) == collections_ordered
    with pytest.raises(UsageError, match='not a readable pickle'):
        restricted_loads(b'\x80\x02}q\x00')  # cut short


def _states(tmp_path, optimizer):
    net = gluon.nn.Dense(2)
    net.initialize()
    trainer = gluon.Trainer(net.collect_params(), optimizer, {'learning_rate': 0.1},
                            update_on_kvstore=False)
    with mx.autograd.record():
        loss = net(mx.nd.ones((2, 3))).sum()
    loss.backward()
    trainer.step(2)
    path = tmp_path / f'{optimizer}.states'
    trainer.save_states(str(path))
    return path


@pytest.mark.parametrize('optimizer', ['sgd', 'adam', 'nag'])
def test_real_optimizer_states_pass_the_check(tmp_path, optimizer):
    opt = read_optimizer_states(_states(tmp_path, optimizer))
    assert type(opt).__name__.lower() == optimizer


def test_crafted_states_file_is_refused_before_mxnet_unpickles_it(tmp_path):
    marker = tmp_path / 'RAN'
    path = tmp_path / 'evil.states'
    path.write_bytes(pickle.dumps(({0: Payload(marker)}, None)))
    with pytest.raises(UnsafePickleError, match='posix.system|os.system'):
        read_optimizer_states(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps(({}, 'not an optimizer')))
    with pytest.raises(UsageError, match='not an MXNet optimiser state'):
        read_optimizer_states(path)


def test_npy_object_reader(tmp_path):
    weights = {'pnet': [np.arange(6, dtype=np.float32).reshape(2, 3)]}
    buf = io.BytesIO()
    np.save(buf, np.array(weights, dtype=object), allow_pickle=True)
    buf.seek(0)
    got = load_npy_object(buf)
    np.testing.assert_array_equal(got['pnet'][0], weights['pnet'][0])

    marker = tmp_path / 'RAN'
    buf = io.BytesIO()
    np.save(buf, np.array({'pnet': Payload(marker)}, dtype=object), allow_pickle=True)
    buf.seek(0)
    with pytest.raises(UnsafePickleError):
        load_npy_object(buf, 'evil.npy')
    assert not marker.exists()
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    buf.seek(0)
    with pytest.raises(UsageError, match='not a pickled object'):
        load_npy_object(buf)
