"""Verification pairs: read LFW ``pairs.txt`` / the seed's ``pair.label``, make LFW-format pairs from any tree.

Formats read by :func:`read_pairs` (detected from the first non-blank line):

* **LFW** ``pairs.txt``: header ``FOLDS<TAB>PER_FOLD`` (or one number ``N`` = one fold, as in
  ``pairsDevTest.txt``), then per fold ``PER_FOLD`` matched lines ``name i j`` followed by ``PER_FOLD``
  mismatched lines ``name1 i name2 j``. An integer index ``i`` means ``name/name_%04d.jpg`` (LFW naming).
* **pair.label** (the seed's): ``1 Name/Name_0001.jpg Name/Name_0004.jpg`` -- label 1 same, 0 different,
  explicit relative paths, no folds: split into 10 consecutive folds.

Fields are tab-separated when the line holds a tab (so identity names may contain spaces, as in
PubFig83's ``Adam Sandler``), otherwise whitespace-separated.

Trees whose files are not named ``Name_%04d.jpg`` (PubFig83 ``Name/103.jpg``, ORL ``s1/3.pgm``):
:func:`make_pairs` writes the *file name* in place of the index (``Adam Sandler<TAB>103.jpg<TAB>8.jpg``),
and :func:`read_pairs` maps any non-integer index field to ``name/<field>``. The file stays LFW-shaped
(header, folds, 3/4 fields), needs no image root to resolve, and is byte-for-byte LFW where the tree
uses LFW names.
"""
import os
import random
import re
from collections import namedtuple

from common.errors import ParameterError, UsageError
from common.checks import check_number
from common.fileio import atomic_write, check_output_path
from common.images import IMAGE_EXTENSIONS, check_image_root, is_image_file
from common.textio import check_line_field, read_lines
from data_tools.dataset_info import read_dataset_info


Pair = namedtuple('Pair', 'path1 path2 issame fold')
Pair.__doc__ = 'One verification pair: two image paths relative to the image root, same identity?, fold.'

_LABEL_FOLDS = 10
_LFW_NAME = '{name}/{name}_{index:04d}{ext}'


def _fields(line):
    return [f.strip() for f in line.split('\t')] if '\t' in line else line.split()


def _is_int(text):
    return re.fullmatch(r'[0-9]+', text) is not None


def _lfw_path(name, index, ext):
    """Relative path of ``index`` in ``name``: LFW naming for integers, a literal file name otherwise."""
    if _is_int(index):
        return _LFW_NAME.format(name=name, index=int(index), ext=ext)
    return f'{name}/{index}'


def read_pairs(path, ext='.jpg'):
    """Read verification pairs from an LFW ``pairs.txt`` or a seed ``pair.label`` file.

    Parameters
    ----------
    path : str
        The pairs file.
    ext : str
        Extension for LFW integer indices (``Name/Name_0001`` + ext).

    Returns
    -------
    list of Pair
        ``(path1, path2, issame, fold)`` tuples, paths relative to the image root with ``/``.

    Raises
    ------
    UsageError
        Missing/empty file, or a malformed line (message names the line number).

    The file is read by :func:`common.textio.read_lines` (a UTF-8 BOM and CRLF line ends are dropped).
    """
    lines = [(n, line) for n, line in read_lines(path, 'pairs file')
             if line.strip() and not line.lstrip().startswith('#')]
    if not lines:
        raise UsageError(f'pairs file {path} is empty')
    first = _fields(lines[0][1])
    if 1 <= len(first) <= 2 and all(_is_int(f) for f in first):
        return _read_lfw(path, lines, ext)
    return _read_label(path, lines)


