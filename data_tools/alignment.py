"""Align faces to the LightCNN template from MTCNN's five landmarks; align whole image trees.

The LightCNN papers state the crop geometry but not the code: eyes level, **training crops 144x144 with the
eye centre at y = 48 and 48 pixels from the eye centre down to the mouth centre** (``ec_y = 48``,
``ec_mc_y = 48``); test crops are the centre 128x128 of those (``ec_y = 40``). The five-point template
:func:`template` satisfies exactly these constraints:

* eye centre (midpoint of the eyes) at ``x = (size - 1) / 2`` -- the horizontal middle in pixel-centre
  coordinates, so a mirrored crop (training augmentation) has the same template;
* eye centre at ``y = 48`` and mouth centre (midpoint of the mouth corners) at ``y = 96`` in the 144 crop;
* left-right spacing (eye distance 41.6 px, mouth width 34.4 px) and the nose (23.8 px below the eye centre)
  from the mean face of the five-point reference used by InsightFace (``arcface_src``, 112x112), made
  symmetric and scaled so its eye-centre-to-mouth-centre distance is 48.

For size 144: left eye (50.71, 48), right eye (92.29, 48), nose (71.5, 71.76), mouth corners
(54.29, 96) and (88.71, 96); any other size is the centre crop (or extension) of that, e.g. 128 subtracts 8.

Two ways to fit the similarity transform (rotation, uniform scale, shift):

* ``'similarity'`` (default): least squares over all five points (Umeyama, no reflection);
* ``'eyes-mouth'``: the constraints verbatim -- rotate so the eyes are level, scale so the eye-centre to
  mouth-centre vertical distance is 48, shift the eye centre onto the template.

When several faces are found the **largest** box is taken; boxes within 10 % of its area count as ties, and
among them the one whose centre is closest to the image centre wins.
"""
import csv
import json
import math
import os
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
from tqdm import tqdm

from common.checks import check_number
from common.errors import ParameterError, ParameterValueError
from common.fileio import (atomic_write, check_output_folder, check_output_path, check_outputs_apart,
                           exclusive_lock)
from common.images import ImageError, check_image_root, read_image, scan_images
from common.preprocessing import crop_resize
from common.threads import compute_env, physical_cores
from common.textio import printable
from common.workers import MAX_WORKERS, process_pool

from .mtcnn import MTCNN

__all__ = ['template', 'similarity_transform', 'eyes_mouth_transform', 'choose_face', 'center_crop',
           'FaceAligner', 'AlignResult', 'make_aligner', 'align_tree', 'TRAIN_SIZE', 'TEST_SIZE', 'V4_SCALE']

TRAIN_SIZE, TEST_SIZE = 144, 128
# Face scale of the 128 test crop fitted to LightCNN-V4 (bench/bench_alignment_accuracy.py, 1,000 held-out
# PubFig83 pairs: 10-fold accuracy 98.3 / 99.0 / 98.7 / 98.9 / 98.2 % at scales 1.0 / 1.1 / 1.2 / 1.3 / 1.4,
# AUC 0.9966 / 0.9966 / 0.9963 / 0.9965 / 0.9950; ORL pairs 100 % up to 1.3, 99.5 % at 1.4)
V4_SCALE = 1.1
# Template scales FaceAligner accepts: beyond them the crop is mostly background (a grey/replicated border) or
# a patch of skin, never a face the networks were trained on (the fitted range above is 1.0-1.4).
SCALE_RANGE = (0.5, 2.0)
FITTED_SCALES = {'lightcnn_v4': V4_SCALE}  # network -> the scale extraction's --align uses (others: 1)
EC_Y, EC_MC_Y = 48.0, 48.0           # in the 144 crop (official LightCNN preprocessing)
# Mean-face proportions from InsightFace's 112x112 arcface_src, symmetrised:
_REF = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                 [41.5493, 92.3655], [70.7299, 92.2041]])
_REF_EC_MC = _REF[3:].mean(0)[1] - _REF[:2].mean(0)[1]
HALF_EYE_DISTANCE = (_REF[1, 0] - _REF[0, 0]) / 2 * EC_MC_Y / _REF_EC_MC
HALF_MOUTH_WIDTH = (_REF[4, 0] - _REF[3, 0]) / 2 * EC_MC_Y / _REF_EC_MC
NOSE_BELOW_EYES = (_REF[2, 1] - _REF[:2].mean(0)[1]) * EC_MC_Y / _REF_EC_MC
REPORT_NAME = 'align_report'
CHUNK = 32  # images per detector call in align_tree (and per worker task): MTCNN runs each stage once for all
POOL_MIN_IMAGES = 200  # align_tree's default: worker processes from this many images on
MAX_DETECT_SIDE = 1280  # longer side the detector sees (see FaceAligner)


