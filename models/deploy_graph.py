"""Inference graphs for deployment: the hybridized net as an MXNet symbol with weight-only work folded away.

LightCNN's convolutional MFM (:class:`symbols.blocks.MFM`) computes ``max(a, b)`` as
``conv(x, W1, b1) + relu(conv(x, W2 - W1, b2 - b1))``, slicing and differencing its weights inside the
graph (2 slices + 1 subtraction per weight and bias, every forward). That form trains fast; for
inference the differences are constants. :func:`fold_constants` evaluates, once, every node of the
exported symbol that depends on parameters only and turns it into a parameter of its own, so each MFM
becomes two plain convolutions (``W1``, ``W2 - W1``) + relu + add. Both deployment paths start here:
the ONNX export (no Slice/Sub on weights in the file) and INT8 quantization (MXNet only quantizes a
convolution whose weight is a parameter).

Names of folded parameters follow their consumer: the weight and bias of
``lightcnn90_mfm0_convolution1`` become ``lightcnn90_mfm0_convolution1_weight`` / ``_bias``.
"""
import json
import os
import tempfile

import mxnet as mx

from symbols.quantized import load_symbol_block  # noqa: F401  (re-export: deployment graphs load through it)

# Inputs of the ops whose folded inputs get a readable name (position -> argument name).
_ARGUMENT_NAMES = {'Convolution': ('data', 'weight', 'bias'), 'FullyConnected': ('data', 'weight', 'bias')}


def export_symbol(net, data_shape):
    """``(symbol JSON dict, {name: NDArray})`` of a Gluon ``net`` run on zeros of ``data_shape``.

    ``data_shape`` is one sample's shape (C, H, W); the net is hybridized (inference graph) if needed.
    Parameters are keyed without the ``arg:``/``aux:`` prefixes.
    """
    net.hybridize()
    net(mx.nd.zeros((1,) + tuple(data_shape)))
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, 'net')
        net.export(prefix, epoch=0)
        with open(prefix + '-symbol.json') as f:
            graph = json.load(f)
        params = {k.split(':', 1)[1]: v for k, v in mx.nd.load(prefix + '-0000.params').items()}
    return graph, params


def _entry_key(entry):
    return entry[0], entry[1]


def _constant_nodes(nodes, params):
    """Indices of nodes whose value depends on parameters only (parameters included)."""
    constant = set()
    for i, node in enumerate(nodes):
        if node['op'] == 'null':
            if node['name'] in params:
                constant.add(i)
        elif node['inputs'] and all(inp[0] in constant for inp in node['inputs']):
            constant.add(i)
    return constant


def _folded_name(consumer, position, node, out_index, taken):
    names = _ARGUMENT_NAMES.get(consumer['op'])
    if names and position < len(names):
        name = f"{consumer['name']}_{names[position]}"
    else:
        name = f"{node['name']}_output{out_index}"
    while name in taken:
        name += '_'
    return name


def fold_constants(graph, params):
    """Replace every parameter-only computation of ``graph`` by a parameter holding its value.

    Parameters
    ----------
    graph : dict
        MXNet symbol JSON (``nodes``, ``arg_nodes``, ``heads``), e.g. from :func:`export_symbol`.
    params : dict of str -> NDArray
        Every parameter and auxiliary state of ``graph`` (names without ``arg:``/``aux:``).

    Returns
    -------
    graph, params
        The folded symbol JSON (unreachable nodes dropped, nodes renumbered) and the parameters it
        uses: original ones still referenced plus one per folded value, computed by MXNet itself
        (float32, bit-identical to what the unfolded graph computes each forward).
    """
    nodes = graph['nodes']
    constant = _constant_nodes(nodes, params)
    # folding frontier: outputs of constant op nodes consumed by a non-constant node
    frontier = {}
    for i, node in enumerate(nodes):
        if i in constant:
            continue
        for position, inp in enumerate(node['inputs']):
            src = inp[0]
            if src in constant and nodes[src]['op'] != 'null' and _entry_key(inp) not in frontier:
                frontier[_entry_key(inp)] = (node, position)
    for head in graph['heads']:
        if head[0] in constant and nodes[head[0]]['op'] != 'null':
            raise ValueError(f"output {nodes[head[0]]['name']} depends on parameters only")
    new_params = dict(params)
    replacement = {}
    if frontier:
        symbol = mx.sym.load_json(json.dumps(graph))
        internals = symbol.get_internals()
        outputs = internals.list_outputs()
        wanted = []
        for (src, index) in frontier:
            node = nodes[src]
            candidates = [f"{node['name']}_output{index}", f"{node['name']}_output"]
            wanted.append(internals[next(c for c in candidates if c in outputs)])
        group = mx.sym.Group(wanted)
        values = mx.ndarray.CachedOp(group)(*[params[name] for name in group.list_inputs()])
        values = values if isinstance(values, (list, tuple)) else [values]
        taken = set(params) | {n['name'] for n in nodes}
        for ((src, index), (consumer, position)), value in zip(frontier.items(), values):
            name = _folded_name(consumer, position, nodes[src], index, taken)
            taken.add(name)
            new_params[name] = value.copyto(mx.cpu())
            replacement[(src, index)] = name
    return _rebuild(graph, replacement, new_params)


def _rebuild(graph, replacement, params):
    """New JSON: ``replacement`` entries become variables; only nodes reachable from the heads kept."""
    nodes = graph['nodes']
    new_nodes, index_of, var_of = [], {}, {}

    def var(name):
        if name not in var_of:
            value = params[name]
            var_of[name] = len(new_nodes)
            new_nodes.append({'op': 'null', 'name': name, 'inputs': [],
                              'attrs': {'__shape__': str(tuple(value.shape)), '__dtype__': '0'}})
        return var_of[name]

    needed = set()
    stack = [h[0] for h in graph['heads']]
    while stack:
        i = stack.pop()
        if i in needed:
            continue
        needed.add(i)
        stack += [inp[0] for inp in nodes[i]['inputs'] if _entry_key(inp) not in replacement]
    for i, node in enumerate(nodes):
        if i not in needed:
            continue
        inputs = []
        for inp in node['inputs']:
            if _entry_key(inp) in replacement:
                inputs.append([var(replacement[_entry_key(inp)]), 0, 0])
            else:
                inputs.append([index_of[inp[0]], inp[1], inp[2] if len(inp) > 2 else 0])
        index_of[i] = len(new_nodes)
        new_nodes.append(dict(node, inputs=inputs))
    out = {'nodes': new_nodes,
           'arg_nodes': [i for i, n in enumerate(new_nodes) if n['op'] == 'null'],
           'heads': [[index_of[h[0]], h[1], h[2] if len(h) > 2 else 0] for h in graph['heads']],
           'attrs': graph.get('attrs', {})}
    used = {n['name'] for n in new_nodes if n['op'] == 'null'}
    return out, {k: v for k, v in params.items() if k in used}


def parameter_only_ops(graph, params):
    """Names of op nodes of ``graph`` that read parameters only (what :func:`fold_constants` removes)."""
    nodes = graph['nodes']
    return [nodes[i]['name'] for i in sorted(_constant_nodes(nodes, params)) if nodes[i]['op'] != 'null']


def deploy_symbol(net, data_shape):
    """The folded inference graph of ``net``: ``(symbol JSON dict, params dict)``."""
    return fold_constants(*export_symbol(net, data_shape))
