"""Checkpoints, imported pretrained weights and exported models live in this folder; this package
reads and writes them. The checkpoint format itself is :mod:`symbols.checkpoint` (re-exported here)."""
from symbols.checkpoint import list_epochs, load_checkpoint, resolve_checkpoint, save_checkpoint

from .api import load_model

__all__ = ['save_checkpoint', 'load_checkpoint', 'resolve_checkpoint', 'list_epochs', 'load_model']
