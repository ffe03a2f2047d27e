"""Pieces every stage of the pipeline shares: CLI conventions, image decoding, preprocessing."""
from .cli import UsageError, ArgumentParser, run_cli
from .images import ImageError, read_image
from .preprocessing import Preprocessing

__all__ = ['UsageError', 'ArgumentParser', 'run_cli', 'ImageError', 'read_image', 'Preprocessing']