def _read_lfw(path, lines, ext):
    header_line, header = lines[0][0], [int(f) for f in _fields(lines[0][1])]
    folds, per_fold = (1, header[0]) if len(header) == 1 else header
    if folds < 1 or per_fold < 1:
        raise UsageError(f'{path}:{header_line}: header needs positive fold count and pairs per fold')
    body = lines[1:]
    expected = folds * 2 * per_fold
    pairs = []
    for k, (n, line) in enumerate(body):
        fields = _fields(line)
        if len(fields) == 3:
            name, i, j = fields
            pair = (_lfw_path(name, i, ext), _lfw_path(name, j, ext), True)
        elif len(fields) == 4:
            name1, i, name2, j = fields
            pair = (_lfw_path(name1, i, ext), _lfw_path(name2, j, ext), False)
        else:
            raise UsageError(f'{path}:{n}: expected "name i j" or "name1 i name2 j" '
                             f'(tab-separated if names hold spaces), got {len(fields)} fields: {line!r}')
        if k >= expected:
            raise UsageError(f'{path}:{n}: more pairs than the header promises '
                             f'({folds} folds x 2 x {per_fold} = {expected})')
        pairs.append(Pair(*pair, k // (2 * per_fold)))
    if len(pairs) != expected:
        raise UsageError(f'{path}: header line {header_line} promises {folds} folds x 2 x {per_fold} '
                         f'= {expected} pairs, found {len(pairs)}')
    return pairs


def _read_label(path, lines):
    rows = []
    for n, line in lines:
        fields = _fields(line)
        if len(fields) != 3 or fields[0] not in ('0', '1'):
            raise UsageError(f'{path}:{n}: expected "LABEL path1 path2" with LABEL 1 (same) or 0 '
                             f'(different), or an LFW header "10<TAB>300" on the first line: {line!r}')
        rows.append((fields[1], fields[2], fields[0] == '1'))
    total = len(rows)
    return [Pair(a, b, same, k * _LABEL_FOLDS // total) for k, (a, b, same) in enumerate(rows)]


# --------------------------------------------------------------------------------------------- making
def identities_from(path):
    """Identity names from a ``pack_records`` summary (its held-out identities) or a text file, one per line."""
    if path.endswith('.json'):
        names = read_dataset_info(path).get('heldout_identities')
        if not names:
            raise UsageError(f'{path} lists no held-out identities (pack with pack_rec.py --val-identities)')
        return names
    names = [line.strip() for _, line in read_lines(path, 'identities file') if line.strip()]
    if not names:
        raise UsageError(f'{path} lists no identities')
    return names


def list_identities(images_root):
    """``{identity: sorted image file names}`` for the identity folders directly under ``images_root``."""
    check_image_root(images_root, 'images_root')
    identities = {}
    for name in sorted(os.listdir(images_root)):
        folder = os.path.join(images_root, name)
        if not os.path.isdir(folder):
            continue
        files = sorted(f for f in os.listdir(folder)
                       if is_image_file(f) and os.path.isfile(os.path.join(folder, f)))
        if files:
            identities[name] = files
    if not identities:
        raise UsageError(f'no identity folders with images ({", ".join(IMAGE_EXTENSIONS)}) under {images_root}')
    return identities


def _index_field(name, filename):
    """Integer index when the file follows LFW naming (``name_0003.jpg`` -> ``3``), else the file name."""
    m = re.fullmatch(re.escape(name) + r'_([0-9]{4})\.jpg', filename)
    return str(int(m.group(1))) if m else filename


def make_pairs(images_root, folds=10, per_fold=300, seed=0, identities=None):
    """Draw LFW-style verification pairs from a ``identity/image`` tree.

    As in LFW View 2, folds are identity-disjoint: identities are shuffled (``seed``) and dealt
    round-robin to the folds; each fold gets ``per_fold`` distinct matched pairs (an identity with at
    least two images, chosen uniformly, then two of its images) and ``per_fold`` distinct mismatched
    pairs (two identities of the fold, one image each). Same tree + seed -> same pairs.

    ``identities`` restricts the draw to those folder names (e.g. the identities ``pack_records`` held out).

    Returns
    -------
    list of Pair
        Fold by fold, matched then mismatched, each block sorted like LFW's ``pairs.txt``.

    Raises
    ------
    UsageError
        When a fold cannot hold ``per_fold`` distinct pairs (names the maximum to ask for).
    """
    check_number(folds, 'folds', minimum=1, integer=True)
    check_number(per_fold, 'per_fold', minimum=1, integer=True)
    check_number(seed, 'seed', integer=True)
    found = list_identities(images_root)
    if identities is not None:
        missing = sorted(set(identities) - set(found))
        if missing:
            raise UsageError(f'{len(missing)} requested identities have no image folder under {images_root}, '
                             f'e.g. {missing[0]!r}')
        found = {n: found[n] for n in identities}
    identities = found
    names = sorted(identities)
    if len(names) < 2 * folds:
        raise ParameterError(lambda n: f'{len(names)} identities under {images_root} cannot fill {folds} '
                                       f'identity-disjoint folds (need at least 2 per fold); use {n("folds")} '
                                       f'{max(1, len(names) // 2)} or fewer')
    rng = random.Random(seed)
    rng.shuffle(names)
    pairs = []
    for fold in range(folds):
        members = sorted(names[fold::folds])
        matched = _draw_matched(rng, members, identities, per_fold, fold)
        mismatched = _draw_mismatched(rng, members, identities, per_fold, fold)
        pairs += [Pair(f'{n}/{a}', f'{n}/{b}', True, fold) for n, a, b in sorted(matched)]
        pairs += [Pair(f'{n1}/{a}', f'{n2}/{b}', False, fold) for n1, a, n2, b in sorted(mismatched)]
    return pairs


MIN_IDENTITIES_PER_FOLD = 5


def few_identities_warning(n_identities, folds):
    """A warning (str) when identity-disjoint folds get too few identities to be honest, else ``None``.

    With ``m`` identities in a fold, its mismatched pairs come from only ``m (m - 1) / 2`` pairs of people and its
    matched pairs from ``m`` people: with 2 per fold every mismatched pair of a fold is the same two people, and
    the fold accuracies measure those few people, not the model. Below :data:`MIN_IDENTITIES_PER_FOLD`
    (5 people, 10 pairs of people per fold) the numbers are flagged.
    """
    per_fold = n_identities // folds
    if per_fold >= MIN_IDENTITIES_PER_FOLD:
        return None
    people_pairs = per_fold * (per_fold - 1) // 2
    return (f'{n_identities} identities in {folds} folds = {per_fold}'
            f'{"-" + str(per_fold + 1) if n_identities % folds else ""} per fold: the mismatched pairs of a fold '
            f'come from only {people_pairs} pair{"s" if people_pairs != 1 else ""} of people'
            f'{" (every one is the same two people)" if per_fold == 2 else ""}, so fold accuracies describe a '
            f'handful of people. Use at least {MIN_IDENTITIES_PER_FOLD} identities per fold: '
            f'--folds {max(1, n_identities // MIN_IDENTITIES_PER_FOLD)} or fewer, or '
            f'{MIN_IDENTITIES_PER_FOLD * folds} identities for {folds} folds')


def pairs_report(pairs):
    """What a set of pairs really measures: counts of pairs, distinct identities and images, per fold too.

    Returns
    -------
    dict
        ``pairs``, ``same``, ``different``, ``folds``, ``identities``, ``images`` and ``per_fold`` (list of
        ``{fold, identities, images, people_pairs}``: distinct identities and images of the fold, distinct
        pairs of people among its mismatched pairs).
    """
    def who(path):
        return path.replace('\\', '/').rpartition('/')[0]

    per_fold = []
    for fold in sorted({p.fold for p in pairs}):
        ps = [p for p in pairs if p.fold == fold]
        per_fold.append({'fold': int(fold), 'identities': len({who(q) for p in ps for q in p[:2]}),
                         'images': len({q for p in ps for q in p[:2]}),
                         'people_pairs': len({tuple(sorted((who(p.path1), who(p.path2)))) for p in ps
                                              if not p.issame})})
    return {'pairs': len(pairs), 'same': sum(p.issame for p in pairs),
            'different': sum(not p.issame for p in pairs), 'folds': len(per_fold),
            'identities': len({who(q) for p in pairs for q in p[:2]}),
            'images': len({q for p in pairs for q in p[:2]}), 'per_fold': per_fold}


def _draw_matched(rng, members, identities, per_fold, fold):
    eligible = [n for n in members if len(identities[n]) >= 2]
    possible = sum(len(identities[n]) * (len(identities[n]) - 1) // 2 for n in eligible)
    if possible < per_fold:
        raise ParameterError(lambda n: f'fold {fold + 1} can hold only {possible} distinct matched pairs '
                                       f'(identities with >= 2 images); use a smaller {n("per_fold")} or fewer '
                                       f'{n("folds")}')
    if per_fold * 2 > possible:  # dense: enumerate and sample, rejection would stall
        every = [(n, a, b) for n in eligible for k, a in enumerate(identities[n]) for b in identities[n][k + 1:]]
        return rng.sample(every, per_fold)
    chosen = set()
    while len(chosen) < per_fold:
        name = rng.choice(eligible)
        a, b = sorted(rng.sample(identities[name], 2))
        chosen.add((name, a, b))
    return chosen


def _draw_mismatched(rng, members, identities, per_fold, fold):
    total = sum(len(identities[n]) for n in members)
    possible = (total * total - sum(len(identities[n]) ** 2 for n in members)) // 2
    if possible < per_fold:
        raise ParameterError(lambda n: f'fold {fold + 1} can hold only {possible} distinct mismatched pairs; '
                                       f'use a smaller {n("per_fold")} or fewer {n("folds")}')
    if per_fold * 2 > possible:
        every = [(n1, a, n2, b) for k, n1 in enumerate(members) for n2 in members[k + 1:]
                 for a in identities[n1] for b in identities[n2]]
        return rng.sample(every, per_fold)
    chosen = set()
    while len(chosen) < per_fold:
        n1, n2 = sorted(rng.sample(members, 2))
        chosen.add((n1, rng.choice(identities[n1]), n2, rng.choice(identities[n2])))
    return chosen


def write_pairs(path, pairs, folds, per_fold):
    """Write ``pairs`` as an LFW ``pairs.txt`` (tab-separated, header ``FOLDS<TAB>PER_FOLD``).

    LFW-named files (``Name/Name_0007.jpg``) are written as index ``7``; any other file as its file name
    (see the module docstring), which :func:`read_pairs` maps back to the same relative path.
    Written to a temporary name and renamed, so a killed run leaves no half file.
    """
    if len(pairs) != folds * 2 * per_fold:
        raise ValueError(f'{len(pairs)} pairs do not fill {folds} folds x 2 x {per_fold}')
    check_output_path(path, 'pairs file')
    lines = [f'{folds}\t{per_fold}']
    for p in pairs:
        (n1, f1), (n2, f2) = _split_rel(p.path1), _split_rel(p.path2)
        if p.issame:
            lines.append(f'{n1}\t{_index_field(n1, f1)}\t{_index_field(n2, f2)}')
        else:
            lines.append(f'{n1}\t{_index_field(n1, f1)}\t{n2}\t{_index_field(n2, f2)}')
    with atomic_write(path, 'w', encoding='utf-8', newline='\n') as f:
        f.write('\n'.join(lines) + '\n')


def _split_rel(relpath):
    check_line_field(relpath, 'pair image')
    name, _, filename = relpath.replace(os.sep, '/').rpartition('/')
    if not name or '/' in name:
        raise ValueError(f'pair path must be "identity/file": {relpath!r}')
    return name, filename
