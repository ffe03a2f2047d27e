"""Does fine-tuning keep what the pretrained network knows? V4 on PubFig83, verification AUC per epoch.

    nice python bench/bench_finetune.py --aligned /work/data/pubfig83_aligned144 --pretrained runs/pretrained/lightcnn-v4
        [--train-per-id 12] [--test-per-id 20] [--epochs 2] [--configs defaults official]

PubFig83 aligned by ``data_tools/align.py`` (144 px, BGR), identities in sorted order: the first 63 are *known*
(``--train-per-id`` images each are packed for training), the last 20 *unknown* (``--test-per-id`` images each are
embedded). After every epoch the checkpoint embeds the unknown identities and we report the verification AUC
over all pairs of them (cosine similarity), beside V4 as imported. A configuration that wrecks the pretrained
features in its first epoch shows it here as a drop in AUC. Configurations (``train_lightcnn.py`` options):

- ``defaults``: ``--pretrained`` and nothing else (the trainer's fine-tuning defaults),
- ``official``: the official from-scratch recipe applied to fine-tuning (no freezing, backbone at the full lr,
  classifier lr x10, no warm-up),
- ``unfrozen``: the defaults without the frozen first epoch (``--freeze-epochs 0``).
"""
import argparse
import os
import random
import time

from harness import finish, pin_threads

CONFIGS = {
    'defaults': {},
    'official': dict(optimizer='sgd', lr=0.01, freeze_epochs=0, backbone_lr_mult=1.0, fc2_lr_mult=10.0,
                     warmup_epochs=0.0, clip_norm=0.0),
    'unfrozen': dict(freeze_epochs=0),
}
COLUMNS = (('config', 'configuration', ''), ('epoch', 'epochs trained', 'd'), ('auc', 'unknown-identity AUC', '.4f'),
           ('delta', 'vs imported', '+.4f'), ('train_loss', 'train loss', '.3f'), ('seconds', 'training s', '.0f'))


def split_pubfig(aligned, known=63, train_per_id=12, test_per_id=20, seed=0):
    """``(train list lines, unknown test [(path, identity)])`` from the sorted identity folders."""
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


def pack_known(aligned, work, lines):
    """Pack the known identities' training images once (BGR, 144 px) into ``work/known.rec``."""
    from data_tools.packing import pack_records
    prefix = os.path.join(work, 'known')
    if not os.path.exists(prefix + '.rec'):
        listing = os.path.join(work, 'known_list.txt')
        with open(listing, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        pack_records(aligned, prefix, listing, size=144, color='bgr', workers=0, progress=False, shuffle=True)
    return prefix + '.rec'


def verification_auc(stem, test):
    """AUC of cosine similarity over all pairs of the unknown images (same identity = positive)."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from models import load_model
    features = load_model(stem).embed([p for p, _ in test], batch_size=50)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    labels = np.array([n for _, n in test])
    i, j = np.triu_indices(len(test), k=1)
    scores = np.sum(features[i] * features[j], axis=1)
    return float(roc_auc_score(labels[i] == labels[j], scores))


def run(aligned, pretrained, work, train_per_id=12, test_per_id=20, epochs=2, configs=('defaults', 'official'),
        batch_size=64, seed=0):
    from training import train
    lines, test = split_pubfig(aligned, train_per_id=train_per_id, test_per_id=test_per_id, seed=seed)
    rec = pack_known(aligned, work, lines)
    imported = verification_auc(pretrained, test)
    rows = [dict(config='V4 as imported', epoch=0, auc=imported, delta=0.0)]
    print(f'V4 as imported: AUC {imported:.4f} on {len(test)} images of {len(test) // test_per_id} unknown identities',
          flush=True)
    for name in configs:
        prefix = os.path.join(work, name, 'v4')
        start = time.time()
        result = train(dict(data_train=rec, pretrained=pretrained, model_prefix=prefix, num_epochs=epochs,
                            batch_size=batch_size, seed=seed, data_nthreads=1, **CONFIGS[name]), log=print)
        for row in result['history']:
            auc = verification_auc(f'{prefix}-{row["epoch"] + 1:04d}', test)
            rows.append(dict(config=name, epoch=row['epoch'] + 1, auc=auc, delta=auc - imported,
                             train_loss=row['train_loss'], seconds=row['time']))
            print(rows[-1], flush=True)
        print(f'{name}: {time.time() - start:.0f} s', flush=True)
    return rows, len(lines), len(test)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--aligned', required=True, help='PubFig83 aligned by data_tools/align.py (144 px BGR)')
    parser.add_argument('--pretrained', default='runs/pretrained/lightcnn-v4')
    parser.add_argument('--work', default='/tmp/bench_finetune')
    parser.add_argument('--train-per-id', type=int, default=12)
    parser.add_argument('--test-per-id', type=int, default=20)
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--configs', nargs='+', default=['defaults', 'official'], choices=list(CONFIGS))
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    pin_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    rows, trained, tested = run(args.aligned, args.pretrained, args.work, args.train_per_id, args.test_per_id,
                                args.epochs, args.configs, args.batch_size)
    finish('finetune', 'Fine-tuning V4 on PubFig83: unknown-identity verification AUC per epoch', rows, COLUMNS,
           dict(notes=[f'{trained} training images of 63 known identities, {tested} test images of 20 unknown '
                       f'identities (all pairs), batch {args.batch_size}, {args.threads} threads']))


if __name__ == '__main__':
    main()
