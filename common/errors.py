"""The one exception type for problems a user can fix; command lines print it as one ``error:`` line."""


class UsageError(Exception):
    """A problem the user can fix (missing file, malformed line, bad value): one line, exit 2 on the CLI.

    Library code raises it with messages that name the library's parameters; command-line scripts
    translate parameter names to their flags where they differ.
    """
