"""The demo's options and defaults: its own (``--work-dir``, ``--demo-*``) and those it gives the trainer.

The training options keep their meaning; only the defaults below differ from the trainer's, and a value
the user types always wins (argparse applies these defaults, nothing compares values afterwards).
"""
import argparse

from common.cli import ArgumentParser
from common.errors import UsageError
from common.paths import runs_dir
from training.config import Option, add_options
from training.errors import flag

DEMO_OPTIONS = {'demo (no --data-train)': [
    Option('work_dir', runs_dir('demo'), 'demo data, checkpoints and results'),
    Option('demo_identities', 70, 'synthetic identities in all', int),
    Option('demo_heldout', 30, 'of them held out for verification', int),
    Option('demo_images', 16, 'images per identity', int),
    Option('demo_size', 72, 'side of the rendered images, cropped to --input-size', int),
]}
# 72 px renders cropped to 64: four times cheaper than 144/128, so 15 epochs fit in a few CPU minutes;
# Adam learns within a few hundred updates where SGD needs far more; batch 32: more updates on a small set.
TRAINING_DEFAULTS = dict(network='lightcnn9', num_epochs=15, optimizer='adam', lr=1e-3, batch_size=32,
                         input_size=None)
DEMO_CROP = 64  # input_size unless given: min(DEMO_CROP, demo_size)
TRAINING_SHOWN = dict(input_size=f'{DEMO_CROP}, or --demo-size if smaller')
# what the demo decides itself (its data, classes and paths) or does not do: refused rather than ignored
NOT_FOR_THE_DEMO = ('data_train', 'data_val', 'val_pairs', 'val_images', 'num_classes', 'model_prefix',
                    'load_epoch', 'reset_optimizer', 'benchmark', 'benchmark_batches', 'pretrained')


def add_demo_options(parser):
    """Add the demo's own options to a training parser (``train_lightcnn.py --help`` lists both)."""
    changed = ' '.join(f'{flag(k)} {TRAINING_SHOWN.get(k, v)}' for k, v in TRAINING_DEFAULTS.items())
    return add_options(parser, DEMO_OPTIONS, description=(
        'Without --data-train, train_lightcnn.py runs the demo: synthetic faces through every stage, on the '
        f'CPU. It trains with its own defaults ({changed}); options you give win.'))


def build_parser(prog='train_lightcnn.py (demo: no --data-train)'):
    """The demo's parser: its options, and the training options it uses with the demo's defaults."""
    parser = ArgumentParser(prog=prog, description='The built-in demo: render, pack, train, extract, verify.')
    add_options(parser, DEMO_OPTIONS)
    return add_options(parser, defaults=TRAINING_DEFAULTS, shown=TRAINING_SHOWN, exclude=NOT_FOR_THE_DEMO)


def parse_config(config):
    """Namespace from a namespace (taken as is), an argv list, or a dict of option names over the defaults."""
    parser = build_parser()
    if isinstance(config, argparse.Namespace):
        return config
    if config is None or isinstance(config, (list, tuple)):
        return parser.parse_args(config)
    args = parser.parse_args([])
    for key, value in dict(config).items():
        name = key.replace('-', '_')
        if not hasattr(args, name):
            raise UsageError(f'unknown demo option {key!r}')
        setattr(args, name, value)
    return args
