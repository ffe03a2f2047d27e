"""INT8 inference on CPU: post-training quantization of a checkpoint's feature net with MXNet's oneDNN backend.

    python models/export.py --model runs/pretrained/lightcnn-v4 --quantize int8 \\
        --calibration ../shared/datasets/pubfig83 --out runs/lightcnn-v4-int8

Steps (MXNet 1.9.1, ``mx.contrib.quantization.quantize_net_v2``, Intel's oneDNN recipe):

1. the feature net's inference graph with the MFM weight differences folded into parameters
   (:func:`models.deploy_graph.deploy_symbol`): MXNet quantizes a convolution only when its weight is a
   parameter; the folded MFM (``conv(W1) + relu(conv(W2 - W1))``) is two convolutions, a relu and a sum;
2. the ``MKLDNN_QUANTIZE`` pass, run in a child process without conv+relu fusion (see ``QUANTIZE_ENV``):
   convolutions (the sum fused), relus, pooling, additions and the dense layer become int8 oneDNN operators
   with int8 weights (one scale per output channel by default), so the whole trunk stays int8;
3. calibration: a few hundred images (an image tree, a ``.rec`` or a folder of them) are run in fp32 and each
   layer's output range chosen from them -- ``naive`` (min/max, default) or ``entropy`` (the threshold
   minimising the KL divergence);
4. the result is written as a checkpoint: ``PREFIX.json`` (``quantization`` records dtype, calibration
   set, count and method), ``PREFIX-symbol.json`` (the quantized graph) and ``PREFIX.params``.

:func:`symbols.checkpoint.load_checkpoint` sees ``quantization`` in the JSON and returns the stored graph as
a ``SymbolBlock`` (:mod:`symbols.quantized`, which imports nothing from here), so
``extract_features.py --model PREFIX`` and ``load_model(PREFIX)`` use it like any other checkpoint (CPU
only: the int8 operators are oneDNN's).
"""
import json
import os
import subprocess
import sys
import tempfile

import cv2
import mxnet as mx
import numpy as np

from common.errors import ParameterError, UsageError
from common.images import ImageError, decode_image
from data_tools.records import iter_records
from symbols.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from symbols.inference import items_from_tree
from symbols.quantized import QUANTIZATION_KEY, SYMBOL_SUFFIX, save_params

from .deploy_graph import deploy_symbol

