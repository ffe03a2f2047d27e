"""Gallery / probe splits of one features file by identity (known identities enrolled, the rest unknown)."""
import numpy as np

from common.checks import check_number
from common.errors import ParameterError
from common.features_mat import read_features, write_features
from common.fileio import check_outputs
from identification.gallery import identity_of


def split_known_unknown(labels, unknown_last, probes_per_identity):
    """Rows of a gallery and a probe set.

    The identities (label folders) are sorted; the last ``unknown_last`` are *unknown*: all their images are
    probes. Of every *known* identity, the last ``probes_per_identity`` images (by label) are probes, the
    rest enrol. (Issue 13's PubFig83 protocol: 63 known, 20 unknown, 20 probes per known identity.)

    Returns
    -------
    (array, array, dict)
        Gallery rows, probe rows, counts (``known``, ``unknown``, ``gallery``, ``probe``).

    Raises
    ------
    UsageError
        ``unknown_last`` not leaving at least 2 known identities; a known identity with no more than
        ``probes_per_identity`` images (it would enrol nothing; named with its count).
    """
    check_number(unknown_last, 'unknown_last', minimum=0, integer=True)
    check_number(probes_per_identity, 'probes_per_identity', minimum=0, integer=True)
    by_identity = {}
    for row, label in enumerate(labels):
        by_identity.setdefault(identity_of(label), []).append(row)
    names = sorted(by_identity)
    if unknown_last > len(names) - 2:
        raise ParameterError(lambda n: f'{n("unknown_last")} must leave at least 2 known identities: '
                                       f'{len(names)} identities, {n("unknown_last")} {unknown_last}')
    known = names[:len(names) - unknown_last]
    short = [(n, len(by_identity[n])) for n in known if len(by_identity[n]) <= probes_per_identity]
    if short:
        raise ParameterError(lambda n: f'{len(short)} known identities have <= {probes_per_identity} images and '
                                       f'would enrol none, e.g. {short[0][0]!r} ({short[0][1]} images); lower '
                                       f'{n("probes_per_identity")}')
    gallery, probe = [], []
    for n in names:
        rows = sorted(by_identity[n], key=lambda r: labels[r])
        if n not in known:
            probe += rows
        elif probes_per_identity:
            gallery += rows[:-probes_per_identity]
            probe += rows[-probes_per_identity:]
        else:
            gallery += rows
    counts = {'known': len(known), 'unknown': unknown_last, 'gallery': len(gallery), 'probe': len(probe)}
    return np.array(gallery, np.int64), np.array(probe, np.int64), counts


def split_features(features_path, gallery_out, probe_out, unknown_last=20, probes_per_identity=20):
    """Write the :func:`split_known_unknown` gallery and probe ``.mat`` files of a features ``.mat``."""
    check_outputs({'gallery_out': gallery_out, 'probe_out': probe_out}, inputs={'features_path': features_path})
    data, labels = read_features(features_path, name='features_path')
    g, p, counts = split_known_unknown(labels, unknown_last, probes_per_identity)
    for rows, out in ((g, gallery_out), (p, probe_out)):
        write_features(out, data[rows], [labels[r] for r in rows])
    print(f'{features_path}: {counts["known"]} known identities ({counts["gallery"]} gallery images, '
          f'{probes_per_identity} probes each), {counts["unknown"]} unknown -> {counts["probe"]} probes; '
          f'wrote {gallery_out}, {probe_out}')
    return counts
