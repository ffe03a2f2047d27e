"""Writing files so that a reader never sees half of one: the one implementation every stage uses.

A file is written under a temporary name beside its final path (same folder, hence same file system)
and renamed over it with :func:`os.replace`, which is atomic on POSIX and Windows. The temporary name
carries the process id and a per-process counter, so parallel processes and threads writing the same
path never share one; when the writing fails in any way (disk full, ``KeyboardInterrupt``, an exception
from the caller's code) the temporary file is removed and the previous file, if any, is left intact.
A full disk or a read-only file system while writing becomes one :class:`UsageError` naming the file.

Also here: :func:`check_outputs` (every output of a command is checked before any work: not a folder, not under
a file, its folders created, never one of the command's inputs nor inside an input tree, no two the same file,
a picture in a format its writer supports) and :func:`exclusive_lock` (one writer per output, ``fcntl.flock``).
"""
import contextlib
import errno
import fcntl
import itertools
import os

from common.errors import ParameterError, UsageError, WriteError

# errors of the writing itself (not of the caller's inputs): disk full, quota, file too large, read-only
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
_SERIAL = itertools.count()  # next() on a count is atomic under the GIL: unique per thread too


def temporary_name(path):
    """``PATH.<pid>-<n>.part``: a name beside ``path`` no other process or thread uses."""
    return f'{os.fspath(path)}.{os.getpid()}-{next(_SERIAL)}.part'


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path to write; rename it over ``path`` when the block succeeds.

    For writers that take a file name (``net.save_parameters``, ``mx.nd.save``,
    ``trainer.save_states``). The parent folder is created. On any exception the temporary file is
    removed and the exception propagates.
    """
    path = os.fspath(path)
    make_parent(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in WRITE_ERRNOS and not isinstance(err, WriteError):
            raise WriteError(err.errno, f'cannot write {path}: {err.strerror or err}') from None
        raise
    finally:
        remove_quietly(tmp)


@contextlib.contextmanager
def atomic_write(path, mode='wb', **open_kwargs):
    """Open a temporary file for writing; it replaces ``path`` only if the block completes.

    Parameters
    ----------
    path : str or path-like
    mode : str
        ``'wb'`` (default) or ``'w'`` (text; pass ``encoding``/``newline`` in ``open_kwargs``).

    Example::

        with atomic_write('out.json', 'w', encoding='utf-8') as f:
            json.dump(summary, f)
    """
    if not mode.startswith('w'):
        raise ValueError(f"atomic_write writes a new file: mode must start with 'w', not {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **open_kwargs) as f:
            yield f


def remove_quietly(path):
    """Remove a file if it exists; never raises (cleanup must not hide the error that made it necessary)."""
    try:
        if os.path.lexists(path):
            os.remove(path)
    except OSError:
        pass


def _first_existing(path):
    """The nearest ancestor of ``path`` (or ``path`` itself) that exists."""
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def check_output_prefix(prefix, what='output prefix'):
    """Check an output *prefix* (``data/casia`` -> ``data/casia.rec``, ...): it must name a file stem, not end
    in a folder separator; its folder is created. Returns it.

    ``what`` is the parameter the prefix was given as (``'out_prefix'``), or what it is.

    Raises
    ------
    UsageError
        ``prefix`` ends with ``/`` (or is empty), is not valid UTF-8, or lies under a file or in a folder
        that is not writable.
    """
    prefix = os.fspath(prefix)
    if not prefix or prefix.endswith((os.sep, '/')) or os.path.basename(prefix) in ('', '.', '..'):
        raise ParameterError(lambda n: f'{n(what)} {prefix!r} names a folder; give folder/name (files become name.*)')
    _check_name(prefix, what)
    _check_folder(prefix, what, create_folder=True)
    return prefix


def _check_name(path, what):
    try:
        path.encode('utf-8')
    except UnicodeEncodeError:
        shown = path.encode('utf-8', 'surrogateescape').decode('utf-8', 'backslashreplace')
        raise ParameterError(lambda n: f'{n(what)} {shown}: the name is not valid UTF-8; choose a UTF-8 name') from None


def _check_folder(path, what, create_folder):
    full = os.path.abspath(path)
    folder = os.path.dirname(full)
    existing = _first_existing(folder)
    if not os.path.isdir(existing):
        raise ParameterError(lambda n: f'{n(what)} {path}: {existing} is a file, not a folder')
    if existing != folder and not create_folder:
        raise UsageError(f'output folder does not exist: {folder} (for {path})')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ParameterError(lambda n: f'{n(what)} {path}: folder {existing} is not writable')
    if create_folder:
        make_parent(full)


def check_output_path(path, what='output', create_folder=True):
    """Check, before any work, that ``path`` can be written as a file; returns it.

    Parameters
    ----------
    path : str or path-like
    what : str
        The parameter the path was given as (``'csv_path'``; a command line spells it as its option), or what
        the file is (``'pairs file'``).
    create_folder : bool
        Create missing parent folders (else a missing folder is an error).

    Raises
    ------
    UsageError
        ``path`` is an existing folder, a parent is a file (``out.txt/x.mat``), the folder is missing
        (without ``create_folder``) or not writable, or the name is not valid UTF-8 (outputs record
        their paths in UTF-8 JSON).
    """
    path = os.fspath(path)
    if not path:
        raise ParameterError(lambda n: f'{n(what)}: empty path')
    _check_name(path, what)
    if os.path.isdir(path):
        raise ParameterError(lambda n: f'{n(what)} {path} is a folder; give a file name')
    _check_folder(path, what, create_folder)
    return path


def check_output_paths(*paths):
    """:func:`check_output_path` on each output a command was given (``None`` / empty ones skipped); missing
    parent folders are created, as for every output. Prefer :func:`check_outputs`, which names the parameters
    and also keeps the outputs apart from the inputs."""
    for path in paths:
        if path:
            check_output_path(path, 'output')


def check_output_folder(path, what='output folder'):
    """Check an output *tree* (``align.py --out``) before any work: not a file, not under a file, its nearest
    existing folder writable. Nothing is created. Returns it.

    Raises
    ------
    UsageError
        Naming ``what`` (the parameter the folder was given as).
    """
    path = os.fspath(path)
    if not path:
        raise ParameterError(lambda n: f'{n(what)}: empty path')
    _check_name(path, what)
    full = os.path.abspath(path)
    existing = _first_existing(full)
    if existing == full and not os.path.isdir(full):
        raise ParameterError(lambda n: f'{n(what)} {path} is a file, not a folder')
    if not os.path.isdir(existing):
        raise ParameterError(lambda n: f'{n(what)} {path}: {existing} is a file, not a folder')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ParameterError(lambda n: f'{n(what)} {path}: folder {existing} is not writable')
    return path


# ------------------------------------------------------------------------------------------- pictures
# Extensions offered for OpenCV pictures (contact sheets): the usual 8-bit formats; each is also asked of
# cv2.haveImageWriter, so a build without a codec does not list it.
OPENCV_PICTURE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm', '.jp2')


def picture_extensions(writer='matplotlib'):
    """Extensions (``'.png'``, ...) a picture writer can write: ``'matplotlib'`` (``savefig``, asked of
    ``FigureCanvasBase.get_supported_filetypes``) or ``'opencv'`` (``cv2.imwrite``, asked of
    ``cv2.haveImageWriter``)."""
    if writer == 'matplotlib':
        from matplotlib.backend_bases import FigureCanvasBase
        return tuple(sorted('.' + ext for ext in FigureCanvasBase.get_supported_filetypes()))
    if writer == 'opencv':
        import cv2
        found = []
        for ext in OPENCV_PICTURE_EXTENSIONS:
            try:
                if cv2.haveImageWriter('x' + ext):
                    found.append(ext)
            except cv2.error:  # a codec compiled in but disabled
                pass
        return tuple(found)
    raise ValueError(f"writer must be 'matplotlib' or 'opencv', not {writer!r}")


def check_picture_path(path, what='picture', writer='matplotlib'):
    """Check, before any work, that the extension of picture output ``path`` is one ``writer`` can write.

    Raises
    ------
    UsageError
        Naming ``what`` and listing the supported extensions (``--confusion cm.txt: cannot write a .txt
        picture; use .eps, .jpeg, ...``).
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    supported = picture_extensions(writer)
    if ext not in supported:
        shown = f'a {ext} picture' if ext else 'a picture without an extension'
        raise ParameterError(lambda n: f'{n(what)} {path}: cannot write {shown}; use one of {", ".join(supported)}')
    return path