CALIBRATION_MODES = ('naive', 'entropy')
# naive (min/max): on LightCNN-V4, PubFig83 held-out identities, it lost less verification accuracy than entropy
# (-0.07 vs -0.18 points on 6,000 pairs; over 10 pair draws +0.005 vs -0.07) although its feature cosine to
# fp32 is lower (0.991 vs 0.995): entropy clips each layer's largest activations, which carry identity. It also
# calibrates 2-3x faster. bench/bench_int8_accuracy.py measures it.
DEFAULT_CALIBRATION_MODE = 'naive'
GRANULARITIES = ('channel-wise', 'tensor-wise')
DEFAULT_CALIBRATION_IMAGES = 256


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
        An image folder (searched recursively, e.g. an identity tree), a packed ``.rec``, or a folder
        holding packed ``.rec`` files (``pack_rec.py`` output: every ``.rec`` at its top level is read).
    preprocessing : Preprocessing
        The checkpoint's pixels (channels, input side); records are centre-cropped as in validation.
    count : int
        Images to use, spread evenly over the sorted image list (over the file order of the records).
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
        ``source`` missing or neither images nor records, ``count`` < 1, or not one readable image.
    """
    if count < 1:
        raise ParameterError(lambda n: f'{n("count")} must be >= 1, not {count}')
    source = os.fspath(source)
    records = _record_files(source)
    if records:
        loaded, skipped, available = _from_records(records, preprocessing, count)
        kind = 'records'
    elif os.path.isdir(source):
        try:
            items = items_from_tree(source)
        except UsageError as err:
            reason = str(err)  # bound now: the message is rendered after the except block ends
            raise ParameterError(lambda n: f'{n("calibration")} {source} is empty: {reason}') from None
        kind, available = 'images', len(items)
        loaded, skipped = [], []
        for item in _evenly(items, count):
            try:
                loaded.append(preprocessing.load(item.source, center_crop))
            except ImageError as err:
                skipped.append([item.label, str(err)])
    elif not os.path.exists(source):
        raise ParameterError(lambda n: f'{n("calibration")} {source} does not exist')
    else:
        raise ParameterError(lambda n: f'{n("calibration")} {source} is neither an image folder nor a .rec '
                                       'file')
    if not loaded:
        example = f', e.g. {skipped[0][0]}: {skipped[0][1]}' if skipped else ''
        raise ParameterError(lambda n: f'{n("calibration")} {source} has no readable image '
                                       f'({len(skipped)} unreadable{example})')
    info = dict(source=os.path.abspath(source), kind=kind, images=len(loaded), available=available,
                skipped=skipped)
    return preprocessing.to_batch(loaded), info


def _record_files(source):
    """The ``.rec`` files ``source`` names: itself, or those at the top level of a folder; [] otherwise."""
    if os.path.isfile(source) and source.endswith('.rec'):
        return [source]
    if os.path.isdir(source):
        return sorted(os.path.join(source, f) for f in os.listdir(source)
                      if f.endswith('.rec') and os.path.isfile(os.path.join(source, f)))
    return []


def _check_record_channels(chosen, preprocessing):
    """Records packed gray for a colour network (or the reverse) calibrate nothing it will see: refused, as
    training refuses them (the first decodable record of each file tells its packing)."""
    want, checked = preprocessing.num_channels, set()
    for rec, _, payload in chosen:
        img = None if rec in checked else cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:  # file already checked, or an undecodable record (skipped and listed later)
            continue
        checked.add(rec)
        have = 1 if img.ndim == 2 else img.shape[2]
        if (have == 1) != (want == 1):
            raise ParameterError(lambda n: f'{n("calibration")} {rec} holds {have}-channel images but the '
                                           f'network takes {preprocessing.channels} ({want} channels): '
                                           f'calibrate on records packed for it')


def _from_records(rec_paths, preprocessing, count):
    payloads = [(rec, record_id, payload) for rec in rec_paths for _, record_id, payload in iter_records(rec)]
    color = 'gray' if preprocessing.channels == 'gray' else 'bgr'
    chosen = _evenly(payloads, count)
    _check_record_channels(chosen, preprocessing)
    loaded, skipped = [], []
    for rec, record_id, payload in chosen:
        name = f'{os.path.basename(rec)} record {record_id}'
        try:
            loaded.append(preprocessing.decoded(decode_image(payload, color, name)))
        except ImageError as err:
            skipped.append([name, str(err)])
    return loaded, skipped, len(payloads)


# ---------------------------------------------------------------------------------------------
# Quantization

def quantize_feature_net(net, data_shape, calibration, mode=DEFAULT_CALIBRATION_MODE, granularity='channel-wise',
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
        How each layer's int8 range is chosen from the calibration outputs: min/max (``naive``, default) or the
        threshold minimising the KL divergence (``entropy``).
    granularity : {'channel-wise', 'tensor-wise'}
        One weight scale per output channel, or per tensor.
    exclude : sequence of str
        Layers of the folded graph kept in fp32, named with or without the net prefix
        (``dense0_fwd`` or ``lightcnnv40_dense0_fwd``; see :func:`layer_names`).
    """
    if mode not in CALIBRATION_MODES:
        raise ParameterError(lambda n: f"{n('mode')} must be one of {', '.join(CALIBRATION_MODES)}, not {mode!r}")
    if granularity not in GRANULARITIES:
        raise ParameterError(lambda n: f"{n('granularity')} must be one of {', '.join(GRANULARITIES)}, "
                                       f"not {granularity!r}")
    if not mx.runtime.Features().is_enabled('MKLDNN'):
        raise UsageError('INT8 quantization needs an MXNet build with oneDNN (MKLDNN); this one has none')
    graph, params = deploy_symbol(net, data_shape)
    exclude = layer_names(graph, exclude)
    # NDArrayIter would pad a short last batch with repeated images: batches of the largest size <=
    # batch_size that divides the set, so every calibration image counts once
    n = len(calibration)
    size = max(d for d in range(1, max(1, min(batch_size, n)) + 1) if n % d == 0)
    qgraph, qparams = _quantize_in_subprocess(graph, params, calibration, size, mode, granularity,
                                              list(exclude))
    return qgraph, qparams, n


