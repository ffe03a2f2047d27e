"""Gallery and probe sets from features ``.mat`` files: the identity of a label, splits by image index.

The identity of an image is the folder part of its label (``Name/Name_0001.jpg`` -> ``Name``), after the
same normalisation as verification (:func:`common.verification.image_key`). Used by the cosine
identification of ``identify.py`` (:mod:`identification.cosine`) and by the classifiers
(:mod:`identification.report`).
"""
import numpy as np

from common.errors import ParameterError, UsageError
from common.features_mat import read_features
from common.verification import image_key


def identity_of(label):
    """The identity folder of a label; UsageError for labels without one."""
    key = image_key(label)
    if '/' not in key:
        raise UsageError(f'label {label!r} has no identity folder (expected Name/Name_0001.jpg)')
    return key.split('/')[0]


def split_by_index(labels, gallery_per_identity, unknown_fraction=0.0, seed=0):
    """Split one set of images into gallery and probe rows.

    Per identity the images are sorted by label; the first ``gallery_per_identity`` go to the gallery, the
    rest are probes. A ``unknown_fraction`` of the identities (drawn with ``seed``) is left out of the gallery
    entirely, all their images becoming unknown probes for the open-set test.

    Returns
    -------
    (array, array, dict)
        Gallery rows, probe rows, and counts (``identities``, ``unknown_identities``,
        ``gallery_only_identities``: known identities with no image left to probe).
    """
    if gallery_per_identity < 1:
        raise ParameterError(lambda n: f'{n("gallery_per_identity")} must be >= 1, got {gallery_per_identity}')
    if not 0.0 <= unknown_fraction < 1.0:
        raise ParameterError(lambda n: f'{n("unknown_fraction")} must be in [0, 1), got {unknown_fraction}')
    by_identity = {}
    for row, label in enumerate(labels):
        by_identity.setdefault(identity_of(label), []).append(row)
    names = sorted(by_identity)
    n_unknown = int(round(unknown_fraction * len(names)))
    unknown = set(np.random.default_rng(seed).permutation(names)[:n_unknown].tolist())
    gallery, probe, gallery_only = [], [], 0
    for name in names:
        rows = sorted(by_identity[name], key=lambda r: labels[r])
        if name in unknown:
            probe += rows
            continue
        gallery += rows[:gallery_per_identity]
        probe += rows[gallery_per_identity:]
        gallery_only += len(rows) <= gallery_per_identity
    if not gallery or not probe:
        raise ParameterError(lambda n: f'splitting {len(labels)} images with {n("gallery_per_identity")} '
                                       f'{gallery_per_identity} leaves {len(gallery)} gallery and {len(probe)} '
                                       f'probe images')
    counts = {'identities': len(names), 'unknown_identities': n_unknown, 'gallery_only_identities': gallery_only}
    return np.array(gallery), np.array(probe), counts


def check_gallery_probe(probe_path=None, gallery_per_identity=None, unknown_fraction=0.0, far=None):
    """The choice of probes :func:`load_gallery_probe` takes, and the target ``far``, checked before any work.

    Raises
    ------
    ParameterError
        Neither or both of ``probe_path`` and ``gallery_per_identity``; ``unknown_fraction`` with a
        ``probe_path``; ``far`` (unless ``None``) outside [0, 1].
    """
    if (probe_path is None) == (gallery_per_identity is None):
        raise ParameterError(lambda n: f'give either {n("probe_path")} P.mat or {n("gallery_per_identity")} K '
                                       f'(to split {n("gallery_path")} by image index)')
    if probe_path is not None and unknown_fraction:
        raise ParameterError(lambda n: f'{n("unknown_fraction")} only applies when splitting one file '
                                       f'({n("gallery_per_identity")})')
    if far is not None and not 0.0 <= far <= 1.0:
        raise ParameterError(lambda n: f'{n("far")} must be in [0, 1], got {far}')


def load_gallery_probe(gallery_path, probe_path=None, gallery_per_identity=None, unknown_fraction=0.0, seed=0):
    """Gallery and probe features with identities: two ``.mat`` files, or one split by :func:`split_by_index`.

    Returns
    -------
    (gallery, gallery_ids, probe, probe_ids, probe_labels, split, skipped)
        ``split`` holds the :func:`split_by_index` counts, ``None`` for two files; ``skipped`` the
        ``(label, reason)`` of the images the features files record as left out at extraction.
    """
    data, labels, skipped = read_features(gallery_path, with_skipped=True, name='gallery_path')
    ids = np.array([identity_of(label) for label in labels])
    if probe_path is None:
        g_rows, p_rows, split = split_by_index(labels, gallery_per_identity, unknown_fraction, seed)
        return (data[g_rows], ids[g_rows], data[p_rows], ids[p_rows], [labels[r] for r in p_rows], split,
                skipped)
    probe, probe_labels, probe_skipped = read_features(probe_path, with_skipped=True, name='probe_path')
    if probe.shape[1] != data.shape[1]:
        raise UsageError(f'gallery features are {data.shape[1]}-D but probe features {probe.shape[1]}-D')
    return (data, ids, probe, np.array([identity_of(label) for label in probe_labels]), probe_labels, None,
            skipped + probe_skipped)


def skipped_lines(skipped, examples=5):
    """Lines naming the images a features file records as left out at extraction (none: no lines).

    Those images take part neither as gallery nor as probe; with ``--gallery-per-identity`` the next
    image of the identity (by label) enrols in place of a skipped one.
    """
    if not skipped:
        return []
    lines = [f'{len(skipped)} image(s) were skipped at extraction and take no part (recorded in the .mat):']
    lines += [f'  {label}: {reason}' for label, reason in skipped[:examples]]
    if len(skipped) > examples:
        lines.append(f'  ... and {len(skipped) - examples} more (all in the JSON: skipped_at_extraction)')
    return lines
