"""Name -> network factory, GluonCV style, with each network's default preprocessing."""
from common.preprocessing import Preprocessing

from .lightcnn import LightCNN9, LightCNN29, LightCNNV4

_GRAY = Preprocessing(channels='gray')
_BGR = Preprocessing(channels='bgr')

_MODELS = {
    'lightcnn9': (LightCNN9, {}, _GRAY),
    'lightcnn29': (LightCNN29, {}, _GRAY),
    'lightcnn29v2': (LightCNN29, {'v2': True}, _GRAY),
    'lightcnn_v4': (LightCNNV4, {}, _BGR),
}


def get_model_list():
    """Names accepted by :func:`get_model`."""
    return list(_MODELS)


def default_preprocessing(name):
    """The pixels the official release of ``name`` was trained on."""
    return _entry(name)[2]


def get_model(name, num_classes=None, preprocessing=None, **kwargs):
    """Build a LightCNN by name.

    Parameters
    ----------
    name : str
        One of :func:`get_model_list` (``lightcnn9``, ``lightcnn29``, ``lightcnn29v2``, ``lightcnn_v4``).
    num_classes : int or None
        ``None`` gives the feature-only net (256-d output); otherwise the net ends in ``fc2``.
    preprocessing : Preprocessing or None
        Sets ``in_channels`` and ``input_size``; defaults to :func:`default_preprocessing`.
    **kwargs
        ``dropout``, ``return_features``, ``prefix`` and other block arguments.
    """
    cls, fixed, default = _entry(name)
    pre = preprocessing or default
    return cls(num_classes=num_classes, input_size=pre.input_size, in_channels=pre.num_channels,
               **fixed, **kwargs)


def _entry(name):
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f'unknown network {name!r}; choose from {", ".join(_MODELS)}') from None
