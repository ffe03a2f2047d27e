"""Alignment maths against hand-computed cases, the aligner with a stand-in detector, tree alignment + CLI."""
import json
import math
import os
import pickle
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from common.errors import UsageError
from data_tools.alignment import (FaceAligner, align_tree, center_crop, choose_face, eyes_mouth_transform,
                                  similarity_transform, template)


def _apply(matrix, points):
    return np.asarray(points) @ matrix[:, :2].T + matrix[:, 2]


def _similarity(angle_deg, scale, shift):
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), shift[0]],
                     [scale * math.sin(a), scale * math.cos(a), shift[1]]])


class StubDetector:
    """Returns fixed boxes/landmarks, so the aligner is tested without weights."""

    def __init__(self, boxes, landmarks):
        self.boxes, self.landmarks = np.asarray(boxes, float), np.asarray(landmarks, float)
        self.calls = []

    def detect(self, image, margin=None):
        self.calls.append(margin)
        return self.boxes.copy(), self.landmarks.copy()


def test_template_meets_official_constraints():
    t144, t128 = template(144), template(128)
    eye_c, mouth_c = t144[:2].mean(0), t144[3:].mean(0)
    assert t144[0, 1] == t144[1, 1] == 48                 # eyes level, ec_y = 48
    assert eye_c[0] == mouth_c[0] == t144[2, 0] == 71.5   # centred (pixel-centre coordinates)
    assert mouth_c[1] - eye_c[1] == 48                    # ec_mc_y = 48
    np.testing.assert_allclose(t128, t144 - 8)            # 128 = centre crop of 144: ec_y = 40
    assert t128[:2, 1].tolist() == [40, 40]
    mirrored = np.column_stack([143 - t144[:, 0], t144[:, 1]])[[1, 0, 2, 4, 3]]
    np.testing.assert_allclose(mirrored, t144)            # left-right mirroring keeps the template
    assert t144[2, 1] > eye_c[1] and 30 < t144[1, 0] - t144[0, 0] < 50


def test_similarity_transform_hand_computed():
    # (0,0)->(1,1), (1,0)->(1,3): rotate 90 degrees, scale 2, shift (1,1)
    m = similarity_transform([[0, 0], [1, 0]], [[1, 1], [1, 3]])
    np.testing.assert_allclose(m, [[0, -2, 1], [2, 0, 1]], atol=1e-12)


@pytest.mark.parametrize('angle, scale, shift', [(0, 1, (0, 0)), (17, 0.6, (12.5, -3)), (-35, 2.3, (40, 71))])
def test_landmarks_from_known_similarity_map_exactly_onto_template(angle, scale, shift):
    known = _similarity(angle, scale, shift)
    landmarks = _apply(known, template())                 # a face: the template moved by `known`
    m = similarity_transform(landmarks, template())
    np.testing.assert_allclose(_apply(m, landmarks), template(), atol=1e-9)
    inverse = np.linalg.inv(np.vstack([known, [0, 0, 1]]))[:2]
    np.testing.assert_allclose(m, inverse, atol=1e-9)
    aligner = FaceAligner(method='eyes-mouth', detector=StubDetector([], []))
    np.testing.assert_allclose(_apply(aligner.transform(landmarks), landmarks), template(), atol=1e-9)


def test_similarity_never_reflects():
    src = template()
    dst = np.column_stack([-src[:, 0], src[:, 1]])        # a mirror image
    m = similarity_transform(src, dst)
    assert np.linalg.det(m[:, :2]) > 0


def test_eyes_mouth_transform_levels_eyes_and_sets_distance():
    pts = np.array([[30, 40], [60, 52], [47, 60], [38, 85], [60, 92]], float)  # tilted face
    out = _apply(eyes_mouth_transform(pts, 144), pts)
    assert abs(out[0, 1] - out[1, 1]) < 1e-9
    np.testing.assert_allclose(out[:2].mean(0), [71.5, 48])
    assert abs(out[3:].mean(0)[1] - out[:2].mean(0)[1] - 48) < 1e-9


