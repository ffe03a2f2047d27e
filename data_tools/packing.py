"""Pack face images into im2rec-compatible RecordIO: one record per image, label = dense class index.

Inputs are an ``identity/…/image`` folder tree, or a list file (MS-Celeb ``path label`` lines, an im2rec
``.lst`` or an insightface ``.lst``). Decoding, the optional ``image_filter`` (face alignment), resizing and JPEG
encoding run in worker processes over ordered chunks, so the output does not depend on the number of workers; the
parent only writes records, in MXNet's framing without importing MXNet (:mod:`data_tools.records`). At most a few
chunks per worker are in flight, so memory stays flat however large the dataset.

Outputs (all written under temporary names and renamed at the end, each ``.idx`` after its ``.rec``,
``PREFIX.json`` last; :func:`commit_outputs`), with an exclusive lock on ``PREFIX.lock`` while writing:

* ``PREFIX.lst/.rec/.idx`` -- training images (im2rec formats; ``.lst`` is ``index<TAB>label<TAB>path``),
* ``PREFIX_val.*`` -- images held out *within* training identities (``val_per_identity``/``val_ratio``),
* ``PREFIX_heldout.*`` -- whole identities held out for verification (``val_identities``), own labels,
* ``PREFIX.json`` -- classes, identity names, label map, counts per split, skipped files with reasons, options.
"""
import collections
import os
import random
import re
import signal
import sys
import time
from dataclasses import dataclass

import cv2
from tqdm import tqdm

from common.checks import check_number
from common.errors import ParameterError, UsageError, WriteError
from common.fileio import (WRITE_ERRNOS, check_output_prefix, check_outputs_apart, exclusive_lock, make_parent,
                           remove_quietly, temporary_name)
from common.images import (IMAGE_EXTENSIONS, ImageError, check_image_root, decode_image, encode_jpeg, is_image_file,
                           walk_tree)
from common.preprocessing import crop_resize
from common.threads import compute_env
from common.textio import line_field_problem, printable, read_lines
from common.workers import MAX_WORKERS, process_pool
from data_tools.dataset_info import FORMAT, SPLITS, info_path, split_prefix, write_dataset_info
from data_tools.records import IndexedRecordWriter, pack_header

CHUNK = 64             # images per worker task: amortises inter-process traffic
IN_FLIGHT_PER_WORKER = 4  # chunks queued per worker: bounds memory, keeps workers busy
_NO_FACE = 'no face'


# ----------------------------------------------------------------------------------------- per image
class ImageEncoder:
    """Turn one image file into the JPEG bytes of a record (runs in workers; picklable).

    Parameters
    ----------
    size : int
        Side of the stored square.
    color : {'gray', 'bgr'}
        Stored channels; gray records decode with ``ImageRecordIter(data_shape=(1, H, W))``.
    quality : int
        JPEG quality.
    min_size : int
        Images whose shorter side is below this (capped at ``size``) are skipped as too small.
    image_filter : callable, optional
        ``filter(uint8 image) -> image or None`` applied to the decoded image before resizing (face
        alignment). ``None`` skips the image with reason ``'no face'``; raising :class:`ImageError` skips it
        with that reason. It receives BGR unless it has an ``input_color`` attribute (``'gray'``/``'bgr'``).
        It is pickled once into each worker, so heavy state (a detector) should load lazily on first call.
    """

    def __init__(self, size=144, color='gray', quality=95, min_size=32, image_filter=None):
        if color not in ('gray', 'bgr'):
            raise UsageError(f"color must be 'gray' or 'bgr', not {color!r}")
        self.size, self.color, self.quality = size, color, quality
        self.min_size = min(min_size, size)  # tiny records (tests, demos) accept sources of their own size
        self.image_filter = image_filter
        self.decode_color = getattr(image_filter, 'input_color', 'bgr') if image_filter else color

    def __call__(self, path):
        """Return ``(jpeg_bytes, None)`` or ``(None, reason)``."""
        try:
            img = self._decode(path)
            if self.image_filter is not None:
                img = self.image_filter(img)
                if img is None:
                    return None, _NO_FACE
            return self._encode(img), None
        except (ImageError, cv2.error, OSError) as err:
            return None, _reason(err)

    def encode_many(self, paths):
        """``[self(path) for path in paths]``; an image filter with ``align_batch`` (``FaceAligner``) runs
        once for all the decodable images of ``paths`` (MTCNN batched across them)."""
        align_batch = getattr(self.image_filter, 'align_batch', None)
        if align_batch is None:
            return [self(path) for path in paths]
        out, decoded = [], []
        for path in paths:
            try:
                decoded.append((len(out), self._decode(path)))
                out.append(None)
            except (ImageError, cv2.error, OSError) as err:
                out.append((None, _reason(err)))
        for (k, _), result in zip(decoded, align_batch([img for _, img in decoded]) if decoded else []):
            try:
                out[k] = (None, _NO_FACE) if result.image is None else (self._encode(result.image), None)
            except (ImageError, cv2.error) as err:
                out[k] = (None, _reason(err))
        return out

    def _decode(self, path):
        with open(path, 'rb') as f:
            buf = f.read()
        img = decode_image(buf, self.decode_color, path)
        if min(img.shape[:2]) < self.min_size:
            raise ImageError(f'too small ({img.shape[1]}x{img.shape[0]} < {self.min_size})')
        return img

    def _encode(self, img):
        return encode_jpeg(self._channels(crop_resize(img, self.size)), self.quality)

    def _channels(self, img):
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if self.color == 'gray' and img.ndim == 3:
            return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        if self.color == 'bgr' and img.ndim == 2:
            return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        return img


