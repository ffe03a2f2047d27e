"""The inference engine: batched LightCNN forwards over images, shared by every stage that embeds faces.

Used by feature extraction (:func:`extract_features.extract_to_mat`), the Python API
(:func:`models.load_model`), ``.bin`` evaluation and training's per-epoch verification (``--val-pairs``,
``--val-targets``: :func:`embed_bin`). Pixels always come
from the checkpoint's :class:`~common.preprocessing.Preprocessing`; images are decoded by a thread pool a
few batches ahead of the forward pass (OpenCV releases the GIL), and every forward has the same shape so
the hybridized graph is built once (``static_alloc``/``static_shape``).

What to embed (:class:`ImageItem`) comes from image lists, trees or pairs files. Path rule for lists
and pairs: a line ``/lfw_patch/Name/Name_0001.jpg`` is taken relative to ``root`` after dropping its
leading ``/``; if that file does not exist, leading components are dropped one at a time
(``lfw_patch/Name/...`` -> ``Name/...``) until one exists under ``root``; an absolute line that exists
as written is the last resort. Where the named file is absent, the one image with the same ``identity/file``
key and another extension is taken (pairs files always match by key: ``Name 1`` is ``Name/Name_0001.*``),
the rule the evaluators use (:func:`common.images.image_key`). The label stored is the path of the file
found relative to ``root`` with ``/`` separators (``Name/Name_0001.png`` when ``root`` is the folder that
holds the identity folders).
"""
import concurrent.futures
import os
import re
from collections import deque
from dataclasses import dataclass, field

import mxnet as mx
import numpy as np
from tqdm import tqdm

from common.errors import ParameterMessage, UsageError
from common.fileio import atomic_write
from common.images import (IMAGE_EXTENSIONS, ImageError, ImageFinder, check_image_root, decode_image, read_image,
                           scan_images)
from common.textio import printable, read_lines
from data_tools.pairs import read_pairs

_LABEL_COLUMN = re.compile(r'^(.*\S)\s+-?\d+$')


NO_FACE = 'no face found by the aligner'  # the reason of an image the aligner found no face in


def describe_failures(failures):
    """``'2 image(s) missing or unreadable, 1 image(s) with no face found'`` for ``(label, reason)`` pairs:
    images without a face (reason :data:`NO_FACE`) are not called unreadable."""
    no_face = sum(1 for _, reason in failures if reason == NO_FACE)
    other = len(failures) - no_face
    parts = ([f'{other} image(s) missing or unreadable'] if other else []) + \
        ([f'{no_face} image(s) with no face found'] if no_face else [])
    return ', '.join(parts) or '0 images'


def _skip_advice(n):
    return f'fix or remove them, or pass {n("skip_missing")} to record and skip them'


class ImageLoadError(ParameterMessage, UsageError):
    """Some images could not be read; ``failures`` is the full list of ``(label, reason)``.

    ``advice(n)`` says what to do, naming parameters through ``n`` (:class:`~common.errors.ParameterMessage`);
    by default: fix or remove them, or pass ``skip_missing``.
    """

    def __init__(self, failures, report_file=None, examples=5, advice=_skip_advice):
        self.failures = list(failures)
        shown = '; '.join(f'{label} ({reason})' for label, reason in self.failures[:examples])
        more = f' ... and {len(self.failures) - examples} more' if len(self.failures) > examples else ''
        where = f'; full list in {report_file}' if report_file else ''
        super().__init__(lambda n: f'{describe_failures(self.failures)}: {shown}{more}{where}'
                                   f' ({advice(n)})')


@dataclass
class ImageItem:
    """One image to embed: the label stored in the output and where its pixels come from.

    ``source`` is a file path, a decoded uint8 array, or ``None`` when a list line matched no file.
    """
    label: str
    source: object


@dataclass
class Extraction:
    """Result of :func:`embed_images`: features of the images that loaded, in input order."""
    features: np.ndarray
    labels: list
    indices: np.ndarray
    skipped: list = field(default_factory=list)
    logits: np.ndarray = None
    ignored: list = field(default_factory=list)  # (relpath, reason): tree entries not walked twice


# ---------------------------------------------------------------------------------------------
# What to embed