def test_choose_face_largest_then_most_central():
    shape = (100, 200)
    boxes = np.array([[0, 0, 40, 40, .99], [80, 30, 130, 80, .9], [150, 0, 190, 40, .95]])
    assert choose_face(boxes, shape) == 1                  # 50x50 beats 40x40
    ties = np.array([[0, 0, 50, 50, .99], [75, 25, 124, 74, .9]])  # 2500 vs 2401 (within 10 %)
    assert choose_face(ties, shape) == 1                   # the central one wins the tie


def test_aligner_warps_landmarks_onto_template_and_picks_face():
    # draw bright dots at five points of a rotated, scaled face; the aligned crop must show them at the template
    known = _similarity(20, 0.7, (-10, 30))
    landmarks = _apply(known, template())
    image = np.zeros((160, 160), np.uint8)
    for x, y in landmarks:
        cv2.circle(image, (int(round(x)), int(round(y))), 2, 255, -1)
    boxes = [[0, 0, 20, 20, .99], [20, 20, 150, 150, .9]]
    stub = StubDetector(boxes, [np.zeros((5, 2)), landmarks])
    result = FaceAligner(size=144, border='constant', detector=stub).align(image)
    assert result.status == 'aligned' and result.chosen == 1 and result.num_faces == 2
    assert result.image.shape == (144, 144) and result.image.dtype == np.uint8
    for x, y in template(144):
        patch = result.image[int(y) - 4:int(y) + 6, int(x) - 4:int(x) + 6]
        assert patch.max() > 200
        ys, xs = np.nonzero(patch > 100)
        assert abs(xs.mean() + int(x) - 4 - x) < 1.5 and abs(ys.mean() + int(y) - 4 - y) < 1.5
    colour = FaceAligner(size=128, color='bgr', detector=stub)(image)
    assert colour.shape == (128, 128, 3)


def test_no_face_none_or_center_fallback():
    stub = StubDetector(np.zeros((0, 5)), np.zeros((0, 5, 2)))
    image = np.arange(120 * 100, dtype=np.uint32).reshape(120, 100).astype(np.uint8)
    assert FaceAligner(detector=stub)(image) is None
    assert stub.calls == [None, 0.25]                      # retried once on a padded frame
    result = FaceAligner(size=144, fallback='center', detector=stub).align(image)
    assert result.status == 'center'
    np.testing.assert_array_equal(result.image, center_crop(image, 144))
    np.testing.assert_array_equal(center_crop(image, 100), image[10:110])


def test_template_scale_enlarges_the_face_about_the_crop_centre_and_the_fallback_alike():
    centre = np.array([63.5, 63.5])
    np.testing.assert_allclose(template(128, 1.1) - centre, 1.1 * (template(128) - centre))
    t = template(144, 1.25)
    assert t[3:, 1].mean() - t[:2, 1].mean() == pytest.approx(48 * 1.25)      # ec_mc_y scaled
    known = _similarity(-12, 0.8, (20, 5))
    landmarks = _apply(known, template())
    stub = StubDetector([[0, 0, 150, 150, .99]], [landmarks])
    for method in ('similarity', 'eyes-mouth'):
        aligner = FaceAligner(size=128, scale=1.1, method=method, detector=stub)
        np.testing.assert_allclose(_apply(aligner.transform(landmarks), landmarks)[[0, 1]],
                                   template(128, 1.1)[[0, 1]], atol=1e-9)
    image = np.arange(120 * 100, dtype=np.uint32).reshape(120, 100).astype(np.uint8)
    np.testing.assert_array_equal(center_crop(image, 80, scale=1.25), image[20:100, 10:90])  # 100/1.25 = 80
    none = StubDetector(np.zeros((0, 5)), np.zeros((0, 5, 2)))
    result = FaceAligner(size=80, scale=1.25, fallback='center', detector=none).align(image)
    np.testing.assert_array_equal(result.image, image[20:100, 10:90])
    from data_tools.alignment import V4_SCALE, make_aligner
    assert make_aligner(128, network='lightcnn_v4').scale == V4_SCALE
    assert make_aligner(128, network='lightcnn9').scale == make_aligner(128).scale == 1.0