def _reason(err):
    """The skip reason for an image that could not be read or decoded."""
    if isinstance(err, cv2.error):  # OpenCV rejects some malformed headers by raising instead of returning None
        return f'not a decodable image (OpenCV: {str(err).strip().splitlines()[-1][:80]})'
    if isinstance(err, FileNotFoundError):
        return 'file not found'
    if isinstance(err, OSError):
        return f'unreadable ({err.strerror or err})'
    return str(err)


_worker_encoder = None


def _init_worker(encoder):
    global _worker_encoder
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the pool and cleans up
    cv2.setNumThreads(1)  # one image per process at a time: OpenCV's own threads only contend
    _worker_encoder = encoder


def _encode_chunk(paths):
    return _worker_encoder.encode_many(paths)


# ----------------------------------------------------------------------------------------- inputs
def scan_tree(images_root):
    """Entries ``(relpath, identity)`` of an ``identity/…/image`` tree and files that are no candidates.

    Every file inside an identity folder (at any depth) is a candidate. Returned as skipped, with a
    reason, not silently dropped: files without an image extension, files directly under the root,
    names a ``.lst`` cannot hold (a tab or line break, not UTF-8: :func:`common.textio.line_field_problem`)
    and links the walk does not follow twice (a symlink loop, a second path to the same folder or file:
    :func:`common.images.walk_tree`).
    """
    entries, skipped = [], []
    walk = walk_tree(images_root)
    for rel in walk.files:
        identity, slash, _ = rel.partition('/')
        problem = line_field_problem(rel)
        if not slash:
            skipped.append((rel, 'not inside an identity folder'))
        elif problem:
            skipped.append((rel, f'name {problem}'))
        elif is_image_file(rel):
            entries.append((rel, identity))
        else:
            skipped.append((rel, 'not an image file (extension)'))
    skipped += walk.ignored
    return entries, skipped


LIST_FORMATS = {
    'im2rec': 'im2rec .lst "index<TAB>label[<TAB>label...]<TAB>path"',
    'insightface': 'insightface .lst "aligned<TAB>path<TAB>label[<TAB>bbox and landmarks]"',
    'path label': 'MS-Celeb "path label" list',
}


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _line_format(fields):
    """The list format a tab-split line can only be, or ``None`` when it alone does not tell."""
    if len(fields) < 3:
        return 'path label'
    if re.fullmatch(r'\s*[0-9]+\s*', fields[0]) and _is_number(fields[1]) and not _is_number(fields[-1]):
        return 'im2rec'
    if fields[0].strip() in ('0', '1') and not _is_number(fields[1]) and _is_number(fields[2]):
        return 'insightface'
    return None


