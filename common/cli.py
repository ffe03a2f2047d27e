"""Command-line conventions: every bad input is one ``error:`` line on stderr and exit code 2.

Scripts are thin: they build an :class:`ArgumentParser`, then call one importable function through
:func:`run_cli`, which turns :class:`UsageError` into that one line instead of a traceback. Only command-line
scripts import this module; library code raises :class:`common.errors.UsageError` directly. Importing it has
no side effects: scripts size MXNet's threads themselves first (:func:`common.threads.default_compute_threads`).

Library messages name the library's parameters (:class:`common.errors.ParameterError`); :func:`run_cli` spells
them as the command's own options, read from the parser that parsed the command line (:func:`option_names`):
``top_k`` -> ``--top-k``, ``tree`` -> ``--images`` (``dest='tree'``), a positional by its name, and a
parameter fed by an option of another name through ``ArgumentParser(parameters={'images_root': 'images'})``.
"""
import argparse
import contextvars
import os
import sys

from common.errors import ParameterMessage, UsageError
from common.fileio import WRITE_ERRNOS

__all__ = ['ArgumentParser', 'UsageError', 'option_names', 'run_cli']

_PARSER = contextvars.ContextVar('lightcnn_cli_parser', default=None)  # the parser of the running command


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports misuse as a single ``error: ... (see PROG --help)`` line (exit 2), no usage dump.

    Parameters
    ----------
    parameters : dict, optional
        ``{library parameter: dest}`` where the function the command calls names a value otherwise than the
        argument that feeds it (``{'images_root': 'images', 'out_prefix': 'out'}``), so that an error naming
        ``images_root`` reads ``--images`` on this command line.
    """

    def __init__(self, *args, parameters=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.parameters = dict(parameters or {})

    def parse_known_args(self, args=None, namespace=None):
        _PARSER.set(self)  # run_cli spells library errors with this command's options
        return super().parse_known_args(args, namespace)

    def error(self, message):
        """Print ``error: MESSAGE (see PROG --help)`` (one line, as every other error of the commands) and exit 2."""
        message = ' '.join(str(message).split())  # argparse's own messages are one line; keep them so
        self.exit(2, f'error: {message} (see {self.prog} --help)\n')


def option_names(parser):
    """``{name: how the command line spells it}`` for every argument of ``parser``.

    A name is an argument's ``dest`` (``top_k``) or a library parameter the parser maps to one
    (``ArgumentParser(parameters=...)``); the spelling is its first long option string (``--top-k``), else its
    first option string, and for a positional argument its metavar or dest (as ``--help`` shows it).

    Raises
    ------
    KeyError
        ``parameters`` maps a library parameter to a dest the parser has no argument for.
    """
    names = {}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.dest == argparse.SUPPRESS:
            continue
        if action.option_strings:
            names[action.dest] = next((o for o in action.option_strings if o.startswith('--')),
                                      action.option_strings[0])
        else:
            names[action.dest] = action.metavar if isinstance(action.metavar, str) else action.dest
    for parameter, dest in getattr(parser, 'parameters', {}).items():
        names[parameter] = names[dest]
    return names


def _spelled(err):
    """The line to print for ``err``: a :class:`ParameterMessage` spelled with the running command's options."""
    parser = _PARSER.get()
    if not isinstance(err, ParameterMessage) or parser is None:
        return str(err)
    try:
        names = option_names(parser)
    except KeyError:  # a mistyped parameters= map (tests catch it): the library's names, not a traceback
        return str(err)
    return err.spelled(lambda name: names.get(name, name))


def _silence_stdout():
    """Point ``sys.stdout`` at the null device so Python's exit-time flush of a closed pipe stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real file descriptor (pytest's capture): nothing to do
        pass


def run_cli(main, argv=None):
    """Call ``main(argv)`` and map user errors to exit code 2; returns the exit code.

    A :class:`~common.errors.ParameterError` is printed with the parameters spelled as the options of the
    :class:`ArgumentParser` that ``main`` parsed its arguments with; names it has no argument for stay as
    they are. A closed standard output (``command | head``) ends the command quietly, as Unix tools do: exit
    code 141 (128 + SIGPIPE), no traceback; commands write their files before printing tables, so nothing is
    lost.
    """
    token = _PARSER.set(None)
    try:
        code = main(argv) or 0
        sys.stdout.flush()  # a closed pipe shows here, not in Python's exit-time flush
        return code
    except BrokenPipeError:
        _silence_stdout()
        return 141
    except UsageError as err:
        print(f'error: {_spelled(err)}', file=sys.stderr)
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
    finally:
        _PARSER.reset(token)
