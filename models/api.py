"""Embeddings in three lines, for people who just want features::

    from models import load_model
    model = load_model('runs/pretrained/lightcnn-v4')
    features = model.embed(['a.jpg', 'b.jpg'], flip=True)       # float32 (2, 256)

Runs on the inference engine (:mod:`symbols.inference`) that extraction uses too: same pixels, same batching.
"""
import os

import numpy as np

from common.devices import parse_device
from common.errors import UsageError
from symbols.checkpoint import load_checkpoint
from symbols.inference import Embedder, ImageItem, embed_images


class FaceModel:
    """A loaded LightCNN checkpoint with its preprocessing.

    Attributes
    ----------
    net : HybridBlock
        Returns features, or ``(logits, features)`` when the checkpoint has a classifier.
    preprocessing : Preprocessing
    meta : dict
        The checkpoint metadata (``network``, ``num_classes``, ``stem``, ...).
    """

    def __init__(self, net, meta, ctx):
        self.net, self.meta, self.ctx = net, meta, ctx
        self.preprocessing = meta['preprocessing']
        self.num_classes = meta.get('num_classes') or None
        self._embedders = {}

    def __repr__(self):
        return (f'FaceModel({self.meta.get("network")}, classes={self.num_classes}, '
                f'{self.preprocessing.channels} {self.preprocessing.input_size}px, {self.ctx})')

    def _run(self, images, batch_size, flip, center_crop, align):
        items = _as_items(images)
        if not items:
            return None
        size = max(1, min(int(batch_size), len(items)))
        if size not in self._embedders:  # one static shape per batch size: build once, reuse
            self._embedders[size] = Embedder(self.net, self.preprocessing, self.ctx, size,
                                             hybridize=not self._embedders)
        return embed_images(self._embedders[size], items, center_crop, align, flip, num_workers=2)

    def embed(self, images, batch_size=64, flip=False, center_crop=None, align=None):
        """256-d features of ``images`` as float32 ``(N, 256)``.

        Parameters
        ----------
        images : sequence of str/path or uint8 array, or one of them
            Paths are decoded in the model's channels; arrays are gray HxW or BGR HxWx3 (OpenCV
            order). Any size: geometry follows :meth:`Preprocessing.fit`.
        flip : bool
            Add the feature of the mirrored image (computed in the same forward).
        center_crop : int or None
            Central square side taken before resizing (unaligned images).
        align : callable or None
            ``BGR uint8 -> aligned uint8`` applied before the crop (e.g. MTCNN alignment).

        Raises :class:`~symbols.inference.ImageLoadError` listing unreadable images.
        """
        result = self._run(images, batch_size, flip, center_crop, align)
        return np.zeros((0, 256), np.float32) if result is None else result.features

    def classify(self, images, batch_size=64, center_crop=None, align=None):
        """Class ids and softmax probabilities for checkpoints trained with a classifier.

        Returns ``(ids, probs)``: int64 ``(N,)`` top-1 class and float32 ``(N, num_classes)``.
        """
        if not self.num_classes:
            raise UsageError(f'{self.meta.get("stem")} has no classifier (num_classes is not set); '
                             'use embed()')
        result = self._run(images, batch_size, False, center_crop, align)
        if result is None:
            return np.zeros(0, np.int64), np.zeros((0, self.num_classes), np.float32)
        logits = result.logits.astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        return probs.argmax(axis=1).astype(np.int64), probs.astype(np.float32)


def _as_items(images):
    """Paths/arrays -> items. A 2-d array or an HxWx1/HxWx3 array is one image; a 3-d array of
    another shape or a 4-d array is a stack of images."""
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    elif isinstance(images, np.ndarray) and (images.ndim == 2 or
                                             (images.ndim == 3 and images.shape[2] in (1, 3))):
        images = [images]
    items = []
    for i, img in enumerate(images):
        if isinstance(img, (str, os.PathLike)):
            items.append(ImageItem(os.fspath(img), os.fspath(img)))
        elif isinstance(img, np.ndarray):
            items.append(ImageItem(f'<array {i}>', img))
        else:
            raise UsageError(f'image {i} is a {type(img).__name__}; give paths or uint8 arrays')
    return items


def load_model(spec, ctx=None, epoch=None):
    """Load a checkpoint (``models/lightcnn-v4``, ``PREFIX`` + ``epoch``, ``x.params``) for
    :meth:`FaceModel.embed` and, when it has a classifier, :meth:`FaceModel.classify`.

    ``ctx``: ``mx.Context`` or ``'cpu'``/``'gpu:N'``.
    """
    context = parse_device(ctx) if ctx is None or isinstance(ctx, str) else ctx
    # return_features: a classifier net gives (logits, features); a feature-only net ignores it
    net, meta = load_checkpoint(spec, epoch=epoch, ctx=context, return_features=True)
    return FaceModel(net, meta, context)
