"""Transfer benchmark: fine-tuned / from-scratch LightCNN on PubFig83 vs V4 as imported and the PyTorch recipe.

    nice python bench/bench_transfer.py --aligned DIR [--budget-minutes 4] [--configs v4_imported,scratch_softmax]
    nice python bench/bench_transfer.py --aligned DIR --quick        # smoke run: 8+4 identities, 1 epoch

Issue 13's "How we will know". ``DIR`` is PubFig83 aligned by our own aligner::

    python data_tools/align.py --images pubfig83 --out DIR --size 144 --color bgr --fallback center

Protocol
--------
* Split: identities in sorted order; the first 63 are *known* (per identity 20 images, drawn with ``--seed``,
  are test images, all the others train), the last 20 are *unknown* (never trained on).
* Records: the known identities' training images packed with ``data_tools.packing.pack_records`` (a ``.lst``)
  into ``--workdir``: BGR 144 for LightCNN-V4 (input 128), gray 72 for LightCNN-9 from scratch (input 64,
  4x cheaper than 128 on CPU; the table says so).
* Training: each configuration gets ``--budget-minutes`` after setup, counted on ``--budget-clock`` (default
  ``cpu``: the training process's CPU seconds, so rows measured at different loads of a shared machine got the
  same compute; ``wall``: wall clock); it is stopped at the first update past the budget and its weights
  saved there (our trainer: a callback; the reference: its loop). Wall and CPU minutes and the mean load are
  in the table.
* Evaluation (:func:`evaluate`, the same for every configuration): embeddings through the product's
  ``models.load_model(...).embed`` (the geometry of the records: 144 -> centre 128 -> input), then
  - closed set: each known test image against identity centroids of training embeddings (at most
    ``--centroid-images`` per identity, seeded), cosine; top-1 / top-5
    (``identification.cosine.rank_probes``, method ``centroid``);
  - open set: known test images + unknown images, accepted when the top-1 centroid score is above a
    threshold chosen on the *training* embeddings only: for every centroid image its best score against the
    *other* identities' centroids is a stand-in unknown probe, its own identity's score a genuine one, and the
    threshold is the lowest whose false-accept rate on those stand-ins is ``<= --open-set-far``
    (``common.verification.threshold_at_far``); accuracy = (known accepted and correct + unknown rejected) /
    all (``identification.open_set_table``);
  - verification on the unknown identities (``--unknown-images`` per identity): AUC over all pairs of their
    images (``sklearn.metrics.roc_auc_score``), and 10-fold accuracy (``common.verification.
    verification_metrics``) on identity-disjoint folds: identities shuffled and dealt round-robin to the folds
    as ``data_tools.pairs.make_pairs`` does (2 identities per fold for 20), every pair inside a fold used.
* Configurations (``--configs``): see :data:`CONFIGS`. Options a configuration needs that this checkout's
  trainer lacks make its row say "not available in this checkout" instead of failing the run.
* Reference: LightCNN-9 from scratch by the official ``train.py`` recipe in PyTorch (``symbols/torch_reference``
  nets; SGD lr 0.01, momentum 0.9, weight decay 1e-4, fc2 weights x10 lr, biases x2 (fc2 x20) without decay,
  lr x0.457 every 10 epochs; PyTorch's default initialisation), on the same records and augmentation
  (``training.data.record_iter``: random crop + mirror), same batch, same budget; its weights are converted
  (``models.pretrained.build_pretrained_net``) and evaluated by the same function.
"""
import argparse
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from harness import RESULTS_DIR, load, machine, markdown_table, pin_threads

from common.errors import UsageError
from common.images import is_image_file
from common.paths import runs_dir
from common.verification import pair_scores, threshold_at_far, verification_metrics
from identification.cosine import open_set_table, rank_probes

KNOWN, UNKNOWN, TEST_PER_IDENTITY = 63, 20, 20
V4_STEM = runs_dir('pretrained', 'lightcnn-v4')
DEFAULT_ALIGNED = os.environ.get('LIGHTCNN_PUBFIG_ALIGNED', '/work/data/pubfig83_aligned144')
ALIGN_COMMAND = ('python data_tools/align.py --images pubfig83 --out DIR --size 144 --color bgr '
                 '--fallback center')

# --- configurations ---------------------------------------------------------------------------------------

# from scratch: the recipe that learned in /work/notes/RECIPE.md, without warm-up (an epoch of warm-up would be
# the whole budget); fine-tuning: the trainer's own --pretrained defaults, only the flags the issue names
SCRATCH = dict(network='lightcnn9', optimizer='adam', lr=1e-3, fc2_lr_mult=1.0, warmup_epochs=0.0)
# fine-tuning V4: the trainer's --pretrained defaults (linear probe of the new classifier on the cached V4
# features, then everything with the trunk at lr x0.01, no frozen epoch); FIRST_DEFAULTS / FROZEN_TWO_STAGE are
# the earlier defaults, kept as rows: trunk x0.1 after one frozen epoch moved every conv weight of V4 by 3-5 % in
# 30 updates and cost 0.06 unknown AUC; x0.01 after two frozen epochs kept the AUC but the new classifier was
# still at chance when the trunk started training (README, Training: why these defaults)
FINETUNE = dict(pretrained='{v4}')
FROZEN_TWO_STAGE = dict(probe_epochs=0, backbone_lr_mult=0.01, freeze_epochs=2)
# ArcFace on 63 classes: s = 16 (the papers' 64 is for 10k-85k classes and saturated the softmax here: from
# scratch it did not move off the untrained AUC, README "Training: why these defaults"); from scratch the
# trainer adds its embedding BatchNorm by default (--embedding-bn), V4 keeps its own feature (no BN)
FEW_CLASS_SCALE = dict(margin_s=16.0)


