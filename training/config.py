"""The trainer's options: one table gives each its default and help; parser, dict configs and checks read it.

:data:`OPTIONS` is the only place a training default is set. ``--help`` prints every default from it,
:func:`parse_config` starts dict configs from it, and the demo (``demo/``) gives its own defaults to some of
them through :func:`add_options` rather than by patching values afterwards.
"""
import argparse
import math
import numbers
import os
from dataclasses import dataclass

from common.cli import ArgumentParser
from common.errors import UsageError
from common.paths import runs_dir
from symbols import get_model_list

from .errors import ParameterError, flag
from .heads import LOSSES, SCALE, TRIPLET, check_loss_options
from .losses import ARCFACE, COMBINED, COSFACE

NETWORKS = get_model_list()
DEFAULT_NETWORK = 'lightcnn9'  # --network when neither given nor taken from --pretrained
BASE_LR = 0.01  # --lr of sgd/nag when neither given nor resumed
ADAM_LR = 1e-3  # --lr of adam when neither given nor resumed
PRETRAINED_BACKBONE_LR_MULT = 0.01  # --backbone-lr-mult with --pretrained
PRETRAINED_FREEZE_EPOCHS = 2  # --freeze-epochs with --pretrained and --probe-epochs 0
PRETRAINED_PROBE_EPOCHS = 30  # --probe-epochs with --pretrained
FC2_STEP_NORM = 2.0  # fine-tuning fc2 on features of mean norm F: lr mult min(1, this / F) (V4: F = 1.3 -> 1)


@dataclass(frozen=True)
class Option:
    """One option: ``name`` (the parameter; the flag is ``--name-with-dashes``), its default and help.

    ``shown`` replaces the default in ``--help`` where ``None`` means "worked out" (e.g. from the data).
    """
    name: str
    default: object
    help: str
    type: type = None
    choices: tuple = None
    shown: str = None
    switch: bool = False  # store_true: off unless given


