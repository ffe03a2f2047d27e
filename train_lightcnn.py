"""Train LightCNN on RecordIO faces; with no data arguments, run the built-in synthetic demo.

    python train_lightcnn.py                                   # demo: synthetic faces, a few minutes on CPU
    python train_lightcnn.py --data-train data/casia.rec --data-val data/casia_val.rec \\
        --network lightcnn9 --gpus 0,1 --lr 0.01 --lr-step-epochs 10,20 --model-prefix runs/casia
"""
if __name__ == '__main__':  # first, before MXNet loads: it sizes its thread pool once (common/threads.py)
    from common.threads import default_compute_threads
    default_compute_threads()

import sys  # noqa: E402

from common.cli import run_cli  # noqa: E402
from training import TrainingDiverged, build_parser, train  # noqa: E402


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if not args.data_train and not args.benchmark:
            from training.demo import run_demo
            run_demo(args)
        else:
            train(args)
    except TrainingDiverged as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    raise SystemExit(run_cli(main))
