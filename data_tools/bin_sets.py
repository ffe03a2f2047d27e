"""insightface verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``): read, write, make from pairs.

Format (insightface ``recognition/common/verification.py``): one pickle of ``(bins, issame_list)``. ``bins``
holds ``2 N`` encoded images (JPEG or PNG bytes, as read from the image files), pair ``k`` being
``bins[2k]`` and ``bins[2k + 1]``; ``issame_list`` holds the ``N`` booleans. No names, no folds:
insightface scores a set with ``sklearn.model_selection.KFold(n_splits=10, shuffle=False)``, i.e. 10
consecutive blocks of pairs (:func:`bin_folds`), which for LFW's ``pairs.txt`` are exactly its 10 folds.

Files in the wild come from Python 3 (images as ``bytes``) and from Python 2 (images as ``str``, which
Python 3 reads as text unless told otherwise); some hold numpy arrays. :func:`load_bin` reads all of them
through :mod:`common.safe_pickle` with ``encoding='latin1'`` (byte-preserving; numpy's own advice for
Python 2 pickles), resolving only numpy's array/scalar rebuilders: a crafted ``.bin`` naming ``os.system``
or any other callable is refused before anything is called.

No MXNet here: making and reading a set needs only the standard library and numpy.
"""
import os
import pickle

import numpy as np

from common.errors import UsageError
from common.fileio import atomic_write, check_output_paths, check_outputs
from common.images import check_image_root
from common.safe_pickle import numpy_array_globals, restricted_load
from data_tools.pairs import read_pairs

BIN_FOLDS = 10


def _as_bytes(item, k, path):
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, str):          # a Python 2 str read with encoding='latin1': the same bytes back
        return item.encode('latin1')
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 1:
        return item.tobytes()
    if isinstance(item, np.bytes_):
        return bytes(item)
    raise UsageError(f'{path}: image {k} is a {type(item).__name__}'
                     f'{f" {item.dtype} {item.shape}" if isinstance(item, np.ndarray) else ""}, expected the '
                     'encoded bytes of an image (insightface .bin: pickle of (bins, issame_list))')


def _as_bool(value, k, path):
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise UsageError(f'{path}: issame_list[{k}] is {value!r}, expected True/False (or 1/0)')


