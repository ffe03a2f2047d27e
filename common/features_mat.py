"""The features file: its one writer (extraction) and one reader (evaluation and identification).

A MATLAB v5 ``.mat`` -- the layout the seed's MATLAB evaluator loads, also read by ``lfw_eval.m``:

* ``data``: N x D ``single`` (float32), one feature per row (D = 256 for LightCNN);
* ``label``: N x 1 cell of strings, the image of each row (``Name/Name_0001.jpg``);
* ``skipped``, ``skipped_reason``: K x 1 cells, images that could not be embedded and why (0 x 1 when
  none). Readers need only ``data`` and ``label``; a padded char matrix is accepted as ``label`` too.

It lives in :mod:`common` so that the evaluators read it without importing MXNet.
"""
import os

import numpy as np
import scipy.io

from common.errors import ParameterError, UsageError
from common.fileio import atomic_write
from common.textio import short_printable


def cell_column(strings):
    """Strings as an N x 1 object array, which ``savemat`` writes as an N x 1 MATLAB cell."""
    cell = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        cell[i, 0] = str(s)
    return cell


def write_features(path, data, labels, skipped=()):
    """Write a features ``.mat`` atomically (a killed run leaves no half file).

    Parameters
    ----------
    path : str or path-like
    data : array (N, D)
        Stored as float32.
    labels : sequence of N str
    skipped : sequence of (label, reason)
        Images left out, stored as ``skipped`` and ``skipped_reason``.
    """
    skipped = list(skipped)
    mat = {'data': np.ascontiguousarray(data, dtype=np.float32),
           'label': cell_column(labels),
           'skipped': cell_column([label for label, _ in skipped]),
           'skipped_reason': cell_column([reason for _, reason in skipped])}
    with atomic_write(path) as f:
        scipy.io.savemat(f, mat, format='5', oned_as='column')


def _cell_strings(value):
    """Labels from ``loadmat``: a cell (object array of 1-element str arrays) or a padded char matrix."""
    if value.dtype == object:
        out = []
        for item in value.ravel(order='F'):
            item = np.asarray(item).ravel()
            out.append(str(item[0]) if item.size else '')
        return out
    if value.dtype.kind in 'US':
        return [str(s).rstrip() for s in np.atleast_1d(value).ravel()]
    raise UsageError(f'"label" must be a cell of strings, got {value.dtype} {value.shape}')


def read_features(path, with_skipped=False, name=None):
    """Read ``data`` (N x D float32) and ``label`` (N strings) from a features ``.mat``.

    With ``with_skipped``, also the images the extraction left out: ``[(label, reason)]`` from the
    ``skipped`` and ``skipped_reason`` cells (empty when the file has none), as a third item. With
    ``name`` (the caller's parameter holding ``path``), a file without rows is refused, naming it.

    Raises
    ------
    UsageError
        Missing/unreadable file, missing variables, N mismatch, non-finite values; no rows (with ``name``, a
        :class:`~common.errors.ParameterError`).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UsageError(f'features file not found: {path}')
    try:
        mat = scipy.io.loadmat(path)
    except Exception as err:  # scipy raises several types for corrupt/unsupported files
        raise UsageError(f'cannot read {path} as a .mat file: {short_printable(err)}') from None
    missing = [k for k in ('data', 'label') if k not in mat]
    if missing:
        raise UsageError(f'{path} lacks variable(s) {", ".join(missing)} (expected data N x D, label N x 1 cell)')
    data, labels = np.asarray(mat['data']), _cell_strings(mat['label'])
    if data.ndim != 2 or data.shape[0] != len(labels):
        raise UsageError(f'{path}: data is {data.shape} but label has {len(labels)} entries '
                         f'(expected data N x D with one label per row)')
    if data.dtype.kind not in 'fiu':
        raise UsageError(f'{path}: data must be numeric, got {data.dtype}')
    bad = ~np.isfinite(data).all(axis=1)
    if bad.any():
        raise UsageError(f'{path}: {int(bad.sum())} feature rows hold NaN/inf, e.g. {labels[int(np.argmax(bad))]}')
    data = data.astype(np.float32, copy=False)
    if name is not None and not len(data):
        raise ParameterError(lambda n: f'{n(name)} {path} holds no feature rows (0 images: nothing to work on)')
    if not with_skipped:
        return data, labels
    skipped = _cell_strings(mat['skipped']) if 'skipped' in mat and mat['skipped'].size else []
    reasons = (_cell_strings(mat['skipped_reason']) if 'skipped_reason' in mat and mat['skipped_reason'].size
               else [])
    reasons += ['skipped at extraction'] * (len(skipped) - len(reasons))
    return data, labels, list(zip(skipped, reasons))
