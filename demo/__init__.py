"""The embedded demo: ``python train_lightcnn.py`` with no data runs every stage on synthetic faces."""
from .config import DEMO_OPTIONS, TRAINING_DEFAULTS, add_demo_options, build_parser, parse_config
from .pipeline import run_demo

__all__ = ['DEMO_OPTIONS', 'TRAINING_DEFAULTS', 'add_demo_options', 'build_parser', 'parse_config',
           'run_demo']