def _split_line(fmt, line, fields):
    """``(path, label text)`` of a line in ``fmt``, or ``None`` when the line does not fit it."""
    if fmt == 'im2rec':
        ok = len(fields) >= 3 and re.fullmatch(r'\s*[0-9]+\s*', fields[0]) and not _is_number(fields[-1])
        return (fields[-1], fields[1]) if ok else None
    if fmt == 'insightface':
        ok = len(fields) >= 3 and fields[0].strip() in ('0', '1') and not _is_number(fields[1])
        return (fields[1], fields[2]) if ok else None
    parts = line.rsplit(None, 1)
    return tuple(parts) if len(parts) == 2 else None


def _parse_label(text, path, n, assumed=''):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not value.is_integer() or value < 0:
        raise UsageError(f'{path}:{n}: label must be a non-negative integer class, got {text!r}{assumed}')
    return int(value)


def detect_list_format(lines):
    """``(format, line number that decided it)`` for the lines of a list (see :data:`LIST_FORMATS`).

    A line decides when only one format reads it: ``index<TAB>number<TAB>...<TAB>path`` is im2rec's,
    ``0|1<TAB>path<TAB>number...`` is insightface's, a line with fewer than three tab-separated fields is
    ``path label``. When no line decides (every path a number), im2rec is assumed for tab-separated lines.
    """
    for n, line in lines:
        fmt = _line_format(line.split('\t'))
        if fmt is not None:
            return fmt, n
    return 'im2rec', None


def read_list(list_path, strip_prefix=0):
    """Entries ``(relpath, label)`` of an MS-Celeb ``path label`` list, an im2rec ``.lst`` or an insightface
    ``.lst``.

    The format is decided once for the file by :func:`detect_list_format` (the first line only one format can
    read) and every line is read in it; an error names the format assumed and the line that decided it.
    im2rec: ``index<TAB>label[<TAB>...]<TAB>path`` (first label used); insightface:
    ``aligned<TAB>path<TAB>label[<TAB>...]``; otherwise ``path label`` split at the last whitespace, so paths
    may contain spaces. ``strip_prefix`` drops that many leading path components
    (``/data/MS/aligned/m.0109kg/1.jpg`` with 3 -> ``m.0109kg/1.jpg``).
    The file is read by :func:`common.textio.read_lines` (a UTF-8 BOM and CRLF line ends are dropped).
    """
    entries = []
    lines = [(n, line) for n, line in read_lines(list_path, 'list file') if line.strip()]
    fmt, decided_by = detect_list_format(lines)
    assumed = (f' (read as {LIST_FORMATS[fmt]}, '
               + (f'as line {decided_by} shows)' if decided_by else 'assumed: no line tells the formats apart)'))
    for n, line in lines:
        split = _split_line(fmt, line, line.split('\t'))
        if split is None:
            if fmt == 'path label':
                raise UsageError(f'{list_path}:{n}: expected "path label", im2rec "index<TAB>label<TAB>path" or '
                                 f'insightface "aligned<TAB>path<TAB>label", got {line!r}{assumed}')
            raise UsageError(f'{list_path}:{n}: not a line of this format: {line!r}{assumed}')
        path, label = split
        path = path.strip().replace('\\', '/')
        if strip_prefix:
            parts = [p for p in path.split('/') if p]
            if len(parts) <= strip_prefix:
                raise ParameterError(lambda name, at=n: f'{list_path}:{at}: {name("strip_prefix")} {strip_prefix} '
                                                        f'leaves nothing of {path!r}')
            path = '/'.join(parts[strip_prefix:])
        problem = line_field_problem(path)
        if problem:
            raise UsageError(f'{list_path}:{n}: path {path!r} {problem}; rename the file')
        entries.append((path, _parse_label(label, list_path, n, assumed)))
    if not entries:
        raise UsageError(f'list file {list_path} has no entries')
    return entries


# ----------------------------------------------------------------------------------------- selection
def select_identities(counts, min_images=1, top=None):
    """Identities kept by ``min_images`` and ``top``; returns (kept sorted, dropped counts).

    ``top`` keeps the ``top`` identities with the most listed images; ties go to the identity that sorts
    first (smaller label / name), so the choice is deterministic.
    """
    kept = [k for k in counts if counts[k] >= min_images]
    dropped = {'fewer_than_min_images': len(counts) - len(kept)}
    if top is not None and top < len(kept):
        ranked = sorted(kept, key=lambda k: (-counts[k], k))
        dropped['beyond_top_identities'] = len(kept) - top
        kept = ranked[:top]
    return sorted(kept), dropped


