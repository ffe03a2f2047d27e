"""Batched feature extraction to the ``.mat`` layout the LFW evaluators load.

The engine (``Embedder``, ``embed_images``, the image lists) lives in :mod:`symbols.inference`, shared
with the Python API and training; it is exported here as before."""
from symbols.inference import (Embedder, Extraction, ImageItem, ImageLoadError, embed_images, items_from_list,
                               items_from_pairs, items_from_tree, resolve_list_path)

from .extraction import extract_to_mat, save_features

__all__ = ['Embedder', 'Extraction', 'ImageItem', 'ImageLoadError', 'embed_images', 'extract_to_mat',
           'items_from_list', 'items_from_pairs', 'items_from_tree', 'resolve_list_path',
           'save_features']
