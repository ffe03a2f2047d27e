"""LightCNN training: the trainer behind ``train_lightcnn.py``, its data iterators and the demo."""
from .trainer import TrainingDiverged, benchmark, build_parser, parse_config, train

__all__ = ['TrainingDiverged', 'benchmark', 'build_parser', 'parse_config', 'train']