def save_figure(fig, path, **savefig_kwargs):
    """``fig.savefig`` to ``path`` atomically (temporary name, then renamed; its folder created), in the format
    of its extension (:func:`check_picture_path` it before the work)."""
    path = os.fspath(path)
    fmt = os.path.splitext(path)[1][1:].lower() or None
    if fmt != 'png':
        savefig_kwargs.pop('metadata', None)  # PNG text chunks (Software: None keeps files reproducible) only
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, **savefig_kwargs)
    return path


# --------------------------------------------------------------------------------- outputs vs inputs
def _as_list(paths):
    """A path or a list of them as a list of paths; ``None``, empty names and non-paths (decoded images a
    Python caller passed) left out."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    elif paths is None:
        return []
    return [os.fspath(p) for p in paths if isinstance(p, (str, bytes, os.PathLike)) and os.fspath(p)]


def _stat_key(path):
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _inside(path, folder):
    """``path`` is ``folder`` or lies under it (both resolved)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_outputs_apart(outputs, inputs=None, trees=None, output_trees=None):
    """Refuse, before any work, outputs that would replace an input, land inside an input tree, or coincide.

    Paths are compared resolved (``os.path.realpath``: links, ``..``) and, when both exist, as files
    (device and inode: hard links too).

    Parameters
    ----------
    outputs : dict
        ``{parameter: path, or list of paths}`` the command writes (a prefix's files ``STEM.json``,
        ``STEM.params``, ... as a list); ``None`` values are skipped.
    inputs : dict, optional
        ``{parameter: path, or list of paths}`` it reads (a checkpoint's files, the images a list names).
    trees : dict, optional
        ``{parameter: folder}`` it reads recursively: no output may lie inside.
    output_trees : dict, optional
        ``{parameter: folder}`` it fills (``align.py --out``): it may not be, contain or lie inside an input
        tree, nor contain an input file.

    Raises
    ------
    UsageError
        Naming both parameters (a command line spells them as its options), e.g. ``gallery_out F.mat would
        overwrite the input F.mat (features_path)``.
    """
    outs = [(what, p, os.path.realpath(p), _stat_key(p)) for what, paths in outputs.items()
            for p in _as_list(paths)]
    seen = {}
    for what, path, real, key in outs:
        earlier = seen.get(real) or (key and seen.get(key))
        if earlier and earlier[0] != what:
            other = earlier[0]
            raise ParameterError(lambda n: f'{n(other)} and {n(what)} are the same file {path}; give each '
                                           'output its own path')
        seen[real] = (what, path)
        if key:
            seen[key] = (what, path)
    by_key = {key: (what, path) for what, path, _, key in outs if key}
    by_real = {real: (what, path) for what, path, real, _ in outs}
    for what_in, paths in (inputs or {}).items():
        for p in _as_list(paths):
            key = _stat_key(p)  # one stat per input: lists of thousands of images stay cheap
            hit = by_key.get(key) if key else by_real.get(os.path.realpath(p))
            if hit:
                what, path = hit
                raise ParameterError(lambda n: f'{n(what)} {path} would overwrite the input {p} ({n(what_in)}); '
                                               'an output never replaces an input: choose another path')
    resolved_trees = [(w, t, os.path.realpath(t)) for w, t in (trees or {}).items() if t]
    for what_in, tree, real_tree in resolved_trees:
        for what, path, real, _ in outs:
            if _inside(real, real_tree):
                raise ParameterError(lambda n: f'{n(what)} {path} is inside the input tree {tree} ({n(what_in)}); '
                                               'outputs never go into an input tree: choose a path outside it')
    for what, folder in (output_trees or {}).items():
        if not folder:
            continue
        real_out = os.path.realpath(folder)
        for what_in, tree, real_tree in resolved_trees:
            if _inside(real_out, real_tree) or _inside(real_tree, real_out):
                raise ParameterError(lambda n: f'{n(what)} {folder} and the input tree {tree} ({n(what_in)}) '
                                               'overlap; the tree would be read while written: choose a folder '
                                               'outside it')
        for what_in, paths in (inputs or {}).items():
            for p in _as_list(paths):
                if _inside(os.path.realpath(p), real_out):
                    raise ParameterError(lambda n: f'{n(what)} {folder} holds the input {p} ({n(what_in)}); '
                                                   'choose another folder')


