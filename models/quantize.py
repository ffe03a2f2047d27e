"""INT8 inference on CPU: post-training quantization of a checkpoint's feature net with MXNet's oneDNN backend.

    python models/export.py --model models/lightcnn-v4 --quantize int8 \\
        --calibration ../shared/datasets/pubfig83 --out models/lightcnn-v4-int8

Steps (MXNet 1.9.1, ``mx.contrib.quantization.quantize_net_v2``, Intel's oneDNN recipe):

1. the feature net's inference graph with the MFM weight differences folded into parameters
   (:func:`models.deploy_graph.deploy_symbol`): MXNet quantizes a convolution only when its weight is a
   parameter; the folded MFM (``conv(W1) + relu(conv(W2 - W1))``) is two convolutions, a relu and a sum;
2. the ``MKLDNN_QUANTIZE`` pass, run in a child process without conv+relu fusion (see ``QUANTIZE_ENV``):
   convolutions (the sum fused), relus, pooling, additions and the dense layer become int8 oneDNN operators
   with int8 weights (one scale per output channel by default), so the whole trunk stays int8;
3. calibration: a few hundred images (or packed records) are run in fp32 and each layer's output range
   chosen from them -- ``naive`` (min/max) or ``entropy`` (the threshold minimising the KL divergence);
4. the result is written as a checkpoint: ``PREFIX.json`` (``quantization`` records dtype, calibration
   set, count and method), ``PREFIX-symbol.json`` (the quantized graph) and ``PREFIX.params``.

:func:`models.checkpoint.load_checkpoint` sees ``quantization`` in the JSON and returns
:func:`load_quantized`'s ``SymbolBlock``, so ``extract_features.py --model PREFIX`` and
``load_model(PREFIX)`` use it like any other checkpoint (CPU only: the int8 operators are oneDNN's).
"""
import json
import os
import tempfile

import mxnet as mx
import numpy as np

from common.errors import UsageError
from common.images import ImageError, decode_image

from .deploy_graph import deploy_symbol, load_symbol_block

CALIBRATION_MODES = ('naive', 'entropy')
GRANULARITIES = ('channel-wise', 'tensor-wise')
DEFAULT_CALIBRATION_IMAGES = 256
QUANTIZATION_KEY = 'quantization'


# ---------------------------------------------------------------------------------------------
# Calibration data

def _evenly(items, count):
    """``count`` items spread evenly over ``items`` (all of them when there are fewer)."""
    if len(items) <= count:
        return list(items)
    positions = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in positions]


def calibration_images(source, preprocessing, count=DEFAULT_CALIBRATION_IMAGES, center_crop=None):
    """Decoded calibration faces in the net's pixels, and what they were.

    Parameters
    ----------
    source : str
        A folder of images (searched recursively, e.g. an identity tree) or a packed ``.rec``.
    preprocessing : Preprocessing
        The checkpoint's pixels (channels, 128 input); records are centre-cropped as in validation.
    count : int
        Images to use, spread evenly over the sorted image list (over the file order of a ``.rec``).
    center_crop : int or None
        As in extraction: a central square of this side first (images only).

    Returns
    -------
    batch : float32 ndarray (count, C, H, W)
    info : dict
        ``source``, ``kind`` (``images``/``records``), ``images`` used, ``available``, ``skipped``
        (list of ``[label, reason]`` for unreadable ones, which are not used).

    Raises
    ------
    UsageError
        ``source`` missing, ``count`` < 1, or not one readable image.
    """
    if count < 1:
        raise UsageError(f'calibration count must be >= 1, not {count}')
    if os.path.isdir(source):
        from extract_features.extraction import items_from_tree
        items = items_from_tree(source)
        chosen = _evenly(items, count)
        kind, available = 'images', len(items)
        loaded, skipped = [], []
        for item in chosen:
            try:
                loaded.append(preprocessing.load(item.source, center_crop))
            except ImageError as err:
                skipped.append([item.label, str(err)])
    elif os.path.isfile(source) and source.endswith('.rec'):
        loaded, skipped, available = _records(source, preprocessing, count)
        kind = 'records'
    else:
        raise UsageError(f'calibration set {source} is neither an image folder nor a .rec file')
    if not loaded:
        raise UsageError(f'no readable calibration image in {source} ({len(skipped)} unreadable)')
    info = dict(source=os.path.abspath(source), kind=kind, images=len(loaded), available=available,
                skipped=skipped)
    return preprocessing.to_batch(loaded), info