def _holdout(identities, val_identities, rng):
    if not val_identities:
        return []
    count = int(val_identities) if val_identities >= 1 else round(val_identities * len(identities))
    if not 0 < count < len(identities):
        raise ParameterError(lambda n: f'{n("val_identities")} {val_identities} holds out {count} of '
                                       f'{len(identities)} identities; need at least one held out and one left '
                                       f'for training')
    return sorted(rng.sample(identities, count))


def _val_split(items, val_per_identity, val_ratio, rng):
    """Split one identity's images: ``(train, val)``, leaving at least one training image."""
    if val_per_identity:
        k = val_per_identity
    elif val_ratio:
        k = int(len(items) * val_ratio + 0.5)
    else:
        return items, []
    k = min(k, len(items) - 1)
    if k <= 0:
        return items, []
    chosen = set(rng.sample(range(len(items)), k))
    return ([x for i, x in enumerate(items) if i not in chosen],
            [x for i, x in enumerate(items) if i in chosen])


# ----------------------------------------------------------------------------------------- plan
@dataclass
class PackingPlan:
    """What :func:`pack_records` will write, decided before any image is read.

    ``jobs`` are ``(relpath, label, split)`` in record order (training records shuffled when asked,
    then ``val``, then ``heldout``); ``splits`` the splits that get files; ``train_ids``/``heldout``
    the identity keys (folder names, or list labels) in label order; ``skipped`` the ``(path, reason)``
    of files that are no candidates.
    """
    images_root: str
    list_path: str
    jobs: list
    splits: list
    train_ids: list
    heldout: list
    by_identity: dict
    candidates: int
    dropped: dict
    skipped: list


def plan_packing(images_root, list_path=None, *, val_per_identity=0, val_ratio=0.0, val_identities=0.0, seed=0,
                 min_images_per_identity=1, strip_prefix=0, top_identities=None, shuffle=True):
    """Read the tree or list, filter identities and split them: a :class:`PackingPlan` (see :func:`pack_records`).

    Raises
    ------
    UsageError
        Missing root, no images, an unreadable or unresolvable list, no identity left, or a held-out
        count that leaves no identity on one side.
    """
    images_root, entries, skipped = _read_entries(images_root, list_path, strip_prefix)
    by_identity = collections.defaultdict(list)
    for rel, key in entries:
        by_identity[key].append(rel)
    candidates = len(entries)
    del entries  # the per-identity lists hold the same strings; keep one structure the size of the dataset
    kept, dropped = select_identities({k: len(v) for k, v in by_identity.items()},
                                      min_images_per_identity, top_identities)
    if not kept:
        raise UsageError(f'no identity has >= {min_images_per_identity} images')
    rng = random.Random(seed)  # drawn in this order: held-out identities, val images, training order
    heldout = _holdout(kept, val_identities, rng)
    heldout_set = set(heldout)
    train_ids = [k for k in kept if k not in heldout_set]
    jobs = _split_jobs(by_identity, train_ids, heldout, val_per_identity, val_ratio, rng, shuffle)
    splits = [s for s in SPLITS if jobs[s] or s == 'train']
    return PackingPlan(images_root, list_path, [j for s in splits for j in jobs[s]], splits, train_ids, heldout,
                       by_identity, candidates, dropped, list(skipped))


def _read_entries(images_root, list_path, strip_prefix):
    """``(images_root, [(relpath, identity key)], skipped)`` from the tree or the list."""
    if list_path is not None:
        images_root = images_root or os.path.dirname(os.path.abspath(list_path))
    if not images_root:
        raise ParameterError(lambda n: f'give {n("images_root")} (the image tree) or {n("list_path")}')
    check_image_root(images_root, 'images_root')
    if list_path is None:
        entries, skipped = scan_tree(images_root)
        if not entries:
            raise UsageError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in identity folders under {images_root}')
        return images_root, entries, skipped
    entries = read_list(list_path, strip_prefix)
    _check_list_resolves(entries, images_root, list_path)
    return images_root, entries, []


