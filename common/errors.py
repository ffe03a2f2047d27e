"""The one exception type for problems a user can fix; command lines print it as one ``error:`` line."""


class UsageError(Exception):
    """A problem the user can fix (missing file, malformed line, bad value): one line, exit 2 on the CLI.

    Library code raises it with messages that name the library's parameters; command-line scripts
    translate parameter names to their flags where they differ.
    """


def error_message(err):
    """The one line worth showing of an error: an OSError's strerror, or an MXNet error's own message.

    ``str(MXNetError)`` starts with "Traceback (most recent call last):" and a C++ stack; the message is the
    ``Check failed: ...`` line (or the last line), without its ``MXNetError: `` prefix.
    """
    if isinstance(err, OSError):
        return err.strerror or str(err)
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    checks = [line for line in lines if 'Check failed' in line or line.startswith('MXNetError')]
    message = (checks or lines or [type(err).__name__])[-1]
    return message[len('MXNetError: '):] if message.startswith('MXNetError: ') else message