def load_bin(path):
    """Read an insightface verification ``.bin``.

    Parameters
    ----------
    path : str
        Written by insightface (Python 2 or 3), by other tools that follow it, or by :func:`write_bin`.

    Returns
    -------
    images : list of bytes
        The ``2 N`` encoded images, pair ``k`` = ``images[2k], images[2k + 1]``.
    issame : numpy.ndarray of bool, shape (N,)

    Raises
    ------
    UsageError
        Missing file, not a pickle, wrong structure (the message says what was found), or a pickle naming a
        global outside numpy's array rebuilders (:class:`~common.safe_pickle.UnsafePickleError`).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UsageError(f'.bin verification set not found: {path}')
    with open(path, 'rb') as f:
        obj = restricted_load(f, numpy_array_globals(), source=f'{path} (insightface .bin)', encoding='latin1')
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise UsageError(f'{path}: expected a pickle of (bins, issame_list), got a {type(obj).__name__}'
                         + (f' of {len(obj)} items' if isinstance(obj, (tuple, list)) else ''))
    bins, issame = obj
    if not isinstance(bins, (list, tuple, np.ndarray)) or not isinstance(issame, (list, tuple, np.ndarray)):
        raise UsageError(f'{path}: expected (bins, issame_list) as two sequences, got '
                         f'({type(bins).__name__}, {type(issame).__name__})')
    images = [_as_bytes(item, k, path) for k, item in enumerate(bins)]
    values = issame.ravel().tolist() if isinstance(issame, np.ndarray) else list(issame)
    issame = np.array([_as_bool(v, k, path) for k, v in enumerate(values)], dtype=bool)
    if len(images) != 2 * len(issame):
        raise UsageError(f'{path}: {len(images)} images for {len(issame)} pairs (a .bin holds two images per '
                         'pair, pair by pair)')
    if not len(issame):
        raise UsageError(f'{path}: holds no pairs')
    empty = [k for k, img in enumerate(images) if not img]
    if empty:
        raise UsageError(f'{path}: {len(empty)} empty image(s), e.g. image {empty[0]} (pair {empty[0] // 2})')
    return images, issame


def bin_folds(n_pairs, folds=BIN_FOLDS):
    """Fold id of each pair as insightface scores a ``.bin``: ``KFold(folds, shuffle=False)`` blocks.

    The first ``n_pairs % folds`` folds hold one pair more, as in scikit-learn.
    """
    if n_pairs < folds:
        raise UsageError(f'{n_pairs} pairs cannot fill {folds} folds')
    return np.concatenate([np.full(len(block), k, np.int64)
                           for k, block in enumerate(np.array_split(np.arange(n_pairs), folds))])


def write_bin(path, images, issame, protocol=pickle.HIGHEST_PROTOCOL):
    """Write ``(images, issame)`` as an insightface ``.bin`` (under a temporary name, then renamed).

    ``images`` are encoded image bytes, two per pair. The same ``bytes`` object passed twice is pickled once
    (pickle's memo), so an image shared by several pairs costs its bytes once in the file.
    """
    images, issame = list(images), [bool(v) for v in issame]
    if len(images) != 2 * len(issame):
        raise UsageError(f'{len(images)} images for {len(issame)} pairs: a .bin needs two images per pair')
    bad = [k for k, img in enumerate(images) if not isinstance(img, (bytes, bytearray)) or not img]
    if bad:
        raise UsageError(f'image {bad[0]} is not non-empty encoded bytes ({len(bad)} such)')
    check_output_paths(path)
    with atomic_write(path) as f:
        pickle.dump((images, issame), f, protocol=protocol)
    return path


def make_bin(pairs_path, images_root, out):
    """Write the pairs of an LFW ``pairs.txt`` (or ``pair.label``) over an image tree as a ``.bin``.

    Each image is stored as the bytes of its file (not re-encoded), as insightface's own scripts do.

    Returns
    -------
    dict
        ``pairs``, ``same``, ``different``, ``distinct_images``, ``identities``, ``bytes`` (file size),
        ``folds`` of the pairs file and ``fold_note`` when the ``.bin`` (always scored in
        :data:`BIN_FOLDS` consecutive folds) cannot keep its fold layout.

    Raises
    ------
    UsageError
        Unreadable pairs file; images the pairs name that are missing under ``images_root`` (count and
        examples); a set that is all same or all different pairs.
    """
    check_image_root(images_root, 'images_root')
    pairs = read_pairs(pairs_path)
    paths = list(dict.fromkeys(p for pair in pairs for p in (pair.path1, pair.path2)))
    check_outputs({'out': out}, inputs={'pairs_path': [pairs_path] + [os.path.join(images_root, p) for p in paths]})
    missing = [p for p in paths if not os.path.isfile(os.path.join(images_root, p))]
    if missing:
        raise UsageError(f'{len(missing)} of the {len(paths)} images named by {pairs_path} are not under '
                         f'{images_root}, e.g. {", ".join(missing[:5])}')
    data = {}
    for p in paths:
        with open(os.path.join(images_root, p), 'rb') as f:
            data[p] = f.read()
    empty = [p for p in paths if not data[p]]
    if empty:
        raise UsageError(f'{len(empty)} zero-byte image file(s) under {images_root}, e.g. {empty[0]}')
    issame = [p.issame for p in pairs]
    if all(issame) or not any(issame):
        raise UsageError(f'{pairs_path}: need both same and different pairs')
    write_bin(out, [data[p] for pair in pairs for p in (pair.path1, pair.path2)], issame)
    folds = np.array([p.fold for p in pairs])
    summary = {'out': out, 'pairs': len(pairs), 'same': int(sum(issame)), 'different': int(len(pairs) - sum(issame)),
               'distinct_images': len(paths), 'identities': len({p.split('/')[0] for p in paths}),
               'folds': int(len(np.unique(folds))), 'bytes': os.path.getsize(out)}
    if len(pairs) >= BIN_FOLDS and not np.array_equal(folds, bin_folds(len(pairs))):
        summary['fold_note'] = (f'{pairs_path} has {summary["folds"]} folds; a .bin keeps no folds and is scored '
                                f'in {BIN_FOLDS} consecutive blocks of pairs (insightface), so its fold '
                                'accuracies differ from those of the pairs file')
    return summary
