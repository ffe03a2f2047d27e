"""Checkpoints that hold a stored graph instead of a network to rebuild: INT8 (quantized) feature nets.

An INT8 checkpoint (written by ``models/export.py --quantize int8``, :mod:`models.quantize`) is a stem with

- ``STEM.json``: the usual checkpoint JSON (network, preprocessing, ``files`` digests) plus ``quantization``:
  dtype, backend, granularity, excluded layers, the source checkpoint and ``calibration`` (source, kind,
  images used, available, method, skipped);
- ``STEM-symbol.json``: the quantized MXNet graph (oneDNN int8 operators, input ``data``, output the 256-d
  feature);
- ``STEM.params``: its parameters (``arg:``/``aux:`` names, int8 weights stay int8).

:func:`symbols.checkpoint.load_checkpoint` sees ``quantization`` in the JSON and returns
:func:`load_stored_graph`'s ``SymbolBlock``: extraction, ``models.load_model`` and ``load_checkpoint`` use it
like any other checkpoint. Nothing here imports a later stage: the graph is MXNet's own JSON.
"""
import json
import os
import tempfile

import mxnet as mx

from common.errors import UsageError, error_message
from common.preprocessing import Preprocessing

QUANTIZATION_KEY = 'quantization'
SYMBOL_SUFFIX = '-symbol.json'


def is_quantized(meta):
    """True for the JSON of a stored-graph (INT8) checkpoint."""
    return bool(meta.get(QUANTIZATION_KEY))


def save_params(path, graph, params):
    """``params`` (name -> NDArray, without prefixes) as ``SymbolBlock.imports`` reads them: ``arg:``/``aux:``."""
    aux = set(mx.sym.load_json(json.dumps(graph)).list_auxiliary_states())
    mx.nd.save(path, {('aux:' if k in aux else 'arg:') + k: v for k, v in params.items()})


def load_symbol_block(graph, params, input_names=('data',), ctx=None, block_class=None):
    """A ``gluon.SymbolBlock`` (or ``block_class``) running ``graph`` with ``params``.

    Parameters
    ----------
    graph : dict
        MXNet symbol JSON.
    params : dict of str -> NDArray
        Its parameters, names without ``arg:``/``aux:``; dtypes are kept (int8 weights stay int8).
    input_names : sequence of str
        The graph's float32 inputs.
    """
    symbol = mx.sym.load_json(json.dumps(graph))
    inputs = [mx.sym.var(name, dtype='float32') for name in input_names]
    block = (block_class or mx.gluon.SymbolBlock)(symbol, inputs)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'net.params')
        save_params(path, graph, params)
        block.collect_params().load(path, ctx=ctx or mx.cpu(), cast_dtype=True, dtype_source='saved')
    return block


class StoredGraphNet(mx.gluon.SymbolBlock):
    """A stored (already oneDNN-partitioned) graph: ``hybridize`` ignores a ``backend`` request, which the
    extraction engine makes of every net (:func:`symbols.inference.inference_backend`)."""

    def hybridize(self, active=True, backend=None, backend_opts=None, **kwargs):
        super().hybridize(active, **kwargs)


def load_stored_graph(stem, meta, ctx=None):
    """``(net, meta)`` of an INT8 checkpoint, as :func:`symbols.checkpoint.load_checkpoint` returns them.

    ``net`` maps a float32 batch ``(N, C, H, W)`` preprocessed as ``meta['preprocessing']`` says to the
    ``(N, 256)`` features (the classifier is never part of an INT8 checkpoint).

    Raises
    ------
    UsageError
        A GPU ``ctx`` (the int8 operators are oneDNN CPU operators), a missing graph file, or parameters
        that do not fit the graph.
    """
    ctx = ctx or mx.cpu()
    if ctx.device_type != 'cpu':
        raise UsageError(f'{stem} is an INT8 (oneDNN) checkpoint: it runs on the CPU only, not {ctx}')
    name = meta[QUANTIZATION_KEY].get('symbol') or os.path.basename(stem) + SYMBOL_SUFFIX
    symbol_file = os.path.join(os.path.dirname(stem), name)
    try:
        with open(symbol_file, encoding='utf-8') as f:
            graph = json.load(f)
    except FileNotFoundError:
        raise UsageError(f'INT8 checkpoint {stem}: graph file {symbol_file} is missing') from None
    except (OSError, ValueError) as err:
        raise UsageError(f'INT8 checkpoint {stem}: {symbol_file} is not readable JSON: {err}') from None
    try:
        params = {k.split(':', 1)[1]: v for k, v in mx.nd.load(stem + '.params').items()}
        net = load_symbol_block(graph, params, ctx=ctx, block_class=StoredGraphNet)
    except (mx.MXNetError, KeyError, AssertionError, IndexError) as err:
        raise UsageError(f'{stem}.params does not fit {symbol_file}: {error_message(err)}') from None
    pre = Preprocessing.from_dict(meta.get('preprocessing', {}))
    return net, dict(meta, preprocessing=pre, stem=stem)
