"""Do the trainer's defaults learn, and does fine-tuning keep what V4 knows? Unknown-identity AUC on PubFig83.

    nice python bench/bench_defaults.py --aligned PUBFIG83_ALIGNED --pretrained runs/pretrained/lightcnn-v4 \
        [--train-per-id 12] [--test-per-id 20] [--epochs 2] [--configs scratch defaults official unfrozen]

PubFig83 aligned by ``data_tools/align.py`` (144 px, BGR), identities in sorted order: the first 63 are *known*
(``--train-per-id`` images each are packed for training), the last 20 *unknown* (``--test-per-id`` images each
are embedded). After every epoch the checkpoint embeds the unknown identities and we report the verification AUC
over all pairs of them (cosine similarity). Configurations (``train_lightcnn.py`` options):

- ``defaults``: V4 with ``--pretrained`` and nothing else (the trainer's fine-tuning defaults),
- ``official``: V4 with the official from-scratch recipe (SGD 0.01, classifier lr x10, no warm-up, no clipping,
  no freezing, backbone at the full lr, a random classifier: ``--init xavier``),
- ``unfrozen``: V4 with the defaults but without the frozen first epoch (``--freeze-epochs 0``),
- ``scratch``: LightCNN-9 from scratch with the defaults on the same images packed gray (``--scratch-size``
  records, input side ``min(128, size - 8)``), beside the same network untrained (epoch 0).

A fine-tuning configuration that wrecks the pretrained features shows it as a drop below V4 as imported; a
from-scratch one that does not learn as an AUC near the untrained network's.
"""
import argparse
import os
import random
import time

from harness import finish, pin_threads

FINETUNE = {  # the comparisons train one epoch: what they do to the features first
    'defaults': {},
    'official': dict(optimizer='sgd', lr=0.01, freeze_epochs=0, backbone_lr_mult=1.0, fc2_lr_mult=10.0,
                     warmup_epochs=0.0, clip_norm=0.0, init='xavier', num_epochs=1),
    'unfrozen': dict(freeze_epochs=0, num_epochs=1),
}
CONFIGS = ['scratch'] + list(FINETUNE)
COLUMNS = (('config', 'configuration', ''), ('epoch', 'epochs trained', 'd'),
           ('auc', 'unknown-identity AUC', '.4f'), ('delta', 'vs start', '+.4f'),
           ('train_loss', 'train loss', '.3f'), ('seconds', 'training s', '.0f'))


def split_pubfig(aligned, known=63, train_per_id=12, test_per_id=20, seed=0):
    """``(training list lines, unknown test [(path, identity)])`` from the sorted identity folders."""
    names = sorted(d for d in os.listdir(aligned) if os.path.isdir(os.path.join(aligned, d)))
    rng = random.Random(seed)
    lines, test = [], []
    for label, name in enumerate(names):
        files = sorted(f for f in os.listdir(os.path.join(aligned, name)) if not f.startswith('.'))
        rng.shuffle(files)
        if label < known:
            lines += [f'{name}/{f}\t{label}' for f in files[:train_per_id]]
        else:
            test += [(os.path.join(aligned, name, f), name) for f in files[:test_per_id]]
    return lines, test


