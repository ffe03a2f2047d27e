"""LightCNN training: options (config), the loop (trainer), heads, callbacks, validation, record data,
fine-tuning."""
from .callbacks import Callback, MetricsCSV, ProgressBar, Speedometer, EpochLog
from .config import DEFAULTS, OPTIONS, add_options, build_parser, parse_config
from .errors import ParameterError, TrainingDiverged, flag
from .finetune import PretrainedSource, TrunkSchedule, copy_backbone, read_pretrained
from .heads import SoftmaxHead
from .trainer import TrainingRun, benchmark, build_network, setup, train
from .validation import ClassificationValidation

__all__ = ['Callback', 'ClassificationValidation', 'DEFAULTS', 'EpochLog', 'MetricsCSV', 'OPTIONS',
           'ParameterError', 'PretrainedSource', 'ProgressBar', 'SoftmaxHead', 'Speedometer',
           'TrainingDiverged', 'TrainingRun', 'TrunkSchedule', 'add_options', 'benchmark', 'build_network',
           'build_parser', 'copy_backbone', 'flag', 'parse_config', 'read_pretrained', 'setup', 'train']