def check_outputs(outputs, inputs=None, trees=None, pictures=None):
    """Everything checked about a command's output files before any work, in one call.

    :func:`check_outputs_apart` (no output is an input, inside an input tree, or another output), then
    :func:`check_picture_path` for the picture outputs and :func:`check_output_path` for each output
    (missing parent folders are created).

    Parameters
    ----------
    outputs : dict
        ``{parameter: path, or list of paths}`` (``None`` skipped), e.g. ``{'json_path': json_path,
        'roc_path': roc_path}``.
    inputs, trees : dict, optional
        As for :func:`check_outputs_apart`.
    pictures : dict, optional
        ``{parameter: 'matplotlib' or 'opencv'}``: which outputs are pictures and who writes them.
    """
    check_outputs_apart(outputs, inputs, trees)
    for what, writer in (pictures or {}).items():
        if outputs.get(what):
            check_picture_path(outputs[what], what, writer)
    for what, paths in outputs.items():
        for path in _as_list(paths):
            check_output_path(path, what)


def make_parent(path):
    """Create the folder of ``path``; one :class:`UsageError` when a file is in the way or it cannot be made."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    try:
        os.makedirs(folder, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f'cannot create folder {folder}: {_first_existing(folder)} is a file') from None
    except OSError as err:
        raise UsageError(f'cannot create folder {folder}: {err.strerror or err}') from None
    return folder


@contextlib.contextmanager
def exclusive_lock(path, what='this output'):
    """Hold an exclusive, non-blocking ``fcntl.flock`` on the file ``path`` for the block.

    Two processes writing the same output (``pack_rec.py --out`` twice) would interleave files; the
    second one fails at once instead. The kernel releases the lock however the process ends (kill -9
    too); a lock file left by a killed process is simply locked again by the next one. On a normal
    release the file is removed while still locked, and a process that locked a file already removed
    that way retries with the new one (it compares the inode), so two holders are impossible. The file
    holds the holder's PID, for the message.

    Raises
    ------
    UsageError
        ``path`` is held by another process (named by its PID), or cannot be created.
    """
    path = os.fspath(path)
    make_parent(path)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise UsageError(f'cannot create lock file {path}: {err.strerror or err}') from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 32, 0).decode('ascii', 'replace').strip()
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise UsageError(f'cannot lock {path}: {err.strerror or err}') from None
            holder = f'process {holder}' if holder.isdigit() else 'another process'
            raise UsageError(f'{what} is being written by {holder} (it holds {path}); wait for it to '
                             f'finish or choose another output') from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us removed this file after we opened it: lock the new one
    try:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
        yield path
    finally:
        remove_quietly(path)  # still locked: whoever opened it meanwhile sees another inode and retries
        os.close(fd)
