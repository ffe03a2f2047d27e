"""The one exception type for problems a user can fix; command lines print it as one ``error:`` line.

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
