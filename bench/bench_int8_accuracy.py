"""INT8 accuracy search: which quantization settings keep verification accuracy (issue 16, part 2).

    nice python bench/bench_int8_accuracy.py --model runs/pretrained/lightcnn-v4 \\
        [--images /work/data/pubfig83_aligned144] [--configs entropy256,naive256,...] [--per-identity 60]

PubFig83 aligned by ``data_tools/align.py`` (144 px), split by identity name as ``bench_transfer.py`` does: the
first 63 identities give the calibration images, the last 20 (never trained on by a LightCNN-9 trained on the
63) the verification pairs (10 identity-disjoint folds x ``--per-fold`` matched + mismatched pairs over at most
``--per-identity`` images per identity). The fp32 features are computed once; each configuration is quantized
(``models.quantize.quantize_checkpoint``), embeds the same images, and is scored on the same pairs: accuracy
change (points), AUC, and the feature cosine to fp32 (mean, 1st percentile, min).

A configuration is written ``MODE COUNT [-x LAYER,LAYER]`` joined without spaces, e.g. ``entropy256``,
``naive512``, ``entropy256-xmfm0_convolution0,mfm0_convolution1`` (layers of the folded graph kept in fp32);
the names ``first``/``last``/``dense``/``groupK`` expand to the first MFM, the last MFM, the dense layer and the
K-th fifth of the MFM layers (what a sensitivity search needs).
"""
import argparse
import json
import os
import re
import sys
import tempfile
import time

import numpy as np

from harness import RESULTS_DIR, load, markdown_table, pin_threads

DEFAULT_IMAGES = os.environ.get('LIGHTCNN_PUBFIG_ALIGNED', '/work/data/pubfig83_aligned144')
KNOWN, HELDOUT = 63, 20
COLUMNS = (('config', 'configuration', ''), ('excluded', 'fp32 layers', 'd'), ('acc', 'accuracy %', '.2f'),
           ('change', 'change (points)', '+.2f'), ('auc', 'AUC', '.4f'), ('cos_mean', 'cosine mean', '.4f'),
           ('cos_p01', 'cosine 1st pct', '.4f'), ('cos_min', 'cosine min', '.4f'),
           ('quantize_s', 'quantize s', '.0f'), ('embed_ips', 'INT8 img/s', '.1f'), ('note', 'note', ''))


def split_tree(images, per_identity, tmp):
    """``(calibration tree, held-out tree)``: folders of links to the first 63 / last 20 identities (held-out
    identities keep their first ``per_identity`` images in name order)."""
    names = sorted(d for d in os.listdir(images) if os.path.isdir(os.path.join(images, d)))
    calib, held = os.path.join(tmp, 'calibration'), os.path.join(tmp, 'heldout')
    for name in names[:KNOWN]:
        os.makedirs(calib, exist_ok=True)
        os.symlink(os.path.join(images, name), os.path.join(calib, name))
    for name in names[-HELDOUT:]:
        os.makedirs(os.path.join(held, name))
        for f in sorted(os.listdir(os.path.join(images, name)))[:per_identity]:
            os.symlink(os.path.join(images, name, f), os.path.join(held, name, f))
    return calib, held


def mfm_layers(graph):
    """Names (without the net prefix) of the folded graph's convolutional MFM layers, in order, as pairs."""
    from models.quantize import _unprefixed
    convs = [_unprefixed(n['name']) for n in graph['nodes'] if n['op'] == 'Convolution']
    return [convs[i:i + 2] for i in range(0, len(convs), 2)]


