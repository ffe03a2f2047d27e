"""The one exception type for problems a user can fix; command lines print it as one ``error:`` line.

Library code names its parameters as Python callers know them (``top_k must be >= 1``); a command line
spells them as its own options (``--top-k must be >= 1``). A message that names parameters is a
:class:`ParameterError`, whose text is a function of the spelling, so there is nothing to patch afterwards::

    raise ParameterError(lambda n: f'{n("top_k")} must be >= 1, got {top_k}')

``str(err)`` names ``top_k``; :func:`common.cli.run_cli` prints ``err.spelled(...)`` with the option strings of
the command's parser (``--top-k``, a positional's name, or the flag a differently named parameter is fed by).

Also the one way to turn an MXNet error into such a line (:func:`mxnet_message`): ``str(MXNetError)``
starts with ``Traceback (most recent call last):`` and a C++ file name, the message itself is last.
"""


class UsageError(Exception):
    """A problem the user can fix (missing file, malformed line, bad value): one line, exit 2 on the CLI.

    Library code raises it with messages that name the library's parameters; command-line scripts
    translate parameter names to their flags where they differ.
    """


class WriteError(UsageError, OSError):
    """An output could not be written (disk full, quota, read-only file system): one ``error:`` line on the
    command line, and still the :class:`OSError` (same ``errno``) for code that handles those.

    ``str(err)`` is the message alone, e.g. ``cannot write out.rec: No space left on device``.
    """

    def __init__(self, errno, message):
        super().__init__(errno, message)

    def __str__(self):
        return self.strerror


def flag(name):
    """``batch_size`` -> ``--batch-size``: the usual spelling of a parameter as an option (a name that already
    starts with ``-`` is returned as it is)."""
    return name if name.startswith('-') else '--' + name.replace('_', '-')


def _as_is(name):
    return name


def _fixed(text):
    return lambda name: text


class ParameterMessage:
    """Mixin: ``str(err)`` names parameters as they are; ``err.spelled(spell)`` as a command line does.

    ``render(name)`` builds the message, calling ``name('parameter')`` for each parameter it names. A plain
    string is a message spelled once and for all (what an error unpickled in another process carries).
    """

    def __init__(self, render):
        if isinstance(render, str):
            render = _fixed(render)
        self.render = render
        super().__init__(render(_as_is))

    def spelled(self, spell):
        """The message with every parameter name passed through ``spell`` (e.g. :func:`flag`)."""
        return self.render(spell)

    def __reduce__(self):  # render is a closure: another process gets the message as the library spells it
        return type(self), (str(self),)


class ParameterError(ParameterMessage, UsageError):
    """A :class:`UsageError` whose message names the library's parameters; command lines spell their flags.

    Examples
    --------
    >>> err = ParameterError(lambda n: f'{n("top_k")} must be >= 1, got 0')
    >>> str(err), err.spelled(flag)
    ('top_k must be >= 1, got 0', '--top-k must be >= 1, got 0')
    """


class ParameterValueError(ParameterError, ValueError):
    """A :class:`ParameterError` that is also a ``ValueError``: for constructors documented to raise
    ``ValueError`` on a bad value (``FaceAligner(scale=0)``), so callers catching either keep working."""


def mxnet_message(err):
    """The message of an ``mxnet.MXNetError`` (or any exception) as one line, without MXNet's preamble.

    MXNet 1.x formats a C++ failure as ``Traceback (most recent call last):`` / ``File "...cc", line N`` /
    ``MXNetError: Check failed: ...: reason`` (optionally followed by a ``Stack trace:`` section). The
    message is the last non-empty line of the part before the stack trace, ``MXNetError: `` removed.

    Parameters
    ----------
    err : BaseException or str

    Returns
    -------
    str
        E.g. ``'Check failed: fi->Read(&header): Invalid NDArray file format'``.
    """
    text = str(err)
    text = text.split('Stack trace:')[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(('Traceback (most recent call last)', 'File "'))]
    if not lines:
        return type(err).__name__ if isinstance(err, BaseException) else 'unknown MXNet error'
    message = lines[-1]
    for prefix in ('MXNetError:', 'mxnet.base.MXNetError:'):
        if message.startswith(prefix):
            message = message[len(prefix):].strip()
    return message


def error_message(err):
    """The one line worth showing of an error: an OSError's ``strerror``, else :func:`mxnet_message`."""
    if isinstance(err, OSError) and not isinstance(err, WriteError):
        return err.strerror or str(err)
    return mxnet_message(err)
