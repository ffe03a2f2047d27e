"""Export a checkpoint's feature net for deployment: MXNet symbol + params, or ONNX.

    python models/export.py --model runs/pretrained/lightcnn-v4 --format mxnet   # runs/export/lightcnn-v4-*
    python models/export.py --model runs/pretrained/lightcnn-v4 --format onnx --check
    python models/export.py --model runs/pretrained/lightcnn-v4 --quantize int8 --calibration DIR|REC \
        --out runs/lightcnn-v4-int8       # an INT8 checkpoint (models/quantize.py)

Both formats take a float32 NCHW batch ``data`` already preprocessed as the checkpoint's JSON says
(channels, /255, 128x128) and return the 256-d features: the MXNet graph only those, the ONNX file
``embedding`` and, when the checkpoint has a classifier, ``logits`` (:mod:`models.onnx_export`). Both are
the folded inference graph (:mod:`models.deploy_graph`). ``--check`` runs the ONNX file in onnxruntime
in a separate deploy environment (onnxruntime needs numpy >= 1.24, MXNet 1.9.1 needs < 1.24) and
compares it with MXNet.
"""
if __name__ == '__main__':  # first, before MXNet loads: it sizes its thread pool once (common/threads.py)
    from common.threads import default_compute_threads
    default_compute_threads()

import json  # noqa: E402
import os  # noqa: E402

from common.checks import check_number  # noqa: E402
from common.cli import ArgumentParser, run_cli  # noqa: E402
from common.errors import ParameterError, UsageError  # noqa: E402
from common.fileio import atomic_path, atomic_write, check_output_prefix, check_outputs_apart  # noqa: E402
from common.paths import runs_dir  # noqa: E402
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from symbols.checkpoint import (CHECKPOINT_SUFFIXES, checkpoint_files, checkpoint_stem, load_checkpoint,  # noqa: E402
                                load_metadata, resolve_checkpoint)
from symbols.quantized import is_quantized, save_params  # noqa: E402

from models.deploy_graph import deploy_symbol  # noqa: E402
from models.onnx_export import (EMBEDDING, LOGITS, ONNX_OPSET,  # noqa: E402,F401  (ONNX_OPSET: re-export)
                                graph_to_onnx, onnxruntime_outputs)
from models.quantize import (CALIBRATION_MODES, DEFAULT_CALIBRATION_IMAGES,  # noqa: E402
                             DEFAULT_CALIBRATION_MODE, GRANULARITIES, quantize_checkpoint)

QUANTIZE_DTYPES = ('int8',)
# library parameter -> the option that feeds it (errors name parameters; run_cli spells them as options)
CLI_PARAMETERS = {'model_spec': 'model', 'prefix': 'out', 'fmt': 'format', 'dtype': 'quantize',
                  'count': 'calibration_count', 'mode': 'calibration_mode'}
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


def export_mxnet(net, prefix, data_shape=None):
    """``PREFIX-symbol.json`` + ``PREFIX-0000.params`` for ``gluon.SymbolBlock.imports``.

    With ``data_shape`` (one sample's C, H, W) the graph is the folded inference graph
    (:func:`models.deploy_graph.deploy_symbol`: MFM weight differences stored, not recomputed).
    """
    if data_shape is None:
        net.export(prefix, epoch=0)
    else:
        graph, params = deploy_symbol(net, data_shape)
        with atomic_write(prefix + '-symbol.json', 'w', encoding='utf-8') as f:
            json.dump(graph, f, indent=2)
        with atomic_path(prefix + '-0000.params') as tmp:
            save_params(tmp, graph, params)
    return [prefix + '-symbol.json', prefix + '-0000.params']


def load_onnx_net(model_spec):
    """The net the ONNX file holds: features, plus the classifier when the checkpoint has one.

    Returns ``(net, meta, output_names)`` with the net's outputs named in MXNet's order.
    """
    stem = resolve_checkpoint(model_spec)
    has_head = bool(load_metadata(stem).get('num_classes'))
    net, meta = load_checkpoint(stem, features_only=not has_head, return_features=has_head)
    return net, meta, ([LOGITS, EMBEDDING] if has_head else [EMBEDDING])


def export_onnx(net, meta, path, output_names=(EMBEDDING,)):
    """``PATH`` (ONNX, opset 13): input ``data`` (N, C, 128, 128), outputs ``embedding`` (N, 256)
    [+ ``logits``], any batch size N; see :mod:`models.onnx_export`."""
    data_shape = meta['preprocessing'].data_shape
    graph, params = deploy_symbol(net, data_shape)
    with atomic_path(path) as tmp:
        graph_to_onnx(graph, params, data_shape, list(output_names), tmp)
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
    """Outputs of ``onnx_path`` on ``batch`` computed by onnxruntime in the deploy environment: the
    first output (``embedding``)."""
    return run_onnxruntime_all(onnx_path, batch, deploy_python)[0][EMBEDDING]