@dataclass(frozen=True)
class Config:
    """One row of the table.

    ``kind``: ``imported`` (V4 weights, no training), ``untrained`` (LightCNN init, no training), ``ours``
    (``training.train`` with ``options``) or ``reference`` (the official PyTorch recipe).
    ``records``: ``bgr144`` (V4, input 128) or ``gray72`` (LightCNN-9, input 64).
    ``implicit``: options passed only when this checkout's trainer has them: what a trainer without them does
    anyway (``loss='softmax'`` before ``--loss`` existed), or the tuning this benchmark gives an option
    (``margin_s``, ``backbone_lr_mult``) that a trainer without it could not take.
    """
    name: str
    label: str
    kind: str
    records: str
    options: dict = field(default_factory=dict)
    implicit: dict = field(default_factory=dict)

    def training_options(self, available):
        """``(options, missing)``: the options to pass, and required ones ``available`` lacks."""
        options = {k: v for k, v in self.options.items()}
        options.update({k: v for k, v in self.implicit.items() if k in available})
        return options, [k for k in options if k not in available]


CONFIGS = {c.name: c for c in [
    Config('v4_imported', 'LightCNN-V4 as imported', 'imported', 'bgr144'),
    Config('v4_softmax', 'V4 fine-tuned, softmax (LP-FT: probe, then trunk x0.01)', 'ours', 'bgr144',
           dict(FINETUNE), implicit=dict(loss='softmax')),
    Config('v4_arcface', 'V4 fine-tuned, ArcFace s 16 (LP-FT)', 'ours', 'bgr144', dict(FINETUNE, loss='arcface'),
           implicit=dict(FEW_CLASS_SCALE)),
    Config('v4_center', 'V4 fine-tuned, softmax + center loss (LP-FT)', 'ours', 'bgr144',
           dict(FINETUNE, center_loss_weight=0.003), implicit=dict(loss='softmax')),
    Config('v4_softmax_frozen', 'V4 fine-tuned, softmax (two-stage: 2 frozen epochs, no probe, trunk x0.01)',
           'ours', 'bgr144', dict(FINETUNE, freeze_epochs=2), implicit=dict(FROZEN_TWO_STAGE, loss='softmax')),
    Config('scratch_softmax', 'LightCNN-9 from scratch, softmax', 'ours', 'gray72', dict(SCRATCH),
           implicit=dict(loss='softmax')),
    Config('scratch_arcface', 'LightCNN-9 from scratch, ArcFace', 'ours', 'gray72',
           dict(SCRATCH, loss='arcface'), implicit=dict(FEW_CLASS_SCALE)),
    Config('scratch_triplet', 'LightCNN-9 from scratch, triplet', 'ours', 'gray72',
           dict(SCRATCH, loss='triplet')),
    Config('scratch_softmax_bn', 'LightCNN-9 from scratch, softmax + embedding BN', 'ours', 'gray72',
           dict(SCRATCH, embedding_bn='on'), implicit=dict(loss='softmax')),
    Config('untrained', 'LightCNN-9 untrained (floor: as the trainer sets it up)', 'untrained', 'gray72'),
    Config('untrained_xavier', 'LightCNN-9 untrained, LightCNNInit alone (--init xavier)', 'untrained', 'gray72',
           dict(init='xavier')),
    Config('torch_reference', 'LightCNN-9 from scratch, official PyTorch recipe', 'reference', 'gray72'),
]}
RECORDS = {'bgr144': dict(size=144, color='bgr', input_size=128),
           'gray72': dict(size=72, color='gray', input_size=64)}

# --- split ------------------------------------------------------------------------------------------------


@dataclass
class Split:
    """Image lists (paths relative to the aligned root) of the protocol.

    ``train``/``test``: ``(relpath, identity)`` of the known identities; ``unknown``: of the unknown ones.
    ``known``/``unknown_identities``: names in sorted order (a known identity's label is its index).
    """
    known: list
    unknown_identities: list
    train: list
    test: list
    unknown: list

    def counts(self):
        return dict(known_identities=len(self.known), unknown_identities=len(self.unknown_identities),
                    train_images=len(self.train), test_images=len(self.test), unknown_images=len(self.unknown))


def list_identity_images(root):
    """``{identity: sorted image file names}`` of a one-folder-per-identity tree (other files ignored)."""
    if not os.path.isdir(root):
        raise UsageError(f'aligned images folder {root} does not exist; make it with: '
                         + ALIGN_COMMAND.replace('DIR', str(root)))
    tree = {}
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if os.path.isdir(folder):
            files = sorted(f for f in os.listdir(folder) if is_image_file(f))
            if files:
                tree[name] = files
    return tree