def _records(rec_path, preprocessing, count):
    from data_tools.records import iter_records
    payloads = [(record_id, payload) for _, record_id, payload in iter_records(rec_path)]
    color = 'gray' if preprocessing.channels == 'gray' else 'bgr'
    loaded, skipped = [], []
    for record_id, payload in _evenly(payloads, count):
        try:
            loaded.append(preprocessing.decoded(decode_image(payload, color, f'record {record_id}')))
        except ImageError as err:
            skipped.append([f'record {record_id}', str(err)])
    return loaded, skipped, len(payloads)


# ---------------------------------------------------------------------------------------------
# Quantization

def quantize_feature_net(net, data_shape, calibration, mode='entropy', granularity='channel-wise',
                         exclude=(), batch_size=32):
    """INT8 graph of a feature net: ``(symbol JSON dict, params dict)``.

    Parameters
    ----------
    net : HybridBlock
        The fp32 feature net (returns ``(N, 256)``).
    data_shape : tuple
        One sample's (C, H, W).
    calibration : float32 ndarray (M, C, H, W)
        Preprocessed calibration batch (:func:`calibration_images`).
    mode : {'naive', 'entropy'}
        How each layer's int8 range is chosen from the calibration outputs.
    granularity : {'channel-wise', 'tensor-wise'}
        One weight scale per output channel, or per tensor.
    exclude : sequence of str
        Layers of the folded graph kept in fp32, named with or without the net prefix
        (``dense0_fwd`` or ``lightcnnv40_dense0_fwd``; see :func:`layer_names`).
    """
    if mode not in CALIBRATION_MODES:
        raise UsageError(f"calibration mode must be one of {', '.join(CALIBRATION_MODES)}, not {mode!r}")
    if granularity not in GRANULARITIES:
        raise UsageError(f"granularity must be one of {', '.join(GRANULARITIES)}, not {granularity!r}")
    if not mx.runtime.Features().is_enabled('MKLDNN'):
        raise UsageError('INT8 quantization needs an MXNet build with oneDNN (MKLDNN); this one has none')
    graph, params = deploy_symbol(net, data_shape)
    exclude = layer_names(graph, exclude)
    size = max(1, min(batch_size, len(calibration)))
    usable = len(calibration) - len(calibration) % size  # NDArrayIter would pad the last batch
    qgraph, qparams = _quantize_in_subprocess(graph, params, calibration[:usable], size, mode, granularity,
                                              list(exclude))
    return qgraph, qparams, usable


# MXNet 1.9.1 reads its fusion switches once, when libmxnet loads, so the quantization pass runs in a
# fresh interpreter with this set. Why: with conv+relu fused, the relu branch of every MFM leaves the
# convolution as uint8 and is then summed (fused sum or quantized_elemwise_add) with the signed int8
# first half; MXNet 1.9.1 mixes the two encodings wrongly (real LightCNN-V4: feature cosine to fp32
# 0.18, i.e. noise). Unfused, the relu is an int8 -> int8 quantized_act and the sums stay signed
# (cosine 0.99). The convolutions, pooling, additions and the dense layer all remain int8.
QUANTIZE_ENV = {'MXNET_DISABLE_MKLDNN_FUSE_CONV_RELU': '1'}


def _quantize_in_subprocess(graph, params, calibration, batch_size, mode, granularity, exclude):
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, 'graph.json'), 'w') as f:
            json.dump(graph, f)
        mx.nd.save(os.path.join(tmp, 'params.nd'), params)
        np.save(os.path.join(tmp, 'calibration.npy'), calibration)
        with open(os.path.join(tmp, 'job.json'), 'w') as f:
            json.dump(dict(batch_size=batch_size, mode=mode, granularity=granularity, exclude=exclude), f)
        env = dict(os.environ, **QUANTIZE_ENV)
        env['PYTHONPATH'] = os.pathsep.join([repo] + [p for p in [env.get('PYTHONPATH')] if p])
        done = subprocess.run([sys.executable, '-m', 'models.quantize', tmp], env=env, cwd=repo,
                              capture_output=True, text=True)
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
            last = next((ln for ln in reversed(lines) if ln.startswith(('error:', 'UsageError'))),
                        lines[-1] if lines else f'exit code {done.returncode}')
            raise UsageError(f'INT8 quantization failed: {last.removeprefix("error: ")}')
        with open(os.path.join(tmp, 'qgraph.json')) as f:
            qgraph = json.load(f)
        qparams = mx.nd.load(os.path.join(tmp, 'qparams.nd'))
    return qgraph, qparams


