"""LightCNN training: options (config), the loop (trainer), heads and losses, callbacks, validation, record
data, the P x K sampler and fine-tuning."""
from .callbacks import Callback, MetricsCSV, ProgressBar, Speedometer, EpochLog
from .config import DEFAULTS, OPTIONS, add_options, build_parser, parse_config
from .errors import ParameterError, TrainingDiverged, flag
from .finetune import PretrainedSource, TrunkSchedule, copy_backbone, read_pretrained
from .heads import Head, MarginHead, SoftmaxHead, TripletHead, build_head
from .losses import CenterLoss, MarginSoftmax, TripletLoss
from .sampler import IdentityBalancedSampler, IdentityBatches
from .trainer import TrainingRun, benchmark, build_network, setup, train
from .validation import ClassificationValidation

__all__ = ['Callback', 'CenterLoss', 'ClassificationValidation', 'DEFAULTS', 'EpochLog', 'Head',
           'IdentityBalancedSampler', 'IdentityBatches', 'MarginHead', 'MarginSoftmax', 'MetricsCSV', 'OPTIONS',
           'ParameterError', 'PretrainedSource', 'ProgressBar', 'SoftmaxHead', 'Speedometer', 'TrainingDiverged',
           'TrainingRun', 'TripletHead', 'TripletLoss', 'TrunkSchedule', 'add_options', 'benchmark', 'build_head',
           'build_network', 'build_parser', 'copy_backbone', 'flag', 'parse_config', 'read_pretrained', 'setup',
           'train']
