"""The packing summary ``PREFIX.json``: its one writer and reader, and how split files are named.

:func:`data_tools.packing.pack_records` writes, beside ``PREFIX.rec/.idx/.lst`` (training split),
``PREFIX_val.*`` (images held out within training identities) and ``PREFIX_heldout.*`` (whole identities
held out for verification), one ``PREFIX.json``: ``format`` (:data:`FORMAT`), ``num_classes``,
``identities``, ``record`` (``size``, ``color``, ``channels``, ``encoding``, ``quality``), ``splits``,
``heldout_identities``, skipped files and the options. Training reads the class count and the record
geometry from it, ``make_pairs.py --identities`` the held-out names.

The ``_val`` split shares the training labels, so its records find the summary of their training
split: ``data/casia_val.rec`` -> ``data/casia.json`` (unless a ``data/casia_val.json`` exists).
"""
import json
import os

from common.errors import UsageError
from common.fileio import atomic_write

FORMAT = 'lightcnn-pack/1'
SPLITS = ('train', 'val', 'heldout')
SPLIT_SUFFIX = {'train': '', 'val': '_val', 'heldout': '_heldout'}


def split_prefix(prefix, split='train'):
    """``data/casia`` + ``'val'`` -> ``data/casia_val``: the prefix of one split's files."""
    if split not in SPLIT_SUFFIX:
        raise ValueError(f'split must be one of {SPLITS}, not {split!r}')
    return os.fspath(prefix) + SPLIT_SUFFIX[split]


def info_path(prefix):
    """``PREFIX.json``."""
    return os.fspath(prefix) + '.json'


def write_dataset_info(prefix, info):
    """Write ``PREFIX.json`` atomically (UTF-8, identity names as they are)."""
    with atomic_write(info_path(prefix), 'w', encoding='utf-8') as f:
        json.dump(info, f, indent=1, ensure_ascii=False)


def read_dataset_info(path):
    """The summary in a packing ``.json`` file.

    Raises
    ------
    UsageError
        Unreadable, or not a JSON object.
    """
    try:
        with open(path, encoding='utf-8-sig') as f:  # a BOM from a hand edit is dropped, as by common.textio
            info = json.load(f)
    except (OSError, ValueError) as err:
        raise UsageError(f'cannot read packing summary {path}: {err}') from None
    if not isinstance(info, dict):
        raise UsageError(f'{path} is not a packing summary (expected a JSON object)')
    return info


def dataset_prefix(rec_path):
    """``data/casia.rec`` and ``data/casia_val.rec`` -> ``data/casia``: where the summary of a ``.rec`` lives."""
    stem = os.fspath(rec_path)
    if stem.endswith('.rec'):
        stem = stem[:-4]
    val = SPLIT_SUFFIX['val']
    if stem.endswith(val) and not os.path.exists(info_path(stem)):
        stem = stem[:-len(val)]
    return stem


def records_info(rec_path):
    """The summary beside a ``.rec`` (see :func:`dataset_prefix`), or ``{}`` when there is none."""
    path = info_path(dataset_prefix(rec_path))
    if not os.path.exists(path):
        return {}
    return read_dataset_info(path)
