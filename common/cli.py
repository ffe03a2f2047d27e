"""Command-line conventions: every bad input is one ``error:`` line on stderr and exit code 2.

Scripts are thin: they build an :class:`ArgumentParser`, then call one importable function through
:func:`run_cli`, which turns :class:`UsageError` into that one line instead of a traceback. Only command-line
scripts import this module; library code raises :class:`common.errors.UsageError` directly. Importing it has
no side effects: scripts size MXNet's threads themselves first (:func:`common.threads.default_compute_threads`).
"""
import argparse
import sys

from common.errors import UsageError
from common.fileio import WRITE_ERRNOS

__all__ = ['ArgumentParser', 'UsageError', 'run_cli']


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports misuse as a single ``prog: error: ...`` line (exit 2), no usage dump."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message} (see --help)\n')


def run_cli(main, argv=None):
    """Call ``main(argv)`` and map user errors to exit code 2; returns the exit code."""
    try:
        return main(argv) or 0
    except UsageError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    except OSError as err:  # disk full / read-only where no library code translated it: still one line
        if err.errno not in WRITE_ERRNOS:
            raise
        where = f' {err.filename}' if err.filename else ''
        print(f'error: cannot write{where}: {err.strerror or err}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('error: interrupted', file=sys.stderr)
        return 130