def resolve_list_path(entry, root, finder=None, any_extension=False):
    """Apply the list path rule (module docstring); returns ``(label, path or None)``.

    Each candidate is looked up with :class:`common.images.ImageFinder` (``finder``, made for ``root``
    when not given): the exact file, else the one image with the same ``identity/file`` key and another
    extension (``any_extension``: the key only, for pair lines, where ``.jpg`` is LFW's default and not
    written in the file).

    Raises
    ------
    UsageError
        Two images match the key (both are named).
    """
    finder = finder or ImageFinder(root)
    entry = entry.strip()
    parts = [p for p in re.split(r'[\\/]+', entry) if p not in ('', '.')]
    for start in range(len(parts)):
        found = finder.find('/'.join(parts[start:]), any_extension)
        if found is not None:
            rel = os.path.relpath(found, root).replace(os.sep, '/')
            return rel, found
    if os.path.isabs(entry) and os.path.isfile(entry):
        rel = os.path.relpath(entry, root)
        return (rel if not rel.startswith('..') else entry).replace(os.sep, '/'), entry
    return '/'.join(parts[-2:]) if parts else entry, None


def items_from_list(list_path, root='.'):
    """Items for an image list, one path per line (``#`` comments, blank lines and a trailing
    integer label column are ignored). Read by :func:`common.textio.read_lines` (BOM, CRLF)."""
    lines = read_lines(list_path, 'image list')
    _check_root(root)
    finder = ImageFinder(root)
    items = []
    for _, line in lines:
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        label, path = resolve_list_path(line, root, finder)
        m = _LABEL_COLUMN.match(line)
        if path is None and m:
            label, path = resolve_list_path(m.group(1), root, finder)
        items.append(ImageItem(label, path))
    if not items:
        raise UsageError(f'image list {list_path} names no images')
    return items


def items_from_tree(root, ignored=None, name='root'):
    """Every image under ``root`` (recursive, sorted by relative path), labelled by that path.

    The tree is walked by :func:`common.images.scan_images` (each real folder and file once); links it
    does not follow twice are appended to ``ignored`` as ``(relpath, reason)`` when a list is given.
    A file name that is not valid UTF-8 is labelled with its bytes escaped (``b\\xffob/1.jpg``). ``name`` is
    the caller's parameter for ``root`` in the error when it is not a folder.
    """
    _check_root(root, name)
    found, skipped = scan_images(root)
    if ignored is not None:
        ignored.extend(skipped)
    if not found:
        raise UsageError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) under {root}')
    return [ImageItem(printable(rel), os.path.join(root, rel)) for rel in found]


def items_from_pairs(pairs_path, root='.'):
    """The distinct images a pairs file names, in order of first mention.

    Pair images are found by their ``identity/file`` key whatever the extension (``Name/Name_0001`` is
    ``Name_0001.jpg`` or ``Name_0001.png``): the rule the evaluators match features by
    (:func:`common.images.image_key`). Two files with one key are an error naming both.
    """
    _check_root(root)
    finder = ImageFinder(root)
    seen, items = set(), []
    for pair in read_pairs(pairs_path):
        for rel in pair[:2]:
            if rel not in seen:
                seen.add(rel)
                items.append(ImageItem(*resolve_list_path(rel, root, finder, any_extension=True)))
    if not items:
        raise UsageError(f'pairs file {pairs_path} names no images')
    return items


def _check_root(root, name='root'):
    check_image_root(root, name)


# ---------------------------------------------------------------------------------------------
# The engine

def inference_backend(ctx):
    """``'MKLDNN'`` on a CPU build with oneDNN, else ``None``: the subgraph pass for inference-only graphs.

    It folds each MFM's ``relu`` and ``+`` into the convolutions as post-ops, saving passes over the
    batch-64 activations: ~8 % less CPU per image, identical outputs (tested). Inference only: the
    fused operators are forward-only, so the trainer's verification embedder does not hybridize.
    """
    if ctx.device_type == 'cpu' and mx.runtime.Features().is_enabled('MKLDNN'):
        return 'MKLDNN'
    return None


MAX_BATCH = 4096  # images per forward at most: beyond, a batch only costs memory (a typo like 1e9 is refused)