OPTIONS = {
    'data': [
        Option('data_train', None, 'training PREFIX.rec (with PREFIX.idx; PREFIX.json from '
               'data_tools/pack_rec.py gives the class count)', shown='none: run the demo'),
        Option('data_val', None, 'validation .rec: top-1/top-5 every epoch', shown='none'),
        Option('val_pairs', None, 'LFW-format pairs.txt: verification accuracy every epoch', shown='none'),
        Option('val_images', None, 'image root the --val-pairs paths are relative to', shown='none'),
        Option('val_targets', None, 'insightface .bin verification sets, comma-separated (lfw.bin,cfp_fp.bin,'
               'agedb_30.bin): 10-fold accuracy of each every epoch (CSV column val_NAME, NAME = file name '
               'without .bin) and the best weights per set in PREFIX-best-NAME', shown='none'),
        Option('num_classes', None, 'classes of fc2', int, shown='num_classes of PREFIX.json'),
        Option('data_nthreads', 4, 'decoding threads', int),
        Option('input_size', None, 'crop side', int,
               shown="the network's 128, or the record side if smaller"),
    ],
    'network': [
        Option('network', None, 'LightCNN variant', choices=tuple(NETWORKS),
               shown=f"{DEFAULT_NETWORK}, or the network of --pretrained"),
        Option('dropout', 0.5, 'dropout before fc2', float),
        Option('embedding_bn', None, 'end the 256-d feature with a BatchNorm (feature = BN(fc), as insightface; '
               'used at extraction too): needed by the normalised-feature losses from scratch',
               choices=('on', 'off'),
               shown='on for arcface, cosface, combined from scratch; with --pretrained or --load-epoch: the '
                     "checkpoint's"),
        Option('init', 'data', 'initialisation: data = LightCNNInit, then every MFM filter standardised on a '
               'batch of training faces (from scratch) and fc2 zero; xavier = LightCNNInit alone (README: '
               'Training, Network)',
               choices=('data', 'xavier')),
    ],
    'fine-tuning': [
        Option('pretrained', None, 'start from this checkpoint (imported, e.g. runs/pretrained/lightcnn-v4, '
               'or trained, any class count): its backbone weights, network and preprocessing; a new fc2 for '
               'the classes of --data-train', shown='none: from scratch'),
        Option('backbone_lr_mult', None, 'lr multiplier of everything but the classifier (0: frozen)', float,
               shown=f'1; with --pretrained {PRETRAINED_BACKBONE_LR_MULT}'),
        Option('probe_epochs', None, 'before training, fit the new classifier on the frozen network\'s features of '
               '--data-train (embedded once) for this many passes: linear probe, then fine-tuning (LP-FT)', int,
               shown=f'0; with --pretrained {PRETRAINED_PROBE_EPOCHS}'),
        Option('freeze_epochs', None, 'train only the classifier for this many epochs, then the backbone '
               'at --backbone-lr-mult', int,
               shown=f'0; with --pretrained and --probe-epochs 0: {PRETRAINED_FREEZE_EPOCHS}'),
    ],
    'optimisation': [
        Option('optimizer', 'adam', 'optimiser', choices=('sgd', 'nag', 'adam')),
        Option('lr', None, 'base learning rate', float,
               shown=f"{ADAM_LR:g} (adam), {BASE_LR} (sgd, nag); resuming: the checkpoint's schedule, or "
                     'this base lr from the resumed update on'),
        Option('mom', 0.9, 'momentum (sgd, nag)', float),
        Option('wd', 1e-4, 'weight decay', float),
        Option('batch_size', 64, 'per machine, split over its devices', int),
        Option('num_epochs', 30, 'epochs to train in all (a resumed run counts the ones done)', int),
        Option('lr_step_epochs', '', 'e.g. 10,20: multiply the lr by --lr-factor there', shown='none'),
        Option('lr_factor', 0.1, 'lr multiplier at each --lr-step-epochs', float),
        Option('warmup_epochs', 1.0, 'linear warm-up from 0 over this many epochs', float),
        Option('fc2_lr_mult', None, 'lr multiplier of the classifier (official SGD recipe: 10)', float,
               shown=f'1; fine-tuning fc2 after the probe: min(1, {FC2_STEP_NORM:g} / the features\' mean norm)'),
        Option('clip_norm', 5.0, 'rescale the batch-mean gradient to this L2 norm when larger (0: off)',
               float),
        Option('clip_gradient', 0.0, 'clip every gradient element to [-C, C] (0: off)', float),
        Option('seed', 0, 'initialisation, data order, augmentation', int),
    ],
    'loss (README: Losses)': [
        Option('loss', 'softmax', 'training loss: softmax on fc2, a margin head replacing fc2 '
               '(cos(m1*theta + m2) - m3 on normalised features and weights), or triplet on P x K batches',
               choices=LOSSES),
        Option('margin_s', None, 'scale s of the normalised logits', float,
               shown=f'{SCALE:g} (arcface, cosface, combined)'),
        Option('margin_m', None, 'the margin of arcface (m2, radians) or cosface (m3)', float,
               shown=f'arcface {ARCFACE[1]:g}, cosface {COSFACE[2]:g}'),
        Option('margin_m1', None, 'combined: multiplicative angular margin m1', float, shown=f'{COMBINED[0]:g}'),
        Option('margin_m2', None, 'combined: additive angular margin m2 (radians)', float,
               shown=f'{COMBINED[1]:g}'),
        Option('margin_m3', None, 'combined: additive cosine margin m3', float, shown=f'{COMBINED[2]:g}'),
        Option('center_loss_weight', 0.0, 'weight lambda of the center loss added to any loss (0: off)',
               float),
        Option('center_loss_alpha', 0.5, 'centre update rate alpha of the center loss', float),
        Option('triplet_margin', None, 'triplet: margin on squared distances of unit embeddings', float,
               shown=f'{TRIPLET["triplet_margin"]:g}'),
        Option('triplet_k', None, 'triplet: images per identity in a batch (P = batch size / K)', int,
               shown=str(TRIPLET['triplet_k'])),
        Option('triplet_mining', None, 'triplet: negatives mined in the batch',
               choices=('semihard', 'batch-hard'), shown=TRIPLET['triplet_mining']),
    ],
    'devices': [
        Option('gpus', None, 'e.g. 0,1 (data parallel)', shown='CPU'),
        Option('kv_store', 'device', 'gradient aggregation',
               choices=('device', 'local', 'dist_sync', 'dist_device_sync')),
    ],
    'checkpoints and logging': [
        Option('model_prefix', runs_dir('lightcnn'),
               'checkpoints PREFIX-NNNN.params/.json/.states (NNNN = epochs completed) and '
               'PREFIX-metrics.csv'),
        Option('save_period', 1, 'save every N epochs (and after the last)', int),
        Option('load_epoch', None, 'resume from PREFIX-NNNN after N completed epochs: weights, optimiser, LR',
               int, shown='start from scratch'),
        Option('reset_optimizer', False, 'with --load-epoch: weights only, fresh optimiser state (needed to '
               'change --optimizer)', switch=True),
        Option('disp_batches', 20, 'Speedometer line every N batches', int),
        Option('benchmark', False, 'synthetic batches, prints samples/sec', switch=True),
        Option('benchmark_batches', 10, 'timed batches of --benchmark', int),
    ],
}
DEFAULTS = {o.name: o.default for group in OPTIONS.values() for o in group}


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric option: ``low`` <= value (< ``high``); ``low_open``: ``low`` < value."""
    low: float = None
    high: float = None
    low_open: bool = False
    reason: str = ''

    def holds(self, value):
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value < self.high

    def rule(self):
        low = None if self.low is None else (f'greater than {self.low:g}' if self.low_open
                                             else f'at least {self.low:g}')
        high = None if self.high is None else f'below {self.high:g}'
        text = ' and '.join(t for t in (low, high) if t)
        return text + (f' ({self.reason})' if self.reason else '')


# The one table of allowed values, beside the defaults: check_config reads it, README "Input rules" shows it.
# Every float option must also be finite (no nan/inf) and every int option an integer.
RANGES = {
    'num_classes': Range(2, reason='a softmax over one class learns nothing'),
    'data_nthreads': Range(1),
    'input_size': Range(16, reason='four 2x2 poolings'),
    'dropout': Range(0, 1),
    'lr': Range(0),
    'mom': Range(0, 1),
    'wd': Range(0),
    'batch_size': Range(1),
    'num_epochs': Range(1),
    'lr_factor': Range(0, low_open=True),
    'warmup_epochs': Range(0),
    'fc2_lr_mult': Range(0),
    'backbone_lr_mult': Range(0, reason='0: frozen'),
    'freeze_epochs': Range(0),
    'probe_epochs': Range(0, 10 ** 4, reason='0: off'),
    'clip_norm': Range(0, reason='0: off'),
    'clip_gradient': Range(0, reason='0: off'),
    'seed': Range(0, 10 ** 6, reason='epoch seeds are seed * 1000 + epoch'),
    'save_period': Range(1),
    'load_epoch': Range(0, reason='it counts completed epochs; 0: start from scratch'),
    'disp_batches': Range(1),
    'benchmark_batches': Range(1),
    'margin_s': Range(0, low_open=True),
    'margin_m': Range(0),
    'margin_m1': Range(0, low_open=True, reason='it multiplies the angle'),
    'margin_m2': Range(0),
    'margin_m3': Range(0),
    'center_loss_weight': Range(0, reason='0: off'),
    'center_loss_alpha': Range(0, low_open=True),  # and at most 1: training.heads.check_loss_options
    'triplet_margin': Range(0, low_open=True),
    'triplet_k': Range(2, reason='a positive needs two images of an identity'),
}
TYPES = {o.name: o.type for group in OPTIONS.values() for o in group if o.type in (int, float)}


def add_options(parser, table=None, defaults=None, shown=None, exclude=(), description=None):
    """Add the options of ``table`` (``{group title: [Option]}``, default :data:`OPTIONS`) to ``parser``.

    ``defaults`` overrides table entries (the demo's own training defaults), ``shown`` their ``--help`` text
    where the value alone does not say it; options named in ``exclude`` are left out; ``description``
    heads the (single) group. ``--help`` shows every default. Returns ``parser``.
    """
    defaults, shown_text = dict(defaults or {}), dict(shown or {})
    for title, options in (OPTIONS if table is None else table).items():
        group = parser.add_argument_group(title, description)
        for o in options:
            if o.name in exclude:
                continue
            if o.switch:
                group.add_argument(flag(o.name), action='store_true', help=f'{o.help} (default: off)')
                continue
            default = defaults.get(o.name, o.default)
            text = shown_text.get(o.name, o.shown if o.name not in defaults else None)
            group.add_argument(flag(o.name), type=o.type, choices=o.choices, default=default,
                               help=f'{o.help} (default: {default if text is None else text})')
    return parser


def build_parser(prog='train_lightcnn.py', description='Train LightCNN on RecordIO face data (MXNet Gluon).'):
    """Parser of the training options (``train_lightcnn.py`` adds the demo's to it)."""
    return add_options(ArgumentParser(prog=prog, description=description))


def parse_config(config):
    """Namespace from a namespace, a dict of option names (``lr`` or ``lr-step-epochs``) or an argv list.

    Dict entries override the defaults of :data:`OPTIONS`; unknown names raise :class:`UsageError`.
    """
    if isinstance(config, argparse.Namespace):
        return config
    if config is None or isinstance(config, (list, tuple)):
        return build_parser().parse_args(config)
    args = argparse.Namespace(**DEFAULTS)
    for key, value in dict(config).items():
        name = key.replace('-', '_')
        if name not in DEFAULTS:
            raise UsageError(f'unknown training option {key!r}')
        setattr(args, name, value)
    return args


def check_config(args):
    """Refuse option values that cannot work, before any data is read or a network built.

    Raises
    ------
    ParameterError
        Naming the parameters (``batch_size must be at least 1``); CLIs spell them as flags.
    """
    if not args.data_train:
        raise ParameterError(lambda n: f'{n("data_train")} PREFIX.rec is required '
                                       '(train_lightcnn.py without it runs the demo)')
    if args.kv_store.startswith('dist') and 'DMLC_ROLE' not in os.environ:
        raise ParameterError(lambda n: f'{n("kv_store")} {args.kv_store} needs the DMLC_* environment of a '
                                       'launcher: python -m tools.launch -n WORKERS -s SERVERS -- '
                                       'python train_lightcnn.py ...')
    if bool(args.val_pairs) != bool(args.val_images):
        raise ParameterError(lambda n: f'{n("val_pairs")} and {n("val_images")} go together')
    val_targets(args.val_targets)
    check_values(args)
    if args.load_epoch and args.num_epochs <= args.load_epoch:
        raise ParameterError(lambda n: f'{n("num_epochs")} {args.num_epochs} leaves nothing to train after '
                                       f'{n("load_epoch")} {args.load_epoch}: it counts every epoch, those '
                                       f'done included (give {args.load_epoch + 1} or more)')
    if args.reset_optimizer and not args.load_epoch:
        raise ParameterError(lambda n: f'{n("reset_optimizer")} goes with {n("load_epoch")}')
    step_epochs(args.lr_step_epochs)
    check_loss_options(args)


def check_values(args):
    """Every numeric option of :data:`TYPES` that is set: of its type, finite, inside its :data:`RANGES` entry.

    Raises
    ------
    ParameterError
        ``dropout must be at least 0 and below 1``; ``lr must be a finite number, not nan``.
    """
    for name, kind in TYPES.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
                kind is int and not isinstance(value, numbers.Integral)):
            what = 'an integer' if kind is int else 'a number'
            raise ParameterError(lambda n, name=name, what=what, value=value:
                                 f'{n(name)} must be {what}, not {value!r}')
        if not math.isfinite(value):
            raise ParameterError(lambda n, name=name, value=value:
                                 f'{n(name)} must be a finite number, not {value}')
        rule = RANGES.get(name)
        if rule is not None and not rule.holds(value):
            raise ParameterError(lambda n, name=name, rule=rule: f'{n(name)} must be {rule.rule()}')


VAL_KEYS = ('val_top1', 'val_top5', 'val_verification')  # row keys of the built-in validators


def val_targets(text):
    """``'a/lfw.bin,cfp_fp.bin'`` -> ``[('lfw', 'a/lfw.bin'), ('cfp_fp', 'cfp_fp.bin')]``: each target's name
    (its file name without ``.bin``; the row key is ``val_NAME``) and path. ``None`` or empty: no targets.

    The allowed values of ``val_targets`` (its range check): ``.bin`` files, at least one, names that are
    distinct and not those of the built-in validators (:data:`VAL_KEYS`). The files themselves are read
    before the first step (:class:`training.validation.BinVerification`).

    Raises
    ------
    ParameterError
        Naming ``val_targets`` and the item at fault.
    """
    if text is None:
        return []
    if not isinstance(text, str):
        raise ParameterError(lambda n: f'{n("val_targets")} takes comma-separated .bin files, not {text!r}')
    paths = [p.strip() for p in text.split(',')]
    if not any(paths):
        return []
    targets = []
    for path in paths:
        name = os.path.basename(path)[:-4] if path.lower().endswith('.bin') else None
        if not name:
            raise ParameterError(lambda n, path=path: f'{n("val_targets")} takes insightface .bin files like '
                                                      f'lfw.bin,cfp_fp.bin; not {path!r} in {text!r}')
        targets.append((name, path))
    names = [name for name, _ in targets]
    clash = sorted({name for name in names if names.count(name) > 1 or f'val_{name}' in VAL_KEYS})
    if clash:
        raise ParameterError(lambda n: f'{n("val_targets")}: target name(s) {", ".join(clash)} (file names '
                                       'without .bin) appear twice or are a built-in column; rename the file(s)')
    return targets


def step_epochs(text):
    """``'10,20'`` -> ``[10.0, 20.0]`` (sorted, unique; each a finite number of epochs above 0)."""
    try:
        epochs = sorted({float(s) for s in str(text).split(',') if s.strip()})
    except ValueError:
        epochs = None
    if epochs is None or not all(math.isfinite(e) and e > 0 for e in epochs):
        raise ParameterError(lambda n: f'{n("lr_step_epochs")} takes epochs above 0 like 10,20, '
                                       f'not {text!r}')
    return epochs


# --- values worked out from other options (those whose --help names another option) ---------------------

def base_lr(args):
    """``lr``, or the optimiser's default (``BASE_LR`` for sgd/nag, ``ADAM_LR`` for adam)."""
    if args.lr is not None:
        return args.lr
    return ADAM_LR if args.optimizer == 'adam' else BASE_LR


def fine_tuning(args):
    """Whether the run starts from ``pretrained`` weights or resumes one that did (``resumed_pretrained``, set
    by the trainer from the checkpoint): the fine-tuning defaults below apply to both."""
    return bool(args.pretrained or getattr(args, 'resumed_pretrained', None))


def classifier_lr_mult(args, feature_scale=None):
    """``fc2_lr_mult``, or when fine-tuning with the probe's ``feature_scale`` (mean L2 norm of the
    features fc2 sees) ``min(1, FC2_STEP_NORM / feature_scale)``, else 1.

    An Adam step moves every fc2 weight by about the lr, so a logit by about lr x the features' L1 norm: 0.02
    for V4's features (norm 1.3), but several units for a LightCNN-9 trained from scratch (norm ~500), whose
    new classifier then overshoots at every step (training loss above chance although the probe had fitted it).
    """
    if args.fc2_lr_mult is not None:
        return args.fc2_lr_mult
    if feature_scale and fine_tuning(args):
        return min(1.0, FC2_STEP_NORM / feature_scale)
    return 1.0


def backbone_lr_mult(args):
    """``backbone_lr_mult``, or 1 from scratch and :data:`PRETRAINED_BACKBONE_LR_MULT` with ``pretrained``."""
    if args.backbone_lr_mult is not None:
        return args.backbone_lr_mult
    return PRETRAINED_BACKBONE_LR_MULT if fine_tuning(args) else 1.0


MARGIN_LOSSES = ('arcface', 'cosface', 'combined')  # heads on L2-normalised features and weights


def embedding_bn(args, checkpoint_meta=None):
    """Whether the network ends its feature with :class:`symbols.lightcnn.EmbeddingBN`.

    ``embedding_bn`` ``'on'``/``'off'`` (or a bool) when given; else the value recorded in
    ``checkpoint_meta`` (the ``--pretrained`` or resumed checkpoint's JSON, ``False`` when it has none);
    else on for the margin losses from scratch (README, Training: why these defaults).
    """
    given = getattr(args, 'embedding_bn', None)
    if given is not None:
        return given in ('on', True)
    if checkpoint_meta is not None:
        return bool(checkpoint_meta.get('embedding_bn', False))
    return getattr(args, 'loss', 'softmax') in MARGIN_LOSSES


def probe_epochs(args):
    """``probe_epochs``, or 0 from scratch and :data:`PRETRAINED_PROBE_EPOCHS` with ``pretrained``."""
    if args.probe_epochs is not None:
        return args.probe_epochs
    return PRETRAINED_PROBE_EPOCHS if fine_tuning(args) else 0


def freeze_epochs(args):
    """``freeze_epochs``, or :data:`PRETRAINED_FREEZE_EPOCHS` with ``pretrained`` and no linear probe (the
    probe is the classifier-only stage), else 0."""
    if args.freeze_epochs is not None:
        return args.freeze_epochs
    return PRETRAINED_FREEZE_EPOCHS if fine_tuning(args) and not probe_epochs(args) else 0
