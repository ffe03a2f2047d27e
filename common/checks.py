"""Numeric option values checked once, in the library: NaN, infinities and out-of-range values are refused.

Every function that takes a count, a side in pixels, a fraction or a rate calls :func:`check_number`
before using it, so each command line gets the same one-line ``error:`` for ``--size 0``,
``--top-identities -1`` or ``--far nan`` without repeating the rule in the script. The message names the
library's parameter (``size must be >= 1, got 0``); a command line spells it as its option
(:class:`common.errors.ParameterError`).
"""
import math
import numbers

from common.errors import ParameterError


def check_number(value, name, *, minimum=None, maximum=None, integer=False, below=None, above=None,
                 optional=False, qualifier='', error=ParameterError):
    """Return ``value`` when it is a finite number in range, else raise :class:`~common.errors.ParameterError`.

    Parameters
    ----------
    value : int or float (or None when ``optional``)
    name : str
        The library parameter the message names (``'top_identities'``); a command line spells it as its option.
    minimum, maximum : number, optional
        Inclusive bounds.
    below, above : number, optional
        Exclusive bounds (``above=0`` for a positive rate).
    integer : bool
        Require an integral value (``True`` and ``False`` are not numbers here).
    optional : bool
        Accept ``None`` (an option left unset) and return it.
    qualifier : str
        Said after the name, e.g. ``' (a count when >= 1)'``.
    error : type
        The :class:`~common.errors.ParameterError` (sub)class to raise, e.g.
        :class:`~common.errors.ParameterValueError` where ``ValueError`` is documented.

    Raises
    ------
    ParameterError
        ``'size must be >= 1, got 0'``, ``'far must be a finite number, got nan'``, ... (a
        :class:`~common.errors.UsageError`).
    """
    if value is None and optional:
        return None
    problem = _problem(value, minimum, maximum, integer, below, above)
    if problem:
        raise error(lambda n: f'{n(name)}{qualifier} must be {problem}')
    return value


SEED_RANGE = (0, 2 ** 32 - 1)  # what numpy's legacy seeding and scikit-learn's random_state accept


def check_seed(seed, name='seed'):
    """Return ``seed`` when numpy and scikit-learn accept it (a whole number in ``SEED_RANGE``), else raise
    :class:`~common.errors.ParameterError` naming ``name``."""
    return check_number(seed, name, minimum=SEED_RANGE[0], maximum=SEED_RANGE[1], integer=True)


def _problem(value, minimum, maximum, integer, below, above):
    """What is wrong with ``value`` (``'>= 1, got 0'``), or ``None``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f'a number, got {value!r}'
    if not math.isfinite(value):
        return f'a finite number, got {value}'
    if integer and value != int(value):
        return f'a whole number, got {value}'
    for bound, ok, text in ((minimum, lambda v, b: v >= b, '>='), (maximum, lambda v, b: v <= b, '<='),
                            (above, lambda v, b: v > b, '>'), (below, lambda v, b: v < b, '<')):
        if bound is not None and not ok(value, bound):
            return f'{text} {_shown(bound)}, got {_shown(value)}'
    return None


def _shown(number):
    """A whole ``int`` in full (``4294967295``), any other number in ``%g`` style (``1e+06``, ``0.5``)."""
    return str(number) if isinstance(number, numbers.Integral) else f'{number:g}'
