"""Robust image decoding (and record encoding), image trees and image names, shared by every stage.

``cv2.imread`` returns ``None`` for unicode paths on some platforms and for every failure alike;
here each failure gets a reason so callers can count and list what they skipped.

Two rules live here once:

* **Walking a tree** (:func:`walk_tree`): symbolic links are followed, but every real folder is entered
  once and every real file listed once, so a link loop ends (reported once) and a linked copy of a
  folder does not multiply its images. Packing, alignment and extraction all walk through it.
* **Naming an image** (:func:`image_key`): ``identity/file`` without extension -- how pair files name
  images (``Name/Name_0001``), how the evaluators match feature labels to pairs, and, through
  :class:`ImageFinder`, how extraction and training find the file a pair line names on disk
  (``Name/Name_0001.png`` when the tree was aligned to PNG).
"""
import io
import os
import stat
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from common.errors import ParameterError, UsageError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.pgm', '.ppm', '.pbm', '.bmp', '.tif', '.tiff', '.webp')
_FLAGS = {'gray': cv2.IMREAD_GRAYSCALE, 'bgr': cv2.IMREAD_COLOR, 'rgb': cv2.IMREAD_COLOR}


class ImageError(Exception):
    """An image file that cannot be used; ``str(err)`` is the reason (e.g. ``zero-byte file``)."""


def decode_image(buf, color='gray', name='<bytes>'):
    """Decode encoded bytes to uint8 HxW (gray) or HxWx3 (bgr/rgb)."""
    if color not in _FLAGS:
        raise ValueError(f'color must be one of {sorted(_FLAGS)}, not {color!r}')
    if len(buf) == 0:
        raise ImageError('zero-byte file')
    _check_complete(buf)
    img = cv2.imdecode(np.frombuffer(buf, np.uint8), _FLAGS[color])
    if img is None or img.size == 0:
        raise ImageError('not a decodable image (corrupt, truncated or not an image)')
    if color == 'rgb':
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


def encode_jpeg(img, quality=95):
    """JPEG bytes of a uint8 gray (HxW) or BGR (HxWx3) image: the very bytes ``cv2.imencode('.jpg')`` gives.

    Pillow's wheel carries libjpeg-turbo with its SIMD code, OpenCV's bundled copy has none: same
    quantisation and Huffman tables, same bitstream (tested), 2.3x less CPU for a 144x144 face -- the
    largest per-image cost of packing.
    """
    out = io.BytesIO()
    Image.fromarray(img if img.ndim == 2 else img[:, :, ::-1]).save(out, 'JPEG', quality=quality)
    return out.getvalue()


def _check_complete(buf):
    """Reject a JPEG cut short: OpenCV decodes those into grey-padded images without an error.

    A complete JPEG has its end-of-image marker after the start of its last scan (``FF DA``); entropy-coded
    data cannot contain ``FF D9``, and an EXIF thumbnail's markers come before the main scan.
    """
    if buf[:2] == b'\xff\xd8' and buf.rfind(b'\xff\xd9') < buf.rfind(b'\xff\xda'):
        raise ImageError('truncated JPEG (no end-of-image marker)')


def read_image(path, color='gray', min_size=1):
    """Read ``path`` as uint8 gray (HxW) or colour (HxWx3); raise :class:`ImageError` with a reason."""
    try:
        with open(path, 'rb') as f:
            buf = f.read()
    except FileNotFoundError:
        raise ImageError('file not found') from None
    except OSError as err:
        raise ImageError(f'unreadable ({err.strerror or err})') from None
    img = decode_image(buf, color, os.fspath(path))
    if min(img.shape[:2]) < min_size:
        raise ImageError(f'too small ({img.shape[1]}x{img.shape[0]} < {min_size})')
    return img


