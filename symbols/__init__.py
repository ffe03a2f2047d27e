"""LightCNN networks and blocks for MXNet Gluon."""
from .blocks import MFM, Group, LightCNNInit, MaxAvgPool, ResBlock
from .lightcnn import LightCNN9, LightCNN29, LightCNNV4
from .model_zoo import default_preprocessing, get_model, get_model_list

__all__ = ['MFM', 'Group', 'ResBlock', 'MaxAvgPool', 'LightCNNInit', 'LightCNN9', 'LightCNN29',
           'LightCNNV4', 'get_model', 'get_model_list', 'default_preprocessing']