def split_identities(tree, known=KNOWN, unknown=UNKNOWN, test_per_identity=TEST_PER_IDENTITY, seed=0):
    """The protocol's split of ``tree`` (:func:`list_identity_images`).

    The first ``known`` identities in sorted order are known: per identity ``test_per_identity`` images drawn
    with ``seed`` (``random.Random(f'{seed}/{identity}')``, so one identity's draw does not depend on the
    others) are test images, the rest training images. The last ``unknown`` identities are unknown.

    Raises
    ------
    UsageError
        Fewer than ``known + unknown`` identities, or a known identity without a training image left.
    """
    names = sorted(tree)
    if known < 1 or unknown < 2 or test_per_identity < 1:
        raise UsageError('known >= 1, unknown >= 2 and test_per_identity >= 1 are needed')
    if len(names) < known + unknown:
        raise UsageError(f'{len(names)} identities, the split needs known {known} + unknown {unknown}')
    train, test = [], []
    for name in names[:known]:
        files = tree[name]
        if len(files) <= test_per_identity:
            raise UsageError(f'identity {name!r} has {len(files)} images: none left for training after '
                             f'{test_per_identity} test images')
        chosen = set(random.Random(f'{seed}/{name}').sample(files, test_per_identity))
        test += [(f'{name}/{f}', name) for f in files if f in chosen]
        train += [(f'{name}/{f}', name) for f in files if f not in chosen]
    unknown_names = names[len(names) - unknown:]
    return Split(known=names[:known], unknown_identities=unknown_names, train=train, test=test,
                 unknown=[(f'{n}/{f}', n) for n in unknown_names for f in tree[n]])


def subsample(items, per_identity, seed=0):
    """At most ``per_identity`` items of each identity (seeded, order kept); ``0`` keeps all."""
    if not per_identity:
        return list(items)
    by_identity = {}
    for item in items:
        by_identity.setdefault(item[1], []).append(item)
    keep = set()
    for name, group in by_identity.items():
        chosen = group if len(group) <= per_identity else \
            random.Random(f'{seed}/{name}/sub').sample(group, per_identity)
        keep.update(path for path, _ in chosen)
    return [item for item in items if item[0] in keep]


def identity_folds(identities, folds, seed=0):
    """``{identity: fold}``: shuffled with ``seed`` and dealt round-robin (as ``make_pairs`` does)."""
    names = sorted(set(identities))
    if len(names) < 2 * folds:
        raise UsageError(f'{len(names)} identities cannot fill {folds} folds of at least 2 identities')
    random.Random(seed).shuffle(names)
    return {name: k % folds for k, name in enumerate(names)}


# --- evaluation -------------------------------------------------------------------------------------------

def open_set_threshold(gallery, gallery_ids, far):
    """Threshold on the top-1 centroid score, chosen on the gallery (training) embeddings alone.

    Each gallery image's score against its own identity's centroid is a genuine score; its best score against
    any *other* identity's centroid is what an unknown face resembling it would reach (a stand-in impostor).
    Returns the lowest threshold whose false-accept rate on the stand-ins is ``<= far``
    (:func:`common.verification.threshold_at_far`).
    """
    from identification.cosine import identity_scores
    scores, names = identity_scores(gallery, gallery_ids, gallery, 'centroid')
    own = names[None, :] == np.asarray(gallery_ids)[:, None]
    genuine = scores[own]
    impostor = np.where(own, -np.inf, scores).max(axis=1)
    values = np.concatenate([genuine, impostor])
    issame = np.concatenate([np.ones(len(genuine), bool), np.zeros(len(impostor), bool)])
    return threshold_at_far(values, issame, far)


def evaluate(gallery, gallery_ids, test, test_ids, unknown, unknown_ids, far=0.05, folds=10, seed=0):
    """Closed-set, open-set and unknown-identity verification metrics of one set of embeddings.

    Parameters
    ----------
    gallery, test, unknown : float arrays (n, d)
        Embeddings of training images of the known identities (centroids), known test images, and images of
        the unknown identities.
    gallery_ids, test_ids, unknown_ids : arrays (n,) of str
        Identity names; no unknown identity may be in ``gallery_ids``.
    far : float
        Target false-accept rate of the open-set threshold on the training stand-ins
        (:func:`open_set_threshold`).
    folds : int
        Identity-disjoint folds for the verification accuracy (:func:`identity_folds`, ``seed``).

    Returns
    -------
    dict
        Fractions: ``top1``, ``top5``, ``open_set_accuracy`` (and its ``open_set_dir``/``open_set_far`` on the
        test probes), ``open_set_threshold``; ``auc`` over all unknown pairs; ``verification_accuracy`` and
        ``verification_std`` over folds; counts.
    """
    gallery_ids, test_ids, unknown_ids = (np.asarray(a).astype(str) for a in (gallery_ids, test_ids, unknown_ids))
    if np.isin(unknown_ids, gallery_ids).any():
        raise UsageError('an unknown identity is in the gallery')
    ranked, _ = rank_probes(gallery, gallery_ids, test, 'centroid')
    top1 = float(np.mean(ranked[:, 0] == test_ids))
    top5 = float(np.mean((ranked == test_ids[:, None]).any(axis=1)))

    threshold = open_set_threshold(gallery, gallery_ids, far)
    probes = np.concatenate([test, unknown])
    probe_ids = np.concatenate([test_ids, unknown_ids])
    ranked_all, top1_score = rank_probes(gallery, gallery_ids, probes, 'centroid')
    known = np.isin(probe_ids, gallery_ids)
    row = open_set_table(top1_score, ranked_all[:, 0] == probe_ids, known, [threshold])[0]

    i, j = np.triu_indices(len(unknown_ids), 1)
    scores = pair_scores(unknown, i, j, 'cosine')
    issame = unknown_ids[i] == unknown_ids[j]
    auc = float(roc_auc_score(issame, scores))
    fold_of = identity_folds(unknown_ids, folds, seed)
    fi = np.array([fold_of[n] for n in unknown_ids[i]])
    fj = np.array([fold_of[n] for n in unknown_ids[j]])
    inside = fi == fj
    metrics = verification_metrics(scores[inside], issame[inside], fi[inside])
    return dict(top1=top1, top5=top5, open_set_accuracy=row['accuracy'], open_set_dir=row['dir'],
                open_set_far=row['far'], open_set_threshold=threshold, auc=auc,
                verification_accuracy=metrics['accuracy_mean'], verification_std=metrics['accuracy_std'],
                n_gallery=len(gallery_ids), n_test=len(test_ids), n_unknown=len(unknown_ids),
                n_pairs_auc=len(scores), n_pairs_folds=int(inside.sum()), folds=folds)


