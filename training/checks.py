"""Inputs checked against the run's settings before the first step, so nothing fails an epoch later.

:func:`training.trainer.setup` runs them in this order, each failure one line (:class:`UsageError`, or
:class:`ParameterError` where a parameter is what to change):

- options: :func:`training.config.check_config` (ranges, ``num_epochs`` after ``load_epoch``),
- validators: :func:`check_validators` (``val_pairs``: every pair image found and decodable),
- output: :class:`training.outputs.PrefixLock` (``model_prefix`` writable, no other run on it),
- checkpoint to resume: :func:`training.resume.open_resume_point` (files complete, of one save),
- records (``data_train`` and ``data_val``): :func:`training.data.scan_records` (the ``.idx`` belongs to
  the ``.rec``), then :func:`check_records`: labels ``0..num_classes-1``, image size and channels against
  ``input_size``, the network and ``PREFIX.json``.
"""
import numpy as np

from common.errors import UsageError
from data_tools.dataset_info import dataset_prefix, info_path, records_info

from .errors import ParameterError


def check_records(scan, num_classes, preprocessing, classes_from='', log=None):
    """Compare what a ``.rec`` holds (:class:`training.data.RecordScan`) with the run's settings.

    Parameters
    ----------
    scan : RecordScan
    num_classes : int
        Classes of the network: every label must lie in ``0..num_classes-1``.
    preprocessing : common.preprocessing.Preprocessing
        ``input_size`` must fit inside the records; ``channels`` is what the network takes.
    classes_from : str
        Where ``num_classes`` came from, for the message (e.g. ``' (PREFIX.json)'``).
    log : callable, optional
        Receives notes that are not errors (gray network on colour records, classes without images).

    Raises
    ------
    ParameterError
        ``FILE: label 4 outside 0..3 for num_classes 4 ...``; ``input_size 128 is larger than ...``.
    UsageError
        ``PREFIX.json`` describes other records (size, colour) than the ``.rec`` holds, or the network
        takes colour and the records are gray.
    """
    log = log or (lambda msg: None)
    labels = scan.labels
    low, high = int(labels.min()), int(labels.max())
    outside = labels >= num_classes
    if outside.any():
        first = int(scan.keys[np.flatnonzero(outside)[0]])
        count = int(outside.sum())
        hint = ('; they look numbered from 1, class numbers start at 0 (data_tools/pack_rec.py numbers '
                'them so)' if low == 1 and high == num_classes else '')
        raise ParameterError(lambda n: f'{scan.path}: label {high} outside 0..{num_classes - 1} for '
                                       f'{n("num_classes")} {num_classes}{classes_from} ({count} record(s), '
                                       f'first key {first}; labels in the file run {low}..{high}{hint})')
    used = len(np.unique(labels))
    if used < num_classes:
        log(f'note: {scan.path} has images of {used} of the {num_classes} classes')
    _check_geometry(scan, preprocessing, log)


def check_same_identities(train_rec, val_rec):
    """Refuse validation records whose class numbers name other people than the training records' do.

    Both ``PREFIX.json`` files (:func:`data_tools.dataset_info.records_info`) list ``identities`` in class
    order; records packed by different ``pack_rec.py`` runs (another data set, or the same one with other
    options) can agree on the class count and still mean other identities, which would make ``val_top1``
    silently meaningless. Nothing is compared when either file has no such list (im2rec, insightface).

    Raises
    ------
    ParameterError
        Naming both files and the first class that differs.
    """
    train_ids = records_info(train_rec).get('identities')
    val_ids = records_info(val_rec).get('identities')
    if not train_ids or not val_ids or list(train_ids) == list(val_ids):
        return
    k = next((i for i, (a, b) in enumerate(zip(train_ids, val_ids)) if a != b), min(len(train_ids), len(val_ids)))
    here = train_ids[k] if k < len(train_ids) else 'none'
    there = val_ids[k] if k < len(val_ids) else 'none'
    raise ParameterError(lambda n: f'{n("data_val")} {val_rec} was packed with other identities than '
                                   f'{n("data_train")} {train_rec} (class {k} is {there!r} there, {here!r} here; '
                                   f'{len(val_ids)} vs {len(train_ids)} identities): pack both in one run of '
                                   f'pack_rec.py --val-per-identity N so that their labels agree')


def _check_geometry(scan, preprocessing, log):
    summary = records_info(scan.path)
    record = summary.get('record') or {}
    json_path = info_path(dataset_prefix(scan.path))
    sizes = sorted({(h, w) for h, w, _ in scan.sample_shapes})
    shown = ', '.join(f'{w}x{h}' for h, w in sizes[:3])
    if 'size' in record and any((h, w) != (record['size'],) * 2 for h, w in sizes):
        raise UsageError(f'{json_path} describes {record["size"]}x{record["size"]} records but {scan.path} '
                         f'holds {shown} images: the .json is from another packing (repack, or remove it)')
    channels = scan.channels
    if 'color' in record and channels != [1 if record['color'] == 'gray' else 3]:
        raise UsageError(f'{json_path} describes {record["color"]} records but {scan.path} holds '
                         f'{"/".join(map(str, channels))}-channel images: the .json is from another packing')
    if scan.min_side < preprocessing.input_size:
        side = scan.min_side
        raise ParameterError(lambda n: f'{n("input_size")} {preprocessing.input_size} is larger than the '
                                       f'images in {scan.path} ({shown}): give {n("input_size")} {side} or '
                                       'less, or repack larger')
    if preprocessing.num_channels == 3 and channels == [1]:
        raise UsageError(f'{scan.path} holds gray images but the network takes {preprocessing.channels} '
                         'colour: repack in colour, or train gray')
    if preprocessing.num_channels == 1 and 3 in channels:
        log(f'note: {scan.path} holds colour images; the network reads them as gray')


def check_validators(args, validators):
    """``val_pairs`` needs a validator filling ``val_verification``; each validator's ``check()`` runs now.

    A validator may define ``check()`` (no arguments): it reads its inputs and raises :class:`UsageError`
    for anything that would make it fail after the first epoch (e.g. a pair image that is missing).
    """
    for validator in validators:
        check = getattr(validator, 'check', None)
        if callable(check):
            check()