def _split_jobs(by_identity, train_ids, heldout, val_per_identity, val_ratio, rng, shuffle):
    """``{split: [(relpath, label, split)]}``; training labels follow ``train_ids``, held-out ones ``heldout``."""
    class_of = {k: i for i, k in enumerate(train_ids)}
    jobs = {split: [] for split in SPLITS}
    for key in train_ids:
        train, val = _val_split(by_identity[key], val_per_identity, val_ratio, rng)
        jobs['train'] += [(r, class_of[key], 'train') for r in train]
        jobs['val'] += [(r, class_of[key], 'val') for r in val]
    for i, key in enumerate(heldout):
        jobs['heldout'] += [(r, i, 'heldout') for r in by_identity[key]]
    if shuffle:
        rng.shuffle(jobs['train'])
    return jobs


# ----------------------------------------------------------------------------------------- writing
class _SplitWriter:
    """One split's ``.lst/.rec/.idx`` under temporary names; records get dense ids 0..n-1.

    :meth:`close` closes the three files (each one, even when closing another fails, e.g. on a full disk);
    :meth:`discard` also removes them; :func:`commit_outputs` renames them into place.
    """

    def __init__(self, prefix, split):
        self.paths = {ext: f'{split_prefix(prefix, split)}.{ext}' for ext in ('lst', 'rec', 'idx')}
        self.temporary = {ext: temporary_name(p) for ext, p in self.paths.items()}
        self.record = self.lst = None
        try:
            self.record = IndexedRecordWriter(self.temporary['idx'], self.temporary['rec'])
            self.lst = open(self.temporary['lst'], 'w', encoding='utf-8', newline='\n')
        except BaseException:
            self.discard()
            raise
        self.count = 0
        self.per_class = collections.Counter()

    def write(self, label, relpath, jpeg):
        self.record.write_idx(self.count, pack_header(label, self.count, jpeg))
        self.lst.write(f'{self.count}\t{float(label):f}\t{relpath}\n')
        self.count += 1
        self.per_class[label] += 1

    def close(self):
        """Close every file; the first error (e.g. ENOSPC while flushing) is raised after all are closed."""
        error = None
        for f in ([self.record.rec, self.record.idx] if self.record else []) + ([self.lst] if self.lst else []):
            try:
                f.close()
            except OSError as err:
                error = error or err
        if error is not None:
            raise error

    def discard(self):
        """Close quietly and remove the temporary files (on any failure)."""
        try:
            self.close()
        except OSError:
            pass
        for path in self.temporary.values():
            remove_quietly(path)


def commit_outputs(writers, out_prefix):
    """Move finished split files into place so that a ``.rec`` never sits beside another packing's ``.idx``.

    Order: the old ``PREFIX.json`` goes first (its presence marks a complete packing, and it is written
    again last), then per split the old ``.idx`` is removed, the new ``.rec`` and ``.lst`` renamed, and the
    new ``.idx`` renamed last. A kill at any point leaves either no ``.idx`` (training refuses the ``.rec``:
    ".idx is missing") or the matching one; never a stale pair.
    """
    if os.path.lexists(info_path(out_prefix)):
        os.remove(info_path(out_prefix))  # an old complete-looking summary must not survive a failure below
    for writer in writers.values():
        if os.path.lexists(writer.paths['idx']):
            os.remove(writer.paths['idx'])
        for ext in ('rec', 'lst', 'idx'):
            os.replace(writer.temporary[ext], writer.paths[ext])


def _run_encoders(encoder, images_root, jobs, workers, progress):
    """Yield ``(job, (jpeg, reason))`` in job order, encoding in ``workers`` processes (0: in-process)."""
    bar = tqdm(total=len(jobs), unit='img', desc='packing', disable=not progress, file=sys.stderr,
               dynamic_ncols=True, mininterval=0.5)
    chunks = (jobs[i:i + CHUNK] for i in range(0, len(jobs), CHUNK))
    try:
        if workers == 0:
            for chunk in chunks:
                yield from zip(chunk, encoder.encode_many([os.path.join(images_root, job[0]) for job in chunk]))
                bar.update(len(chunk))
            return
        # The server imports this module once, so workers start warm (common.workers: why not fork). An
        # image filter (MTCNN alignment) runs MXNet in the workers: they start with its thread settings.
        env = compute_env('align', workers) if encoder.image_filter is not None else None
        with process_pool(workers, _init_worker, (encoder,), preload=[__name__], env=env) as pool:
            pending = collections.deque()
            for chunk in chunks:
                paths = [os.path.join(images_root, job[0]) for job in chunk]
                pending.append((chunk, pool.apply_async(_encode_chunk, (paths,))))
                while len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                    done, result = pending.popleft()
                    yield from zip(done, result.get())
                    bar.update(len(done))
            while pending:
                done, result = pending.popleft()
                yield from zip(done, result.get())
                bar.update(len(done))
    finally:
        bar.close()