def test_bad_options_raise():
    for kwargs in [dict(color='rgb'), dict(fallback='zoom'), dict(method='affine'), dict(border='wrap'),
                   dict(scale=0)]:
        with pytest.raises(ValueError):
            FaceAligner(detector=StubDetector([], []), **kwargs)


def test_aligner_pickles_without_nets():
    from data_tools.mtcnn import MTCNN
    aligner = FaceAligner(size=128, detector=MTCNN(min_face_size=30))
    aligner.detector._nets = object()                       # pretend loaded
    clone = pickle.loads(pickle.dumps(aligner))
    assert clone.detector._nets is None and clone.size == 128 and clone.detector.min_face_size == 30


# -------------------------------------------------------------------- real detector: trees and the CLI

@pytest.fixture(scope='module')
def weights_ready():
    from data_tools.mtcnn_weights import converted_params
    try:
        converted_params()
    except UsageError as err:
        pytest.skip(f'MTCNN weights unavailable (pip download mtcnn==0.1.1 failed?): {err}')


def _small_tree(tmp_path, orl_root):
    root = tmp_path / 'faces'
    for ident in ('s1', 's2'):
        (root / ident).mkdir(parents=True)
        for i in (1, 2):
            shutil.copy(orl_root / ident / f'{i}.pgm', root / ident / f'{i}.pgm')
    cv2.imwrite(str(root / 's2' / 'blank.png'), np.full((112, 92), 90, np.uint8))
    (root / 's2' / 'broken.jpg').write_bytes(b'not a jpeg')
    return root


def test_align_tree_with_workers_and_report(tmp_path, orl_root, weights_ready):
    root = _small_tree(tmp_path, orl_root)
    out = tmp_path / 'aligned'
    summary = align_tree(str(root), str(out), size=128, workers=2, progress=False)
    assert summary['counts'] == {'aligned': 4, 'no face': 1, 'unreadable': 1}
    for rel in ('s1/1.pgm', 's1/2.pgm', 's2/1.pgm', 's2/2.pgm'):
        img = cv2.imread(str(out / rel), cv2.IMREAD_UNCHANGED)
        assert img.shape == (128, 128)
    assert not (out / 's2' / 'blank.png').exists()
    assert not list(out.glob('align_report.*'))            # the report sits beside the tree, not in it
    report = json.loads((tmp_path / 'aligned.align_report.json').read_text())
    assert {r['path']: r['status'] for r in report['not_aligned']} == {
        os.path.join('s2', 'blank.png'): 'no face', os.path.join('s2', 'broken.jpg'): 'unreadable'}
    assert len((tmp_path / 'aligned.align_report.csv').read_text().strip().splitlines()) == 1 + 6


def test_align_tree_default_workers(monkeypatch):
    from data_tools import alignment
    monkeypatch.setattr(alignment, 'physical_cores', lambda: 6)
    assert alignment.default_workers(alignment.POOL_MIN_IMAGES - 1) == 1
    assert alignment.default_workers(alignment.POOL_MIN_IMAGES) == 6


