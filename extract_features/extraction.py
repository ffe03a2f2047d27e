"""Batched LightCNN feature extraction: image lists -> ``.mat`` features the evaluators load.

:func:`extract_to_mat` is everything ``extract_features.py`` does: choose the images (a list, a tree or
a pairs file; path rule in :mod:`symbols.inference`), load the checkpoint, run the inference engine
(:class:`~symbols.inference.Embedder` + :func:`~symbols.inference.embed_images`, shared with the Python
API and training) and write the features file (:mod:`common.features_mat`).
"""
import numpy as np

from common.checks import check_number
from common.devices import parse_device
from common.errors import ParameterError
from common.features_mat import write_features
from common.fileio import atomic_write, check_outputs
from common.workers import MAX_WORKERS
from data_tools.alignment import make_aligner
from symbols.checkpoint import checkpoint_files, load_checkpoint
from symbols.inference import MAX_BATCH, Embedder, embed_images, items_from_list, items_from_pairs, items_from_tree


def save_features(out, extraction, npy=None, csv=None, sources=None):
    """Write ``out`` (.mat: ``data`` N x 256 single, ``label`` N x 1 cell, ``skipped`` K x 1 cell
    and ``skipped_reason``) and optionally ``npy`` (features) and ``csv`` (index, label, path)."""
    write_features(out, extraction.features, extraction.labels, extraction.skipped)
    if npy:
        with atomic_write(npy) as f:
            np.save(f, np.ascontiguousarray(extraction.features, dtype=np.float32))
    if csv:
        import pandas as pd
        table = pd.DataFrame({'index': np.arange(len(extraction.labels)),
                              'label': extraction.labels})
        if sources is not None:
            table['path'] = [sources[i] for i in extraction.indices]
        with atomic_write(csv) as f:
            table.to_csv(f, index=False)


def failure_report_path(out):
    """Where the full list of unreadable images goes: next to ``out``."""
    base = out[:-4] if out.lower().endswith('.mat') else out
    return base + '.failed.txt'


def extract_to_mat(model, out, img_list=None, images=None, pairs=None, root='.', epoch=None,
                   center_crop=None, batch_size=64, flip=False, ctx='cpu', skip_missing=False,
                   align=None, num_workers=2, npy=None, csv=None, progress=True, fallback=None):
    """Everything ``extract_features.py`` does; returns the :class:`~symbols.inference.Extraction`.

    Exactly one of ``img_list``, ``images`` (a tree root) or ``pairs`` chooses the images.
    ``align`` is a callable or ``True`` for the MTCNN aligner of ``data_tools.alignment``; with ``align=True``,
    ``fallback='center'`` centre-crops images without a detected face instead of leaving them out (the
    ``FaceAligner`` option ``align.py --fallback`` sets). Images without a face are reported with the reason
    :data:`symbols.inference.NO_FACE`, not as unreadable.
    Options and output paths are checked before the model loads; the result's ``ignored`` lists
    ``(relpath, reason)`` of links a tree walk did not follow twice (:func:`common.images.walk_tree`).
    """
    chosen = [x is not None for x in (img_list, images, pairs)]
    if sum(chosen) != 1:
        raise ParameterError(lambda n: f'give exactly one of {n("img_list")}, {n("images")}, {n("pairs")}')
    check_number(center_crop, 'center_crop', minimum=1, integer=True, optional=True)
    if fallback not in (None, 'center'):
        raise ParameterError(lambda n: f"{n('fallback')} must be 'center' or None, not {fallback!r}")
    if fallback is not None and align is not True:
        raise ParameterError(lambda n: f'{n("fallback")} applies to the built-in aligner: give it with {n("align")}')
    check_number(batch_size, 'batch_size', minimum=1, maximum=MAX_BATCH, integer=True)
    check_number(num_workers, 'num_workers', minimum=0, maximum=MAX_WORKERS, integer=True)
    check_number(epoch, 'epoch', minimum=0, integer=True, optional=True)
    ignored = []
    if img_list is not None:
        items = items_from_list(img_list, root)
    elif images is not None:
        items = items_from_tree(images, ignored, name='images')
    else:
        items = items_from_pairs(pairs, root)
    source = 'img_list' if img_list is not None else 'pairs' if pairs is not None else 'images'
    listed = [x for x in (img_list, pairs) if x is not None] + [item.source for item in items]
    check_outputs({'out': [out, failure_report_path(out)], 'npy': npy, 'csv': csv},  # never over an input
                  inputs={'model': checkpoint_files(model, epoch), source: listed}, trees={'images': images})
    context = parse_device(ctx, 'ctx') if ctx is None or isinstance(ctx, str) else ctx
    net, meta = load_checkpoint(model, epoch=epoch, ctx=context, features_only=True)
    pre = meta['preprocessing']
    if align is True:
        align = make_aligner(pre.input_size, network=meta['network'], fallback=fallback)
    embedder = Embedder(net, pre, context, min(batch_size, len(items)))
    result = embed_images(embedder, items, center_crop, align, flip, skip_missing, num_workers,
                          progress, report_file=failure_report_path(out))
    result.ignored = ignored
    save_features(out, result, npy, csv, sources=[item.source for item in items])
    return result