def embed_checkpoint(stem, aligned, lists, aligned_side, batch_size=32):
    """Embeddings of each list of ``(relpath, identity)`` by ``models.load_model(stem).embed``.

    Aligned images (``aligned_side`` square) are seen as the records were: the central
    ``aligned_side * input_size / record_size`` square resized to the input (144 -> 128 -> 128 for V4,
    144 -> 128 -> 64 for nets trained on 72-pixel records with input 64).
    """
    from models import load_model
    model = load_model(stem)
    pre = model.preprocessing
    crop = int(round(aligned_side * pre.input_size / pre.record_size))
    return [model.embed([os.path.join(aligned, p) for p, _ in items], batch_size=batch_size,
                        center_crop=crop) for items in lists]


# --- records ----------------------------------------------------------------------------------------------

def pack_split(aligned, items, known, out_prefix, size, color, workers=1):
    """Pack ``items`` (``(relpath, identity)``) with labels = index in ``known``; reuses an identical pack.

    Returns the ``.rec`` path. The ``.lst`` (im2rec ``index<TAB>label<TAB>path``) is the reuse key: a pack is
    redone when the list or the record geometry changed.
    """
    from data_tools.dataset_info import info_path, read_dataset_info
    from data_tools.packing import pack_records
    label = {name: k for k, name in enumerate(known)}
    text = ''.join(f'{k}\t{label[name]}\t{path}\n' for k, (path, name) in enumerate(items))
    list_path = out_prefix + '.source.lst'
    os.makedirs(os.path.dirname(out_prefix), exist_ok=True)
    fresh = os.path.exists(list_path) and open(list_path, encoding='utf-8').read() == text
    if fresh and os.path.exists(info_path(out_prefix)):
        record = read_dataset_info(info_path(out_prefix)).get('record') or {}
        if record.get('size') == size and record.get('color') == color:
            return out_prefix + '.rec'
    with open(list_path, 'w', encoding='utf-8') as f:
        f.write(text)
    summary = pack_records(aligned, out_prefix, list_path, size=size, color=color, workers=workers,
                           progress=False, seed=0)
    skipped = summary.get('skipped') or []
    if skipped:
        print(f'packing {out_prefix}: skipped {len(skipped)} image(s): '
              + '; '.join(f'{s["path"]} ({s["reason"]})' for s in skipped[:5]))
    return out_prefix + '.rec'


# --- training ---------------------------------------------------------------------------------------------

class BudgetReached(Exception):
    """Raised by :class:`BudgetStop` to leave ``training.train`` once the budget is spent."""


class Clock:
    """Wall and CPU seconds since construction; ``spent()`` is the one the budget counts.

    ``kind='cpu'`` counts this process's CPU time (``time.process_time``: every thread of the process, the
    data-loading ones included), so that a run on a shared machine gets the same compute whatever the
    others do; ``'wall'`` counts wall-clock seconds. ``load`` holds the 1-minute load averages sampled at
    each :meth:`spent` call (their mean goes in the table).
    """

    def __init__(self, kind='cpu'):
        if kind not in ('cpu', 'wall'):
            raise UsageError(f'budget clock is cpu or wall, not {kind!r}')
        self.kind, self.wall0, self.cpu0, self.load = kind, time.perf_counter(), time.process_time(), []

    def wall(self):
        return time.perf_counter() - self.wall0

    def cpu(self):
        return time.process_time() - self.cpu0

    def spent(self):
        self.load.append(os.getloadavg()[0])
        return self.cpu() if self.kind == 'cpu' else self.wall()

    def info(self):
        """``train_seconds`` (wall), ``cpu_seconds``, ``mean_load`` and the clock the budget counted."""
        return dict(train_seconds=self.wall(), cpu_seconds=self.cpu(), budget_clock=self.kind,
                    mean_load=float(np.mean(self.load)) if self.load else os.getloadavg()[0])


def budget_stop(budget_seconds, stem, clock='cpu'):
    """A ``training.Callback`` that saves the weights at the first update past the budget and stops.

    ``clock``: what the budget counts (:class:`Clock`), started here, just before ``training.train`` is
    called: setup (record checks, initialisation, the linear probe of fine-tuning) is part of the budget.
    """
    import mxnet as mx

    from symbols.checkpoint import save_checkpoint
    from training import Callback

    class BudgetStop(Callback):
        def __init__(self):
            self.clock, self.updates, self.stem, self.epoch = Clock(clock), 0, None, 0

        def on_batch_end(self, run, epoch, nbatch):
            mx.nd.waitall()  # the engine runs ahead of Python: time the updates done, not the ones queued
            self.updates, self.epoch = self.updates + 1, epoch + (nbatch + 1) / run.updates_per_epoch
            if self.clock.spent() >= budget_seconds:
                meta = dict(run.meta, stopped=dict(updates=self.updates, epochs=self.epoch,
                                                   budget_seconds=budget_seconds, budget_clock=clock))
                self.stem = save_checkpoint(run.net, stem, meta)
                raise BudgetReached()

    return BudgetStop()


