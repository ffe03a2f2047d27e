"""Procedurally rendered face-like identities: a dataset that needs no download.

Each identity draws its own geometry (face shape, eyes, brows, nose, mouth, hair line, marks, skin
tone); each image of it draws a pose (rotation, shift, scale, yaw squeeze), lighting (direction,
strength, contrast), background, an expression and sensor noise. Same ``seed`` -> same pixels, so the embedded
demo and tests are reproducible. The images are cartoons, not faces: they exercise the whole
pipeline and reward a model that learns identity over nuisance, nothing more.

``python data_tools/synthetic.py OUT_DIR --identities 80 --images 20`` writes ``OUT_DIR/id_0000/000.png``.
"""
import os

import cv2
import numpy as np

from common.checks import check_number, check_seed
from common.cli import ArgumentParser, run_cli  # noqa: E402
from common.errors import ParameterValueError  # noqa: E402
from common.fileio import check_output_folder  # noqa: E402

CANVAS = 256  # render side; images are downscaled to ``size`` with area averaging


def identity_geometry(rng):
    """Random but fixed traits of one identity (all in canvas pixels / [0, 1] shades)."""
    u = rng.uniform
    return dict(
        face_w=u(62, 92), face_h=u(88, 118), jaw=u(0.75, 1.1),
        skin=u(110, 200),
        hair=u(0, 90), hair_line=u(-0.2, 0.45), hair_side=u(-20, 20), hair_volume=u(0.0, 18),
        eye_y=u(-22, -2), eye_dx=u(22, 38), eye_w=u(8, 16), eye_h=u(3.5, 8), iris=u(10, 70),
        brow_dy=u(9, 20), brow_tilt=u(-0.35, 0.35), brow_w=u(12, 24), brow_t=int(rng.integers(2, 7)),
        nose_len=u(16, 34), nose_w=u(6, 16), nose_shade=u(-45, 25),
        mouth_y=u(30, 56), mouth_w=u(14, 34), mouth_t=int(rng.integers(2, 6)), lip=u(40, 150),
        smile=u(-6, 9), ear=u(0.0, 1.0) > 0.3,
        marks=[(u(-0.7, 0.7), u(-0.6, 0.7), u(2, 5), u(20, 90)) for _ in range(int(rng.integers(0, 4)))],
        glasses=u(0.0, 1.0) < 0.2, beard=u(0.0, 1.0) < 0.2,
    )


