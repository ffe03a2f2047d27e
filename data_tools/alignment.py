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
import ctypes
import json
import math
import os
import time
from dataclasses import dataclass, field

import cv2
import mxnet as mx
import numpy as np
from tqdm import tqdm

from common.checks import check_number
from common.errors import UsageError
from common.fileio import atomic_write, check_output_path
from common.images import ImageError, read_image, scan_images
from common.preprocessing import crop_resize
from common.textio import printable
from common.workers import process_pool

from .mtcnn import MTCNN

__all__ = ['template', 'similarity_transform', 'eyes_mouth_transform', 'choose_face', 'center_crop',
           'FaceAligner', 'AlignResult', 'make_aligner', 'align_tree', 'TRAIN_SIZE', 'TEST_SIZE']

TRAIN_SIZE, TEST_SIZE = 144, 128
EC_Y, EC_MC_Y = 48.0, 48.0           # in the 144 crop (official LightCNN preprocessing)
# Mean-face proportions from InsightFace's 112x112 arcface_src, symmetrised:
_REF = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                 [41.5493, 92.3655], [70.7299, 92.2041]])
_REF_EC_MC = _REF[3:].mean(0)[1] - _REF[:2].mean(0)[1]
HALF_EYE_DISTANCE = (_REF[1, 0] - _REF[0, 0]) / 2 * EC_MC_Y / _REF_EC_MC
HALF_MOUTH_WIDTH = (_REF[4, 0] - _REF[3, 0]) / 2 * EC_MC_Y / _REF_EC_MC
NOSE_BELOW_EYES = (_REF[2, 1] - _REF[:2].mean(0)[1]) * EC_MC_Y / _REF_EC_MC
REPORT_NAME = 'align_report'
MAX_DETECT_SIDE = 1280  # longer side the detector sees (see FaceAligner)


def template(size=TRAIN_SIZE):
    """The five template points ``(5, 2)`` (x, y) for a ``size`` square crop (see module doc)."""
    cx = (TRAIN_SIZE - 1) / 2.0
    points = np.array([[cx - HALF_EYE_DISTANCE, EC_Y], [cx + HALF_EYE_DISTANCE, EC_Y],
                       [cx, EC_Y + NOSE_BELOW_EYES],
                       [cx - HALF_MOUTH_WIDTH, EC_Y + EC_MC_Y], [cx + HALF_MOUTH_WIDTH, EC_Y + EC_MC_Y]])
    return points + (size - TRAIN_SIZE) / 2.0


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


def eyes_mouth_transform(landmarks, size=TRAIN_SIZE):
    """The official constraints as a 2x3 matrix: eyes level, ec->mc vertical 48, eye centre on template."""
    pts = np.asarray(landmarks, np.float64)
    eye_c, mouth_c = pts[:2].mean(0), pts[3:5].mean(0)
    dx, dy = pts[1] - pts[0]
    angle = math.atan2(dy, dx)
    rot = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    vertical = (rot @ (mouth_c - eye_c))[1]
    if vertical <= 0:
        raise ValueError('mouth is not below the eyes')
    matrix = rot * (EC_MC_Y / vertical)
    target = template(size)[:2].mean(0)
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