def run_onnxruntime_all(onnx_path, batch, deploy_python):
    """``(outputs by name, onnxruntime's stderr)``; a failed run is a UsageError."""
    try:
        return onnxruntime_outputs(onnx_path, batch, deploy_python)
    except RuntimeError as err:
        raise UsageError(f'onnxruntime check failed: {err}') from None


def check_onnx(net, meta, onnx_path, deploy_python, batch_size=4, seed=0):
    """Max abs difference between onnxruntime and MXNet on a random batch, over every output
    (``embedding`` and, for a net with a classifier, ``logits``)."""
    shape = (batch_size,) + meta['preprocessing'].data_shape
    batch = np.random.RandomState(seed).rand(*shape).astype(np.float32)
    out = net(mx.nd.array(batch))
    expected = dict(zip([LOGITS, EMBEDDING], out)) if isinstance(out, (list, tuple)) else {EMBEDDING: out}
    got, _ = run_onnxruntime_all(onnx_path, batch, deploy_python)
    diff = 0.0
    for name, value in expected.items():
        value = value.asnumpy()
        if name not in got or got[name].shape != value.shape:
            found = {k: v.shape for k, v in got.items()}
            raise UsageError(f'onnxruntime returned {found}, MXNet {name} {value.shape}')
        diff = max(diff, float(np.abs(got[name] - value).max()))
    return diff


def export_model(model_spec, fmt, prefix=None, check=False, deploy_python=None):
    """Export ``model_spec`` as ``fmt`` (``mxnet`` or ``onnx``); returns a summary dict.

    ``prefix`` defaults to :func:`default_prefix`; ``check`` (onnx only) compares onnxruntime with
    MXNet and fails when the features differ by 1e-4 or more.
    """
    if fmt not in ('mxnet', 'onnx'):
        raise ParameterError(lambda n: f"unknown {n('fmt')} {fmt!r}; choose 'mxnet' or 'onnx'")
    stem = resolve_checkpoint(model_spec)
    if is_quantized(load_metadata(stem)):
        raise UsageError(f'{stem} is an INT8 checkpoint: export its fp32 source checkpoint instead')
    prefix = prefix or default_prefix(model_spec)
    check_outputs_apart({'prefix': [prefix + '-symbol.json', prefix + '-0000.params', prefix + '.onnx',
                                    prefix + '.export.json']}, inputs={'model_spec': checkpoint_files(model_spec)})
    prefix = check_output_prefix(prefix, 'prefix')  # creates its folder: after the check above
    if fmt == 'mxnet':
        net, meta = load_feature_net(model_spec)
        outputs = [EMBEDDING]
        files = export_mxnet(net, prefix, meta['preprocessing'].data_shape)
    else:
        net, meta, outputs = load_onnx_net(model_spec)
        files = export_onnx(net, meta, prefix + '.onnx', outputs)
    pre = meta['preprocessing']
    info = dict(network=meta['network'], input='data', input_shape=['N', *pre.data_shape],
                output='256-d feature', outputs=sorted(outputs, key=[EMBEDDING, LOGITS].index),
                preprocessing=pre.to_dict())
    with atomic_write(prefix + '.export.json', 'w') as f:  # what a deployer must feed the exported graph
        json.dump(info, f, indent=1, sort_keys=True)
    files.append(prefix + '.export.json')
    result = dict(files=files, max_abs_diff=None)
    if check:
        if fmt != 'onnx':
            raise ParameterError(lambda n: f"{n('check')} compares onnxruntime with MXNet: use it with "
                                           f"{n('fmt')} onnx")
        python = find_deploy_python(deploy_python)
        if python is None:
            raise ParameterError(lambda n: f'{n("check")} needs a deploy python with onnxruntime: create '
                                           '.venv-deploy (pip install -r requirements-deploy.txt) or set '
                                           f'{DEPLOY_PYTHON_ENV}')
        result['max_abs_diff'] = diff = check_onnx(net, meta, files[0], python)
        if not diff < 1e-4:
            raise UsageError(f'onnxruntime features differ from MXNet by {diff:.3g} (>= 1e-4)')
    return result


