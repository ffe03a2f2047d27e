"""Export a checkpoint's feature net for deployment: MXNet symbol + params, or ONNX.

    python models/export.py --model runs/pretrained/lightcnn-v4 --format mxnet   # runs/export/lightcnn-v4-*
    python models/export.py --model runs/pretrained/lightcnn-v4 --format onnx --check

Both formats take a float32 NCHW batch already preprocessed as the checkpoint's JSON says (channels,
/255, 128x128) and return the 256-d features; the classifier is not exported. ``--check`` runs the ONNX
file in onnxruntime in a separate deploy environment (onnxruntime needs numpy >= 1.24, MXNet 1.9.1
needs < 1.24) and compares it with MXNet.
"""
if __name__ == '__main__':  # first, before MXNet loads: it sizes its thread pool once (common/threads.py)
    from common.threads import default_compute_threads
    default_compute_threads()

import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

from common.cli import ArgumentParser, run_cli  # noqa: E402
from common.errors import UsageError  # noqa: E402
from common.fileio import atomic_write, check_output_prefix, check_outputs_apart  # noqa: E402
from common.paths import runs_dir  # noqa: E402
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from symbols.checkpoint import checkpoint_files, load_checkpoint, resolve_checkpoint  # noqa: E402

ONNX_OPSET = 13  # mx.onnx 1.9.1 writes opset-13 operators (Split with a 'split' attribute)
DEPLOY_PYTHON_ENV = 'LIGHTCNN_DEPLOY_PYTHON'
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_prefix(model_spec):
    """``runs/export/NAME`` for checkpoint ``.../NAME``: never the checkpoint's own files."""
    return runs_dir('export', os.path.basename(resolve_checkpoint(model_spec)))


def load_feature_net(model_spec):
    """Feature-only net of a checkpoint, hybridized and run once (so it has a graph to export)."""
    net, meta = load_checkpoint(model_spec, features_only=True)
    pre = meta['preprocessing']
    net.hybridize(static_alloc=True, static_shape=True)
    net(mx.nd.zeros((1,) + pre.data_shape))
    return net, meta


def export_mxnet(net, prefix):
    """``PREFIX-symbol.json`` + ``PREFIX-0000.params`` for ``gluon.SymbolBlock.imports``."""
    net.export(prefix, epoch=0)
    return [prefix + '-symbol.json', prefix + '-0000.params']


@contextlib.contextmanager
def _onnx_opset(version):
    """Make mx.onnx convert for ``version`` and stamp it (it asks ``onnx.defs`` at call time)."""
    import onnx.defs
    original = onnx.defs.onnx_opset_version
    onnx.defs.onnx_opset_version = lambda: version
    try:
        yield
    finally:
        onnx.defs.onnx_opset_version = original


def export_onnx(net, meta, path):
    """``PATH`` (ONNX, opset 13) with input ``data`` (N, C, 128, 128), any batch size N."""
    import onnx
    with tempfile.TemporaryDirectory() as tmp:
        sym_file, params_file = export_mxnet(net, os.path.join(tmp, 'net'))
        shape = (1,) + meta['preprocessing'].data_shape
        with _onnx_opset(ONNX_OPSET):
            mx.onnx.export_model(sym_file, params_file, in_shapes=[shape], in_types=[np.float32],
                                 onnx_file_path=path, dynamic=True,
                                 dynamic_input_shapes=[(None,) + shape[1:]])
    model = onnx.load(path)
    for opset in model.opset_import:
        if opset.domain in ('', 'ai.onnx'):
            opset.version = ONNX_OPSET
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return [path]


def find_deploy_python(explicit=None):
    """Python of the deploy environment (onnxruntime): argument, ``$LIGHTCNN_DEPLOY_PYTHON`` or
    ``<repo>/.venv-deploy/bin/python``; None when there is none."""
    if explicit:
        if not os.path.exists(explicit):
            raise UsageError(f'deploy python {explicit} does not exist')
        return explicit
    for candidate in (os.environ.get(DEPLOY_PYTHON_ENV),
                      os.path.join(REPO, '.venv-deploy', 'bin', 'python')):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def run_onnxruntime(onnx_path, batch, deploy_python):
    """Outputs of ``onnx_path`` on ``batch`` computed by onnxruntime in the deploy environment."""
    script = os.path.join(REPO, 'models', 'onnx_check.py')
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = os.path.join(tmp, 'input.npy'), os.path.join(tmp, 'output.npy')
        np.save(inp, batch)
        done = subprocess.run([deploy_python, script, onnx_path, inp, out],
                              capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip() or 'no output').splitlines()[-1]
            raise UsageError(f'onnxruntime check failed in {deploy_python}: {last}')
        return np.load(out)