# MXNet 1.9.1 reads its fusion switches once, when libmxnet loads, so the quantization pass runs in a
# fresh interpreter with this set. Why: with conv+relu fused, the relu branch of every MFM leaves the
# convolution as uint8 and is then summed (fused sum or quantized_elemwise_add) with the signed int8
# first half; MXNet 1.9.1 mixes the two encodings wrongly (real LightCNN-V4: feature cosine to fp32
# 0.18, i.e. noise). Unfused, the relu is an int8 -> int8 quantized_act and the sums stay signed
# (cosine 0.99). The convolutions, pooling, additions and the dense layer all remain int8.
QUANTIZE_ENV = {'MXNET_DISABLE_MKLDNN_FUSE_CONV_RELU': '1'}


def _quantize_in_subprocess(graph, params, calibration, batch_size, mode, granularity, exclude):
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
        raise ParameterError(lambda n: f"{n('exclude')} names no layer of the graph: {', '.join(missing)} "
                                       f'(layers look like {examples} ...)')
    return found


def operator_counts(graph):
    """Op name -> count over the non-variable nodes of a symbol JSON: what stayed fp32, what is int8."""
    counts = {}
    for node in graph['nodes']:
        if node['op'] != 'null':
            counts[node['op']] = counts.get(node['op'], 0) + 1
    return dict(sorted(counts.items()))


def quantize_checkpoint(model_spec, prefix, calibration, count=DEFAULT_CALIBRATION_IMAGES,
                        mode=DEFAULT_CALIBRATION_MODE, granularity='channel-wise', exclude=(), center_crop=None,
                        epoch=None):
    """Write an INT8 checkpoint ``prefix`` of ``model_spec``'s feature net; returns a summary dict.

    Files (committed as one checkpoint by :func:`symbols.checkpoint.save_checkpoint`): ``prefix.params``,
    ``prefix-symbol.json`` and ``prefix.json``, whose ``quantization`` records dtype, backend, granularity,
    excluded layers, the source checkpoint, the operators of the graph and ``calibration`` (source, kind,
    images used, available, method, centre crop, skipped). :mod:`symbols.quantized` loads it. See
    :func:`calibration_images` and :func:`quantize_feature_net` for the parameters.

    Raises
    ------
    UsageError
        ``prefix`` is the source checkpoint, the source is already INT8, or a parameter is invalid.
    """
    stem = resolve_checkpoint(model_spec, epoch)
    if os.path.abspath(prefix) == os.path.abspath(stem):
        raise ParameterError(lambda n: f'{n("prefix")} {prefix} would overwrite the source checkpoint')
    net, meta = load_checkpoint(stem, features_only=True)
    if meta.get(QUANTIZATION_KEY):
        raise UsageError(f'{stem} is already quantized ({meta[QUANTIZATION_KEY].get("dtype")}); '
                         'quantize its fp32 source checkpoint')
    pre = meta['preprocessing']
    batch, info = calibration_images(calibration, pre, count, center_crop)
    qgraph, qparams, used = quantize_feature_net(net, pre.data_shape, batch, mode, granularity, exclude)
    info.update(method=mode, images=used, center_crop=center_crop)
    symbol_name = os.path.basename(prefix) + SYMBOL_SUFFIX
    quantization = dict(dtype='int8', backend='MKLDNN_QUANTIZE (oneDNN)', granularity=granularity,
                        excluded=list(exclude), calibration=info, source_checkpoint=os.path.abspath(stem),
                        symbol=symbol_name, operators=operator_counts(qgraph), mxnet=mx.__version__)
    out_meta = {k: v for k, v in meta.items() if k not in ('stem', 'states', 'files', 'epoch')}
    out_meta.update(num_classes=None, preprocessing=pre, **{QUANTIZATION_KEY: quantization})

    def write_graph(path):
        with open(path, 'w', encoding='utf-8') as f:
            json.dump(qgraph, f)
    save_checkpoint(None, prefix, out_meta, extra={'.params': lambda path: save_params(path, qgraph, qparams),
                                                   SYMBOL_SUFFIX: write_graph})
    return dict(stem=prefix, files=[prefix + '.params', prefix + SYMBOL_SUFFIX, prefix + '.json'],
                quantization=quantization)


if __name__ == '__main__':
    try:
        _worker(sys.argv[1])
    except UsageError as err:
        print(f'error: {err}', file=sys.stderr)
        raise SystemExit(2)
