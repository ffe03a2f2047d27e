"""The trainer's options: one table gives each its default and help; parser, dict configs and checks read it.

:data:`OPTIONS` is the only place a training default is set. ``--help`` prints every default from it,
:func:`parse_config` starts dict configs from it, and the demo (``demo/``) gives its own defaults to some of
them through :func:`add_options` rather than by patching values afterwards.
"""
import argparse
import os
from dataclasses import dataclass

from common.cli import ArgumentParser
from common.errors import UsageError
from common.paths import runs_dir
from symbols import get_model_list

from .errors import ParameterError, flag

NETWORKS = get_model_list()
DEFAULT_NETWORK = 'lightcnn9'  # --network when neither given nor taken from --pretrained
BASE_LR = 0.01  # --lr of sgd/nag when neither given nor resumed
ADAM_LR = 1e-3  # --lr of adam when neither given nor resumed
PRETRAINED_BACKBONE_LR_MULT = 0.01  # --backbone-lr-mult with --pretrained
PRETRAINED_CLASSIFIER_LR_MULT = 10.0  # --fc2-lr-mult with --pretrained
PRETRAINED_FREEZE_EPOCHS = 1  # --freeze-epochs with --pretrained


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
        Option('num_classes', None, 'classes of fc2', int, shown='num_classes of PREFIX.json'),
        Option('data_nthreads', 4, 'decoding threads', int),
        Option('input_size', None, 'crop side', int,
               shown="the network's 128, or the record side if smaller"),
    ],
    'network': [
        Option('network', None, 'LightCNN variant', choices=tuple(NETWORKS),
               shown=f"{DEFAULT_NETWORK}, or the network of --pretrained"),
        Option('dropout', 0.5, 'dropout before fc2', float),
        Option('init', 'data', 'initialisation: data = LightCNNInit, then every MFM filter standardised on a '
               'batch of training faces (from scratch) and fc2 zero; xavier = LightCNNInit alone',
               choices=('data', 'xavier')),
    ],
    'fine-tuning': [
        Option('pretrained', None, 'start from this checkpoint (imported, e.g. runs/pretrained/lightcnn-v4, '
               'or trained, any class count): its backbone weights, network and preprocessing; a new fc2 for '
               'the classes of --data-train', shown='none: from scratch'),
        Option('backbone_lr_mult', None, 'lr multiplier of everything but the classifier (0: frozen)', float,
               shown=f'1; with --pretrained {PRETRAINED_BACKBONE_LR_MULT:g}'),
        Option('freeze_epochs', None, 'train only the classifier for this many epochs, then the backbone '
               'at --backbone-lr-mult', int, shown=f'0; with --pretrained {PRETRAINED_FREEZE_EPOCHS}'),
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
               shown=f'1; with --pretrained {PRETRAINED_CLASSIFIER_LR_MULT:g}'),
        Option('clip_norm', 5.0, 'rescale the batch-mean gradient to this L2 norm when larger (0: off)',
               float),
        Option('clip_gradient', 0.0, 'clip every gradient element to [-C, C] (0: off)', float),
        Option('seed', 0, 'initialisation, data order, augmentation', int),
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
        Option('disp_batches', 20, 'Speedometer line every N batches', int),
        Option('benchmark', False, 'synthetic batches, prints samples/sec', switch=True),
        Option('benchmark_batches', 10, 'timed batches of --benchmark', int),
    ],
}
DEFAULTS = {o.name: o.default for group in OPTIONS.values() for o in group}
AT_LEAST_ONE = ('batch_size', 'num_epochs', 'save_period', 'disp_batches', 'data_nthreads',
                'benchmark_batches')


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
                group.add_argument(flag(o.name), action='store_true', help=o.help)
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
    for name in AT_LEAST_ONE:
        if getattr(args, name) < 1:
            raise ParameterError(lambda n, name=name: f'{n(name)} must be at least 1')
    for name in ('backbone_lr_mult', 'fc2_lr_mult', 'freeze_epochs', 'clip_norm', 'clip_gradient',
                 'warmup_epochs'):
        value = getattr(args, name)
        if value is not None and not value >= 0:  # also NaN
            raise ParameterError(lambda n, name=name, value=value: f'{n(name)} {value} must be 0 or more')
    if args.load_epoch is not None and args.load_epoch < 0:
        raise ParameterError(lambda n: f'{n("load_epoch")} {args.load_epoch}: it counts completed epochs '
                                       '(0: start from scratch)')
    step_epochs(args.lr_step_epochs)


def step_epochs(text):
    """``'10,20'`` -> ``[10.0, 20.0]`` (sorted, unique)."""
    try:
        return sorted({float(s) for s in str(text).split(',') if s.strip()})
    except ValueError:
        raise ParameterError(lambda n: f'{n("lr_step_epochs")} takes epochs like 10,20, '
                                       f'not {text!r}') from None


# --- values worked out from other options (those whose --help names another option) ---------------------

def base_lr(args):
    """``lr``, or the optimiser's default (``BASE_LR`` for sgd/nag, ``ADAM_LR`` for adam)."""
    if args.lr is not None:
        return args.lr
    return ADAM_LR if args.optimizer == 'adam' else BASE_LR


def classifier_lr_mult(args):
    """``fc2_lr_mult``, or 1 from scratch and :data:`PRETRAINED_CLASSIFIER_LR_MULT` with ``pretrained``."""
    if args.fc2_lr_mult is not None:
        return args.fc2_lr_mult
    return PRETRAINED_CLASSIFIER_LR_MULT if args.pretrained else 1.0


def backbone_lr_mult(args):
    """``backbone_lr_mult``, or 1 from scratch and :data:`PRETRAINED_BACKBONE_LR_MULT` with ``pretrained``."""
    if args.backbone_lr_mult is not None:
        return args.backbone_lr_mult
    return PRETRAINED_BACKBONE_LR_MULT if args.pretrained else 1.0


def freeze_epochs(args):
    """``freeze_epochs``, or 0 from scratch and :data:`PRETRAINED_FREEZE_EPOCHS` with ``pretrained``."""
    if args.freeze_epochs is not None:
        return args.freeze_epochs
    return PRETRAINED_FREEZE_EPOCHS if args.pretrained else 0
