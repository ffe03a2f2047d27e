"""LightCNN training: options (config), the loop (trainer), heads, callbacks, validation, record data."""
from .callbacks import Callback, MetricsCSV, ProgressBar, Speedometer, EpochLog
from .config import DEFAULTS, OPTIONS, add_options, build_parser, parse_config
from .errors import ParameterError, TrainingDiverged, flag
from .heads import SoftmaxHead
from .trainer import TrainingRun, benchmark, build_network, setup, train
from .validation import ClassificationValidation

__all__ = ['Callback', 'ClassificationValidation', 'DEFAULTS', 'EpochLog', 'MetricsCSV', 'OPTIONS',
           'ParameterError', 'ProgressBar', 'SoftmaxHead', 'Speedometer', 'TrainingDiverged', 'TrainingRun',
           'add_options', 'benchmark', 'build_network', 'build_parser', 'flag', 'parse_config',
           'setup', 'train']