def _partitioned_names(symbol, names):
    """Nodes of the oneDNN-partitioned ``symbol`` to exclude for layer ``names`` of the folded graph: the
    layer itself, or the fused ``sg_mkldnn_*`` node whose subgraph holds it."""
    wanted, found = set(names), []
    for node in json.loads(symbol.tojson())['nodes']:
        inner = {n['name'] for sub in node.get('subgraphs', []) for n in sub['nodes']}
        if node['name'] in wanted or inner & wanted:
            found.append(node['name'])
    return found


def _worker(job_dir):
    """Child side of :func:`_quantize_in_subprocess` (``python -m models.quantize DIR``)."""
    with open(os.path.join(job_dir, 'graph.json')) as f:
        graph = json.load(f)
    with open(os.path.join(job_dir, 'job.json')) as f:
        job = json.load(f)
    params = mx.nd.load(os.path.join(job_dir, 'params.nd'))
    calibration = np.load(os.path.join(job_dir, 'calibration.npy'))
    data = mx.io.NDArrayIter(calibration, batch_size=job['batch_size'], data_name='data')
    qsym, qparams = _quantize_symbol(mx.sym.load_json(json.dumps(graph)), params, data, job['mode'],
                                     job['granularity'], job['exclude'])
    with open(os.path.join(job_dir, 'qgraph.json'), 'w') as f:
        f.write(qsym.tojson())
    mx.nd.save(os.path.join(job_dir, 'qparams.nd'), qparams)


def _quantize_symbol(symbol, params, data, mode, granularity, exclude):
    """What ``quantize_net_v2`` does for a Gluon net, on the symbol (no Gluon export round trip): the
    oneDNN quantization pass, calibration on ``data``, the oneDNN pass on the calibrated graph."""
    from mxnet.contrib import quantization as q
    aux_names = set(symbol.list_auxiliary_states())
    args = {k: v for k, v in params.items() if k not in aux_names}
    auxs = {k: v for k, v in params.items() if k in aux_names}
    symbol = symbol.get_backend_symbol('MKLDNN_QUANTIZE')
    excluded = _partitioned_names(symbol, exclude)
    qsym, qargs, qauxs, collector = q.quantize_graph(
        sym=symbol, arg_params=args, aux_params=auxs, ctx=mx.cpu(), excluded_sym_names=excluded,
        excluded_op_names=[], calib_mode=mode, quantized_dtype='auto', quantize_mode='full',
        quantize_granularity=granularity)
    module = mx.mod.Module(symbol=symbol, context=mx.cpu(), data_names=['data'], label_names=None)
    module.bind(for_training=False, data_shapes=data.provide_data)
    module.set_params(args, auxs, allow_missing=False, force_init=True)
    q._collect_layer_statistics(module, data, collector)
    qsym, qargs, qauxs = q.calib_graph(qsym=qsym, arg_params=args, aux_params=auxs, collector=collector,
                                       calib_mode=mode, quantized_dtype='auto', logger=None)
    qsym = qsym.get_backend_symbol('MKLDNN_QUANTIZE')
    return qsym, {**qargs, **qauxs}


def _unprefixed(name):
    """``lightcnnv40_dense0_fwd`` -> ``dense0_fwd``: layer names without the Gluon net prefix, which
    counts the nets built in a process (``lightcnnv40_``, ``lightcnnv41_`` ...)."""
    return name.split('_', 1)[1] if '_' in name else name


def layer_names(graph, names):
    """Full node names of ``graph`` for layer ``names`` given with or without the net prefix
    (``dense0_fwd``, ``mfm0_convolution1``); raises UsageError naming the unknown ones."""
    by_short = {}
    for node in graph['nodes']:
        if node['op'] != 'null':
            by_short.setdefault(_unprefixed(node['name']), node['name'])
    found, missing = [], []
    for name in names:
        full = by_short.get(_unprefixed(name)) or by_short.get(name)
        (found if full else missing).append(full or name)
    if missing:
        examples = ', '.join(list(by_short)[:3])
        raise UsageError(f"exclude names no layer of the graph: {', '.join(missing)} (layers look like "
                         f'{examples} ...)')
    return found


def operator_counts(graph):
    """Op name -> count over the non-variable nodes of a symbol JSON: what stayed fp32, what is int8."""
    counts = {}
    for node in graph['nodes']:
        if node['op'] != 'null':
            counts[node['op']] = counts.get(node['op'], 0) + 1
    return dict(sorted(counts.items()))