class Embedder:
    """Statically shaped, batched forward of a LightCNN on uint8 images.

    Parameters
    ----------
    net : HybridBlock
        Feature net (returns ``(N, 256)``) or classifier built with ``return_features=True``
        (returns ``(logits, features)``).
    preprocessing : Preprocessing
        The checkpoint's pixels; turns images into the float batch.
    ctx : mx.Context
    batch_size : int
        Images per forward; a last partial batch is zero-padded so every forward has one shape.
    """

    def __init__(self, net, preprocessing, ctx=None, batch_size=64, hybridize=True):
        if batch_size < 1:
            raise UsageError(f'batch size must be >= 1, not {batch_size}')
        self.net, self.pre = net, preprocessing
        self.ctx = ctx or mx.cpu()
        self.batch_size = int(batch_size)
        if hybridize:
            net.hybridize(static_alloc=True, static_shape=True, backend=inference_backend(self.ctx))

    def forward(self, images, flip=False):
        """Embed up to ``batch_size`` preprocessed uint8 HxWxC images.

        ``flip`` runs the mirrored images in the same forward (batch 2B) and returns
        ``feature(img) + feature(mirrored img)``. Returns ``(features, logits or None)`` as numpy.
        """
        n = len(images)
        if not 0 < n <= self.batch_size:
            raise ValueError(f'forward takes 1..{self.batch_size} images, got {n}')
        batch = self.pre.to_batch(images)
        if n < self.batch_size:
            pad = np.zeros((self.batch_size - n,) + batch.shape[1:], batch.dtype)
            batch = np.concatenate([batch, pad])
        if flip:
            batch = np.concatenate([batch, batch[:, :, :, ::-1]])
        out = self.net(mx.nd.array(batch, ctx=self.ctx))
        logits, feats = out if isinstance(out, (tuple, list)) else (None, out)
        feats = feats.asnumpy()
        if flip:
            feats = feats[:self.batch_size] + feats[self.batch_size:]
        logits = None if logits is None else logits.asnumpy()[:n]
        return feats[:n].astype(np.float32, copy=False), logits


def image_loader(preprocessing, center_crop=None, align=None):
    """``source -> uint8 HxWxC`` in the net's pixels, raising :class:`ImageError` with a reason.

    ``source`` is a path or a decoded uint8 array (gray HxW[x1] or BGR HxWx3). ``align``
    (``BGR uint8 -> aligned uint8 or None``) runs after decoding and before the geometry fit. When it also
    has ``align_batch`` (``data_tools.alignment.FaceAligner``: one detector run for many images), the
    loader's ``many(sources)`` aligns a whole batch at once; it returns images or :class:`ImageError` objects,
    as :func:`prefetch_batches` wants.
    """
    color = 'bgr' if align is not None or preprocessing.channels != 'gray' else 'gray'

    def decode(source):
        if source is None:
            raise ImageError('file not found')
        if isinstance(source, np.ndarray):
            img = _check_array(source)
            if align is not None and img.ndim == 2:
                img = np.repeat(img[:, :, None], 3, axis=2)
            return img
        return read_image(source, color)

    def fit(aligned):
        if aligned is None:
            raise ImageError(NO_FACE)
        return preprocessing.decoded(aligned, center_crop)

    def load(source):
        if align is None and source is not None and not isinstance(source, np.ndarray):
            return preprocessing.load(source, center_crop)
        img = decode(source)
        return fit(align(img)) if align is not None else preprocessing.decoded(img, center_crop)

    def many(sources):
        out = _each(decode, sources)
        todo = [k for k, img in enumerate(out) if not isinstance(img, ImageError)]
        aligned = align.align_batch([out[k] for k in todo]) if todo else []
        for k, fitted in zip(todo, _each(lambda result: fit(result.image), aligned)):
            out[k] = fitted
        return out

    if align is not None and hasattr(align, 'align_batch'):
        load.many = many
    return load


def _check_array(img):
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
        raise ImageError(f'array must be uint8 HxW or HxWx3 (BGR), got {img.dtype} {img.shape}')
    return img[:, :, 0] if img.ndim == 3 and img.shape[2] == 1 else img


def _each(fn, items):
    """``fn(item)`` for every item, the :class:`ImageError` it raised in its place where it raised one."""
    out = []
    for item in items:
        try:
            out.append(fn(item))
        except ImageError as err:
            out.append(err)
    return out


def _load_batch(load, sources):
    if hasattr(load, 'many'):  # e.g. face alignment, batched across the images
        return load.many(sources)
    return _each(load, sources)


def prefetch_batches(load, sources, batch_size, num_workers=2):
    """Yield ``(start, [image or ImageError, ...])`` per batch, decoded by ``num_workers`` threads
    that keep up to ``num_workers + 1`` batches ahead of the consumer."""
    starts = range(0, len(sources), batch_size)
    if num_workers < 1:
        for start in starts:
            yield start, _load_batch(load, sources[start:start + batch_size])
        return
    with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
        pending = deque()
        todo = iter(starts)
        for start in todo:
            pending.append((start, pool.submit(_load_batch, load, sources[start:start + batch_size])))
            if len(pending) > num_workers:
                break
        while pending:
            start, fut = pending.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(_load_batch, load, sources[nxt:nxt + batch_size])))
            yield start, fut.result()