def write_splits(plan, out_prefix, encoder, workers, progress=True):
    """Encode every job of ``plan`` and write the split files under temporary names (closed on return).

    Returns ``({split: _SplitWriter}, failed)``: the writers (counts, classes, final and temporary paths)
    and every ``(path, reason)`` not packed, the plan's skipped files first. On any failure every
    temporary file is removed before the exception propagates.

    Raises
    ------
    UsageError
        Not a single training image could be packed; the disk is full (the file is named).
    """
    make_parent(out_prefix)
    writers = {}
    try:
        for split in plan.splits:
            writers[split] = _SplitWriter(out_prefix, split)
        failed = list(plan.skipped)
        for (rel, label, split), (jpeg, reason) in _run_encoders(encoder, plan.images_root, plan.jobs, workers,
                                                                progress):
            if jpeg is None:
                failed.append((rel, reason))
            else:
                writers[split].write(label, rel, jpeg)
        if writers['train'].count == 0:
            raise ParameterError(lambda n: f'no image could be packed ({_reason_summary(failed)}); check '
                                           f'{n("images_root")}'
                                           + (f' and {n("strip_prefix")}' if plan.list_path else ''))
        for writer in writers.values():
            writer.close()
    except OSError as err:
        for writer in writers.values():
            writer.discard()
        if err.errno in WRITE_ERRNOS and not isinstance(err, WriteError):
            raise WriteError(err.errno, f'cannot write {out_prefix}.*: {err.strerror or err} (the partial '
                                        'files were removed)') from None
        raise
    except BaseException:
        for writer in writers.values():
            writer.discard()
        raise
    return writers, failed


# ----------------------------------------------------------------------------------------- summary
def summarise_packing(plan, writers, failed, out_prefix, options, elapsed):
    """The ``PREFIX.json`` summary (:mod:`data_tools.dataset_info`) of a finished packing."""
    from_list = plan.list_path is not None
    train_ids = plan.train_ids
    names = _identity_names(train_ids, plan.by_identity, from_list)
    heldout_names = _identity_names(plan.heldout, plan.by_identity, from_list)
    per_class = writers['train'].per_class
    summary = {
        'format': FORMAT,
        'num_classes': len(train_ids),
        'identities': names,
        'images_per_identity': [per_class[i] for i in range(len(train_ids))],
        'empty_classes': sum(1 for i in range(len(train_ids)) if per_class[i] == 0),
        'label_map': {str(k): i for i, k in enumerate(train_ids)} if from_list else None,
        'record': {'size': options['size'], 'color': options['color'],
                   'channels': 1 if options['color'] == 'gray' else 3,
                   'encoding': '.jpg', 'quality': options['quality']},
        'splits': {s: {'prefix': split_prefix(out_prefix, s),
                       'rec': w.paths['rec'], 'idx': w.paths['idx'], 'lst': w.paths['lst'],
                       'images': w.count, 'identities': len(w.per_class)} for s, w in writers.items()},
        'heldout_identities': heldout_names,
        'packed': sum(w.count for w in writers.values()),
        'candidates': plan.candidates,
        'identities_dropped': plan.dropped,
        'skipped': [{'path': printable(p), 'reason': r} for p, r in failed],
        'skipped_by_reason': dict(collections.Counter(_reason_kind(r) for _, r in failed)),
        'options': options,
        'elapsed_s': round(elapsed, 3),
        'images_per_s': round(len(plan.jobs) / elapsed, 1) if elapsed > 0 else None,
    }
    if plan.heldout and 'heldout' in writers:
        summary['splits']['heldout']['identity_names'] = heldout_names
    return summary


