"""The one reader of every text file users give the pipeline (lists, ``.lst``, image lists, pairs).

Editors on Windows save UTF-8 with a byte-order mark and CRLF line ends; both are normalised here, once,
so a list saved that way reads exactly like the plain file (no invisible ``\\ufeff`` on the first path, no
``\\r`` on the last field). Names that cannot go into a line-based file (containing a tab or a newline)
are refused where such files are written (:func:`check_line_field`).
"""
from common.errors import UsageError


def read_lines(path, what='text file'):
    """Lines of a UTF-8 text file (BOM dropped, ``\\n``/``\\r\\n``/``\\r`` line ends), numbered from 1.

    Parameters
    ----------
    path : str or os.PathLike
    what : str
        What the file is, for error messages (e.g. ``'pairs file'``).

    Returns
    -------
    list of (int, str)
        ``(line_number, line)`` for every line, blank ones included, without the line end.

    Raises
    ------
    UsageError
        The file is missing, a directory, unreadable, or not UTF-8 (the line number is named).
    """
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except FileNotFoundError:
        raise UsageError(f'cannot read {what} {path}: file not found') from None
    except IsADirectoryError:
        raise UsageError(f'cannot read {what} {path}: it is a directory, not a file') from None
    except OSError as err:
        raise UsageError(f'cannot read {what} {path}: {err.strerror or err}') from None
    try:
        text = raw.decode('utf-8-sig')
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b'\n') + 1
        raise UsageError(f'{what} {path}, line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x}); '
                         f'save it as UTF-8') from None
    return list(enumerate(text.splitlines(), start=1))


def line_field_problem(value):
    """Why ``value`` cannot be a field of a UTF-8, tab-separated, line-based file, or ``None`` when it can.

    A tab, newline or carriage return would split the line; a file name that is not valid UTF-8 (read
    by Python as lone surrogates, ``surrogateescape``) cannot be written to a UTF-8 file.
    """
    if any(c in value for c in '\t\n\r'):
        return 'contains a tab or line break, which a line-based list cannot hold'
    try:
        value.encode('utf-8')
    except UnicodeEncodeError:
        return 'is not valid UTF-8 (a file name in another encoding), which a UTF-8 list cannot hold'
    return None


def printable(value):
    """``value`` safe to print and to store in JSON: undecodable bytes shown as ``\\xNN``."""
    try:
        value.encode('utf-8')
        return value
    except UnicodeEncodeError:
        return value.encode('utf-8', 'surrogateescape').decode('utf-8', 'backslashreplace')


def short_printable(value, limit=120):
    """``value`` as one short printable line for an error message: control characters and undecodable bytes
    escaped (``\\x00``), whitespace runs made one space, cut to ``limit`` characters with ``...``.

    For details quoted from a file's content (a parser's message echoing raw bytes), never for file names.
    """
    text = printable(str(value))
    text = ''.join(c if c.isprintable() or c == ' ' else (' ' if c.isspace() else repr(c)[1:-1]) for c in text)
    text = ' '.join(text.split())
    return text if len(text) <= limit else text[:max(limit - 3, 1)] + '...'


def check_line_field(value, what='name'):
    """Refuse a value that would break a tab-separated, line-based UTF-8 file (see :func:`line_field_problem`).

    Raises
    ------
    UsageError
        Naming the value (with the offending character escaped).
    """
    problem = line_field_problem(value)
    if problem:
        raise UsageError(f"{what} '{shown(value)}' {problem}; rename it")
    return value


def shown(value):
    """``value`` for a one-line message: undecodable bytes as ``\\xNN``, tab and line breaks escaped."""
    return printable(value).replace('\t', '\\t').replace('\n', '\\n').replace('\r', '\\r')