def quantize_checkpoint(model_spec, prefix, calibration, count=DEFAULT_CALIBRATION_IMAGES, mode='entropy',
                        granularity='channel-wise', exclude=(), center_crop=None, epoch=None):
    """Write an INT8 checkpoint ``prefix`` of ``model_spec``'s feature net; returns a summary dict.

    Files: ``prefix.params``, ``prefix-symbol.json`` and, last, ``prefix.json`` (the checkpoint JSON
    with ``quantization``: dtype, backend, granularity, excluded layers, source checkpoint, and
    ``calibration`` = source, kind, images, available, method, skipped). See :func:`calibration_images`
    and :func:`quantize_feature_net` for the parameters.
    """
    from .checkpoint import FORMAT, _atomic, load_checkpoint, resolve_checkpoint
    stem = resolve_checkpoint(model_spec, epoch)
    if os.path.abspath(prefix) == os.path.abspath(stem):
        raise UsageError(f'the INT8 checkpoint prefix {prefix} would overwrite its source checkpoint')
    net, meta = load_checkpoint(stem, features_only=True)
    if meta.get(QUANTIZATION_KEY):
        raise UsageError(f'{stem} is already quantized ({meta[QUANTIZATION_KEY].get("dtype")}); '
                         'quantize its fp32 source checkpoint')
    pre = meta['preprocessing']
    batch, info = calibration_images(calibration, pre, count, center_crop)
    qgraph, qparams, used = quantize_feature_net(net, pre.data_shape, batch, mode, granularity, exclude)
    os.makedirs(os.path.dirname(os.path.abspath(prefix)) or '.', exist_ok=True)
    symbol_file = prefix + '-symbol.json'
    _atomic(symbol_file, lambda path: _write_json(path, qgraph))
    _atomic(prefix + '.params', lambda path: mx.nd.save(path, {'arg:' + k: v for k, v in qparams.items()}))
    info.update(method=mode, images=used, center_crop=center_crop)
    quantization = dict(dtype='int8', backend='MKLDNN_QUANTIZE (oneDNN)', granularity=granularity,
                        excluded=list(exclude), calibration=info, source_checkpoint=os.path.abspath(stem),
                        symbol=os.path.basename(symbol_file), operators=operator_counts(qgraph),
                        mxnet=mx.__version__)
    out_meta = {k: v for k, v in meta.items() if k not in ('stem', 'preprocessing', 'states')}
    out_meta.update(format=FORMAT, version=1, epoch=None, num_classes=None,
                    preprocessing=pre.to_dict(), **{QUANTIZATION_KEY: quantization})
    _atomic(prefix + '.json', lambda path: _write_json(path, out_meta, indent=1))
    return dict(stem=prefix, files=[prefix + '.params', symbol_file, prefix + '.json'],
                quantization=quantization)


def _write_json(path, obj, indent=None):
    with open(path, 'w') as f:
        json.dump(obj, f, indent=indent, sort_keys=indent is not None)


# ---------------------------------------------------------------------------------------------
# Loading

class QuantizedNet(mx.gluon.SymbolBlock):
    """The INT8 graph as a ``SymbolBlock``; already partitioned for oneDNN, so ``hybridize`` ignores a
    ``backend`` argument (the extraction engine asks every net for the MKLDNN pass)."""

    def hybridize(self, active=True, backend=None, backend_opts=None, **kwargs):
        super().hybridize(active, **kwargs)


def load_quantized(stem, meta, ctx=None):
    """``(net, meta)`` of an INT8 checkpoint, as :func:`models.checkpoint.load_checkpoint` returns them.

    Raises
    ------
    UsageError
        A GPU context (the int8 operators are oneDNN CPU operators), or missing/broken files.
    """
    from common.preprocessing import Preprocessing
    ctx = ctx or mx.cpu()
    if ctx.device_type != 'cpu':
        raise UsageError(f'{stem} is an INT8 (oneDNN) checkpoint: it runs on the CPU only, not {ctx}')
    symbol_file = os.path.join(os.path.dirname(stem), meta[QUANTIZATION_KEY].get('symbol', ''))
    if not os.path.isfile(symbol_file):
        raise UsageError(f'INT8 checkpoint {stem}: graph file {symbol_file} is missing')
    with open(symbol_file) as f:
        graph = json.load(f)
    try:
        params = {k.split(':', 1)[1]: v for k, v in mx.nd.load(stem + '.params').items()}
        net = load_symbol_block(graph, params, ctx=ctx, block_class=QuantizedNet)
    except (mx.MXNetError, KeyError, AssertionError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f'{stem}.params does not fit {symbol_file}: {first}') from None
    pre = Preprocessing.from_dict(meta.get('preprocessing', {}))
    return net, dict(meta, preprocessing=pre, stem=stem)


if __name__ == '__main__':
    import sys
    try:
        _worker(sys.argv[1])
    except UsageError as err:
        print(f'error: {err}', file=sys.stderr)
        raise SystemExit(2)