def is_image_file(name):
    """True for the file names every stage treats as images (by extension, any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


# ----------------------------------------------------------------------------------------- trees
@dataclass
class TreeWalk:
    """What :func:`walk_tree` found: ``files`` (relative ``/`` paths, sorted) and ``ignored``.

    ``ignored`` holds ``(relpath, reason)`` for folders and files not listed because they are the same
    real folder or file as one already listed (a symlink loop, a linked copy), and folders that could
    not be read.
    """
    files: list = field(default_factory=list)
    ignored: list = field(default_factory=list)


def walk_tree(root):
    """Every file under ``root`` (following links), each real folder entered once, each real file listed once.

    Real folders and files come first; symbolic links are followed afterwards, so where a link and the
    real path show the same thing, the real path is listed and the link is ignored. A link to a folder
    above it (a loop) is ignored with the reason ``symlink loop back to ...``.

    Returns
    -------
    TreeWalk
        Paths are relative to ``root`` with ``/``, sorted.
    """
    root = os.fspath(root)
    walk = TreeWalk()
    try:
        top = os.stat(root)
    except OSError as err:
        walk.ignored.append(('.', f'unreadable folder ({err.strerror or err})'))
        return walk
    seen_dirs, seen_files = {(top.st_dev, top.st_ino): '.'}, {}
    pending, links = [('', root)], []

    def enter(rel_dir, folder):
        try:
            names = sorted(os.listdir(folder))
        except OSError as err:
            walk.ignored.append((rel_dir or '.', f'unreadable folder ({err.strerror or err})'))
            return
        for name in names:
            rel = f'{rel_dir}/{name}' if rel_dir else name
            full = os.path.join(folder, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                links.append((rel, full))
            else:
                visit(rel, full, st)

    def visit(rel, full, st):
        key = (st.st_dev, st.st_ino)
        if stat.S_ISDIR(st.st_mode):
            if key in seen_dirs:
                first = seen_dirs[key]
                loop = first == '.' or rel.startswith(first + '/')
                walk.ignored.append((rel, f'symlink loop back to {first}' if loop
                                     else f'same folder as {first} (a link), listed there'))
                return
            seen_dirs[key] = rel
            pending.append((rel, full))
        elif key in seen_files:
            walk.ignored.append((rel, f'same file as {seen_files[key]} (a link), listed there'))
        else:
            seen_files[key] = rel
            walk.files.append(rel)

    while pending or links:
        while pending:
            enter(*pending.pop())
        links.sort(reverse=True)
        while links and not pending:
            rel, full = links.pop()
            try:
                st = os.stat(full)
            except OSError:  # a dangling link: listed, so its reader reports it ("file not found")
                walk.files.append(rel)
                continue
            visit(rel, full, st)
    walk.files.sort()
    return walk


def check_image_root(root, name='images'):
    """Return ``root`` when it is a folder, else raise naming the parameter ``name`` (a command line spells
    its option).

    Raises
    ------
    ParameterError
        ``images_root /x/a.jpg is a file, not a folder (give the folder the images are in)`` or
        ``images_root /x: folder not found``.
    """
    if os.path.isdir(root):
        return root
    if os.path.exists(root):
        raise ParameterError(lambda n: f'{n(name)} {root} is a file, not a folder (give the folder the images '
                                       f'are in)')
    raise ParameterError(lambda n: f'{n(name)} {root}: folder not found')


def scan_images(root):
    """Image files under ``root`` (:func:`walk_tree`): ``(relpaths sorted, ignored [(relpath, reason)])``."""
    walk = walk_tree(root)
    return [rel for rel in walk.files if is_image_file(rel)], walk.ignored


def list_images(root):
    """Image files under ``root``, recursively: relative ``/``-separated paths, sorted (see :func:`scan_images`)."""
    return scan_images(root)[0]


# ----------------------------------------------------------------------------------------- names
def image_key(path):
    """``identity/file`` without extension: the key under which a label and a pair path match.

    Backslashes become ``/``, only the last two path components are kept and the extension is dropped:
    ``/lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg``, ``Aaron_Eckhart\\Aaron_Eckhart_0001.png`` and
    ``Aaron_Eckhart/Aaron_Eckhart_0001`` are the same image. Case-sensitive.
    """
    parts = [p for p in str(path).strip().replace('\\', '/').split('/') if p]
    if not parts:
        return ''
    stem, dot, _ = parts[-1].rpartition('.')
    parts[-1] = stem if dot and stem else parts[-1]
    return '/'.join(parts[-2:])


def _stem(name):
    stem, dot, _ = name.rpartition('.')
    return stem if dot and stem else name


class ImageFinder:
    """Find the image file a list or pair line names, under one root, by :func:`image_key`'s rule.

    ``find('Name/Name_0001.jpg')`` returns the path of ``Name/Name_0001.jpg`` when it exists, else of the
    one image ``Name/Name_0001.<ext>`` with any image extension (``.png``, ``.JPG``, ...), so a pairs file
    finds a tree aligned to PNG. With ``any_extension=True`` the extension written in the line is not
    preferred (LFW pairs name ``Name 1``, not a file): two images with the key are then ambiguous.
    Folder listings are cached, so resolving the 7,701 LFW pair images lists each folder once.

    Raises
    ------
    UsageError
        Two image files share the key (``Name_0001.jpg`` and ``Name_0001.png``): both are named.
    """

    def __init__(self, root):
        self.root = os.fspath(root)
        self._folders = {}

    def _by_stem(self, folder):
        if folder not in self._folders:
            by_stem = {}
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                names = []
            for name in names:
                if is_image_file(name) and os.path.isfile(os.path.join(folder, name)):
                    by_stem.setdefault(_stem(name), []).append(name)
            self._folders[folder] = by_stem
        return self._folders[folder]

    def find(self, relpath, any_extension=False):
        """Path of the image ``relpath`` names under the root (``/``-separated parts), or ``None``."""
        parts = [p for p in str(relpath).replace('\\', '/').split('/') if p not in ('', '.')]
        if not parts:
            return None
        exact = os.path.join(self.root, *parts)
        if not any_extension and os.path.isfile(exact):
            return exact
        folder = os.path.join(self.root, *parts[:-1])
        matches = self._by_stem(folder).get(_stem(parts[-1]), [])
        if len(matches) > 1:
            if not any_extension and parts[-1] in matches:
                return exact
            shown = ' and '.join(os.path.join(folder, m) for m in matches[:2])
            raise UsageError(f'{"/".join(parts)} is ambiguous: {shown} are both images of '
                             f'{image_key(relpath)}; remove or rename one')
        return os.path.join(folder, matches[0]) if matches else None