# ----------------------------------------------------------------------------------------- main entry
def pack_records(images_root, out_prefix, list_path=None, *, size=144, color='gray', quality=95, workers=None,
                 val_per_identity=0, val_ratio=0.0, val_identities=0.0, seed=0, min_images_per_identity=1,
                 strip_prefix=0, top_identities=None, image_filter=None, progress=True, min_size=32,
                 shuffle=True):
    """Pack an image tree or list into ``PREFIX.rec/.idx/.lst`` (+ ``_val``/``_heldout``) and ``PREFIX.json``.

    Three steps: :func:`plan_packing` (inputs, identity filters, splits), :func:`write_splits` (encode and
    write records) and :func:`summarise_packing` (the ``PREFIX.json`` summary, written last).

    Parameters
    ----------
    images_root : str
        Tree with one folder per identity, or the root the list's paths are relative to (default: the
        list file's folder).
    out_prefix : str
        Output prefix; its folder is created.
    list_path : str, optional
        ``path label`` list (MS-Celeb clean lists) or im2rec ``.lst``; labels are re-indexed densely.
    size, color, quality, min_size, image_filter
        Record geometry and decoding, see :class:`ImageEncoder`.
    workers : int, optional
        Encoding processes (default: all cores; 0 encodes in this process).
    val_per_identity, val_ratio : int, float
        Images per training identity moved to ``PREFIX_val`` (K each, or a fraction rounded per identity);
        each identity keeps at least one training image.
    val_identities : float
        Whole identities moved to ``PREFIX_heldout`` for verification: a fraction (< 1) or a count (>= 1).
    seed : int
        Seeds the held-out identities, the val images and the training record order.
    min_images_per_identity, top_identities : int
        Identity filters on *listed* images, applied first (``top_identities``: see
        :func:`select_identities` for ties).
    strip_prefix : int
        Leading path components dropped from list paths.
    shuffle : bool
        Shuffle training records (seeded), as im2rec does; val and held-out stay in identity order.

    Returns
    -------
    dict
        The summary written to ``PREFIX.json``.
    """
    start = time.time()
    check_packing_options(size=size, quality=quality, min_size=min_size, workers=workers,
                          val_per_identity=val_per_identity, val_ratio=val_ratio, val_identities=val_identities,
                          seed=seed, min_images_per_identity=min_images_per_identity, strip_prefix=strip_prefix,
                          top_identities=top_identities)
    workers = (os.cpu_count() or 1) if workers is None else workers
    check_outputs_apart({'out_prefix': output_files(out_prefix)}, inputs={'list_path': list_path},
                        trees={'images_root': images_root if list_path is None else None})  # a list names its files
    check_output_prefix(out_prefix, 'out_prefix')  # creates its folder: after the check above
    encoder = ImageEncoder(size, color, quality, min_size, image_filter)
    plan = plan_packing(images_root, list_path, val_per_identity=val_per_identity, val_ratio=val_ratio,
                        val_identities=val_identities, seed=seed, min_images_per_identity=min_images_per_identity,
                        strip_prefix=strip_prefix, top_identities=top_identities, shuffle=shuffle)
    options = {'images_root': os.path.abspath(plan.images_root),
               'list': os.path.abspath(list_path) if list_path else None,
               'size': size, 'color': color, 'quality': quality, 'min_size': min_size,
               'workers': workers, 'val_per_identity': val_per_identity, 'val_ratio': val_ratio,
               'val_identities': val_identities, 'seed': seed,
               'min_images_per_identity': min_images_per_identity, 'strip_prefix': strip_prefix,
               'top_identities': top_identities, 'shuffle': shuffle,
               'image_filter': _describe(image_filter)}
    with exclusive_lock(out_prefix + '.lock', f'{out_prefix}.*'):
        writers, failed = write_splits(plan, out_prefix, encoder, workers, progress)
        try:
            summary = summarise_packing(plan, writers, failed, out_prefix, options, time.time() - start)
            commit_outputs(writers, out_prefix)
        except BaseException:
            for writer in writers.values():
                writer.discard()
            raise
        write_dataset_info(out_prefix, summary)  # last: its presence marks a complete packing
    return summary


def output_files(out_prefix):
    """Every file :func:`pack_records` may write for ``out_prefix``: each split's ``.rec/.idx/.lst``, the
    summary ``PREFIX.json`` and the lock ``PREFIX.lock``."""
    return ([split_prefix(out_prefix, s) + ext for s in SPLITS for ext in ('.rec', '.idx', '.lst')]
            + [info_path(out_prefix), os.fspath(out_prefix) + '.lock'])