def test_cli_fallback_center_and_errors(tmp_path, orl_root, weights_ready, repo_root):
    root = _small_tree(tmp_path, orl_root)
    out = tmp_path / 'aligned'
    script = str(repo_root / 'data_tools' / 'align.py')
    proc = subprocess.run([sys.executable, script, '--images', str(root), '--out', str(out), '--fallback',
                           'center', '--color', 'bgr', '--quiet'], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert 'aligned 4 of 6 images' in proc.stdout and '1 center' in proc.stdout
    assert cv2.imread(str(out / 's2' / 'blank.png')).shape == (144, 144, 3)
    assert (out / 's1' / '1.png').exists()                  # colour PGM input written as PNG
    bad = subprocess.run([sys.executable, script, '--images', str(tmp_path / 'missing'), '--out', str(out)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith('error:') and len(bad.stderr.splitlines()) == 1


def test_align_batch_equals_align_one_by_one(orl_root, weights_ready):
    """Batched detection (and its retry on the padded frame for faceless images) changes no result."""
    from common.images import read_image
    aligner = FaceAligner(size=128, fallback='center')
    images = [read_image(orl_root / ident / f'{i}.pgm', 'bgr') for ident in ('s2', 's7') for i in (3, 8)]
    images.insert(2, np.full((112, 92, 3), 90, np.uint8))   # no face: retried, then centre-cropped
    batch = aligner.align_batch(images)
    assert [r.status for r in batch] == ['aligned', 'aligned', 'center', 'aligned', 'aligned']
    for image, ours in zip(images, batch):
        alone = aligner.align(image)
        assert ours.status == alone.status and ours.num_faces == alone.num_faces
        np.testing.assert_array_equal(ours.image, alone.image)
        if alone.status == 'aligned':
            np.testing.assert_allclose(ours.landmarks, alone.landmarks, atol=1e-3)


def test_aligned_orl_landmarks_land_near_template(orl_root, weights_ready):
    from common.images import read_image
    aligner = FaceAligner(size=144)
    residuals = []
    for ident in ('s1', 's5', 's9'):
        result = aligner.align(read_image(orl_root / ident / '1.pgm', 'bgr'))
        assert result.status == 'aligned'
        residuals.append(np.linalg.norm(_apply(result.matrix, result.landmarks) - template(144), axis=1).mean())
    assert max(residuals) < 6, residuals                    # pixels in the 144 crop


# ------------------------------------------------------------------------- integration: packing, extraction

def test_pack_records_with_aligner_skips_no_face(tmp_path, orl_root, weights_ready):
    import mxnet as mx
    from data_tools.packing import pack_records
    root = _small_tree(tmp_path, orl_root)
    (root / 's2' / 'broken.jpg').unlink()
    summary = pack_records(str(root), str(tmp_path / 'rec' / 'orl'), image_filter=FaceAligner(size=144),
                           workers=2, progress=False, shuffle=False)
    assert summary['packed'] == 4
    assert [s['reason'] for s in summary['skipped']] == ['no face']
    reader = mx.recordio.MXIndexedRecordIO(str(tmp_path / 'rec' / 'orl.idx'), str(tmp_path / 'rec' / 'orl.rec'), 'r')
    header, img = mx.recordio.unpack_img(reader.read_idx(reader.keys[0]), cv2.IMREAD_UNCHANGED)
    assert img.shape == (144, 144)


def test_extraction_loader_aligns_to_network_input(orl_root, weights_ready):
    from common.preprocessing import Preprocessing
    from data_tools.alignment import make_aligner
    from symbols.inference import image_loader
    pre = Preprocessing(channels='gray', input_size=128)
    aligner = make_aligner(pre.input_size)
    load = image_loader(pre, align=aligner)
    img = load(str(orl_root / 's3' / '4.pgm'))
    assert img.shape == (128, 128, 1) and img.dtype == np.uint8
    expected = cv2.cvtColor(aligner(cv2.imread(str(orl_root / 's3' / '4.pgm'))), cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(img[:, :, 0], expected)


def test_extraction_loader_aligns_a_batch_at_once_with_the_same_images(orl_root, weights_ready):
    """The decoding threads hand a whole batch to the aligner (one MTCNN run); images, faceless images and
    missing files come out as one by one."""
    from common.images import ImageError
    from common.preprocessing import Preprocessing
    from data_tools.alignment import make_aligner
    from symbols.inference import _load_batch, image_loader
    pre = Preprocessing(channels='gray', input_size=128)
    aligner = make_aligner(pre.input_size)
    calls = []
    batch_align = aligner.align_batch
    aligner.align_batch = lambda images: calls.append(len(images)) or batch_align(images)
    load = image_loader(pre, align=aligner)
    sources = [str(orl_root / 's3' / '4.pgm'), np.full((112, 92), 90, np.uint8), None,
               str(orl_root / 's8' / '2.pgm')]
    batch = _load_batch(load, sources)
    assert calls == [3]                                          # one detector run for the decodable three
    assert [type(x).__name__ for x in batch] == ['ndarray', 'ImageError', 'ImageError', 'ndarray']
    assert str(batch[1]) == 'no face found by the aligner' and str(batch[2]) == 'file not found'
    for ours, source in zip(batch, sources):
        if isinstance(ours, np.ndarray):
            np.testing.assert_array_equal(ours, load(source))
        else:
            with pytest.raises(ImageError):
                load(source)


# ------------------------------------------------------------------------- large inputs: a bounded detector

class ShapeRecordingDetector(StubDetector):
    """Stub that records the shape of what it was given and returns its points in that image's pixels."""

    def __init__(self, boxes, landmarks):
        super().__init__(boxes, landmarks)
        self.shapes = []

    def detect(self, image, margin=None):
        self.shapes.append(image.shape)
        return super().detect(image, margin)


def test_large_images_are_detected_shrunk_and_landmarks_mapped_back():
    points = np.array([[400.0, 300], [560, 300], [480, 390], [420, 470], [540, 470]])   # in the 1280-side image
    detector = ShapeRecordingDetector([[330, 200, 630, 560, 0.99]], points[None])
    image = np.zeros((3000, 4000), np.uint8)
    result = FaceAligner(size=144, detector=detector).align(image)
    assert detector.shapes == [(960, 1280)]                         # never the 12-megapixel image
    np.testing.assert_allclose(result.landmarks, (points + 0.5) / 0.32 - 0.5)
    np.testing.assert_allclose(result.box, (np.array([330, 200, 630, 560]) + 0.5) / 0.32 - 0.5)
    small = ShapeRecordingDetector([[1, 1, 5, 5, 0.9]], points[None] / 10)
    FaceAligner(detector=small, max_detect_side=None).align(image)
    FaceAligner(detector=small).align(np.zeros((1280, 900), np.uint8))
    assert small.shapes == [(3000, 4000), (1280, 900)]             # unbounded on request; small images as they are


def test_large_real_face_aligns_like_its_small_original(orl_root, weights_ready):
    """An ORL face scaled up 40x (3680x4480): the detector runs on a 1280-side copy and the crop matches the
    crop of the original image; detections equal the detector's on that copy, mapped back."""
    from common.images import read_image
    from data_tools.mtcnn import MTCNN
    small = read_image(orl_root / 's1' / '1.pgm', 'bgr')
    big = cv2.resize(small, None, fx=40, fy=40, interpolation=cv2.INTER_CUBIC)
    seen = []

    class Spy(MTCNN):
        def detect(self, image, margin=None):
            seen.append(image.shape[:2])
            return super().detect(image, margin)

        def detect_batch(self, images, margin=None):  # what FaceAligner calls (one run for a batch)
            seen.extend(image.shape[:2] for image in images)
            return super().detect_batch(images, margin)
    aligner = FaceAligner(size=144, detector=Spy(min_face_size=20))
    result = aligner.align(big)
    assert result.status == 'aligned' and max(max(s) for s in seen) <= 1280
    copy = cv2.resize(big, (1051, 1280), interpolation=cv2.INTER_AREA)
    boxes, landmarks = FaceAligner(detector=MTCNN(min_face_size=20), max_detect_side=None).detect(copy)
    sx, sy = 1051 / big.shape[1], 1280 / big.shape[0]
    np.testing.assert_allclose(result.landmarks, (landmarks[result.chosen] + 0.5) / [sx, sy] - 0.5, rtol=1e-6)
    reference = FaceAligner(size=144).align(small)
    np.testing.assert_allclose(result.landmarks / 40, reference.landmarks, atol=2.5)   # pixels of the 92x112 face
    assert np.abs(result.image.astype(int) - reference.image.astype(int)).mean() < 12
