"""Run an exported ONNX model in onnxruntime: ``python onnx_check.py MODEL.onnx INPUT.npy OUTPUT.npy``.

Runs in the deploy environment (``requirements-deploy.txt``: onnxruntime + numpy only, no MXNet), so
it imports nothing from this project; ``models/export.py --check`` calls it and compares with MXNet.
"""
import sys

import numpy as np
import onnxruntime


def run(model_path, batch):
    """First output of the model for a float32 NCHW batch."""
    session = onnxruntime.InferenceSession(model_path, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    return session.run(None, {name: batch.astype(np.float32)})[0]


def main(argv):
    if len(argv) != 3:
        print('usage: onnx_check.py MODEL.onnx INPUT.npy OUTPUT.npy', file=sys.stderr)
        return 2
    model_path, input_path, output_path = argv
    np.save(output_path, run(model_path, np.load(input_path)))
    return 0


if __name__ == '__main__':
    raise SystemExit(main(sys.argv[1:]))