# Sides of the stored square pack_records accepts: the smallest network input is 16 px (four 2x2 poolings,
# training's --input-size), LightCNN stores 144 for 128 crops; beyond 1024 a record only costs memory and disk.
RECORD_SIZE_RANGE = (16, 1024)


def check_packing_options(*, size=144, quality=95, min_size=32, workers=None, val_per_identity=0, val_ratio=0.0,
                          val_identities=0.0, seed=0, min_images_per_identity=1, strip_prefix=0,
                          top_identities=None):
    """Refuse option values that cannot mean anything (:func:`common.checks.check_number`), before any work.

    Raises
    ------
    UsageError
        Naming the parameter (``top_identities must be >= 1, got -1``); a command line spells its option
        (:class:`~common.errors.ParameterError`).
    """
    check_number(size, 'size', minimum=RECORD_SIZE_RANGE[0], maximum=RECORD_SIZE_RANGE[1], integer=True,
                 qualifier=' (side of the stored square, pixels)')
    check_number(quality, 'quality', minimum=1, maximum=100, integer=True)
    check_number(min_size, 'min_size', minimum=1, integer=True)
    check_number(workers, 'workers', minimum=0, maximum=MAX_WORKERS, integer=True, optional=True)
    check_number(val_per_identity, 'val_per_identity', minimum=0, integer=True)
    check_number(val_ratio, 'val_ratio', minimum=0, below=1)
    check_number(val_identities, 'val_identities', minimum=0)
    if val_identities >= 1:
        check_number(val_identities, 'val_identities', integer=True, qualifier=' (a count when >= 1)')
    check_number(seed, 'seed', integer=True)
    check_number(min_images_per_identity, 'min_images_per_identity', minimum=1, integer=True)
    check_number(strip_prefix, 'strip_prefix', minimum=0, integer=True)
    check_number(top_identities, 'top_identities', minimum=1, integer=True, optional=True)
    if val_per_identity and val_ratio:
        raise ParameterError(lambda n: f'give {n("val_per_identity")} or {n("val_ratio")}, not both')


def _check_list_resolves(entries, images_root, list_path):
    """Fail fast on a wrong ``images_root``/``strip_prefix``: none of the first listed files exist."""
    probe = entries[:50]
    if not any(os.path.isfile(os.path.join(images_root, rel)) for rel, _ in probe):
        raise ParameterError(lambda n: f'none of the first {len(probe)} files of {list_path} exist under '
                                       f'{images_root} (e.g. {os.path.join(images_root, probe[0][0])}); check '
                                       f'{n("images_root")} and {n("strip_prefix")}')


def _identity_names(keys, by_identity, from_list):
    """Display names: tree folder names; for lists the images' common folder, else the original label."""
    if not from_list:
        return list(keys)
    names = []
    for key in keys:
        folders = {os.path.dirname(r) for r in by_identity[key]}
        names.append(folders.pop() if len(folders) == 1 and '' not in folders else str(key))
    return names


def _reason_kind(reason):
    return reason.split(' (')[0]


def _reason_summary(failed):
    counts = collections.Counter(_reason_kind(r) for _, r in failed)
    return ', '.join(f'{n} {r}' for r, n in counts.most_common()) or 'nothing listed'


def _describe(obj):
    if obj is None:
        return None
    return getattr(obj, 'description', None) or type(obj).__name__


def summary_line(summary):
    """One line for the terminal: what was packed, how fast, what was skipped and where the list is."""
    splits = ', '.join(f"{s} {v['images']}" for s, v in summary['splits'].items())
    skipped = summary['skipped']
    line = (f"packed {summary['packed']} images ({splits}) of {summary['num_classes']} classes into "
            f"{summary['splits']['train']['rec']} in {summary['elapsed_s']:.1f} s "
            f"({summary['images_per_s']:.0f} img/s)")
    if skipped:
        line += f"; skipped {len(skipped)} ({_reason_summary([(s['path'], s['reason']) for s in skipped])})"
        line += f" -- listed in {summary['splits']['train']['prefix']}.json"
    else:
        line += '; skipped 0'
    return line