def expand(names, pairs, dense):
    out = []
    for name in names:
        m = re.fullmatch(r'group(\d+)', name)
        if name == 'first':
            out += pairs[0]
        elif name == 'last':
            out += pairs[-1]
        elif name == 'dense':
            out += dense
        elif m:
            k, size = int(m.group(1)), -(-len(pairs) // 5)
            out += [layer for pair in pairs[k * size:(k + 1) * size] for layer in pair]
        else:
            out.append(name)
    return out


def parse_config(text, pairs, dense):
    m = re.fullmatch(r'(naive|entropy)(\d+)(?:-x(.+))?', text)
    if not m:
        raise SystemExit(f'bad configuration {text!r}: MODE COUNT [-x LAYER,...], e.g. entropy256-xfirst,dense')
    return m.group(1), int(m.group(2)), expand(m.group(3).split(',') if m.group(3) else [], pairs, dense)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', required=True, help='fp32 checkpoint stem')
    parser.add_argument('--images', default=DEFAULT_IMAGES, help='aligned PubFig83 tree (144 px)')
    parser.add_argument('--configs', default='entropy256,naive256', help='comma-free list separated by spaces '
                        'or ";" (see the module docstring)')
    parser.add_argument('--per-identity', type=int, default=60)
    parser.add_argument('--per-fold', type=int, default=300)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--draws', type=int, default=10, help='pair draws (seeds) over the same images')
    parser.add_argument('--save-features', help='save each configuration\'s features as PREFIX_CONFIG.npz')
    parser.add_argument('--fp32-cache', help='reuse the fp32 features saved at this path (same model and split)')
    parser.add_argument('--json', help='default: bench/results/int8_accuracy_<model>.json (give one per '
                                           'concurrent run)')
    args = parser.parse_args(argv)
    pin_threads(args.threads)
    from data_tools.pairs import make_pairs
    from common.verification import pair_scores, verification_metrics
    from models import load_model
    from models.deploy_graph import deploy_symbol
    from models.quantize import quantize_checkpoint
    from symbols.checkpoint import load_checkpoint
    net, meta = load_checkpoint(args.model, features_only=True)
    graph, _ = deploy_symbol(net, meta['preprocessing'].data_shape)
    pairs_of_layers = mfm_layers(graph)
    from models.quantize import _unprefixed
    dense = [_unprefixed(n['name']) for n in graph['nodes'] if n['op'] == 'FullyConnected']
    configs = [c for c in re.split(r'[;\s]+', args.configs) if c]
    out_json = args.json or str(RESULTS_DIR / f'int8_accuracy_{os.path.basename(args.model)}.json')
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        calib, held = split_tree(args.images, args.per_identity, tmp)
        rels = sorted(f'{d}/{f}' for d in os.listdir(held) for f in os.listdir(os.path.join(held, d)))
        row_of = {rel: i for i, rel in enumerate(rels)}
        paths = [os.path.join(held, rel) for rel in rels]
        draws = []  # pair sets over the same images: seed 0 is the reported one, all give the spread
        for seed in range(args.draws):
            pairs = make_pairs(held, folds=10, per_fold=args.per_fold, seed=seed)
            draws.append((np.array([row_of[p.path1] for p in pairs]), np.array([row_of[p.path2] for p in pairs]),
                          np.array([p.issame for p in pairs]), np.array([p.fold for p in pairs])))

        def score(feats):
            out = []
            for idx1, idx2, issame, folds in draws:
                m = verification_metrics(pair_scores(feats.astype(np.float64), idx1, idx2), issame, folds)
                out.append((100 * m['accuracy_mean'], m['auc']))
            return np.array(out)

        cache = args.fp32_cache and f'{args.fp32_cache}.{len(paths)}.npz'
        if cache and os.path.exists(cache):
            with np.load(cache) as data:
                fp32, fp32_ips = data['features'], float(data['ips'])
        else:
            tic = time.perf_counter()
            fp32 = load_model(args.model).embed(paths)
            fp32_ips = len(paths) / (time.perf_counter() - tic)
            if cache:
                np.savez(cache, features=fp32, ips=fp32_ips)
        base = score(fp32)
        acc0, auc0 = base[0]
        rows.append(dict(config='fp32', excluded=0, acc=acc0, auc=auc0, embed_ips=None,
                         note=f'{len(draws[0][0])} pairs, {len(paths)} images; fp32 {fp32_ips:.1f} img/s; over '
                              f'{len(draws)} pair draws accuracy {base[:, 0].mean():.2f} ± {base[:, 0].std():.2f}'))
        print(markdown_table(rows, COLUMNS), flush=True)
        for text in configs:
            mode, count, exclude = parse_config(text, pairs_of_layers, dense)
            prefix = os.path.join(tmp, 'q')
            tic = time.perf_counter()
            quantize_checkpoint(args.model, prefix, calib, count, mode, exclude=exclude)
            qs = time.perf_counter() - tic
            tic = time.perf_counter()
            feats = load_model(prefix).embed(paths)
            ips = len(paths) / (time.perf_counter() - tic)
            if args.save_features:
                np.savez(f'{args.save_features}_{text}.npz', features=feats, paths=np.array(rels))
            got = score(feats)
            acc, auc = got[0]
            change = got[:, 0] - base[:, 0]
            cos = (feats * fp32).sum(1) / (np.linalg.norm(feats, axis=1) * np.linalg.norm(fp32, axis=1))
            rows.append(dict(config=text, excluded=len(exclude), acc=acc, change=acc - acc0, auc=auc,
                             cos_mean=float(cos.mean()), cos_p01=float(np.percentile(cos, 1)),
                             cos_min=float(cos.min()), quantize_s=qs, embed_ips=ips,
                             change_mean=float(change.mean()), change_std=float(change.std()),
                             changes=change.tolist(),
                             note=f'change over {len(draws)} draws {change.mean():+.3f} ± {change.std():.3f} '
                                  f'(worst {change.min():+.2f}); x fp32 speed {ips / fp32_ips:.2f} (one pass)'))
            print(markdown_table(rows[-1:], COLUMNS).splitlines()[-1], flush=True)
            with open(out_json, 'w') as f:
                json.dump(dict(model=args.model, images=args.images, load=load(), rows=rows,
                               mfm_layers=pairs_of_layers, dense=dense), f, indent=1)
    print(markdown_table(rows, COLUMNS))
    return 0


if __name__ == '__main__':
    sys.exit(main())
