"""ONNX for deployment: the folded inference graph, named and cleaned for onnxruntime.

What :func:`export_onnx` writes (opset 13, checked by ``onnx.checker``):

- input ``data``: float32 ``(N, C, H, W)``, ``N`` symbolic (any batch size);
- output ``embedding``: float32 ``(N, 256)``; plus ``logits`` ``(N, classes)`` when the exported net keeps
  its classifier;
- weights as initializers only (not graph inputs: onnxruntime warns once per weight otherwise);
- no computation on weights: the MFM weight differences are constants
  (:func:`models.deploy_graph.fold_constants`), so each MFM is Conv + Conv + Relu + Add;
- no Identity (MXNet's inference Dropout), no Flatten of an already flat tensor, no unused initializer
  (onnxruntime warns about those too).

MXNet 1.9.1's ``mx.onnx`` writes opset-13 operators (``Split`` with a ``split`` attribute) but stamps the
installed onnx's newest opset; :func:`onnx_opset` makes it convert for, and stamp, 13.
"""
import contextlib
import json
import os
import subprocess
import tempfile

import mxnet as mx
import numpy as np

ONNX_OPSET = 13
INPUT_NAME, EMBEDDING, LOGITS = 'data', 'embedding', 'logits'
BATCH_DIM = 'N'


@contextlib.contextmanager
def onnx_opset(version=ONNX_OPSET):
    """Make mx.onnx convert for ``version`` and stamp it (it asks ``onnx.defs`` at call time)."""
    import onnx.defs
    original = onnx.defs.onnx_opset_version
    onnx.defs.onnx_opset_version = lambda: version
    try:
        yield
    finally:
        onnx.defs.onnx_opset_version = original


def graph_to_onnx(graph, params, data_shape, output_names, path):
    """Convert a folded MXNet graph to a deployment ONNX file at ``path``; returns the ``ModelProto``.

    Parameters
    ----------
    graph, params
        Symbol JSON dict and parameters (:func:`models.deploy_graph.deploy_symbol`); the input
        variable must be called ``data``.
    data_shape : tuple of int
        One sample's (C, H, W).
    output_names : sequence of str
        Name for each MXNet output in order, e.g. ``['logits', 'embedding']`` for a net returning
        ``(logits, features)``; the ONNX outputs are ordered ``embedding`` first.
    """
    import onnx
    symbol = mx.sym.load_json(json.dumps(graph))
    heads = [name[:-len('_output')] if name.endswith('_output') else name
             for name in symbol.list_outputs()]
    if len(heads) != len(output_names):
        raise ValueError(f'the graph has {len(heads)} outputs, names given for {len(output_names)}')
    shape = (1,) + tuple(data_shape)
    with onnx_opset(ONNX_OPSET):
        mx.onnx.export_model(symbol, params, in_shapes=[shape], in_types=[np.float32],
                             onnx_file_path=path, dynamic=True, dynamic_input_shapes=[(None,) + shape[1:]])
    model = onnx.load(path)
    clean_graph(model, dict(zip(heads, output_names)))
    for opset in model.opset_import:
        if opset.domain in ('', 'ai.onnx'):
            opset.version = ONNX_OPSET
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return model


def _rename_tensor(graph, old, new):
    for node in graph.node:
        node.input[:] = [new if t == old else t for t in node.input]
        node.output[:] = [new if t == old else t for t in node.output]
    for value in list(graph.output) + list(graph.value_info):
        if value.name == old:
            value.name = new


def _bypass(graph, node):
    """Remove a one-input one-output ``node``, feeding its consumers (or the graph output) its input."""
    src, dst = node.input[0], node.output[0]
    graph.node.remove(node)
    if dst in {o.name for o in graph.output}:
        _rename_tensor(graph, src, dst)  # keep the output's name: its producer now writes it
    else:
        _rename_tensor(graph, dst, src)