def template(size=TRAIN_SIZE, scale=1.0):
    """The five template points ``(5, 2)`` (x, y) for a ``size`` square crop (see module doc); ``scale``
    enlarges the face about the crop centre (1: the official geometry, ``ec_mc_y`` 48)."""
    cx = (TRAIN_SIZE - 1) / 2.0
    points = np.array([[cx - HALF_EYE_DISTANCE, EC_Y], [cx + HALF_EYE_DISTANCE, EC_Y],
                       [cx, EC_Y + NOSE_BELOW_EYES],
                       [cx - HALF_MOUTH_WIDTH, EC_Y + EC_MC_Y], [cx + HALF_MOUTH_WIDTH, EC_Y + EC_MC_Y]])
    return (points - cx) * scale + (size - 1) / 2.0


def similarity_transform(src, dst):
    """Least-squares similarity (no reflection) mapping points ``src`` onto ``dst``; a 2x3 matrix.

    Umeyama, "Least-squares estimation of transformation parameters between two point patterns",
    TPAMI 1991. Exact when ``dst`` is a rotated, scaled and shifted ``src``.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_src, mu_dst = src.mean(0), dst.mean(0)
    src_c, dst_c = src - mu_src, dst - mu_dst
    u, s, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    d = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / (src_c ** 2).sum(1).mean()
    shift = mu_dst - scale * rotation @ mu_src
    return np.hstack([scale * rotation, shift[:, None]])


def eyes_mouth_transform(landmarks, size=TRAIN_SIZE, scale=1.0):
    """The official constraints as a 2x3 matrix: eyes level, ec->mc vertical 48, eye centre on template."""
    pts = np.asarray(landmarks, np.float64)
    eye_c, mouth_c = pts[:2].mean(0), pts[3:5].mean(0)
    dx, dy = pts[1] - pts[0]
    angle = math.atan2(dy, dx)
    rot = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    vertical = (rot @ (mouth_c - eye_c))[1]
    if vertical <= 0:
        raise ValueError('mouth is not below the eyes')
    matrix = rot * (EC_MC_Y * scale / vertical)
    target = template(size, scale)[:2].mean(0)
    return np.hstack([matrix, (target - matrix @ eye_c)[:, None]])


def choose_face(boxes, image_shape, tie=0.9):
    """Index of the face to align: the largest box; among boxes with area >= ``tie`` x the largest,
    the one whose centre is closest to the image centre."""
    boxes = np.asarray(boxes, np.float64)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    centre = np.array([(image_shape[1] - 1) / 2, (image_shape[0] - 1) / 2])
    distance = np.hypot(*((boxes[:, 0:2] + boxes[:, 2:4]) / 2 - centre).T)
    distance[area < tie * area.max()] = np.inf
    return int(np.argmin(distance))


def center_crop(image, size, scale=1.0):
    """The no-face fallback: the largest central square of the image, narrowed by ``scale`` (the aligner's
    template scale), resized to ``size``.

    An aligned crop shows, on face crops, about that square: the median over the 203 ORL and PubFig83 images
    of ``tests/fixtures/mtcnn_reference.json`` of (aligned face scale x shorter side / crop side) is 1.00 at
    template scale 1 (ORL 0.95, PubFig83 1.28), so the fallback zooms in as the template does.
    """
    return crop_resize(image, size, crop=max(1, int(round(min(image.shape[:2]) / scale))))


@dataclass
class AlignResult:
    """What :meth:`FaceAligner.align` did with one image.

    ``status`` is ``'aligned'``, ``'center'`` (no face, centre-cropped fallback) or ``'no face'``
    (``image`` is None). ``box`` is ``x1, y1, x2, y2`` (0-based), ``landmarks`` the chosen face's five
    ``(x, y)`` points in the input image, ``chosen`` its index among ``num_faces`` detections (best score
    first), ``matrix`` the 2x3 transform applied.
    """
    image: np.ndarray = None
    status: str = 'no face'
    num_faces: int = 0
    chosen: int = None
    score: float = None
    box: np.ndarray = None
    landmarks: np.ndarray = None
    matrix: np.ndarray = field(default=None, repr=False)


class FaceAligner:
    """Detect (MTCNN), pick one face and warp it onto the LightCNN template.

    Parameters
    ----------
    size : int
        Output side: 144 (training records) or 128 (direct network input); others are centre crops of
        the same geometry.
    color : str
        ``'gray'`` (uint8 HxW) or ``'bgr'`` (uint8 HxWx3) output.
    fallback : None or 'center'
        What to return without a face: None, or the central square resized to ``size``.
    method : str
        ``'similarity'`` (5-point least squares) or ``'eyes-mouth'`` (see module doc).
    border : str
        ``'replicate'`` (default: no black wedges where the template leaves the image) or ``'constant'``.
    retry_margin : float
        When nothing is found, detect once more on the image padded by this fraction per side (edge
        pixels replicated): faces that fill the frame (ORL, PubFig83) then fit a detection window.
    detector : MTCNN, optional
        Default ``MTCNN(min_face_size=20)``; the nets load lazily in each process, so an aligner can be
        pickled into multiprocessing workers.
    scale : float
        Face size relative to the official template (1: ``ec_mc_y`` 48 in the 144 crop), about the crop
        centre; the no-face fallback zooms by the same factor (:func:`center_crop`). In ``SCALE_RANGE``
        ([0.5, 2]); else :class:`~common.errors.ParameterValueError` (a ``ValueError`` and a
        :class:`~common.errors.ParameterError`), as for ``max_detect_side`` < 48.
    max_detect_side : int or None
        Images whose longer side exceeds this many pixels are shrunk to it (``INTER_AREA``) for the
        detector only; boxes and landmarks are mapped back and the crop is warped from the full image.
        Bounds the detector's time and memory (an 8000x8000 photo took 34 s and 5.1 GB unbounded);
        faces smaller than ``min_face_size`` x (longer side / ``max_detect_side``) pixels are then
        missed. ``None``: no bound.
    """

    def __init__(self, size=TRAIN_SIZE, color='gray', fallback=None, method='similarity', border='replicate',
                 retry_margin=0.25, detector=None, max_detect_side=MAX_DETECT_SIDE, scale=1.0):
        if color not in ('gray', 'bgr'):
            raise ValueError(f"color must be 'gray' or 'bgr', not {color!r}")
        if fallback not in (None, 'center'):
            raise ValueError(f"fallback must be None or 'center', not {fallback!r}")
        if method not in ('similarity', 'eyes-mouth'):
            raise ValueError(f"method must be 'similarity' or 'eyes-mouth', not {method!r}")
        if border not in ('replicate', 'constant'):
            raise ValueError(f"border must be 'replicate' or 'constant', not {border!r}")
        check_number(max_detect_side, 'max_detect_side', minimum=48, integer=True, optional=True,
                     qualifier=' (pixels)', error=ParameterValueError)
        check_number(scale, 'scale', minimum=SCALE_RANGE[0], maximum=SCALE_RANGE[1], error=ParameterValueError,
                     qualifier=' (face size relative to the template)')
        if detector is None:
            detector = MTCNN(min_face_size=20)
        self.size, self.color, self.fallback, self.scale = int(size), color, fallback, float(scale)
        self.retry_margin = retry_margin
        self.method, self.border, self.detector = method, border, detector
        self.max_detect_side = max_detect_side

    def __repr__(self):
        return (f'FaceAligner(size={self.size}, color={self.color!r}, fallback={self.fallback!r}, '
                f'method={self.method!r}, scale={self.scale:g})')

    def __call__(self, image):
        """Aligned uint8 face (or the fallback crop), or None when no face is found."""
        return self.align(image).image

    def transform(self, landmarks):
        """2x3 matrix taking image coordinates to the template crop."""
        if self.method == 'eyes-mouth':
            return eyes_mouth_transform(landmarks, self.size, self.scale)
        return similarity_transform(landmarks, template(self.size, self.scale))

    def warp(self, image, landmarks):
        """Warp ``image`` so ``landmarks`` land on the template; returns ``(crop, matrix)``."""
        matrix = self.transform(landmarks)
        border = cv2.BORDER_REPLICATE if self.border == 'replicate' else cv2.BORDER_CONSTANT
        crop = cv2.warpAffine(self._to_color(image), matrix, (self.size, self.size), flags=cv2.INTER_LINEAR,
                              borderMode=border, borderValue=0)
        return crop, matrix

    def align(self, image):
        """Full details for one uint8 image (gray or BGR): an :class:`AlignResult`."""
        return self.align_batch([image])[0]

    def align_batch(self, images):
        """:meth:`align` for several images, the detector run once for all of them (:meth:`detect_batch`).

        Results equal :meth:`align` on each image (to float rounding).
        """
        images = [self._squeeze(image) for image in images]
        return [self._result(image, boxes, landmarks)
                for image, (boxes, landmarks) in zip(images, self.detect_batch(images))]

    def detect(self, image):
        """Boxes ``(n, 5)`` and landmarks ``(n, 5, 2)`` in ``image``'s pixel coordinates.

        Runs the detector on the image shrunk to ``max_detect_side`` when it is larger (coordinates mapped
        back through pixel centres), once more with ``retry_margin`` padding when nothing is found.
        """
        return self.detect_batch([self._squeeze(image)])[0]

    def detect_batch(self, images):
        """:meth:`detect` for a list of images: the detector runs once for all of them (MTCNN's
        ``detect_batch``: each stage batched across images), then once more for those without a face (retry
        margin). A detector without ``detect_batch`` is called image by image."""
        inputs = [self._detector_input(image) for image in images]
        smalls = [small for small, _ in inputs]
        found = self._run_detector(smalls)
        retry = [k for k, (boxes, _) in enumerate(found) if len(boxes) == 0] if self.retry_margin else []
        if retry:
            for k, again in zip(retry, self._run_detector([smalls[k] for k in retry], self.retry_margin)):
                found[k] = again
        return [self._map_back(boxes, landmarks, factor) for (boxes, landmarks), (_, factor) in zip(found, inputs)]

    def _detector_input(self, image):
        """``(image the detector sees, (sx, sy))``: shrunk to ``max_detect_side`` when larger."""
        h, w = image.shape[:2]
        if self.max_detect_side and max(h, w) > self.max_detect_side:
            factor = self.max_detect_side / max(h, w)
            sw, sh = max(1, round(w * factor)), max(1, round(h * factor))
            return cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA), (sw / w, sh / h)
        return image, (1.0, 1.0)

    @staticmethod
    def _map_back(boxes, landmarks, factor):
        """Detections in the shrunk image -> the full image's pixel coordinates (through pixel centres)."""
        if factor != (1.0, 1.0) and len(boxes):
            boxes, landmarks = np.array(boxes, np.float64), np.array(landmarks, np.float64)
            scale = np.array(factor)
            boxes[:, 0:2] = (boxes[:, 0:2] + 0.5) / scale - 0.5
            boxes[:, 2:4] = (boxes[:, 2:4] + 0.5) / scale - 0.5
            landmarks = (landmarks + 0.5) / scale - 0.5
        return boxes, landmarks

    def _run_detector(self, images, margin=None):
        if hasattr(self.detector, 'detect_batch'):
            return self.detector.detect_batch(images, margin)
        return [self.detector.detect(image) if margin is None else self.detector.detect(image, margin=margin)
                for image in images]

    @staticmethod
    def _squeeze(image):
        image = np.asarray(image)
        return image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image

    def _result(self, image, boxes, landmarks):
        if len(boxes) == 0:
            if self.fallback == 'center':
                return AlignResult(center_crop(self._to_color(image), self.size, self.scale), 'center')
            return AlignResult()
        k = choose_face(boxes, image.shape)
        crop, matrix = self.warp(image, landmarks[k])
        return AlignResult(crop, 'aligned', len(boxes), k, float(boxes[k, 4]), boxes[k, :4], landmarks[k], matrix)

    def _to_color(self, image):
        if self.color == 'gray' and image.ndim == 3:
            return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if self.color == 'bgr' and image.ndim == 2:
            return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        return image