def quantize_model(model_spec, prefix=None, dtype='int8', calibration=None, count=DEFAULT_CALIBRATION_IMAGES,
                   mode=DEFAULT_CALIBRATION_MODE, granularity='channel-wise', exclude=(), center_crop=None):
    """INT8 checkpoint of ``model_spec`` (:func:`models.quantize.quantize_checkpoint`); ``prefix``
    defaults to ``runs/NAME-int8``.

    Raises
    ------
    UsageError
        ``dtype`` is not ``'int8'``, ``calibration`` is not given, or what ``quantize_checkpoint`` raises.
    """
    if dtype not in QUANTIZE_DTYPES:
        choices = ', '.join(map(repr, QUANTIZE_DTYPES))
        raise ParameterError(lambda n: f"unknown {n('dtype')} {dtype!r}; choose {choices}")
    if not calibration:
        raise ParameterError(lambda n: f'INT8 quantization needs {n("calibration")}: an image folder, a .rec or '
                                       'a folder of .rec files')
    stem = resolve_checkpoint(model_spec)
    prefix = prefix or runs_dir(os.path.basename(stem) + '-int8')
    check_outputs_apart({'prefix': [os.fspath(prefix) + ext for ext in CHECKPOINT_SUFFIXES]},
                        inputs={'model_spec': checkpoint_files(model_spec)})
    prefix = check_output_prefix(prefix, 'prefix')
    return quantize_checkpoint(stem, prefix, calibration, count, mode, granularity, exclude, center_crop)


def main(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0], parameters=CLI_PARAMETERS)
    parser.add_argument('--model', required=True, help='checkpoint stem, e.g. runs/pretrained/lightcnn-v4, or a '
                        'training prefix (with --epoch N, or its latest epoch)')
    parser.add_argument('--epoch', type=int, help='epoch N of the training prefix --model (NAME-NNNN)')
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument('--format', choices=('mxnet', 'onnx'))
    what.add_argument('--quantize', choices=QUANTIZE_DTYPES,
                      help='write an INT8 checkpoint (oneDNN, CPU) that extraction and load_model use')
    parser.add_argument('--out', help='output prefix (default runs/export/NAME; with --quantize runs/NAME-int8)')
    parser.add_argument('--check', action='store_true',
                        help='onnx: run the file in onnxruntime and compare with MXNet (< 1e-4)')
    parser.add_argument('--deploy-python', help=f'python with onnxruntime for --check (default '
                                                f'${DEPLOY_PYTHON_ENV} or .venv-deploy/bin/python)')
    q = parser.add_argument_group('INT8 (--quantize int8)')
    q.add_argument('--calibration', metavar='DIR|REC',
                   help='calibration images: an image folder (recursive), a packed .rec, or a folder of .rec files')
    q.add_argument('--calibration-count', type=int, default=DEFAULT_CALIBRATION_IMAGES, metavar='N',
                   help=f'images used, spread evenly over the set (default {DEFAULT_CALIBRATION_IMAGES})')
    q.add_argument('--calibration-mode', choices=CALIBRATION_MODES, default=DEFAULT_CALIBRATION_MODE,
                   help='layer ranges from min/max (naive, default) or minimal KL divergence (entropy)')
    q.add_argument('--granularity', choices=GRANULARITIES, default='channel-wise',
                   help='weight scales per output channel (default) or per tensor')
    q.add_argument('--exclude', nargs='+', default=[], metavar='LAYER',
                   help='layers of the folded graph kept in fp32 (e.g. mfm0_convolution0 dense0_fwd)')
    q.add_argument('--center-crop', type=int, metavar='PX',
                   help='central square of calibration images first, as extract_features --center-crop')
    args = parser.parse_args(argv)
    if args.epoch is not None:
        check_number(args.epoch, 'epoch', minimum=1, integer=True)
        args.model = checkpoint_stem(args.model, args.epoch)
    if args.quantize:
        if args.check:
            parser.error('--check compares ONNX with MXNet; it does not apply to --quantize')
        if not args.calibration:
            parser.error('--quantize int8 needs --calibration DIR|REC')
        result = quantize_model(args.model, args.out, args.quantize, args.calibration, args.calibration_count,
                                args.calibration_mode, args.granularity, args.exclude, args.center_crop)
        calib = result['quantization']['calibration']
        print(f"wrote INT8 checkpoint {result['stem']} ({', '.join(result['files'])}); calibrated "
              f"({calib['method']}) on {calib['images']} {calib['kind']} of {calib['source']}"
              + (f"; {len(calib['skipped'])} unreadable, skipped: "
                 + '; '.join(f'{a} ({b})' for a, b in calib['skipped']) if calib['skipped'] else ''))
        return
    if args.calibration:
        parser.error('--calibration applies to --quantize int8')
    result = export_model(args.model, args.format, args.out, args.check, args.deploy_python)
    print('wrote ' + ', '.join(result['files']))
    if result['max_abs_diff'] is not None:
        print(f'onnxruntime vs MXNet: max abs difference {result["max_abs_diff"]:.3g}')


if __name__ == '__main__':
    raise SystemExit(run_cli(main))
