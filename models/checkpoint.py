"""The checkpoint format now lives beside the networks, in :mod:`symbols.checkpoint`; this module keeps
``from models.checkpoint import save_checkpoint`` (and the other names) working for existing scripts."""
from symbols.checkpoint import (FORMAT, build_from_metadata, check_checkpoint_files, checkpoint_stem, file_digest,
                                list_epochs, load_checkpoint, load_metadata, read_optimizer_file,
                                read_optimizer_states, resolve_checkpoint, save_checkpoint)

__all__ = ['FORMAT', 'build_from_metadata', 'check_checkpoint_files', 'checkpoint_stem', 'file_digest',
           'list_epochs', 'load_checkpoint', 'load_metadata', 'read_optimizer_file', 'read_optimizer_states',
           'resolve_checkpoint', 'save_checkpoint']
