"""Run an exported ONNX model in onnxruntime: ``python onnx_check.py MODEL.onnx INPUT.npy OUTPUT.npy``.

Runs in the deploy environment (``requirements-deploy.txt``: onnxruntime + numpy only, no MXNet), so
it imports nothing from this project; ``models/export.py --check`` calls it and compares with MXNet.
``OUTPUT.npy`` receives the first output; an ``OUTPUT.npz`` receives every output under its name.
Whatever onnxruntime logs (warnings included) goes to stderr, which the caller inspects.
"""
import sys

import numpy as np
import onnxruntime


def session(model_path, threads=0):
    """A CPU session; ``threads`` > 0 fixes onnxruntime's intra-op threads (0: its default)."""
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(model_path, options, providers=['CPUExecutionProvider'])


def run_all(model_path, batch):
    """Every output of the model for a float32 NCHW batch, by name."""
    sess = session(model_path)
    name = sess.get_inputs()[0].name
    outputs = sess.run(None, {name: batch.astype(np.float32)})
    return {o.name: value for o, value in zip(sess.get_outputs(), outputs)}


def run(model_path, batch):
    """First output of the model for a float32 NCHW batch."""
    return next(iter(run_all(model_path, batch).values()))


def main(argv):
    if len(argv) != 3:
        print('usage: onnx_check.py MODEL.onnx INPUT.npy OUTPUT.npy|OUTPUT.npz', file=sys.stderr)
        return 2
    model_path, input_path, output_path = argv
    outputs = run_all(model_path, np.load(input_path))
    if output_path.endswith('.npz'):
        np.savez(output_path, **outputs)
    else:
        np.save(output_path, next(iter(outputs.values())))
    return 0


if __name__ == '__main__':
    raise SystemExit(main(sys.argv[1:]))