def trainer_options():
    """Names of the training options this checkout's trainer has (``training.DEFAULTS``)."""
    from training import DEFAULTS
    return set(DEFAULTS)


def train_ours(config, rec, workdir, budget_seconds, epochs, batch_size, seed, v4_stem, log_path, clock='cpu'):
    """Train ``config`` with ``training.train`` for at most the budget; returns ``(stem, info)``."""
    from training import train
    options, _ = config.training_options(trainer_options())
    options = {k: (v.format(v4=v4_stem) if isinstance(v, str) else v) for k, v in options.items()}
    options.update(data_train=rec, model_prefix=os.path.join(workdir, config.name, 'model'),
                   num_epochs=epochs, batch_size=batch_size, seed=seed, data_nthreads=1,
                   input_size=RECORDS[config.records]['input_size'], save_period=1, disp_batches=10)
    stop = budget_stop(budget_seconds, os.path.join(workdir, config.name, 'budget'), clock)
    os.makedirs(os.path.dirname(options['model_prefix']), exist_ok=True)
    with open(log_path, 'w') as log:
        def write(line):
            log.write(str(line).rstrip('\n') + '\n')
            log.flush()
        try:
            result = train(options, log=write, callbacks=[stop])
            stem, history = result['checkpoint'], result['history']
        except BudgetReached:
            stem, history = stop.stem, None
    info = dict(stop.clock.info(), updates=stop.updates, epochs=round(stop.epoch, 3),
                train_loss=history[-1]['train_loss'] if history else _last_loss(log_path))
    return stem, info


def _last_loss(log_path):
    """The last ``cross-entropy``/``loss`` value of a training log's Speedometer lines (for the table)."""
    import re
    value = None
    with open(log_path) as f:
        for line in f:
            m = re.search(r'(?:cross[-_]entropy|loss)[=:\s]+([0-9.naif+-]+)', line)
            if m:
                try:
                    value = float(m.group(1))
                except ValueError:
                    pass
    return value


def save_untrained(prefix, rec, records, seed, options):
    """LightCNN-9 as our trainer sets it up before the first update (``training.setup`` with ``options``: the
    data-dependent initialisation by default, LightCNNInit alone with ``init='xavier'``), saved as a
    checkpoint; its stem."""
    from symbols.checkpoint import save_checkpoint
    from training import parse_config, setup
    config = dict(network='lightcnn9', data_train=rec, model_prefix=prefix + '-setup', seed=seed, data_nthreads=1,
                  input_size=RECORDS[records]['input_size'], **options)
    run = setup(parse_config(config), log=lambda _: None)
    try:
        return save_checkpoint(run.net, prefix, dict(run.meta, source='untrained (training.setup)'))
    finally:
        run.release()


