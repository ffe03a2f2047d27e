"""The embedded demo: ``python train_lightcnn.py`` with no data runs the whole pipeline on CPU.

Render face-like identities (``data_tools.synthetic``), pack them (``data_tools.packing``, identities
held out for verification), train LightCNN-9, extract features of the held-out identities
(``extract_features``), and score LFW-style pairs of them (``lfw_verification``). Everything lands
in ``work_dir`` (default ``runs/demo``). Options and defaults: :mod:`demo.config`.

What it is: proof that every stage runs and that training learns something that transfers to
identities it never saw. What it is not: a face model -- the faces are cartoons.
"""
import os
import time

import mxnet as mx

from common.errors import UsageError
from data_tools.packing import pack_records
from data_tools.pairs import make_pairs, write_pairs
from data_tools.synthetic import make_synthetic_faces
from extract_features import extract_to_mat
from lfw_verification import evaluate_verification, plot_roc, write_json
from symbols.checkpoint import save_checkpoint
from training import DEFAULTS, ParameterError, setup, train
from training import parse_config as parse_training_config

from .config import DEMO_CROP, parse_config


def run_demo(config=None, log=print):
    """Run the demo; returns a dict with the verification accuracy and the output paths.

    Parameters
    ----------
    config : argparse.Namespace, dict or list of str
        Options of :func:`demo.config.build_parser`: ``work_dir``, ``demo_*`` and the training options the
        demo uses, with the demo's defaults (dict keys use ``_`` or ``-``).
    log : callable
        Receives each log line.

    Raises
    ------
    ParameterError
        Fewer than 2 training or 4 held-out identities.
    """
    args = parse_config(config)
    start = time.time()
    work = os.path.abspath(args.work_dir)
    images = os.path.join(work, 'images')
    total = args.demo_identities
    heldout = args.demo_heldout
    if heldout < 4 or total - heldout < 2:
        raise ParameterError(lambda n: f'the demo needs at least 2 training and 4 held-out identities, not '
                                       f'{n("demo_identities")} {total} with {n("demo_heldout")} {heldout}')
    log(f'demo: rendering {total} synthetic identities x {args.demo_images} images '
        f'({args.demo_size}px) into {images}')
    make_synthetic_faces(images, total, args.demo_images, size=args.demo_size, seed=args.seed)
    prefix = os.path.join(work, 'data', 'synthetic')
    packed = pack_records(images, prefix, size=args.demo_size, color='gray', val_per_identity=2,
                          val_identities=heldout, seed=args.seed, progress=False)
    log(f"demo: packed {packed['splits']['train']['images']} training / "
        f"{packed['splits']['val']['images']} validation images of {packed['num_classes']} "
        f"identities, {heldout} identities held out -> {prefix}.rec")

    train_config = {name: getattr(args, name) for name in DEFAULTS if hasattr(args, name)}
    train_config.update(data_train=prefix + '.rec',  # top-1 needs a classifier: none with triplet
                        data_val=None if train_config.get('loss') == 'triplet' else prefix + '_val.rec',
                        model_prefix=os.path.join(work, args.network),
                        input_size=args.input_size or min(DEMO_CROP, args.demo_size))
    result = train(train_config, log=log)

    pairs_path = os.path.join(work, 'heldout_pairs.txt')
    folds, per_fold = _pair_layout(packed, heldout)
    pairs = make_pairs(images, folds=folds, per_fold=per_fold, seed=args.seed,
                       identities=packed['heldout_identities'])
    write_pairs(pairs_path, pairs, folds, per_fold)
    mat_path = os.path.join(work, 'heldout_features.mat')
    extract_to_mat(result['checkpoint'], mat_path, pairs=pairs_path, root=images, progress=False)
    evaluation = evaluate_verification(mat_path, pairs_path)
    untrained = _untrained_accuracy(train_config, pairs_path, images, work)
    roc_path = os.path.join(work, 'heldout_roc.png')
    plot_roc(evaluation, roc_path)
    write_json(evaluation, os.path.join(work, 'heldout_verification.json'))
    metrics = evaluation['metrics']
    summary = dict(accuracy=metrics['accuracy_mean'], accuracy_std=metrics['accuracy_std'],
                   untrained_accuracy=untrained,
                   auc=metrics['auc'], eer=metrics['eer'], pairs=len(pairs),
                   checkpoint=result['checkpoint'], features=mat_path, pairs_file=pairs_path,
                   roc=roc_path, metrics_csv=result['metrics_csv'], train=result,
                   seconds=time.time() - start)
    log(f"demo: verification on {heldout} held-out identities ({len(pairs)} pairs, {folds} folds): "
        f"accuracy {100 * summary['accuracy']:.2f}% +- {100 * summary['accuracy_std']:.2f} "
        f"(chance 50%, same network untrained {100 * untrained:.2f}%), "
        f"AUC {100 * summary['auc']:.2f}%, EER {100 * summary['eer']:.2f}%")
    log(f"demo: checkpoint {summary['checkpoint']}.params (+ .json, .states)")
    log(f'demo: features  {mat_path}')
    log(f'demo: ROC curve {roc_path}')
    log(f"demo: finished in {summary['seconds']:.0f}s. Train on your data: "
        'python train_lightcnn.py --data-train PREFIX.rec --data-val PREFIX_val.rec ...')
    return summary


def _untrained_accuracy(train_config, pairs_path, images, work):
    """Verification accuracy of the initial weights (as training set them up): how much training earned."""
    args = parse_training_config(dict(train_config, model_prefix=os.path.join(work, 'untrained', 'run')))
    run = setup(args, contexts=[mx.cpu()], log=lambda _: None)
    stem = save_checkpoint(run.net, os.path.join(work, 'untrained', run.args.network), run.meta)
    mat = os.path.join(work, 'untrained', 'heldout_features.mat')
    extract_to_mat(stem, mat, pairs=pairs_path, root=images, progress=False)
    return evaluate_verification(mat, pairs_path)['metrics']['accuracy_mean']


def _pair_layout(packed, heldout):
    """``(folds, per_fold)`` the held-out set supports: two or more identities per fold (for
    mismatched pairs), up to LFW's 10 folds of 300 + 300 pairs, half the distinct pairs at most."""
    folds = max(1, min(10, heldout // 2))
    ids = heldout // folds
    per_identity = packed['splits']['heldout']['images'] // max(heldout, 1)
    matched = ids * per_identity * (per_identity - 1) // 2
    mismatched = ids * (ids - 1) // 2 * per_identity ** 2
    return folds, max(1, min(300, matched // 2, mismatched // 2))