def render_face(geometry, rng, size=144):
    """One gray uint8 ``size`` x ``size`` image of ``geometry`` under a random pose, light and expression."""
    g = geometry
    img = np.full((CANVAS, CANVAS), rng.uniform(20, 235), np.float32)  # background: per image
    cx, cy = CANVAS / 2, CANVAS / 2 + 6
    aa = cv2.LINE_AA

    def ellipse(center, axes, angle, shade, thickness=-1, start=0, end=360):
        cv2.ellipse(img, (int(round(center[0])), int(round(center[1]))),
                    (max(1, int(round(axes[0]))), max(1, int(round(axes[1])))), angle, start, end,
                    float(shade), thickness, aa)

    # hair mass behind the face, then ears, face and jaw
    ellipse((cx + g['hair_side'] * 0.3, cy - 14), (g['face_w'] + g['hair_volume'],
            g['face_h'] * 0.9 + g['hair_volume']), 0, g['hair'])
    if g['ear']:
        for side in (-1, 1):
            ellipse((cx + side * g['face_w'] * 0.98, cy - 4), (10, 18), 0, g['skin'] * 0.9)
    ellipse((cx, cy), (g['face_w'], g['face_h']), 0, g['skin'])
    ellipse((cx, cy + g['face_h'] * 0.35), (g['face_w'] * g['jaw'], g['face_h'] * 0.62), 0, g['skin'])
    if g['beard']:
        ellipse((cx, cy + g['face_h'] * 0.55), (g['face_w'] * 0.75, g['face_h'] * 0.42), 0,
                g['hair'] * 0.8 + 20, -1, 0, 180)
    # hair line: a cap over the top of the face
    top = cy - g['face_h'] * (0.55 - g['hair_line'] * 0.5)
    ellipse((cx + g['hair_side'], top - 10), (g['face_w'] * 1.05, g['face_h'] * 0.45), 0, g['hair'],
            -1, 180, 360)

    expression = rng.normal(0, 1.5)
    blink = rng.uniform(0.55, 1.0)
    gaze = rng.normal(0, 1.2, size=2)
    eye_y = cy + g['eye_y']
    for side in (-1, 1):
        ex = cx + side * g['eye_dx']
        ellipse((ex, eye_y), (g['eye_w'], g['eye_h'] * blink), 0, 235)
        ellipse((ex + gaze[0], eye_y + gaze[1]), (g['eye_h'] * 0.9, g['eye_h'] * 0.9 * blink), 0,
                g['iris'])
        by = eye_y - g['brow_dy'] - expression
        dx, dy = g['brow_w'], side * g['brow_tilt'] * g['brow_w']
        cv2.line(img, (int(ex - dx), int(by + dy)), (int(ex + dx), int(by - dy)), float(g['hair']),
                 g['brow_t'], aa)
        if g['glasses']:
            ellipse((ex, eye_y), (g['eye_w'] + 7, g['eye_h'] + 8), 0, 30, 2)
    if g['glasses']:
        cv2.line(img, (int(cx - g['eye_dx'] + g['eye_w'] + 7), int(eye_y)),
                 (int(cx + g['eye_dx'] - g['eye_w'] - 7), int(eye_y)), 30.0, 2, aa)
    nose_top, nose_bottom = eye_y + 4, eye_y + 4 + g['nose_len']
    nose = np.array([[cx, nose_top], [cx - g['nose_w'], nose_bottom], [cx + g['nose_w'], nose_bottom]])
    cv2.fillPoly(img, [np.round(nose).astype(np.int32)], float(g['skin'] + g['nose_shade']), aa)
    mouth_y = cy + g['mouth_y']
    smile = g['smile'] + expression * 2
    ellipse((cx, mouth_y - smile), (g['mouth_w'], max(2.0, abs(smile) + 2)), 0, g['lip'],
            g['mouth_t'], 0 if smile >= 0 else 180, 180 if smile >= 0 else 360)
    for mx_, my_, radius, shade in g['marks']:
        ellipse((cx + mx_ * g['face_w'], cy + my_ * g['face_h']), (radius, radius), 0, shade)

    # lighting: a linear ramp in a random direction, contrast and brightness
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float32) / CANVAS - 0.5
    ramp = np.cos(angle) * xs + np.sin(angle) * ys
    img = img * (1 + rng.uniform(0.1, 0.7) * ramp)
    img = (img - 128) * rng.uniform(0.75, 1.2) + 128 + rng.normal(0, 12)

    # pose: in-plane rotation, scale, shift and a horizontal squeeze for yaw
    yaw = rng.uniform(0.85, 1.0)
    rotation = cv2.getRotationMatrix2D((cx, cy), rng.normal(0, 6), rng.uniform(0.92, 1.08))
    rotation[0, :2] *= yaw
    rotation[0, 2] = rotation[0, 2] * yaw + cx * (1 - yaw) + rng.normal(0, 5)
    rotation[1, 2] += rng.normal(0, 5)
    img = cv2.warpAffine(img, rotation, (CANVAS, CANVAS), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    if rng.uniform() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 2.0))
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    img += rng.normal(0, rng.uniform(2, 9), img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def identity_name(index):
    return f'id_{index:04d}'


def make_synthetic_faces(out_root, num_identities=80, images_per_identity=20, size=144, seed=0):
    """Write ``out_root/id_NNNN/MMM.png`` for every identity and image; returns a summary dict.

    Identity ``i`` depends only on ``(seed, i)`` and image ``j`` of it on ``(seed, i, j)``, so a
    larger set extends a smaller one with the same seed.
    """
    check_number(num_identities, 'num_identities', minimum=1, maximum=100_000, integer=True, error=ParameterValueError)
    check_number(images_per_identity, 'images_per_identity', minimum=1, maximum=10_000, integer=True,
                 error=ParameterValueError)
    check_number(size, 'size', minimum=16, maximum=1024, integer=True, error=ParameterValueError)
    check_seed(seed)
    check_output_folder(out_root, 'out_root')
    os.makedirs(out_root, exist_ok=True)
    for i in range(num_identities):
        geometry = identity_geometry(np.random.default_rng([seed, i]))
        folder = os.path.join(out_root, identity_name(i))
        os.makedirs(folder, exist_ok=True)
        for j in range(images_per_identity):
            img = render_face(geometry, np.random.default_rng([seed, i, j, 1]), size)
            cv2.imwrite(os.path.join(folder, f'{j:03d}.png'), img)
    return dict(root=os.path.abspath(out_root), identities=num_identities,
                images=num_identities * images_per_identity, size=size, seed=seed)


def main(argv=None):
    parser = ArgumentParser(description='Render a face-like identity dataset (identity/image.png).',
                            parameters={'out_root': 'out', 'num_identities': 'identities',
                                        'images_per_identity': 'images'})
    parser.add_argument('out', help='output folder')
    parser.add_argument('--identities', type=int, default=80)
    parser.add_argument('--images', type=int, default=20, help='images per identity')
    parser.add_argument('--size', type=int, default=144)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    summary = make_synthetic_faces(args.out, args.identities, args.images, args.size, args.seed)
    print(f"wrote {summary['images']} images of {summary['identities']} identities to {summary['root']}")


if __name__ == '__main__':
    raise SystemExit(run_cli(main))