def clean_graph(model, output_names):
    """In-place tidy-up of an ``mx.onnx`` model (see the module docstring); ``output_names`` maps
    MXNet head names to the deployment names (``embedding``/``logits``)."""
    import onnx
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    kept = [inp for inp in graph.input if inp.name not in initializers]
    del graph.input[:]
    graph.input.extend(kept)
    for node in [n for n in graph.node if n.op_type in ('Identity', 'Dropout') and len(n.output) == 1]:
        _bypass(graph, node)
    ranks = _ranks(model)
    for node in [n for n in graph.node if n.op_type == 'Flatten' and ranks.get(n.input[0]) == 2]:
        _bypass(graph, node)
    used = {t for node in graph.node for t in node.input}
    unused = [t for t in graph.initializer if t.name not in used]  # e.g. mx.onnx's Split axis tensors
    for tensor in unused:
        graph.initializer.remove(tensor)
    for old, new in output_names.items():
        _rename_tensor(graph, old, new)
    order = {EMBEDDING: 0, LOGITS: 1}
    outputs = sorted(graph.output, key=lambda o: order.get(o.name, 2))
    del graph.output[:]
    graph.output.extend(outputs)
    for value in list(graph.input) + list(graph.output):
        dim = value.type.tensor_type.shape.dim
        if dim:
            dim[0].Clear()
            dim[0].dim_param = BATCH_DIM
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in inferred.graph.output}
    for value in graph.output:  # mx.onnx leaves output dims unknown; write the inferred ones
        dims = known[value.name].type.tensor_type.shape.dim if value.name in known else []
        if dims and all(d.dim_value or d.dim_param for d in dims[1:]):
            value.type.tensor_type.shape.CopyFrom(known[value.name].type.tensor_type.shape)
            value.type.tensor_type.shape.dim[0].Clear()
            value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    del graph.value_info[:]


def _ranks(model):
    """Rank of every tensor shape inference can tell."""
    import onnx
    inferred = onnx.shape_inference.infer_shapes(model)
    values = list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)
    return {v.name: len(v.type.tensor_type.shape.dim) for v in values
            if v.type.tensor_type.HasField('shape')}


def describe(model):
    """What a test or a deployer checks: inputs, outputs with shapes, op counts, ops that read weights.

    Returns a dict: ``inputs``/``outputs`` as ``[(name, [dims])]`` (``'N'`` for the symbolic batch),
    ``initializers`` (count), ``ops`` (op type -> count) and ``weight_ops``: nodes all of whose inputs are
    initializers (computation that could have been done at export).
    """
    graph = model.graph
    initializers = {t.name for t in graph.initializer}

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
    ops = {}
    for node in graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    weight_ops = [f'{n.op_type}:{n.name or n.output[0]}' for n in graph.node
                  if n.input and all(i in initializers for i in n.input if i)]
    return {'inputs': [(v.name, dims(v)) for v in graph.input],
            'outputs': [(v.name, dims(v)) for v in graph.output],
            'initializers': len(initializers), 'ops': ops, 'weight_ops': weight_ops}


def onnxruntime_outputs(onnx_path, batch, deploy_python):
    """Run ``onnx_path`` on ``batch`` in onnxruntime inside the deploy environment.

    Returns ``(outputs, log)``: every output by name (numpy) and what onnxruntime printed on stderr
    (its warnings; empty for a clean model). Raises ``RuntimeError`` when the run fails.
    """
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'onnx_check.py')
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = os.path.join(tmp, 'input.npy'), os.path.join(tmp, 'outputs.npz')
        np.save(inp, np.ascontiguousarray(batch, dtype=np.float32))
        done = subprocess.run([deploy_python, script, onnx_path, inp, out], capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip() or 'no output').splitlines()[-1]
            raise RuntimeError(f'onnxruntime failed in {deploy_python}: {last}')
        with np.load(out) as data:
            return {name: data[name] for name in data.files}, done.stderr
