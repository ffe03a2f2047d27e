"""onnxruntime side of ``bench/bench_deploy.py``: runs in the deploy environment (numpy + onnxruntime only).

    DEPLOY_PYTHON bench/onnx_worker.py MODEL.onnx BATCH.npy THREADS

Loads the model once, prints one JSON line (``{"ready": ...}`` or ``{"error": ...}``), then for every line
``N`` on stdin runs N forwards of the batch and answers ``{"seconds", "cpu", "forwards", "images"}``; an
empty line or end of input stops it. Between requests it blocks on stdin, so it never competes with the
MXNet side while that one is being timed.
"""
import json
import sys
import time

import numpy as np


def main(argv):
    model_path, batch_path, threads = argv[0], argv[1], int(argv[2])
    try:
        import onnxruntime
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(model_path, options, providers=['CPUExecutionProvider'])
        batch = np.load(batch_path).astype(np.float32)
        feed = {session.get_inputs()[0].name: batch}
        session.run(None, feed)  # warm-up
    except Exception as exc:  # reported to the parent as a skipped row
        print(json.dumps({'error': f'{type(exc).__name__}: {exc}'}), flush=True)
        return 1
    print(json.dumps({'ready': onnxruntime.__version__}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        n = int(line)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            session.run(None, feed)
        print(json.dumps({'seconds': time.perf_counter() - wall, 'cpu': time.process_time() - cpu,
                          'forwards': n, 'images': n * len(batch)}), flush=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(main(sys.argv[1:]))
