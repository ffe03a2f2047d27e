"""Train LightCNN on RecordIO faces; with no data arguments, run the built-in synthetic demo.

    python train_lightcnn.py                                   # demo: synthetic faces, a few minutes on CPU
    python train_lightcnn.py --data-train data/casia.rec --data-val data/casia_val.rec \\
        --network lightcnn9 --gpus 0,1 --lr 0.01 --lr-step-epochs 10,20 --model-prefix models/casia
"""
import sys

from common.cli import run_cli
from training import TrainingDiverged, build_parser, train
from training.demo import run_demo


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if not args.data_train and not args.benchmark:
            run_demo(args)
        else:
            train(args)
    except TrainingDiverged as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    raise SystemExit(run_cli(main))