def train_reference(rec, num_classes, budget_seconds, epochs, batch_size, seed, threads, prefix, records,
                    clock='cpu'):
    """LightCNN-9 by the official ``train.py`` recipe in PyTorch on ``rec``; saved as our checkpoint.

    Returns ``(stem, info)``; the budget is checked after every update, as for ours.
    """
    import torch

    from common.preprocessing import Preprocessing
    from models.pretrained import build_pretrained_net
    from symbols.checkpoint import save_checkpoint
    from symbols.torch_reference import REFERENCE_NETS, mfm
    from training.data import record_iter, steps_per_epoch

    geometry = RECORDS[records]
    pre = Preprocessing(channels=geometry['color'], input_size=geometry['input_size'],
                        record_size=geometry['size'])
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net = REFERENCE_NETS['lightcnn9'](num_classes=num_classes)
    side = pre.input_size // 16  # four 2x poolings
    if side != 8:
        net.fc1 = mfm(side * side * 128, 256, type=0)
    params = []  # official train.py: biases x2 lr without decay, fc2 x10 (its bias x20)
    for name, value in net.named_parameters():
        mult = (20 if 'fc2' in name else 2) if 'bias' in name else (10 if 'fc2' in name else 1)
        group = {'params': value, 'lr': 0.01 * mult}
        if 'bias' in name:
            group['weight_decay'] = 0
        params.append(group)
    opt = torch.optim.SGD(params, 0.01, momentum=0.9, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    base = [g['lr'] for g in opt.param_groups]
    with open(rec[:-4] + '.idx') as f:
        num_records = sum(1 for line in f if line.strip())
    per_epoch = steps_per_epoch(num_records, batch_size)
    net.train()
    timer, updates, losses, done = Clock(clock), 0, [], False
    for epoch in range(epochs):
        for g, lr in zip(opt.param_groups, base):
            g['lr'] = lr * 0.457305051927326 ** (epoch // 10)
        batches = record_iter(rec, pre, batch_size, train=True, seed=seed * 1000 + epoch)
        for nbatch, batch in enumerate(batches):
            if nbatch >= per_epoch:
                break
            x = torch.from_numpy(batch.data[0].asnumpy())
            y = torch.from_numpy(batch.label[0].asnumpy().astype(np.int64))
            opt.zero_grad(set_to_none=True)
            logits, _ = net(x)
            loss = loss_fn(logits, y)
            loss.backward()
            opt.step()
            updates += 1
            losses.append(loss.item())
            if timer.spent() >= budget_seconds:
                done = True
                break
        if done:
            break
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    gluon_net, _ = build_pretrained_net(state, 'lightcnn9', preprocessing=pre)
    stem = save_checkpoint(gluon_net, prefix, dict(network='lightcnn9', num_classes=num_classes,
                                                   preprocessing=pre, source='official PyTorch recipe'))
    tail = [v for v in losses[-10:] if np.isfinite(v)]
    return stem, dict(timer.info(), updates=updates, epochs=round(updates / per_epoch, 3),
                      train_loss=float(np.mean(tail)) if tail else float('nan'))


# --- the run ----------------------------------------------------------------------------------------------

COLUMNS = (('label', 'configuration', ''), ('input', 'input', ''), ('budget_minutes', 'budget min', 'g'),
           ('train_minutes', 'train min', '.1f'), ('cpu_minutes', 'CPU min', '.1f'),
           ('updates', 'updates', 'd'), ('epochs', 'epochs', '.2f'), ('train_loss', 'train loss', '.2f'),
           ('top1', 'top-1', '.3f'), ('top5', 'top-5', '.3f'), ('open_set_accuracy', 'open-set acc', '.3f'),
           ('auc', 'unknown AUC', '.4f'), ('verification_accuracy', '10-fold acc', '.3f'),
           ('verification_std', '±', '.3f'), ('eval_minutes', 'eval min', '.1f'), ('mean_load', 'load', '.1f'),
           ('note', 'note', ''))


def run_config(config, args, split, recs, lists, aligned_side):
    """Train (or not) and evaluate one configuration; a table row (``note`` says why values are missing)."""
    geometry = RECORDS[config.records]
    row = dict(config=config.name, label=config.label,
               input=f'{geometry["color"]} {geometry["size"]}->{geometry["input_size"]}',
               load1=round(os.getloadavg()[0], 1), mean_load=os.getloadavg()[0], threads=args.threads,
               budget_minutes=args.budget_minutes if config.kind in ('ours', 'reference') else None)
    workdir = os.path.join(args.workdir, 'runs')
    os.makedirs(os.path.join(workdir, config.name), exist_ok=True)
    budget = args.budget_minutes * 60
    needs_v4 = config.records == 'bgr144'
    if needs_v4 and not os.path.exists(args.v4 + '.params'):
        return dict(row, note=f'V4 weights not found at {args.v4}: python models/import_pretrained.py '
                              'lightcnn-v4')
    if config.kind == 'ours':
        _, missing = config.training_options(trainer_options())
        if missing:
            return dict(row, note='not available in this checkout: '
                                  + ', '.join('--' + m.replace('_', '-') for m in missing))
    rec = recs.get(config.records)
    num_classes = len(split.known)
    try:
        info = {}
        if config.kind == 'imported':
            stem = args.v4
        elif config.kind == 'untrained':
            stem = save_untrained(os.path.join(workdir, config.name, 'untrained'), rec, config.records,
                                  args.seed, config.options)
        elif config.kind == 'ours':
            stem, info = train_ours(config, rec, workdir, budget, args.epochs, args.batch_size, args.seed,
                                    args.v4, os.path.join(workdir, config.name, 'train.log'), args.budget_clock)
        else:
            stem, info = train_reference(rec, num_classes, budget, args.epochs, args.batch_size, args.seed,
                                         args.threads, os.path.join(workdir, config.name, 'reference'),
                                         config.records, args.budget_clock)
        tic = time.perf_counter()
        gallery, test, unknown = embed_checkpoint(stem, args.aligned, lists, aligned_side)
        metrics = evaluate(gallery, [n for _, n in lists[0]], test, [n for _, n in lists[1]], unknown,
                           [n for _, n in lists[2]], far=args.open_set_far, folds=args.folds, seed=args.seed)
        row.update(metrics, eval_minutes=(time.perf_counter() - tic) / 60, checkpoint=stem)
        if config.kind == 'ours':
            row['options'] = {k: v for k, v in config.training_options(trainer_options())[0].items()}
        if 'train_seconds' in info:
            row.update(info, train_minutes=info['train_seconds'] / 60, cpu_minutes=info['cpu_seconds'] / 60)
            print(f'{config.name}: trained {info["train_seconds"] / 60:.1f} min wall, '
                  f'{info["cpu_seconds"] / 60:.1f} min CPU ({info["budget_clock"]} budget), mean load '
                  f'{info["mean_load"]:.1f}', flush=True)
        if not np.isfinite(row.get('train_loss') or 0.0):
            row['note'] = 'training loss not finite (diverged)'
    except Exception as exc:  # one configuration failing must not lose the others' rows
        row['note'] = f'failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""}'
    return row


def ratios(rows):
    """"Our trainer vs the reference": LightCNN-9 from scratch with softmax over the PyTorch recipe."""
    by = {r['config']: r for r in rows}
    ours, ref, floor = by.get('scratch_softmax'), by.get('torch_reference'), by.get('untrained')
    if not (ours and ref and 'auc' in ours and 'auc' in ref):
        return {}
    out = {'auc_ratio': ours['auc'] / ref['auc'], 'top1_ratio': ours['top1'] / max(ref['top1'], 1e-9)}
    if floor and 'auc' in floor:
        out['auc_gain_ours'] = ours['auc'] - floor['auc']
        out['auc_gain_reference'] = ref['auc'] - floor['auc']
        if out['auc_gain_reference'] > 1e-6:
            out['auc_gain_ratio'] = out['auc_gain_ours'] / out['auc_gain_reference']
    return out


def to_markdown(result):
    meta = result['meta']
    lines = ['# Transfer benchmark (PubFig83 aligned by align.py)', '',
             markdown_table(result['rows'], COLUMNS), '']
    lines += [f'- {note}' for note in meta['notes']]
    return '\n'.join(lines) + '\n'


def run(aligned=None, **options):
    """The benchmark with the CLI's defaults, ``options`` by parameter name (``bench/run_all.py --only transfer``)."""
    args = build_parser().parse_args(['--aligned', aligned or DEFAULT_ALIGNED])
    for key, value in options.items():
        if not hasattr(args, key):
            raise UsageError(f'unknown option {key!r} of bench_transfer')
        setattr(args, key, value)
    return run_protocol(args)


def run_protocol(args):
    """Split, pack, train and evaluate every configuration of ``args`` (the parsed CLI); the result dict."""
    if args.epochs is None:
        args.epochs = 1 if args.quick else 1000
    threads = pin_threads(args.threads)
    names = list(CONFIGS) if args.configs == 'all' else [c.strip() for c in args.configs.split(',') if c.strip()]
    unknown_names = [n for n in names if n not in CONFIGS]
    if unknown_names:
        raise UsageError(f'unknown configuration(s) {", ".join(unknown_names)}; choose from '
                         f'{", ".join(CONFIGS)} or all')
    known, unknown, test_n = (8, 4, 5) if args.quick else (KNOWN, UNKNOWN, TEST_PER_IDENTITY)
    tree = list_identity_images(args.aligned)
    if args.quick:  # the first `known` and the last `unknown` identities of the full tree, as in the protocol
        names_all = sorted(tree)
        tree = {n: tree[n] for n in names_all[:known] + names_all[-unknown:]}
    split = split_identities(tree, known, unknown, test_n, args.seed)
    train_items = {'gray72': subsample(split.train, args.train_per_identity, args.seed),
                   'bgr144': subsample(split.train, args.finetune_per_identity, args.seed)}
    lists = [subsample(split.train, args.centroid_images, args.seed), split.test,
             subsample(split.unknown, args.unknown_images, args.seed)]
    args.folds = min(args.folds, len(split.unknown_identities) // 2)
    first = os.path.join(args.aligned, *split.train[0][0].split('/'))
    import cv2
    aligned_side = min(cv2.imread(first).shape[:2])
    clock = 'training-process CPU time' if args.budget_clock == 'cpu' else 'wall clock'
    budget_text = f'{args.budget_minutes:g} min of {clock} per trained configuration on {threads} thread(s)'
    print(f'split: {split.counts()}; trained on {len(train_items["gray72"])} images from scratch, '
          f'{len(train_items["bgr144"])} fine-tuning; evaluation: '
          f'{len(lists[0])} centroid + {len(lists[1])} test + {len(lists[2])} unknown images')
    print(f'budget: {budget_text}; load {load()}', flush=True)
    needed = {CONFIGS[n].records for n in names if CONFIGS[n].kind in ('ours', 'reference', 'untrained')}
    recs = {}
    for kind in sorted(needed):
        geometry = RECORDS[kind]
        tic = time.perf_counter()
        recs[kind] = pack_split(args.aligned, train_items[kind], split.known,
                                os.path.join(args.workdir, 'records', f'{kind}{"_quick" if args.quick else ""}'),
                                geometry['size'], geometry['color'])
        print(f'records {kind}: {recs[kind]} ({time.perf_counter() - tic:.0f} s)', flush=True)
    rows = []
    for name in names:
        print(f'\n=== {name} (load {load()}) ===', flush=True)
        row = run_config(CONFIGS[name], args, split, recs, lists, aligned_side)
        rows.append(row)
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                 if k in dict((c[0], 0) for c in COLUMNS)}
        print(json.dumps(shown), flush=True)
        write_results(rows, args, split, train_items, lists, budget_text, threads)
    result = write_results(rows, args, split, train_items, lists, budget_text, threads)
    print('\n' + to_markdown(result))
    return result


def merged_rows(rows, path):
    """``rows`` plus the rows of configurations this run did not measure from an earlier ``path`` (same
    protocol), in :data:`CONFIGS` order; each row keeps its own budget, threads and load."""
    done = {r['config'] for r in rows}
    earlier = []
    if os.path.exists(path):
        try:
            earlier = [r for r in json.loads(Path(path).read_text()).get('rows', [])
                       if r.get('config') in CONFIGS and r['config'] not in done]
        except (OSError, ValueError):
            earlier = []
    order = list(CONFIGS)
    return sorted(list(rows) + earlier, key=lambda r: order.index(r['config']))


def write_results(rows, args, split, train_items, lists, budget_text, threads):
    if args.merge:
        rows = merged_rows(rows, args.json)
    ratio = ratios(rows)
    notes = [f'last run: budget {budget_text} (rows of earlier runs keep theirs), batch {args.batch_size}, '
             f'seed {args.seed}; '
             f'load average at the end {load()}; the budget counts the training process\'s CPU seconds '
             '(--budget-clock cpu: the same compute whatever else runs; wall and CPU minutes are both in the '
             'table, load = mean 1-min load average during training)',
             f'split: first {len(split.known)} identities known ({len(split.train)} training images: '
             f'{len(train_items["gray72"])} used from scratch, {len(train_items["bgr144"])} '
             f'(<= {args.finetune_per_identity or "all"} per identity) for fine-tuning V4; '
             f'{len(split.test)} test = {len(split.test) // len(split.known)} per identity), last '
             f'{len(split.unknown_identities)} unknown',
             f'centroids from {len(lists[0])} training images (<= {args.centroid_images or "all"} per identity); '
             f'open set: {len(lists[1])} known test + {len(lists[2])} unknown probes, threshold at FAR '
             f'{args.open_set_far:g} on training stand-in impostors (best other-identity centroid score)',
             f'verification: {len(lists[2])} images of the unknown identities (<= {args.unknown_images or "all"} '
             f'per identity): AUC over all pairs, accuracy over {args.folds} identity-disjoint folds',
             'V4: BGR 144 records, input 128; LightCNN-9: gray 72 records, input 64 (4x cheaper on CPU)',
             'ours from scratch: Adam lr 1e-3, classifier lr mult 1, no warm-up (notes/RECIPE.md), the '
             "trainer's data-dependent initialisation, ArcFace with its default embedding BatchNorm and s 16; "
             "fine-tuning V4: the trainer's --pretrained defaults (linear probe of the new classifier on the "
             'cached V4 features, then everything with the trunk at lr x0.01; v4_softmax_frozen: the earlier '
             'two-stage defaults, 2 frozen epochs and no probe), ArcFace s 16, center loss weight 0.003 (Wen et '
             'al. 2016); the budget counts from the call to training.train (setup and probe included); each row '
             'lists its options in the JSON; reference: official train.py SGD recipe in PyTorch, PyTorch default '
             'init']
    if ratio:
        notes.append('ours / PyTorch reference (LightCNN-9 softmax, same budget): unknown AUC '
                     f'{ratio["auc_ratio"]:.3f}, top-1 {ratio["top1_ratio"]:.2f}'
                     + (f'; AUC above the untrained floor: ours {ratio["auc_gain_ours"]:+.4f}, reference '
                        f'{ratio["auc_gain_reference"]:+.4f}' if 'auc_gain_ours' in ratio else '')
                     + (f' (ratio {ratio["auc_gain_ratio"]:.2f})' if 'auc_gain_ratio' in ratio else ''))
    meta = dict(budget_minutes=args.budget_minutes, threads=threads, batch_size=args.batch_size, seed=args.seed,
                quick=args.quick, aligned=os.path.abspath(args.aligned), split=split.counts(),
                trained_images={k: len(v) for k, v in train_items.items()}, eval_images=[len(x) for x in lists], folds=args.folds,
                open_set_far=args.open_set_far, ratios=ratio, notes=notes)
    result = dict(name='transfer', title='Transfer: fine-tuning and from scratch on PubFig83', rows=rows,
                  columns=[list(c) for c in COLUMNS], meta=meta, machine=machine())
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    out.with_suffix('.md').write_text(to_markdown(result))
    return result


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--aligned', default=DEFAULT_ALIGNED,
                        help=f'PubFig83 aligned to 144x144 BGR ($LIGHTCNN_PUBFIG_ALIGNED), made by: {ALIGN_COMMAND}')
    parser.add_argument('--configs', default='all', help=f'comma list of: {", ".join(CONFIGS)}, or all')
    parser.add_argument('--budget-minutes', type=float, default=4.0,
                        help='training budget per configuration (minutes of --budget-clock)')
    parser.add_argument('--budget-clock', choices=('cpu', 'wall'), default='cpu',
                        help="what the budget counts: the training process's CPU time (comparable across "
                             'loads on a shared machine) or wall clock')
    parser.add_argument('--quick', action='store_true',
                        help='smoke run: 8 known + 4 unknown identities, 5 test images each, 1 epoch')
    parser.add_argument('--epochs', type=int, default=None, help='epoch cap (default: 1000, --quick: 1)')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--threads', type=int, default=2, help='compute threads of every framework')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--train-per-identity', type=int, default=0,
                        help='cap on training images per known identity (0: all but the test images)')
    parser.add_argument('--finetune-per-identity', type=int, default=8,
                        help='training images per known identity in the V4 fine-tuning records (0: all): V4 '
                             'trains ~10x slower than LightCNN-9 at 64, and the two stages need whole epochs')
    parser.add_argument('--centroid-images', type=int, default=10,
                        help='training images per known identity embedded for the centroids (0: all)')
    parser.add_argument('--unknown-images', type=int, default=20,
                        help='images per unknown identity embedded for open set and verification (0: all)')
    parser.add_argument('--open-set-far', type=float, default=0.05)
    parser.add_argument('--folds', type=int, default=10)
    parser.add_argument('--v4', default=V4_STEM, help='imported LightCNN-V4 stem')
    parser.add_argument('--workdir', default=runs_dir('bench_transfer'), help='records, checkpoints, logs')
    parser.add_argument('--json', default=str(RESULTS_DIR / 'transfer.json'), help='(and the .md beside it)')
    parser.add_argument('--no-merge', dest='merge', action='store_false',
                        help="drop the rows of configurations this run does not measure (default: keep an "
                             "earlier run's rows from --json, each with its own budget and load)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        run_protocol(args)
    except UsageError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
