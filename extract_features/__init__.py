"""Batched feature extraction to the ``.mat`` layout the LFW evaluators load."""
from .extraction import (Embedder, Extraction, ImageItem, ImageLoadError, embed_images,
                         extract_to_mat, items_from_list, items_from_pairs, items_from_tree,
                         resolve_list_path, save_features)

__all__ = ['Embedder', 'Extraction', 'ImageItem', 'ImageLoadError', 'embed_images', 'extract_to_mat',
           'items_from_list', 'items_from_pairs', 'items_from_tree', 'resolve_list_path',
           'save_features']
