"""Fine-tuning: a checkpoint's backbone, a new classifier, and how fast (or whether) the backbone trains.

Adapting a face network to one's own identities, as practitioners do: keep the trunk that maps a face to its
256-d feature, replace the classifier ``fc2`` by a freshly initialised one for the new classes, and train the
trunk slower than the classifier (a backbone lr multiplier, "discriminative fine-tuning") or not at all for
the first epochs while the new classifier settles ("gradual unfreezing"): Yosinski et al., "How transferable
are features in deep neural networks?", NIPS 2014; Howard & Ruder, "Universal Language Model Fine-tuning for
Text Classification" (ULMFiT), ACL 2018.

Parameters are matched by their structural names, which are the official PyTorch ``state_dict`` keys
(``features.0.filter.weight``, ``fc.weight``, ...); every backbone parameter must find a tensor of its shape
in the checkpoint. The network and its preprocessing (channels, scale, input side) come from the checkpoint's
JSON; only the side of the stored records comes from the data.
"""
import os
from dataclasses import dataclass, replace

import mxnet as mx

from common.errors import UsageError
from common.preprocessing import Preprocessing
from symbols.checkpoint import load_metadata, resolve_checkpoint

from .callbacks import Callback
from .config import DEFAULT_NETWORK
from .errors import ParameterError

CLASSIFIER = 'fc2.'  # structural names of the classifier replaced for the new classes
EMBEDDING_BN = 'embedding_bn.'  # symbols.lightcnn.EmbeddingBN: kept initialised when the checkpoint has none


def is_classifier(name):
    """Whether the structural parameter ``name`` belongs to the classifier (``fc2.weight``, ``fc2.bias``)."""
    return name.startswith(CLASSIFIER)


@dataclass(frozen=True)
class PretrainedSource:
    """A checkpoint to fine-tune from: its stem (absolute), JSON metadata and preprocessing."""
    stem: str
    meta: dict
    preprocessing: Preprocessing

    @property
    def network(self):
        return self.meta['network']

    def describe(self):
        """What the fine-tuned checkpoints record under ``pretrained``: where the backbone came from."""
        meta = self.meta
        return dict(stem=self.stem, network=self.network, num_classes=meta.get('num_classes'),
                    epoch=meta.get('epoch'), loss=meta.get('loss', (meta.get('head') or {}).get('loss')),
                    source=meta.get('source'), pretrained=meta.get('pretrained'))


def read_pretrained(spec):
    """The checkpoint ``spec`` names: a stem, a ``.params``/``.json`` file or a training prefix (last epoch).

    Raises
    ------
    ParameterError
        No such checkpoint, or its JSON is not one of ours (the message names ``pretrained``).
    """
    try:
        stem = resolve_checkpoint(spec)
        meta = load_metadata(stem)
        pre = Preprocessing.from_dict(meta.get('preprocessing') or {})
    except (UsageError, OSError, ValueError, TypeError) as err:
        reason = str(err)  # the message is rendered later, after Python has unbound ``err``
        raise ParameterError(lambda n: f'{n("pretrained")} {spec}: {reason}') from None
    return PretrainedSource(stem=os.path.abspath(stem), meta=meta, preprocessing=pre)


def network_name(network, pretrained=None):
    """The network to train: ``network`` if given, else ``pretrained``'s, else :data:`DEFAULT_NETWORK`.

    Raises
    ------
    ParameterError
        ``network`` given and different from the checkpoint's (both named).
    """
    if pretrained is None:
        return network or DEFAULT_NETWORK
    if network and network != pretrained.network:
        raise ParameterError(lambda n: f'{n("network")} {network} conflicts with {n("pretrained")} '
                                       f'{pretrained.stem}, a {pretrained.network}: drop {n("network")} '
                                       '(the checkpoint sets the network)')
    return pretrained.network


def pretrained_preprocessing(pretrained, record, rec_path, input_size=None):
    """The checkpoint's pixels on records of ``record`` (the packing JSON's ``record``: ``size``, ``color``).

    Channels, scale, mean and input side are the checkpoint's; ``record_size`` the records'.

    Raises
    ------
    ParameterError
        Gray records for a colour checkpoint or the reverse, ``input_size`` other than the checkpoint's (its
        dense layer is sized for it), or records smaller than its input; each message names both sides.
    """
    pre, stem = pretrained.preprocessing, pretrained.stem
    color = record.get('color', 'gray')
    if (color == 'gray') != (pre.channels == 'gray'):
        want = 'gray' if pre.channels == 'gray' else 'bgr'
        raise ParameterError(lambda n: f'{rec_path} holds {color} records but {n("pretrained")} {stem} '
                                       f'({pretrained.network}) takes {pre.channels} input: pack the images '
                                       f'with data_tools/pack_rec.py --color {want}')
    if input_size and input_size != pre.input_size:
        raise ParameterError(lambda n: f'{n("input_size")} {input_size} differs from the {pre.input_size} px '
                                       f'input of {n("pretrained")} {stem} (its dense layer is sized for '
                                       f'it): drop {n("input_size")}')
    record_size = int(record.get('size', pre.record_size))
    if record_size < pre.input_size:
        side = max(pre.record_size, pre.input_size)
        raise ParameterError(lambda n: f'{rec_path} holds {record_size} px records, smaller than the '
                                       f'{pre.input_size} px input of {n("pretrained")} {stem}: pack with '
                                       f'data_tools/pack_rec.py --size {side}')
    return replace(pre, record_size=record_size)


