"""Numeric option values checked once, in the library: NaN, infinities and out-of-range values are refused.

Every function that takes a count, a side in pixels, a fraction or a rate calls :func:`check_number`
before using it, so each command line gets the same one-line ``error:`` for ``--size 0``,
``--top-identities -1`` or ``--far nan`` without repeating the rule in the script.
"""
import math
import numbers

from common.errors import UsageError


def check_number(value, name, *, minimum=None, maximum=None, integer=False, below=None, above=None,
                 optional=False):
    """Return ``value`` when it is a finite number in range, else raise :class:`UsageError`.

    Parameters
    ----------
    value : int or float (or None when ``optional``)
    name : str
        How the message names it (the library parameter, e.g. ``'top_identities'``, or the flag).
    minimum, maximum : number, optional
        Inclusive bounds.
    below, above : number, optional
        Exclusive bounds (``above=0`` for a positive rate).
    integer : bool
        Require an integral value (``True`` and ``False`` are not numbers here).
    optional : bool
        Accept ``None`` (an option left unset) and return it.

    Raises
    ------
    UsageError
        ``'size must be >= 1, got 0'``, ``'far must be a finite number, got nan'``, ...
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageError(f'{name} must be a number, got {value!r}')
    if not math.isfinite(value):
        raise UsageError(f'{name} must be a finite number, got {value}')
    if integer and value != int(value):
        raise UsageError(f'{name} must be a whole number, got {value}')
    for bound, ok, text in ((minimum, lambda v, b: v >= b, '>='), (maximum, lambda v, b: v <= b, '<='),
                            (above, lambda v, b: v > b, '>'), (below, lambda v, b: v < b, '<')):
        if bound is not None and not ok(value, bound):
            raise UsageError(f'{name} must be {text} {bound:g}, got {value:g}')
    return value
