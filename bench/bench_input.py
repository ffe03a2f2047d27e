"""Input pipeline: training batches/s out of a ``.rec`` (random crop + mirror) vs the training step rate.

    nice python bench/bench_input.py [--images ../shared/datasets/pubfig83 | --rec data/x.rec] [--threads 2]

The loader is the trainer's own (``training.data.record_iter``: ``mx.io.ImageRecordIter`` with
``Preprocessing.record_iter_args(True)``). Three numbers: the loader alone, the training step on a
fixed in-memory batch, and the training step fed by the loader (on a CPU both share the same cores,
so this is where a slow loader would show). The loader must not be the bottleneck: loader/step >> 1
and fed/fixed close to 1.
"""
import argparse
import tempfile
import time
from pathlib import Path

from harness import REPO_ROOT, alternate, finish, paired_ratio, pin_threads, rate_summary

DEFAULT_IMAGES = REPO_ROOT.parent / 'shared' / 'datasets' / 'pubfig83'
COLUMNS = (('variant', 'measurement', ''), ('rate', 'batches/s', '.2f'), ('samples_per_s', 'samples/s', '.1f'),
           ('ratio', 'ratio', '.2f'), ('note', 'note', ''))


def _pack(images, work):
    from data_tools.packing import pack_records
    prefix = str(Path(work) / 'input_bench')
    pack_records(str(images), prefix, size=144, color='gray', workers=2, progress=False)
    return prefix + '.rec'


def run(images=DEFAULT_IMAGES, rec=None, network='lightcnn9', batch=64, threads=2, loader_batches=60,
        steps=2, rounds=2, json_path=None):
    pin_threads(threads)

    from bench_train import mxnet_step
    from symbols import default_preprocessing
    from training.data import record_iter, record_preprocessing

    with tempfile.TemporaryDirectory(prefix='bench_input_') as work:
        if rec is None:
            if not Path(images).is_dir():
                rows = [{'variant': 'all', 'note': f'skipped: dataset {images} absent and no --rec'}]
                return finish('input', 'Input pipeline (ImageRecordIter, training augmentation)', rows,
                              COLUMNS, {}, json_path)
            rec = _pack(images, work)
        pre = record_preprocessing(default_preprocessing(network), rec)

        def batches(seed=0):
            while True:
                it = record_iter(rec, pre, batch, train=True, seed=seed, threads=threads)
                yield from it
                seed += 1

        stream = batches()
        next(stream).data[0].wait_to_read()  # warm-up: threads started, first batch decoded

        rounds_done = [0]

        def loader():
            """A fresh iterator each round (an epoch start): nothing decoded ahead during the other rounds."""
            rounds_done[0] += 1
            wall = time.perf_counter()
            it = record_iter(rec, pre, batch, train=True, seed=100 + rounds_done[0], threads=threads)
            n = 0
            for b in it:
                b.data[0].wait_to_read()
                n += 1
                if n == loader_batches:
                    break
            return {'seconds': time.perf_counter() - wall, 'batches': n}

        step = mxnet_step(network, batch, num_classes=10575, threads=threads, feed=lambda: next(stream))
        fixed = mxnet_step(network, batch, num_classes=10575, threads=threads)
        results = alternate({'loader': loader,
                             'fixed': lambda: {**fixed(steps), 'batches': steps},
                             'fed': lambda: {**step(steps), 'batches': steps}}, rounds)
    loader_rate = rate_summary(results['loader'], 'batches')
    fixed_rate = rate_summary(results['fixed'], 'batches')
    fed_rate = rate_summary(results['fed'], 'batches')
    rows = [{'variant': f'loader alone ({threads} decode threads)', **loader_rate,
             'ratio': paired_ratio(results['loader'], results['fixed'], 'batches'), 'note': 'ratio: loader / step'},
            {'variant': f'{network} training step, fixed batch', **fixed_rate},
            {'variant': f'{network} training step fed by the loader', **fed_rate,
             'ratio': paired_ratio(results['fed'], results['fixed'], 'batches'), 'note': 'ratio: fed / fixed'}]
    for row in rows:
        row['samples_per_s'] = row['rate'] * batch
    meta = {'rec': str(rec), 'network': network, 'batch': batch, 'threads': threads, 'raw': results,
            'target': 'loader / step >> 1 and fed / fixed ~ 1',
            'notes': [f'batch {batch}, {pre.record_size}->{pre.input_size} random crop + mirror, gray; '
                      f'{threads} decode threads, {threads} compute threads; median of {rounds} alternating rounds']}
    return finish('input', 'Input pipeline (ImageRecordIter, training augmentation)', rows, COLUMNS, meta,
                  json_path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', default=str(DEFAULT_IMAGES), help='image tree packed first (default PubFig83)')
    parser.add_argument('--rec', default=None, help='use this packed .rec instead of packing --images')
    parser.add_argument('--network', default='lightcnn9')
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--loader-batches', type=int, default=60)
    parser.add_argument('--steps', type=int, default=2, help='training steps per round')
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--json', default=None, help='default: bench/results/input.json')
    args = parser.parse_args(argv)
    run(args.images, args.rec, args.network, args.batch, args.threads, args.loader_batches, args.steps,
        args.rounds, args.json)


if __name__ == '__main__':
    main()