def copy_backbone(net, pretrained):
    """Set every non-classifier parameter of the initialised ``net`` to the checkpoint's tensor of that name.

    The classifier keeps its initialisation; the checkpoint's own ``fc2`` (another class count) is left out.

    An embedding BatchNorm (``--embedding-bn on``) the checkpoint does not have starts as initialised (the
    identity up to the batch statistics); one the checkpoint has is copied.

    Returns
    -------
    dict
        ``copied`` (number of tensors), ``left_out`` (checkpoint keys not used: its classifier), ``new``
        (parameters the checkpoint lacks and that start initialised: an added embedding BatchNorm).

    Raises
    ------
    UsageError
        A backbone parameter missing from the checkpoint or of another shape (every such name listed, both
        shapes given), or an unreadable ``.params``.
    """
    path = pretrained.stem + '.params'
    try:
        source = mx.nd.load(path)
    except (OSError, mx.MXNetError) as err:
        first = (str(err).strip().splitlines() or ['unreadable'])[0]
        raise UsageError(f'cannot read {path}: {first}') from None
    params = {k: p for k, p in net._collect_params_with_prefix().items() if not is_classifier(k)}
    new = sorted(k for k in params if k.startswith(EMBEDDING_BN) and k not in source)
    params = {k: p for k, p in params.items() if k not in new}
    missing = [k for k in params if k not in source]
    wrong = [f'{k} {tuple(source[k].shape)} in the checkpoint, {tuple(p.shape)} here'
             for k, p in params.items() if k in source and tuple(source[k].shape) != tuple(p.shape)]
    if missing or wrong:
        problems = ([f'missing: {", ".join(missing)}'] if missing else []) + \
            ([f'other shape: {"; ".join(wrong)}'] if wrong else [])
        raise UsageError(f'{path} does not fit the backbone of {pretrained.network}: ' + '; '.join(problems))
    for key, param in params.items():
        param.set_data(source[key].astype(param.dtype))
    return dict(copied=len(params), left_out=sorted(k for k in source if k not in params), new=new)


def set_lr_mults(net, backbone, classifier):
    """``lr_mult`` of the classifier's parameters = ``classifier``, of all others = ``backbone``."""
    for name, param in net._collect_params_with_prefix().items():
        param.lr_mult = classifier if is_classifier(name) else backbone


def set_backbone_trainable(net, trainable):
    """Give the backbone gradients (``grad_req='write'``) or none (``'null'``: no backward, no update).

    The graph is hybridized again as the trainer builds it (``hybridize`` clears the cached op), so backward
    really stops at the classifier while frozen. The Gluon trainer skips parameters whose ``grad_req`` is
    ``'null'``.
    """
    req = 'write' if trainable else 'null'
    for name, param in net._collect_params_with_prefix().items():
        if not is_classifier(name):
            param.grad_req = req
    net.hybridize(static_alloc=True, static_shape=True)


class TrunkSchedule(Callback):
    """Backbone frozen for the first ``freeze_epochs`` epochs (and always when ``backbone_lr_mult`` is 0).

    Before each epoch the backbone is set to what that epoch needs, so a resumed run starts in the same state
    as a straight one. The classifier trains throughout.
    """

    def __init__(self, freeze_epochs, backbone_lr_mult):
        self.freeze_epochs, self.backbone_lr_mult = freeze_epochs, backbone_lr_mult
        self.frozen = None

    def frozen_in(self, epoch):
        """Whether the backbone is frozen in 0-based ``epoch``."""
        return self.backbone_lr_mult == 0 or epoch < self.freeze_epochs

    def on_epoch_begin(self, run, epoch):
        frozen, first = self.frozen_in(epoch), self.frozen is None
        if frozen != self.frozen and not (first and not frozen):
            set_backbone_trainable(run.net, not frozen)
        if frozen and frozen != self.frozen:
            until = ('for good (backbone_lr_mult 0)' if self.backbone_lr_mult == 0
                     else f'until Epoch[{self.freeze_epochs}]')
            run.log(f'Epoch[{epoch}] backbone frozen {until}: training the classifier only')
        elif not frozen and self.frozen:
            run.log(f'Epoch[{epoch}] backbone unfrozen: trained at lr x {self.backbone_lr_mult:g}')
        elif not frozen and first and (self.backbone_lr_mult != 1 or self.freeze_epochs):
            run.log(f'Epoch[{epoch}] backbone trained at lr x {self.backbone_lr_mult:g}')
        self.frozen = frozen