def make_aligner(input_size=TEST_SIZE, color='bgr', network=None, scale=None, **kwargs):
    """The aligner extraction uses (``extract_features.py --align``): crops of the network input side
    (128: the centre of the 144 training geometry, ``ec_y`` 40 at scale 1), BGR so the model's own
    preprocessing picks the channels. ``scale`` defaults to the one fitted to ``network``
    (:data:`FITTED_SCALES`: LightCNN-V4 1.1), else 1 -- the geometry of this project's own training records."""
    scale = FITTED_SCALES.get(network, 1.0) if scale is None else scale
    return FaceAligner(size=input_size, color=color, scale=scale, **kwargs)


# ---------------------------------------------------------------------------------------------- trees

_WORKER = {}


def _init_worker(aligner):
    """Per-process state of a pool worker: the aligner (its nets load on first use), one OpenCV thread.
    OpenMP threads come from the environment the pool started the worker with (``compute_env``)."""
    cv2.setNumThreads(1)
    _WORKER['aligner'] = aligner


def _align_chunk(tasks):
    """Align each ``(rel, src, dst)`` of ``tasks`` (the detector batched over them); report rows, in order.
    Never raises for a bad image."""
    rows, readable = [], []
    for rel, src, dst in tasks:
        row = {'path': printable(rel), 'status': None, 'reason': '', 'faces': 0, 'score': '', 'box': '',
               'landmarks': ''}
        rows.append(row)
        try:
            readable.append((row, dst, read_image(src, 'bgr')))
        except ImageError as err:
            row.update(status='unreadable', reason=str(err))
    results = _WORKER['aligner'].align_batch([image for _, _, image in readable]) if readable else []
    for (row, dst, _), result in zip(readable, results):
        row.update(status=result.status, faces=result.num_faces)
        if result.status == 'aligned':
            row.update(score=round(result.score, 4), box=' '.join(f'{v:.1f}' for v in result.box),
                       landmarks=' '.join(f'{v:.1f}' for v in result.landmarks.ravel()))
        else:
            row['reason'] = 'no face' + (' (centre-cropped instead)' if result.status == 'center' else '')
        if result.image is not None:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if not cv2.imwrite(dst, result.image):
                row.update(status='unwritable', reason=f'cv2.imwrite failed for {dst}')
    return rows


