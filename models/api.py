"""Embeddings in three lines, for people who just want features::

    from models import load_model
    model = load_model('runs/pretrained/lightcnn-v4')
    features = model.embed(['a.jpg', 'b.jpg'], flip=True)       # float32 (2, 256)

Runs on the inference engine (:mod:`symbols.inference`) that extraction uses too: same pixels, same batching.
``load_model(..., normalize=True)`` gives unit-length embeddings; ``model.compare(a, b)`` is their cosine,
to be compared with a threshold an evaluation recommends
(:func:`lfw_verification.evaluate.recommended_threshold`).
"""
import os
from collections import namedtuple

import numpy as np

from common.devices import parse_device
from common.errors import UsageError
from symbols.checkpoint import load_checkpoint
from symbols.inference import Embedder, ImageItem, ImageLoadError, embed_images


class Classification(namedtuple('Classification', 'ids probs')):
    """What :meth:`FaceModel.classify` returns: unpacks as ``ids, probs``; ``.names`` holds the class names."""
    names = None


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

    def __init__(self, net, meta, ctx, normalize=False):
        self.net, self.meta, self.ctx = net, meta, ctx
        self.preprocessing = meta['preprocessing']
        self.num_classes = meta.get('num_classes') or None
        self.normalize = bool(normalize)
        self._embedders = {}

    @property
    def class_names(self):
        """Name of each class index (the training identities from the checkpoint JSON; the index as text
        when the checkpoint does not record them); ``None`` for a feature-only checkpoint."""
        if not self.num_classes:
            return None
        names = self.meta.get('identities') or []
        if len(names) != self.num_classes:
            return [str(i) for i in range(self.num_classes)]
        return [str(n) for n in names]

    def __repr__(self):
        return (f'FaceModel({self.meta.get("network")}, classes={self.num_classes}, '
                f'{self.preprocessing.channels} {self.preprocessing.input_size}px, {self.ctx})')

    def _run(self, images, batch_size, flip, center_crop, align):
        items = _as_items(images)
        if not items:
            return None
        if int(batch_size) < 1:
            raise UsageError(f'batch_size must be >= 1, not {batch_size}')
        if center_crop is not None and center_crop < 1:
            raise UsageError(f'center_crop must be a positive side in pixels, not {center_crop}')
        if align is not None and not callable(align):
            raise UsageError(f'align must be a callable (BGR uint8 -> aligned uint8 or None), not {align!r}')
        size = max(1, min(int(batch_size), len(items)))
        if size not in self._embedders:  # one static shape per batch size: build once, reuse
            self._embedders[size] = Embedder(self.net, self.preprocessing, self.ctx, size,
                                             hybridize=not self._embedders)
        try:
            return embed_images(self._embedders[size], items, center_crop, align, flip, num_workers=2)
        except ImageLoadError as err:  # the API has no skip_missing: say what a caller of embed() can do
            raise ImageLoadError(err.failures, advice=lambda n: 'the .failures attribute lists them all; remove '
                                 f'them from {n("images")} and retry') from None

    def embed(self, images, batch_size=64, flip=False, center_crop=None, align=None, normalize=None):
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
        normalize : bool or None
            Scale every feature to unit L2 norm; ``None``: as ``load_model(normalize=...)`` said.

        Raises :class:`~symbols.inference.ImageLoadError` listing unreadable images.
        """
        result = self._run(images, batch_size, flip, center_crop, align)
        feats = np.zeros((0, 256), np.float32) if result is None else result.features
        if self.normalize if normalize is None else normalize:
            feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        return feats.astype(np.float32, copy=False)

    def _embeddings(self, x, name, **options):
        """Unit embeddings of ``x``: images (paths / uint8 arrays) or precomputed float features."""
        if isinstance(x, np.ndarray) and x.dtype.kind == 'f':
            feats = np.atleast_2d(x).astype(np.float64)
            if feats.ndim != 2:
                raise UsageError(f'{name}: float features must be (D,) or (N, D), got {x.shape}')
        else:
            feats = self.embed(x, normalize=False, **options).astype(np.float64)
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)

    def compare(self, a, b, **embed_options):
        """Cosine similarity of faces ``a`` and ``b`` (higher = more likely the same person).

        Parameters
        ----------
        a, b : image, list of images, or float features
            One image each gives a float; two lists of ``N`` images (or ``N x D`` features) give the ``N``
            pairwise cosines ``cos(a[i], b[i])``; one image against a list gives one cosine per list item.
        embed_options
            Passed to :meth:`embed` (``flip``, ``center_crop``, ``align``, ``batch_size``).

        Returns
        -------
        float or numpy.ndarray (N,) of float64 in [-1, 1]

        Raises
        ------
        UsageError
            ``a`` and ``b`` hold different numbers of faces (neither being a single one).
        """
        fa, fb = self._embeddings(a, 'a', **embed_options), self._embeddings(b, 'b', **embed_options)
        if fa.shape[1] != fb.shape[1]:
            raise UsageError(f'a has {fa.shape[1]}-D features, b {fb.shape[1]}-D')
        if len(fa) != len(fb) and 1 not in (len(fa), len(fb)):
            raise UsageError(f'a holds {len(fa)} faces and b {len(fb)}: compare pairs a[i], b[i] of equal '
                             'numbers, or one face against many')
        cos = np.sum(fa * fb, axis=1)
        single = _is_single(a) and _is_single(b)
        return float(cos[0]) if single else cos

    def verify(self, a, b, threshold, **embed_options):
        """``compare(a, b) > threshold`` -- True where the faces are judged the same person.

        ``threshold`` comes from an evaluation of this model on data like yours, e.g.
        ``lfw_verification.evaluate.recommended_threshold('eval.json', far=1e-3)``.
        """
        if threshold is None:
            raise UsageError('threshold is required (see lfw_verification.evaluate.recommended_threshold)')
        return np.asarray(self.compare(a, b, **embed_options)) > float(threshold)

    def classify(self, images, batch_size=64, center_crop=None, align=None):
        """Class ids and softmax probabilities for checkpoints trained with a classifier.

        Returns a :class:`Classification` that unpacks as ``(ids, probs)``: int64 ``(N,)`` top-1 class and
        float32 ``(N, num_classes)``; its ``.names`` are the top-1 class names (:attr:`class_names`).
        """
        if not self.num_classes:
            raise UsageError(f'{self.meta.get("stem")} has no classifier (num_classes is not set); '
                             'use embed()')
        result = self._run(images, batch_size, False, center_crop, align)
        if result is None:
            return _classification(np.zeros(0, np.int64), np.zeros((0, self.num_classes), np.float32), [])
        logits = result.logits.astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        ids = probs.argmax(axis=1).astype(np.int64)
        names = self.class_names
        return _classification(ids, probs.astype(np.float32), [names[i] for i in ids])


def _classification(ids, probs, names):
    out = Classification(ids, probs)
    out.names = names
    return out


def _is_single(x):
    """One image (a path or an HxW / HxWx1 / HxWx3 uint8 array) or one 1-d feature vector."""
    if isinstance(x, (str, os.PathLike)):
        return True
    if isinstance(x, np.ndarray):
        if x.dtype.kind == 'f':
            return x.ndim == 1
        return x.ndim == 2 or (x.ndim == 3 and x.shape[2] in (1, 3))
    return False


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


def load_model(spec, ctx=None, epoch=None, normalize=False):
    """Load a checkpoint (``models/lightcnn-v4``, ``PREFIX`` + ``epoch``, ``x.params``) for
    :meth:`FaceModel.embed`, :meth:`FaceModel.compare` and, when it has a classifier,
    :meth:`FaceModel.classify`.

    ``ctx``: ``mx.Context`` or ``'cpu'``/``'gpu:N'``. ``normalize=True``: :meth:`FaceModel.embed` returns
    unit-length (L2-normalised) features unless told otherwise per call.
    """
    context = parse_device(ctx) if ctx is None or isinstance(ctx, str) else ctx
    # return_features: a classifier net gives (logits, features); a feature-only net ignores it
    net, meta = load_checkpoint(spec, epoch=epoch, ctx=context, return_features=True)
    return FaceModel(net, meta, context, normalize=normalize)
