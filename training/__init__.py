"""LightCNN training: options (config), the loop (trainer), heads and losses, callbacks, validation, record
data and the P x K sampler."""
from .callbacks import Callback, MetricsCSV, ProgressBar, Speedometer, EpochLog
from .config import DEFAULTS, OPTIONS, add_options, build_parser, parse_config
from .errors import ParameterError, TrainingDiverged, flag
from .heads import Head, MarginHead, SoftmaxHead, TripletHead, build_head
from .losses import CenterLoss, MarginSoftmax, TripletLoss
from .sampler import IdentityBalancedSampler, IdentityBatches
from .trainer import TrainingRun, benchmark, build_network, setup, train
from .validation import ClassificationValidation

__all__ = ['Callback', 'CenterLoss', 'ClassificationValidation', 'DEFAULTS', 'EpochLog', 'Head',
           'IdentityBalancedSampler', 'IdentityBatches', 'MarginHead', 'MarginSoftmax', 'MetricsCSV', 'OPTIONS',
           'ParameterError', 'ProgressBar', 'SoftmaxHead', 'Speedometer', 'TrainingDiverged', 'TrainingRun',
           'TripletHead', 'TripletLoss', 'add_options', 'benchmark', 'build_head', 'build_network',
           'build_parser', 'flag', 'parse_config', 'setup', 'train']
