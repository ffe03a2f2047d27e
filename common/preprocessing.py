"""The one definition of how a LightCNN sees a face, read by training, extraction and evaluation.

A :class:`Preprocessing` travels with every checkpoint (its JSON metadata), so a model always gets
the pixels it was trained on: channel order, scaling, input side and the side of stored records.
"""
from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np

from .images import read_image


@dataclass(frozen=True)
class Preprocessing:
    """Pixels a network expects.

    Parameters
    ----------
    channels : str
        ``'gray'`` (LightCNN-9/29/29v2) or ``'bgr'`` (LightCNN-V4); ``'rgb'`` for nets trained from
        ``ImageRecordIter`` colour batches, which decodes to RGB.
    input_size : int
        Side of the square the network takes (128 in the paper).
    scale, mean : float
        Network input is ``(pixel - mean) * scale``; the official models use ``/255``.
    record_size : int
        Side of stored training images; training crops ``input_size`` out of it at random,
        validation and extraction take the centre (144 -> 128 in the paper). Raw images get this
        geometry too (:meth:`fit`).
    """
    channels: str = 'gray'
    input_size: int = 128
    scale: float = 1.0 / 255
    mean: float = 0.0
    record_size: int = 144

    def __post_init__(self):
        if self.channels not in ('gray', 'bgr', 'rgb'):
            raise ValueError(f"channels must be 'gray', 'bgr' or 'rgb', not {self.channels!r}")

    @property
    def num_channels(self):
        return 1 if self.channels == 'gray' else 3

    @property
    def data_shape(self):
        return (self.num_channels, self.input_size, self.input_size)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def fit(self, img, center_crop=None):
        """Bring a decoded image to ``input_size`` square with the geometry of the training records.

        By default an image is treated as packing treats it, then as validation crops a record: its
        shorter side is scaled to ``record_size`` and the central ``record_size`` square kept
        (:func:`crop_resize`, exactly what ``data_tools.packing`` stores), then the central
        ``input_size`` square of that is taken (what ``ImageRecordIter`` gives without ``rand_crop``).
        A net trained on 144-px records thus sees the same face from a raw 250x250 LFW image or a
        100x100 PubFig83 image as from its packed record (a 144 face, centre 128).

        A square of exactly ``input_size`` is already a network input (the official 128x128 LightCNN
        test crops, ``--align`` output) and passes unchanged. ``center_crop`` (explicit) first takes a
        central square of that side and resizes it to ``input_size`` (e.g. 150 for unaligned 250x250
        LFW), ignoring ``record_size``.
        """
        if center_crop:
            return crop_resize(img, self.input_size, crop=center_crop)
        h, w = img.shape[:2]
        if (h, w) == (self.input_size, self.input_size) or self.record_size < self.input_size:
            return crop_resize(img, self.input_size, shrink=False)
        return center_square(crop_resize(img, self.record_size), self.input_size)

    def load(self, path, center_crop=None):
        """Read an image file in this model's channels and geometry (uint8 HxWxC)."""
        img = read_image(path, 'bgr' if self.channels != 'gray' else 'gray')
        return self.decoded(img, center_crop)

    def decoded(self, img, center_crop=None):
        """Convert a decoded uint8 image (gray HxW or BGR HxWx3) to this model's channels and size."""
        if img.ndim == 2 and self.channels != 'gray':
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        elif img.ndim == 3 and self.channels == 'gray':
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        if img.ndim == 3 and self.channels == 'rgb':
            img = img[:, :, ::-1]
        img = self.fit(img, center_crop)
        return img[:, :, None] if img.ndim == 2 else np.ascontiguousarray(img)

    def to_batch(self, images):
        """Stack uint8 HxWxC images into the float32 NCHW batch the network takes."""
        batch = np.stack(images).astype(np.float32)
        if self.mean:
            batch -= self.mean
        batch *= self.scale
        return batch.transpose(0, 3, 1, 2)

    def record_iter_args(self, train):
        """Arguments for ``mx.io.ImageRecordIter`` that give exactly these pixels.

        Training takes a random ``input_size`` crop with random mirroring; validation the centre crop.
        """
        if self.channels == 'bgr':
            raise ValueError('ImageRecordIter decodes colour as RGB; train colour nets with '
                             "channels='rgb' or swap channels after loading")
        args = dict(data_shape=self.data_shape, scale=self.scale,
                    rand_crop=bool(train), rand_mirror=bool(train))
        if self.mean:
            args.update(mean_r=self.mean, mean_g=self.mean, mean_b=self.mean)
        return args


def crop_resize(img, size, crop=None, shrink=True):
    """The central ``size`` x ``size`` square of ``img``: the one crop-and-resize of every stage.

    Parameters
    ----------
    img : uint8 array, HxW or HxWxC
    size : int
        Output side in pixels.
    crop : int, optional
        First take the central ``crop`` x ``crop`` square (at most the shorter side), then resize it to
        ``size`` -- e.g. 150 for unaligned 250x250 LFW, or ``min(h, w)`` for the largest square.
    shrink : bool
        Without ``crop``: scale the shorter side to ``size`` when it is longer (packing: ORL's 92x112
        keeps its aspect and loses a few rows), or only centre-crop it (``False``: 144 -> 128, as the
        validation crop). A shorter side below ``size`` is always scaled up first.

    Resizing uses ``INTER_AREA`` when shrinking and ``INTER_LINEAR`` when enlarging.
    """
    h, w = img.shape[:2]
    if crop:
        img = _center_crop(img, min(crop, h, w))
        return _resize(img, size, size)
    short = min(h, w)
    if short < size or (shrink and short > size):
        scale = size / short
        img = _resize(img, max(size, round(w * scale)), max(size, round(h * scale)))
    return _center_crop(img, size)


def _resize(img, width, height):
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img
    shrinking = height * width < h * w
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def center_square(img, side):
    """The central ``side`` x ``side`` square (offsets rounded down, as ``ImageRecordIter``'s centre crop)."""
    return _center_crop(img, side)


def _center_crop(img, side):
    h, w = img.shape[:2]
    if (h, w) == (side, side):
        return img
    y, x = (h - side) // 2, (w - side) // 2
    return img[y:y + side, x:x + side]
