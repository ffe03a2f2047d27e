"""Errors of the trainer whose messages name its parameters, spelled by whoever reports them.

Library code names parameters as Python callers know them (``batch_size must be at least 1``); a command
line asks for its own spelling (``--batch-size must be at least 1``) with :meth:`ParameterMessage.spelled`.
The message is a function of the spelling, so there is no text to patch afterwards::

    raise ParameterError(lambda name: f'{name("batch_size")} must be at least 1')
"""
from common.errors import UsageError


def _as_is(name):
    return name


def flag(name):
    """``batch_size`` -> ``--batch-size``: how the command lines spell a parameter."""
    return '--' + name.replace('_', '-')


class ParameterMessage:
    """Mixin: ``str(err)`` names parameters as they are; ``err.spelled(flag)`` as a CLI does."""

    def __init__(self, render):
        self.render = render
        super().__init__(render(_as_is))

    def spelled(self, spell):
        """The message with every parameter name passed through ``spell`` (e.g. :func:`flag`)."""
        return self.render(spell)


class ParameterError(ParameterMessage, UsageError):
    """A bad option value; ``render(name)`` builds the message, calling ``name('param')`` per parameter."""


class TrainingDiverged(ParameterMessage, RuntimeError):
    """The loss became NaN/inf; the message names the last good checkpoint and the parameters to change."""
