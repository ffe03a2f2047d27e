"""Unpickling of files users hand us, without running code from them.

``pickle.load`` calls whatever callable a file names, so a crafted checkpoint can run a shell command
the moment it is read. Every pickle this project reads from a user-supplied file (PyTorch checkpoints,
MXNet optimiser ``.states``, MTCNN ``.npy`` weights, insightface ``.bin`` sets) goes through
:func:`restricted_loads` / :class:`RestrictedUnpickler`, which resolve only the globals a format needs
and refuse every other one with :class:`UnsafePickleError` before anything is called.
"""
import io
import pickle

from common.errors import UsageError


class UnsafePickleError(UsageError):
    """A pickle names a global outside the allow-list of its format (possibly malicious)."""


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only allowed globals.

    Parameters
    ----------
    file : binary file
    allowed : dict or set
        ``(module, name)`` pairs. In a dict, each maps to the object to use instead (a stand-in);
        in a set, the real global is imported.
    source : str
        What is being read, for the error message.
    encoding : str
        For Python 2 ``str`` objects (``'latin1'`` keeps bytes of Python 2 pickles intact).
    """

    def __init__(self, file, allowed=(), source='pickle', encoding='ASCII', persistent_load=None):
        super().__init__(file, encoding=encoding)
        self._allowed = allowed
        self._source = source
        self._persistent = persistent_load

    def find_class(self, module, name):
        key = (module, name)
        if isinstance(self._allowed, dict) and key in self._allowed:
            return self._allowed[key]
        if not isinstance(self._allowed, dict) and key in self._allowed:
            return super().find_class(module, name)
        raise UnsafePickleError(f'{self._source} refers to {module}.{name}, which this format never '
                                f'holds; refusing to load it (the file may be crafted to run code)')

    def persistent_load(self, pid):
        if self._persistent is None:
            raise UnsafePickleError(f'{self._source} holds a persistent reference, which this format '
                                    f'never holds; refusing to load it')
        return self._persistent(pid)


def restricted_load(file, allowed=(), source='pickle', encoding='ASCII'):
    """Unpickle one object from a binary file, resolving only ``allowed`` globals.

    Raises
    ------
    UnsafePickleError
        The pickle names any other global (nothing from it has been called).
    UsageError
        The bytes are not a complete pickle.
    """
    try:
        return RestrictedUnpickler(file, allowed, source, encoding).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, UnicodeDecodeError) as err:
        raise UsageError(f'{source} is not a readable pickle ({type(err).__name__}: {err})') from None


def restricted_loads(data, allowed=(), source='pickle', encoding='ASCII'):
    """:func:`restricted_load` on bytes."""
    return restricted_load(io.BytesIO(data), allowed, source, encoding)


NUMPY_ARRAY_GLOBALS = frozenset({('numpy', 'dtype'), ('numpy', 'ndarray'),
                                 ('numpy.core.multiarray', '_reconstruct'),
                                 ('numpy.core.multiarray', 'scalar'),
                                 ('_codecs', 'encode')})  # how protocol-2 pickles carry bytes


def numpy_array_globals():
    """:data:`NUMPY_ARRAY_GLOBALS` mapped to the real objects, plus numpy 2.x's ``numpy._core`` names of the
    same rebuilders: the ``allowed`` dict for pickles of numpy arrays written by numpy 1.x or 2.x."""
    import _codecs  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415 -- keeps this module importable without numpy's cost
    import numpy.core.multiarray as multiarray  # noqa: PLC0415
    real = {('numpy', 'dtype'): np.dtype, ('numpy', 'ndarray'): np.ndarray,
            ('numpy.core.multiarray', '_reconstruct'): multiarray._reconstruct,
            ('numpy.core.multiarray', 'scalar'): multiarray.scalar,
            ('_codecs', 'encode'): _codecs.encode}
    assert set(real) == set(NUMPY_ARRAY_GLOBALS)
    real.update({('numpy._core.multiarray', '_reconstruct'): multiarray._reconstruct,
                 ('numpy._core.multiarray', 'scalar'): multiarray.scalar})
    return real


def load_npy_object(file, source='.npy file'):
    """The Python object inside an object-dtype ``.npy`` (what ``np.load(allow_pickle=True).item()`` gives).

    Only numpy arrays, dtypes and scalars may appear in the pickle; anything else raises
    :class:`UnsafePickleError` before it is called.
    """
    import numpy as np  # noqa: PLC0415 -- keeps this module importable without numpy's cost

    try:
        version = np.lib.format.read_magic(file)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f'unsupported .npy version {version}')
        shape, _, dtype = read_header(file)
    except ValueError as err:
        raise UsageError(f'{source} is not a .npy file ({err})') from None
    if dtype != np.dtype(object):
        raise UsageError(f'{source} holds a {dtype} array, not a pickled object')
    array = restricted_load(file, NUMPY_ARRAY_GLOBALS, source, encoding='latin1')
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
        raise UsageError(f'{source}: corrupt .npy (payload does not match its header)')
    return array.item() if array.shape == () else array
