"""Errors of the trainer whose messages name its parameters, spelled by whoever reports them.

:class:`ParameterError` and :func:`flag` live in :mod:`common.errors` (every stage raises them); the trainer
adds :class:`TrainingDiverged`, which is not a usage error (exit 1, not 2)::

    raise ParameterError(lambda name: f'{name("batch_size")} must be at least 1')
"""
from common.errors import ParameterError, ParameterMessage, flag

__all__ = ['ParameterError', 'ParameterMessage', 'TrainingDiverged', 'flag']


class TrainingDiverged(ParameterMessage, RuntimeError):
    """The loss became NaN/inf; the message names the last good checkpoint and the parameters to change."""