def check_onnx(net, meta, onnx_path, deploy_python, batch_size=4, seed=0):
    """Max abs difference between onnxruntime and MXNet features on a random batch."""
    shape = (batch_size,) + meta['preprocessing'].data_shape
    batch = np.random.RandomState(seed).rand(*shape).astype(np.float32)
    expected = net(mx.nd.array(batch)).asnumpy()
    got = run_onnxruntime(onnx_path, batch, deploy_python)
    if got.shape != expected.shape:
        raise UsageError(f'onnxruntime returned shape {got.shape}, MXNet {expected.shape}')
    return float(np.abs(got - expected).max())


def export_model(model_spec, fmt, prefix=None, check=False, deploy_python=None):
    """Export ``model_spec`` as ``fmt`` (``mxnet`` or ``onnx``); returns a summary dict.

    ``prefix`` defaults to :func:`default_prefix`; ``check`` (onnx only) compares onnxruntime with
    MXNet and fails when the features differ by 1e-4 or more.
    """
    if fmt not in ('mxnet', 'onnx'):
        raise UsageError(f"unknown format {fmt!r}; choose 'mxnet' or 'onnx'")
    prefix = prefix or default_prefix(model_spec)
    check_outputs_apart({'prefix': [prefix + '-symbol.json', prefix + '-0000.params', prefix + '.onnx',
                                    prefix + '.export.json']}, inputs={'model_spec': checkpoint_files(model_spec)})
    check_output_prefix(prefix, 'prefix')
    net, meta = load_feature_net(model_spec)
    files = export_mxnet(net, prefix) if fmt == 'mxnet' else export_onnx(net, meta, prefix + '.onnx')
    pre = meta['preprocessing']
    info = dict(network=meta['network'], input='data', input_shape=['N', *pre.data_shape],
                output='256-d feature', preprocessing=pre.to_dict())
    with atomic_write(prefix + '.export.json', 'w') as f:  # what a deployer must feed the exported graph
        json.dump(info, f, indent=1, sort_keys=True)
    files.append(prefix + '.export.json')
    result = dict(files=files, max_abs_diff=None)
    if check:
        if fmt != 'onnx':
            raise UsageError('--check compares onnxruntime with MXNet: use it with --format onnx')
        python = find_deploy_python(deploy_python)
        if python is None:
            raise UsageError(f'--check needs a deploy python with onnxruntime: create .venv-deploy '
                             f'(pip install -r requirements-deploy.txt) or set {DEPLOY_PYTHON_ENV}')
        result['max_abs_diff'] = diff = check_onnx(net, meta, files[0], python)
        if not diff < 1e-4:
            raise UsageError(f'onnxruntime features differ from MXNet by {diff:.3g} (>= 1e-4)')
    return result


def main(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0], parameters={'prefix': 'out', 'model_spec': 'model'})
    parser.add_argument('--model', required=True, help='checkpoint stem, e.g. runs/pretrained/lightcnn-v4')
    parser.add_argument('--format', required=True, choices=('mxnet', 'onnx'))
    parser.add_argument('--out', help='output prefix (default runs/export/NAME)')
    parser.add_argument('--check', action='store_true',
                        help='onnx: run the file in onnxruntime and compare with MXNet (< 1e-4)')
    parser.add_argument('--deploy-python', help=f'python with onnxruntime for --check (default '
                                                f'${DEPLOY_PYTHON_ENV} or .venv-deploy/bin/python)')
    args = parser.parse_args(argv)
    result = export_model(args.model, args.format, args.out, args.check, args.deploy_python)
    print('wrote ' + ', '.join(result['files']))
    if result['max_abs_diff'] is not None:
        print(f'onnxruntime vs MXNet: max abs difference {result["max_abs_diff"]:.3g}')


if __name__ == '__main__':
    raise SystemExit(run_cli(main))