def default_workers(images):
    """Alignment processes for a tree of ``images`` files: one per physical core (one OpenMP thread each,
    see ``common.threads``), or this process alone below :data:`POOL_MIN_IMAGES` images, where starting
    workers (each loads MXNet and the nets, ~2 s) costs more than it saves."""
    return physical_cores() if images >= POOL_MIN_IMAGES else 1


def _output_name(rel, color):
    stem, ext = os.path.splitext(rel)
    if color == 'bgr' and ext.lower() in ('.pgm', '.pbm'):
        return stem + '.png'  # PGM holds gray only
    return rel


def report_paths(out, report=None):
    """``(json, csv)`` of the alignment report: ``OUT.align_report.json/.csv`` beside the tree ``OUT``
    (never inside it, where packing would take them for stray files), or ``REPORT.json/.csv``."""
    stem = os.fspath(report) if report else os.path.abspath(out).rstrip(os.sep) + '.' + REPORT_NAME
    if stem.endswith(('.json', '.csv')):
        stem = stem.rsplit('.', 1)[0]
    return stem + '.json', stem + '.csv'


def align_tree(images, out, size=TRAIN_SIZE, color='gray', workers=None, fallback=None, method='similarity',
               aligner=None, progress=True, report=None, scale=1.0):
    """Mirror the image tree ``images`` into ``out`` with aligned faces; write the report; return a summary.

    ``workers`` processes (default :func:`default_workers`) align chunks of :data:`CHUNK` images, each
    with ``common.threads.compute_env('align', workers)`` (one OpenMP thread unless the user set
    ``OMP_NUM_THREADS``); with 1, this process aligns them itself.

    Images without a face are not written (or, with ``fallback='center'``, written centre-cropped) and are
    listed with undecodable files in the report beside the tree (:func:`report_paths`:
    ``OUT.align_report.json`` and ``.csv``: every image, its status, the chosen box and landmarks; links
    the tree walk did not follow twice, :func:`common.images.walk_tree`, as ``ignored``). Colour output
    of ``.pgm`` inputs is written as ``.png``.

    ``out`` and the report may not overlap ``images`` (:func:`common.fileio.check_outputs_apart`); while it
    writes, the run holds ``OUT.lock`` (:func:`common.fileio.exclusive_lock`): a second run into the same
    ``out`` fails at once with ``OUT is being written by process N``.
    """
    images, out = os.path.abspath(images), os.path.abspath(out)
    check_image_root(images, 'images')
    check_output_folder(out, 'out')  # first: a file in its way is about out, not the report beside it
    json_path, csv_path = report_paths(out, report)
    check_outputs_apart({'report': [json_path, csv_path]}, trees={'images': images}, output_trees={'out': out})
    if workers is not None:
        check_number(workers, 'workers', minimum=1, maximum=MAX_WORKERS, integer=True)
    for path in (json_path, csv_path):
        check_output_path(path, 'report')
    with exclusive_lock(out + '.lock', out):  # one writer per tree: a second run fails at once, naming the first
        return _align_locked(images, out, json_path, csv_path, size, color, workers, fallback, method, aligner,
                             progress, scale)


