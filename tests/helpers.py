"""Small data the tests make for themselves: image trees, a tiny checkpoint, a tiny RecordIO set.

Test modules import these by name (``from helpers import make_tree``): ``tests/`` is on ``sys.path`` for
pytest, as for ``conftest.py``, whose fixtures cover what needs pytest (real datasets, real weights).
Heavy libraries (MXNet) load inside the functions that need them.
"""
import os

import cv2
import numpy as np

from common.preprocessing import Preprocessing

ODD_NAMES = ['Ann Smith', 'Zoë Ünicode', 'bob', 'c d e']  # spaces, unicode, case: what packing must keep
LFW_NAMES = ['Aaron_Eckhart', 'Zoe_Ball']
SIZE = 36  # small records and 32x32 crops keep training tests to seconds on a busy CPU
PRE = Preprocessing(channels='gray', input_size=32, record_size=SIZE)  # a LightCNN small enough for tests


def face_image(seed, h=60, w=50):
    """A smooth random colour image (uint8 HxWx3, BGR): a 6x5 noise patch scaled up."""
    rng = np.random.RandomState(seed)
    return cv2.resize(rng.randint(0, 255, (6, 5, 3)).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)


def save_image(path, img):
    """Encode ``img`` by the suffix of ``path`` (a ``pathlib.Path``), creating its folder; unicode-safe."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, img)
    assert ok
    path.write_bytes(buf.tobytes())


def make_tree(root, per_identity=None, bad=True, lfw=False, size=40, seed=0):
    """An ``identity/image`` tree of small images under ``root``; returns the good images' relative paths.

    Parameters
    ----------
    root : pathlib.Path
    per_identity : tuple of int, optional
        Images per identity, in the order of the names (default ``(5, 4, 3, 2)``, or ``(4, 4)`` with ``lfw``).
    bad : bool
        Add unusable files too. Default style: in the first folder one of every kind packing must skip
        (zero-byte, text named .jpg, truncated JPEG, a 10x10 PNG, a .txt). ``lfw``: one corrupt .jpg in the
        last folder.
    lfw : bool
        ``False`` (packing): folders :data:`ODD_NAMES`, files ``img I.jpg|png`` alternating, smooth 60x50
        images (:func:`face_image`). ``True`` (extraction): folders :data:`LFW_NAMES`, LFW file names
        ``NAME/NAME_0001.png``, noise of ``size`` x ``size + 6`` from ``seed``.
    """
    good = []
    if lfw:
        rng = np.random.default_rng(seed)
        for name, n in zip(LFW_NAMES, per_identity or (4, 4)):
            os.makedirs(root / name, exist_ok=True)
            for i in range(1, n + 1):
                rel = f'{name}/{name}_{i:04d}.png'
                cv2.imwrite(str(root / rel), rng.integers(0, 256, (size, size + 6, 3), dtype=np.uint8))
                good.append(rel)
        if bad:
            (root / LFW_NAMES[-1] / f'{LFW_NAMES[-1]}_9999.jpg').write_bytes(b'not a jpeg at all')
        return good
    for k, (name, n) in enumerate(zip(ODD_NAMES, per_identity or (5, 4, 3, 2))):
        for i in range(n):
            rel = f'{name}/img {i}.{"png" if i % 2 else "jpg"}'
            save_image(root / rel, face_image(100 * k + i))
            good.append(rel)
    if bad:
        folder = root / ODD_NAMES[0]
        (folder / 'zero.jpg').write_bytes(b'')
        (folder / 'text.jpg').write_text('not an image')
        whole = cv2.imencode('.jpg', face_image(999, 120, 100))[1].tobytes()
        (folder / 'truncated.jpg').write_bytes(whole[:len(whole) // 2])
        save_image(folder / 'tiny.png', face_image(7, 10, 10))
        (folder / 'notes.txt').write_text('hello')
    return good


def pairs_tree(root, counts, ext='.jpg', lfw_names=False):
    """Identity folders of placeholder files (pairs only need names): ``counts[k]`` files in folder ``k``
    (``person k é/7.jpg`` ..., or LFW names ``Person_k/Person_k_0001.jpg``); returns the root as str."""
    for k, n in enumerate(counts):
        name = f'person {k} é' if not lfw_names else f'Person_{k}'
        (root / name).mkdir(parents=True)
        for i in range(1, n + 1):
            fname = f'{name}_{i:04d}{ext}' if lfw_names else f'{i * 7}{ext}'
            (root / name / fname).write_bytes(b'x')
    return str(root)


def make_checkpoint(tmp_path, num_classes=None, network='lightcnn9', pre=PRE, seed=0):
    """A random-init checkpoint small enough for tests (:data:`PRE`: 32 px input); returns its stem."""
    import mxnet as mx

    from models.checkpoint import save_checkpoint
    from symbols import LightCNNInit, get_model
    mx.random.seed(seed)
    net = get_model(network, num_classes=num_classes, preprocessing=pre)
    net.initialize(LightCNNInit())
    net(mx.nd.zeros((1,) + pre.data_shape))
    meta = dict(network=network, num_classes=num_classes, preprocessing=pre)
    return save_checkpoint(net, str(tmp_path / 'ckpt' / 'tiny'), meta)


def write_tiny_rec(images_root, prefix, size=SIZE, val_per_identity=0, color='gray'):
    """Pack an ``identity/image`` tree into ``prefix.rec/.idx/.json`` (+ ``prefix_val.*``); returns the .rec."""
    from data_tools.packing import pack_records
    pack_records(images_root, prefix, size=size, color=color, workers=0, progress=False,
                 val_per_identity=val_per_identity, seed=0)
    return prefix + '.rec'


def synthetic_rec(root, identities=6, images=8, size=SIZE, seed=3, val_per_identity=2):
    """Synthetic faces (:func:`data_tools.synthetic.make_synthetic_faces`) in ``root/images`` packed into
    ``root/faces.rec`` (+ ``faces_val.rec`` of ``val_per_identity`` images per identity); returns the .rec.

    The defaults are the trainer tests' set: 6 identities x 8 gray images, 36 px, 36 training records.
    """
    from data_tools.synthetic import make_synthetic_faces
    make_synthetic_faces(root / 'images', num_identities=identities, images_per_identity=images, size=size,
                         seed=seed)
    return write_tiny_rec(str(root / 'images'), str(root / 'faces'), size=size, val_per_identity=val_per_identity)


def train_config(rec, prefix, **overrides):
    """Training options (a dict for :func:`training.train`) for a tiny run: 32 px crops, batch 8, 2 epochs,
    one data thread, seed 1; ``overrides`` replace or add options."""
    config = dict(data_train=rec, model_prefix=str(prefix), input_size=32, batch_size=8,
                  num_epochs=2, lr=0.01, data_nthreads=1, disp_batches=2, seed=1)
    config.update(overrides)
    return config


def load_script(script):
    """The module of a command-line script (``data_tools/pack_rec.py``, relative to the repository), loaded as
    ``python SCRIPT`` would load it but without running its ``__main__`` block."""
    import importlib.util
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location('cli_' + script.replace('/', '_')[:-3], os.path.join(root, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(script, argv, capsys):
    """``(exit code, stdout, stderr)`` of ``python SCRIPT argv`` run in this process through ``run_cli``
    (argparse's own misuse exit included)."""
    from common.cli import run_cli
    try:
        code = run_cli(load_script(script).main, [str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err
