"""Device strings -> MXNet contexts: one grammar for training's ``--gpus 0,1`` and extraction's ``--ctx gpu:N``.

A device list is comma-separated; each item is ``cpu``, ``gpu`` (GPU 0), ``gpu:N`` or a bare GPU number
``N``. An empty or missing list means the CPU. Asking for a GPU this MXNet build does not see is a
:class:`~common.errors.ParameterError` (the CPU build sees none).
"""
import re

import mxnet as mx

from common.errors import ParameterError

_ITEM = re.compile(r'(cpu|gpu)(?::(\d+))?|(\d+)')


def parse_devices(spec, name='devices'):
    """``'0,1'`` -> ``[mx.gpu(0), mx.gpu(1)]``; ``'gpu:1'`` -> ``[mx.gpu(1)]``; ``''``/``None``/``'cpu'`` -> ``[mx.cpu()]``.

    Parameters
    ----------
    spec : str, int or None
        The device list (grammar in the module docstring).
    name : str
        The caller's parameter for this value, for error messages (``'ctx'``; a command line spells it
        as its option, :class:`~common.errors.ParameterError`).

    Raises
    ------
    ParameterError
        An item outside the grammar, or a GPU index beyond what MXNet sees.
    """
    text = '' if spec is None else str(spec).strip().lower()
    items = [item.strip() for item in text.split(',') if item.strip()]
    if not items:
        return [mx.cpu()]
    contexts = []
    for item in items:
        m = _ITEM.fullmatch(item)
        if m is None:
            raise ParameterError(lambda n: f'{n(name)} takes cpu, gpu, gpu:N or GPU numbers like 0,1; not {spec!r}')
        if m.group(1) == 'cpu':
            contexts.append(mx.cpu())
        else:
            contexts.append(mx.gpu(int(m.group(2) or m.group(3) or 0)))
    wanted = max((c.device_id for c in contexts if c.device_type == 'gpu'), default=-1)
    if wanted >= mx.context.num_gpus():
        raise ParameterError(lambda n: f'{n(name)} {spec}: this MXNet sees {mx.context.num_gpus()} GPU(s) '
                                       '(the CPU build sees none); use the CPU instead')
    return contexts


def parse_device(spec, name='ctx'):
    """One context from ``cpu`` | ``gpu`` | ``gpu:N`` | ``N`` (``None`` -> CPU); :func:`parse_devices` rules.

    Raises
    ------
    ParameterError
        Not exactly one device, or one :func:`parse_devices` refuses.
    """
    contexts = parse_devices(spec, name)
    if len(contexts) != 1:
        raise ParameterError(lambda n: f'{n(name)} takes one device (cpu, gpu or gpu:N), not {spec!r}')
    return contexts[0]