def embed_images(embedder, items, center_crop=None, align=None, flip=False, skip_missing=False,
                 num_workers=2, progress=False, report_file=None):
    """Embed ``items`` (:class:`ImageItem`); the engine behind the CLI and ``FaceModel.embed``.

    Unreadable images raise :class:`ImageLoadError` (after decoding the rest, so the message lists
    all of them; forwards stop at the first failure) unless ``skip_missing``, which leaves them out
    and lists them in ``Extraction.skipped``. ``report_file`` receives every failure as
    ``label<TAB>reason`` lines whenever there are any.
    """
    load = image_loader(embedder.pre, center_crop, align)
    sources = [item.source for item in items]
    feats, logits, kept, failures = [], [], [], []
    bar = tqdm(total=len(items), unit='img', disable=not progress, desc='extract')
    try:
        for start, batch in prefetch_batches(load, sources, embedder.batch_size, num_workers):
            good = []
            for offset, img in enumerate(batch):
                if isinstance(img, ImageError):
                    failures.append((items[start + offset].label, str(img)))
                else:
                    good.append((start + offset, img))
            if good and (skip_missing or not failures):
                f, lg = embedder.forward([img for _, img in good], flip)
                feats.append(f)
                if lg is not None:
                    logits.append(lg)
                kept.extend(i for i, _ in good)
            bar.update(len(batch))
    finally:
        bar.close()
    if failures and report_file:
        with atomic_write(report_file, 'w', encoding='utf-8', newline='\n') as f:
            f.writelines(f'{label}\t{reason}\n' for label, reason in failures)
    if failures and (not skip_missing or not kept):
        raise ImageLoadError(failures, report_file)
    dim = feats[0].shape[1] if feats else 256
    return Extraction(
        features=np.concatenate(feats) if feats else np.zeros((0, dim), np.float32),
        labels=[items[i].label for i in kept], indices=np.asarray(kept, dtype=np.int64),
        skipped=failures, logits=np.concatenate(logits) if logits else None)


# ------------------------------------------------------------------------------- insightface .bin sets
BIN_DECODE_CHUNK = 512  # .bin images decoded ahead of the engine at a time


def _distinct_images(images):
    """``(unique, rows)``: the distinct encoded images in first-seen order, and each slot's row in them."""
    first, rows = {}, np.empty(len(images), np.int64)
    for k, img in enumerate(images):
        rows[k] = first.setdefault(img, len(first))
    return list(first), rows


def embed_bin(embedder, images, flip=False, center_crop=None, num_workers=2, progress=False, name='.bin'):
    """Features of the distinct images of an insightface ``.bin`` (each image embedded once).

    What ``lfw_eval.py --model M --bin X.bin`` and the trainer's ``--val-targets`` embed: images are decoded
    in the network's channels (as extraction decodes the same files) and run through :func:`embed_images`
    in chunks of :data:`BIN_DECODE_CHUNK`, so memory stays bounded for large sets. LFW's 6,000 pairs fill
    12,000 slots with far fewer images.

    Parameters
    ----------
    embedder : Embedder
    images : list of bytes
        Encoded images, pair ``k`` = ``images[2k], images[2k + 1]`` (:func:`data_tools.bin_sets.load_bin`).
    flip : bool
        Add the features of the mirrored images.
    name : str
        What the set is called in labels and errors (``lfw.bin``).

    Returns
    -------
    features : numpy.ndarray, float32 (U, D)
        One row per distinct image.
    rows : numpy.ndarray, int64 (len(images),)
        Row of ``features`` for each image slot.

    Raises
    ------
    UsageError
        Undecodable images (count and the first slots, with their pair numbers).
    """
    unique, rows = _distinct_images(images)
    color = 'gray' if embedder.pre.channels == 'gray' else 'bgr'
    slot_of = {}
    for k, r in enumerate(rows):
        slot_of.setdefault(int(r), k)
    feats, failures = [], []
    bar = tqdm(total=len(unique), unit='img', desc='embed', disable=not progress)
    for start in range(0, len(unique), BIN_DECODE_CHUNK):
        items = []
        for u in range(start, min(start + BIN_DECODE_CHUNK, len(unique))):
            try:
                items.append(ImageItem(f'{name}[{slot_of[u]}]', decode_image(unique[u], color)))
            except ImageError as err:
                failures.append((slot_of[u], str(err)))
        if failures:  # keep decoding to count them all, embed nothing more
            continue
        feats.append(embed_images(embedder, items, center_crop, None, flip, num_workers=num_workers).features)
        bar.update(len(items))
    bar.close()
    if failures:
        shown = '; '.join(f'image {k} (pair {k // 2}): {reason}' for k, reason in failures[:5])
        raise UsageError(f'{name}: {len(failures)} of {len(unique)} distinct images cannot be decoded: {shown}')
    return np.concatenate(feats), rows
