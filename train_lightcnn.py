"""Train LightCNN on RecordIO faces; with no data arguments, run the built-in synthetic demo.

    python train_lightcnn.py                                   # demo: synthetic faces, a few minutes on CPU
    python train_lightcnn.py --data-train data/casia.rec --data-val data/casia_val.rec \\
        --network lightcnn9 --gpus 0,1 --lr-step-epochs 10,20 --model-prefix runs/casia
    python train_lightcnn.py --data-train data/mine.rec --pretrained runs/pretrained/lightcnn-v4   # fine-tune
"""
if __name__ == '__main__':  # first, before MXNet loads: it sizes its thread pool once (common/threads.py)
    from common.threads import default_compute_threads
    default_compute_threads()

import sys  # noqa: E402

from common.cli import run_cli  # noqa: E402
from demo import add_demo_options, run_demo  # noqa: E402
from training import TrainingDiverged, build_parser, flag, train  # noqa: E402


def main(argv=None):
    # one parser for --help and dispatch: the training options and the demo's; run_cli spells the parameters
    # that library errors (ParameterError) name as this parser's options
    args = add_demo_options(build_parser()).parse_args(argv)
    try:
        if args.data_train or args.benchmark:
            train(args)
        else:
            run_demo(sys.argv[1:] if argv is None else argv)  # parsed again with the demo's own defaults
    except TrainingDiverged as err:
        print(f'error: {err.spelled(flag)}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    raise SystemExit(run_cli(main))