def pack_known(aligned, work, lines, color='bgr', size=144):
    """Pack the known identities' training images once into ``work/known_COLOR_SIZE.rec``."""
    from data_tools.packing import pack_records
    prefix = os.path.join(work, f'known_{color}_{size}')
    if not os.path.exists(prefix + '.rec'):
        listing = os.path.join(work, 'known_list.txt')
        with open(listing, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        pack_records(aligned, prefix, listing, size=size, color=color, workers=0, progress=False)
    return prefix + '.rec'


def verification_auc(stem, test):
    """AUC of cosine similarity over all pairs of the unknown images (same identity = positive).

    Each aligned face is scaled to the checkpoint's record side first, as packing did for training, and the
    network sees its centre crop.
    """
    import cv2
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from common.images import read_image
    from models import load_model
    model = load_model(stem)
    side = model.preprocessing.record_size
    images = [cv2.resize(read_image(p, 'bgr'), (side, side), interpolation=cv2.INTER_AREA) for p, _ in test]
    features = model.embed(images, batch_size=50)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    labels = np.array([n for _, n in test])
    i, j = np.triu_indices(len(test), k=1)
    scores = np.sum(features[i] * features[j], axis=1)
    return float(roc_auc_score(labels[i] == labels[j], scores))


def untrained_stem(rec, work, seed, input_size):
    """The checkpoint of LightCNN-9 as the trainer initialises it for ``rec`` (what training starts from)."""
    from models.checkpoint import save_checkpoint
    from training import setup
    from training.config import parse_config
    run = setup(parse_config(dict(data_train=rec, model_prefix=os.path.join(work, 'scratch', 'untrained'),
                                  seed=seed, input_size=input_size, data_nthreads=1)), log=lambda _: None)
    return save_checkpoint(run.net, os.path.join(work, 'scratch', 'untrained'), run.meta)


def run(aligned, pretrained, work, train_per_id=12, test_per_id=20, epochs=2, configs=('defaults', 'official'),
        batch_size=64, scratch_size=72, scratch_epochs=16, seed=0):
    from training import train
    lines, test = split_pubfig(aligned, train_per_id=train_per_id, test_per_id=test_per_id, seed=seed)
    rows = []
    for name in configs:
        if name == 'scratch':
            rec = pack_known(aligned, work, lines, 'gray', scratch_size)
            options = dict(input_size=min(128, scratch_size - 8), num_epochs=scratch_epochs)
            start_stem = untrained_stem(rec, work, seed, options['input_size'])
            label = 'LightCNN-9 untrained'
        else:
            rec = pack_known(aligned, work, lines)
            start_stem = pretrained
            options = dict(dict(num_epochs=epochs, pretrained=pretrained), **FINETUNE[name])
            label = 'V4 as imported'
        start = verification_auc(start_stem, test)
        rows.append(dict(config=f'{name}: {label}', epoch=0, auc=start, delta=0.0))
        print(rows[-1], flush=True)
        prefix = os.path.join(work, name, 'm')
        result = train(dict(data_train=rec, model_prefix=prefix, batch_size=batch_size, seed=seed,
                            data_nthreads=1, **options), log=print)
        for row in result['history']:
            auc = verification_auc(f'{prefix}-{row["epoch"] + 1:04d}', test)
            rows.append(dict(config=name, epoch=row['epoch'] + 1, auc=auc, delta=auc - start,
                             train_loss=row['train_loss'], seconds=row['time']))
            print(rows[-1], flush=True)
    return rows, len(lines), len(test)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--aligned', required=True, help='PubFig83 aligned by data_tools/align.py (144 px BGR)')
    parser.add_argument('--pretrained', default='runs/pretrained/lightcnn-v4')
    parser.add_argument('--work', default='/tmp/bench_defaults')
    parser.add_argument('--train-per-id', type=int, default=12)
    parser.add_argument('--test-per-id', type=int, default=20)
    parser.add_argument('--epochs', type=int, default=2, help='epochs of the defaults (the others train one)')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--scratch-size', type=int, default=72, help='record side of the scratch configuration')
    parser.add_argument('--scratch-epochs', type=int, default=16)
    parser.add_argument('--configs', nargs='+', default=CONFIGS, choices=CONFIGS)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    pin_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    start = time.time()
    rows, trained, tested = run(args.aligned, args.pretrained, args.work, args.train_per_id, args.test_per_id,
                                args.epochs, args.configs, args.batch_size, args.scratch_size, args.scratch_epochs)
    finish('defaults', 'PubFig83: unknown-identity verification AUC per epoch (fine-tuned V4, LightCNN-9 from '
           'scratch)', rows, COLUMNS,
           dict(notes=[f'{trained} training images of 63 known identities, {tested} test images of 20 unknown '
                       f'identities (all pairs), batch {args.batch_size}, '
                       f'{args.threads} threads, {time.time() - start:.0f} s in all']))


if __name__ == '__main__':
    main()