def _align_locked(images, out, json_path, csv_path, size, color, workers, fallback, method, aligner, progress,
                  scale):
    """:func:`align_tree` once its paths are checked and ``OUT.lock`` is held."""
    files, ignored = scan_images(images)
    if not files:
        raise ParameterError(lambda n: f'{n("images")}: no image files under {images}')
    workers = default_workers(len(files)) if workers is None else workers
    aligner = aligner or FaceAligner(size=size, color=color, fallback=fallback, method=method, scale=scale)
    tasks = [(rel, os.path.join(images, rel), os.path.join(out, _output_name(rel, aligner.color)))
             for rel in files]
    os.makedirs(out, exist_ok=True)
    start = time.time()
    chunks = [tasks[i:i + CHUNK] for i in range(0, len(tasks), CHUNK)]
    rows = []
    with tqdm(total=len(tasks), desc='align', unit='img', disable=not progress) as bar:
        if workers == 1:
            _WORKER['aligner'] = aligner
            done = map(_align_chunk, chunks)
        else:  # spawned with their thread settings; each imports MXNet itself and loads its own nets
            pool = process_pool(workers, _init_worker, (aligner,), env=compute_env('align', workers))
            done = pool.imap(_align_chunk, chunks)
        try:
            for chunk_rows in done:
                rows += chunk_rows
                bar.update(len(chunk_rows))
        finally:
            if workers > 1:
                pool.terminate()
                pool.join()
    seconds = time.time() - start
    total = len(rows)
    rows += [{'path': printable(rel), 'status': 'ignored', 'reason': reason, 'faces': 0, 'score': '', 'box': '',
              'landmarks': ''} for rel, reason in ignored]
    counts = {}
    for row in rows:
        counts[row['status']] = counts.get(row['status'], 0) + 1
    summary = {'images': images, 'out': out, 'size': aligner.size, 'scale': aligner.scale, 'color': aligner.color,
               'fallback': aligner.fallback, 'method': aligner.method, 'total': total, 'counts': counts,
               'seconds': round(seconds, 2), 'images_per_second': round(total / max(seconds, 1e-9), 2),
               'template': template(aligner.size, aligner.scale).round(3).tolist(),
               'not_aligned': [r for r in rows if r['status'] != 'aligned'],
               'report': {'json': json_path, 'csv': csv_path}}
    with atomic_write(json_path, 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=1)
    with atomic_write(csv_path, 'w', encoding='utf-8', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return summary


def summary_line(summary):
    """One line for the terminal."""
    counts = summary['counts']
    missing = summary['total'] - counts.get('aligned', 0)
    report = summary.get('report', {}).get('csv') or os.path.join(summary['out'], REPORT_NAME + '.csv')
    line = (f"aligned {counts.get('aligned', 0)} of {summary['total']} images into {summary['out']} "
            f"in {summary['seconds']:.1f} s ({summary['images_per_second']:.1f} img/s)")
    if missing or counts.get('ignored'):
        parts = ', '.join(f'{n} {s}' for s, n in sorted(counts.items()) if s != 'aligned')
        line += f"; not aligned: {parts} -> listed in {report}"
    return line