def center_crop(image, size):
    """Largest central square of the image resized to ``size`` (the no-face fallback)."""
    return crop_resize(image, size, crop=min(image.shape[:2]))


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
    max_detect_side : int or None
        Images whose longer side exceeds this many pixels are shrunk to it (``INTER_AREA``) for the
        detector only; boxes and landmarks are mapped back and the crop is warped from the full image.
        Bounds the detector's time and memory (an 8000x8000 photo took 34 s and 5.1 GB unbounded);
        faces smaller than ``min_face_size`` x (longer side / ``max_detect_side``) pixels are then
        missed. ``None``: no bound.
    """

    def __init__(self, size=TRAIN_SIZE, color='gray', fallback=None, method='similarity', border='replicate',
                 retry_margin=0.25, detector=None, max_detect_side=MAX_DETECT_SIDE):
        if color not in ('gray', 'bgr'):
            raise ValueError(f"color must be 'gray' or 'bgr', not {color!r}")
        if fallback not in (None, 'center'):
            raise ValueError(f"fallback must be None or 'center', not {fallback!r}")
        if method not in ('similarity', 'eyes-mouth'):
            raise ValueError(f"method must be 'similarity' or 'eyes-mouth', not {method!r}")
        if border not in ('replicate', 'constant'):
            raise ValueError(f"border must be 'replicate' or 'constant', not {border!r}")
        if max_detect_side is not None and max_detect_side < 48:
            raise ValueError(f'max_detect_side must be None or >= 48 pixels, not {max_detect_side}')
        if detector is None:
            detector = MTCNN(min_face_size=20)
        self.size, self.color, self.fallback = int(size), color, fallback
        self.retry_margin = retry_margin
        self.method, self.border, self.detector = method, border, detector
        self.max_detect_side = max_detect_side

    def __repr__(self):
        return (f'FaceAligner(size={self.size}, color={self.color!r}, fallback={self.fallback!r}, '
                f'method={self.method!r})')

    def __call__(self, image):
        """Aligned uint8 face (or the fallback crop), or None when no face is found."""
        return self.align(image).image

    def transform(self, landmarks):
        """2x3 matrix taking image coordinates to the template crop."""
        if self.method == 'eyes-mouth':
            return eyes_mouth_transform(landmarks, self.size)
        return similarity_transform(landmarks, template(self.size))

    def warp(self, image, landmarks):
        """Warp ``image`` so ``landmarks`` land on the template; returns ``(crop, matrix)``."""
        matrix = self.transform(landmarks)
        border = cv2.BORDER_REPLICATE if self.border == 'replicate' else cv2.BORDER_CONSTANT
        crop = cv2.warpAffine(self._to_color(image), matrix, (self.size, self.size), flags=cv2.INTER_LINEAR,
                              borderMode=border, borderValue=0)
        return crop, matrix

    def align(self, image):
        """Full details for one uint8 image (gray or BGR): an :class:`AlignResult`."""
        image = np.asarray(image)
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        boxes, landmarks = self.detect(image)
        if len(boxes) == 0:
            if self.fallback == 'center':
                return AlignResult(center_crop(self._to_color(image), self.size), 'center')
            return AlignResult()
        k = choose_face(boxes, image.shape)
        crop, matrix = self.warp(image, landmarks[k])
        return AlignResult(crop, 'aligned', len(boxes), k, float(boxes[k, 4]), boxes[k, :4], landmarks[k], matrix)

    def detect(self, image):
        """Boxes ``(n, 5)`` and landmarks ``(n, 5, 2)`` in ``image``'s pixel coordinates.

        Runs the detector on the image shrunk to ``max_detect_side`` when it is larger (coordinates mapped
        back through pixel centres), once more with ``retry_margin`` padding when nothing is found.
        """
        h, w = image.shape[:2]
        small, sx, sy = image, 1.0, 1.0
        if self.max_detect_side and max(h, w) > self.max_detect_side:
            factor = self.max_detect_side / max(h, w)
            sw, sh = max(1, round(w * factor)), max(1, round(h * factor))
            small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
            sx, sy = sw / w, sh / h
        boxes, landmarks = self.detector.detect(small)
        if len(boxes) == 0 and self.retry_margin:
            boxes, landmarks = self.detector.detect(small, margin=self.retry_margin)
        if (sx, sy) != (1.0, 1.0) and len(boxes):
            boxes, landmarks = np.array(boxes, np.float64), np.array(landmarks, np.float64)
            scale = np.array([sx, sy])
            boxes[:, 0:2] = (boxes[:, 0:2] + 0.5) / scale - 0.5
            boxes[:, 2:4] = (boxes[:, 2:4] + 0.5) / scale - 0.5
            landmarks = (landmarks + 0.5) / scale - 0.5
        return boxes, landmarks

    def _to_color(self, image):
        if self.color == 'gray' and image.ndim == 3:
            return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if self.color == 'bgr' and image.ndim == 2:
            return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        return image


def make_aligner(input_size=TEST_SIZE, color='bgr', **kwargs):
    """The aligner extraction uses (``extract_features.py --align``): crops of the network input side
    (128 -> ``ec_y`` 40, the centre of the 144 training geometry), BGR so the model's own preprocessing
    picks the channels."""
    return FaceAligner(size=input_size, color=color, **kwargs)


# ---------------------------------------------------------------------------------------------- trees

_WORKER = {}


def _init_worker(aligner, one_thread=True):
    """Per-process state: the aligner (its nets load on first use); in pool workers one OpenMP/OpenCV
    thread each, so N workers do not fight over the cores."""
    if one_thread:
        mx.base._LIB.MXSetNumOMPThreads(ctypes.c_int(1))
        cv2.setNumThreads(1)
    _WORKER['aligner'] = aligner


def _align_one(task):
    """Align ``src`` into ``dst``; a report row (never raises for a bad image)."""
    rel, src, dst = task
    row = {'path': printable(rel), 'status': None, 'reason': '', 'faces': 0, 'score': '', 'box': '', 'landmarks': ''}
    try:
        image = read_image(src, 'bgr')
    except ImageError as err:
        row.update(status='unreadable', reason=str(err))
        return row
    result = _WORKER['aligner'].align(image)
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
    return row


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


def align_tree(images, out, size=TRAIN_SIZE, color='gray', workers=1, fallback=None, method='similarity',
               aligner=None, progress=True, report=None):
    """Mirror the image tree ``images`` into ``out`` with aligned faces; write the report; return a summary.

    Images without a face are not written (or, with ``fallback='center'``, written centre-cropped) and are
    listed with undecodable files in the report beside the tree (:func:`report_paths`:
    ``OUT.align_report.json`` and ``.csv``: every image, its status, the chosen box and landmarks; links
    the tree walk did not follow twice, :func:`common.images.walk_tree`, as ``ignored``). Colour output
    of ``.pgm`` inputs is written as ``.png``.
    """
    images, out = os.path.abspath(images), os.path.abspath(out)
    if not os.path.isdir(images):
        raise UsageError(f'--images: no such directory: {images}')
    if out == images or out.startswith(images + os.sep):
        raise UsageError('--out must not be inside --images (the tree would be read while written)')
    check_number(workers, '--workers', minimum=1, integer=True)
    json_path, csv_path = report_paths(out, report)
    for path in (json_path, csv_path):
        check_output_path(path, '--report')
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f'--out {out} is a file, not a folder')
    files, ignored = scan_images(images)
    if not files:
        raise UsageError(f'--images: no image files under {images}')
    aligner = aligner or FaceAligner(size=size, color=color, fallback=fallback, method=method)
    tasks = [(rel, os.path.join(images, rel), os.path.join(out, _output_name(rel, aligner.color)))
             for rel in files]
    os.makedirs(out, exist_ok=True)
    start = time.time()
    bar = dict(total=len(tasks), desc='align', unit='img', disable=not progress)
    if workers == 1:
        _init_worker(aligner, one_thread=False)
        rows = [_align_one(t) for t in tqdm(tasks, **bar)]
    else:
        # no preload: each worker imports MXNet itself, after starting clean, and loads its own nets
        with process_pool(workers, _init_worker, (aligner,)) as pool:
            rows = list(tqdm(pool.imap(_align_one, tasks, chunksize=8), **bar))
    seconds = time.time() - start
    total = len(rows)
    rows += [{'path': printable(rel), 'status': 'ignored', 'reason': reason, 'faces': 0, 'score': '', 'box': '',
              'landmarks': ''} for rel, reason in ignored]
    counts = {}
    for row in rows:
        counts[row['status']] = counts.get(row['status'], 0) + 1
    summary = {'images': images, 'out': out, 'size': aligner.size, 'color': aligner.color,
               'fallback': aligner.fallback, 'method': aligner.method, 'total': total, 'counts': counts,
               'seconds': round(seconds, 2), 'images_per_second': round(total / max(seconds, 1e-9), 2),
               'template': template(aligner.size).round(3).tolist(),
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
