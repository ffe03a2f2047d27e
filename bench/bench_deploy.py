"""Deployment: MXNet fp32 vs MXNet INT8 vs onnxruntime, speed and verification accuracy, in one run.

    nice python bench/bench_deploy.py [--images ../shared/datasets/pubfig83] [--v4 runs/pretrained/lightcnn-v4] \\
        [--aligned /work/data/pubfig83_aligned144] [--lightcnn9 TRAINED_STEM] [--n 192] [--rounds 3] [--per-fold 300]

Accuracy uses PubFig83 aligned by ``data_tools/align.py`` (``--aligned``, 144 px; the raw ``--images`` when
absent), split by identity name as ``bench_transfer.py`` splits it: the first 63 identities give the INT8
calibration images (``--calibration-count`` of them, spread evenly), the last 20 the held-out verification pairs
(10 identity-disjoint folds, ``--per-fold`` matched + mismatched pairs each over at most ``--per-identity``
images per identity, as ``data_tools/make_pairs.py``).

Speed (each variant in its own worker process, 2 compute threads, alternating rounds; ratio = median of the
per-round ratios against MXNet fp32 in the same round):

* forward: a fixed batch of 64 preprocessed faces -- MXNet fp32 (hybridized, oneDNN subgraph pass, as
  extraction runs it), the INT8 checkpoint, and the exported ONNX file in onnxruntime (deploy venv);
* extraction: ``embed_images`` on PubFig83 JPEGs (decode + forward, batch 64, 2 decode threads), the
  engine behind ``extract_features.py``, with the fp32 and the INT8 checkpoint.

LightCNN-9 runs with random weights (speed does not depend on them) and V4 with the imported weights when
``--v4`` exists. Accuracy (10-fold verification accuracy, AUC, fp32-vs-INT8 feature cosine on the same
images) needs real weights: V4, and a trained LightCNN-9 given with ``--lightcnn9``.
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

from bench_int8_accuracy import DEFAULT_IMAGES as DEFAULT_ALIGNED, HELDOUT, KNOWN, split_tree
from harness import (BENCH_DIR, REPO_ROOT, Worker, _version, alternate, finish, markdown_table, paired_ratio,
                     pin_threads, rate_summary, skipped_row)

DEFAULT_IMAGES = REPO_ROOT.parent / 'shared' / 'datasets' / 'pubfig83'
DEFAULT_V4 = REPO_ROOT / 'runs' / 'pretrained' / 'lightcnn-v4'
BATCH = 64
COLUMNS = (('network', 'network', ''), ('measure', 'measure', ''), ('variant', 'variant', ''),
           ('rate', 'images/s', '.1f'), ('rate_min', 'min', '.1f'), ('rate_max', 'max', '.1f'),
           ('cpu_s_per_item', 'CPU s/image', '.3f'), ('ratio', 'x fp32', '.2f'), ('note', 'note', ''))
ACCURACY_COLUMNS = (('network', 'network', ''), ('pairs', 'pairs', 'd'), ('images', 'images', 'd'),
                    ('acc_fp32', 'acc fp32 %', '.2f'), ('acc_int8', 'acc INT8 %', '.2f'),
                    ('acc_change', 'change (points)', '+.2f'), ('auc_fp32', 'AUC fp32', '.4f'),
                    ('auc_int8', 'AUC INT8', '.4f'), ('cos_mean', 'cosine mean', '.4f'),
                    ('cos_min', 'cosine min', '.4f'), ('note', 'note', ''))
FP32, INT8, ORT = 'MXNet fp32', 'MXNet INT8', 'onnxruntime fp32'


# --- workers -----------------------------------------------------------------------------------------

def mxnet_worker(stem, paths, batch_path, batch=BATCH):
    """A checkpoint (fp32 or INT8) on the extraction engine; ``run((kind, arg))`` times or embeds."""
    import mxnet as mx
    import numpy as np

    from symbols.checkpoint import load_checkpoint
    from symbols.inference import Embedder, ImageItem, embed_images
    net, meta = load_checkpoint(stem, features_only=True)
    embedder = Embedder(net, meta['preprocessing'], batch_size=batch)
    x = mx.nd.array(np.load(batch_path))
    items = [ImageItem(p, p) for p in paths]
    net(x).wait_to_read()
    embed_images(embedder, items[:batch])  # warm-up: graph built for the static batch shape

    def run(request):
        kind, arg = request
        wall, cpu = time.perf_counter(), time.process_time()
        if kind == 'forward':
            for _ in range(arg):
                net(x).asnumpy()
            count, result = arg * batch, None
        elif kind == 'extract':
            embed_images(embedder, items[:arg])
            count, result = arg, None
        else:  # 'embed': features of these paths, in order
            result = embed_images(embedder, [ImageItem(p, p) for p in arg]).features
            count = len(arg)
        out = {'seconds': time.perf_counter() - wall, 'cpu': time.process_time() - cpu, 'images': count}
        if result is not None:
            out['features'] = result
        return out
    return run


class OnnxWorker:
    """``bench/onnx_worker.py`` in the deploy python, driven over its stdin/stdout like :class:`Worker`."""

    def __init__(self, deploy_python, onnx_path, batch_path, threads):
        self._proc = subprocess.Popen(
            [deploy_python, str(BENCH_DIR / 'onnx_worker.py'), onnx_path, batch_path, str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = self._read()
        self.error = first.get('error')
        self.version = first.get('ready')

    def _read(self):
        line = self._proc.stdout.readline()
        if not line:
            return {'error': f'onnx worker died: {self._proc.stderr.read().strip()[-300:]}'}
        return json.loads(line)

    def __call__(self, request):
        kind, arg = request
        self._proc.stdin.write(f'{arg}\n')
        self._proc.stdin.flush()
        out = self._read()
        if 'error' in out:
            raise RuntimeError(out['error'])
        return out

    def close(self):
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write('\n')
                self._proc.stdin.flush()
            except OSError:
                pass
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.terminate()


# --- data --------------------------------------------------------------------------------------------

def _sample(images, n):
    from symbols.inference import items_from_tree
    items = items_from_tree(str(images))
    step = max(1, len(items) // n)
    return [item.source for item in items[::step][:n]]


def _random_checkpoint(network, prefix, seed=0):
    import mxnet as mx

    from symbols.checkpoint import save_checkpoint
    from symbols import LightCNNInit, default_preprocessing, get_model
    mx.random.seed(seed)
    net = get_model(network)
    net.initialize(LightCNNInit())
    return save_checkpoint(net, prefix, dict(network=network, num_classes=None,
                                             preprocessing=default_preprocessing(network)))


def _quantize(stem, prefix, calibration, count, mode, exclude=()):
    from models.quantize import quantize_checkpoint
    tic = time.perf_counter()
    result = quantize_checkpoint(stem, prefix, calibration, count, mode, exclude=exclude)
    return result['stem'], time.perf_counter() - tic, result['quantization']


# --- measurements ------------------------------------------------------------------------------------

def speed_rows(label, workers, paths, rounds, forwards):
    """Forward rows (every worker) and extraction rows (MXNet workers), ratios against fp32."""
    rows = []
    results = alternate({k: (lambda w=w: w(('forward', forwards))) for k, w in workers.items()}, rounds)
    for variant, res in results.items():
        row = {'network': label, 'measure': f'forward, batch {BATCH}', 'variant': variant,
               **rate_summary(res, 'images')}
        if variant != FP32:
            row['ratio'] = paired_ratio(res, results[FP32], 'images')
        rows.append(row)
    mx_workers = {k: w for k, w in workers.items() if k in (FP32, INT8)}
    results = alternate({k: (lambda w=w: w(('extract', len(paths)))) for k, w in mx_workers.items()}, rounds)
    for variant, res in results.items():
        row = {'network': label, 'measure': 'extraction (decode + forward)', 'variant': variant,
               **rate_summary(res, 'images')}
        if variant != FP32:
            row['ratio'] = paired_ratio(res, results[FP32], 'images')
        rows.append(row)
    return rows, results


def accuracy_row(label, fp32, int8, heldout_tree, per_fold):
    """Verification on held-out pairs with both workers' features, and their cosine on the same images."""
    import numpy as np

    from common.verification import pair_scores, verification_metrics
    from data_tools.pairs import make_pairs
    pairs = make_pairs(heldout_tree, folds=10, per_fold=per_fold, seed=0)
    rels = sorted({p for pair in pairs for p in (pair.path1, pair.path2)})
    row_of = {rel: i for i, rel in enumerate(rels)}
    paths = [os.path.join(heldout_tree, rel) for rel in rels]
    idx1 = np.array([row_of[p.path1] for p in pairs])
    idx2 = np.array([row_of[p.path2] for p in pairs])
    issame = np.array([p.issame for p in pairs])
    folds = np.array([p.fold for p in pairs])
    row = {'network': label, 'pairs': len(pairs), 'images': len(paths)}
    features = {}
    for name, worker in (('fp32', fp32), ('int8', int8)):
        feats = worker(('embed', paths))['features'].astype(np.float64)
        features[name] = feats
        metrics = verification_metrics(pair_scores(feats, idx1, idx2), issame, folds)
        row[f'acc_{name}'] = 100 * metrics['accuracy_mean']
        row[f'auc_{name}'] = metrics['auc']
    row['acc_change'] = row['acc_int8'] - row['acc_fp32']
    a, b = features['fp32'], features['int8']
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    row['cos_mean'], row['cos_min'] = float(cos.mean()), float(cos.min())
    return row


def run(images=DEFAULT_IMAGES, v4=DEFAULT_V4, lightcnn9=None, n=192, rounds=3, forwards=2, per_fold=300,
        calibration_count=256, calibration_mode='naive', accuracy=True, json_path=None, aligned=DEFAULT_ALIGNED,
        per_identity=60, exclude=(), threads=None):
    threads = pin_threads(*([threads] if threads else []))
    title = 'Deployment: INT8 and onnxruntime vs MXNet fp32 (CPU)'
    if not os.path.isdir(images):
        return finish('deploy', title, [skipped_row('all', f'dataset {images} absent')], COLUMNS, {}, json_path)
    import numpy as np

    from common.preprocessing import Preprocessing
    from models.export import export_model, find_deploy_python
    from symbols.checkpoint import load_metadata
    deploy_python = find_deploy_python()
    rows, accuracy_rows, notes, quantization = [], [], [], {}
    raw = {}
    accuracy_images = aligned if aligned and os.path.isdir(aligned) else str(images)
    with tempfile.TemporaryDirectory() as tmp:
        calib_tree, heldout_tree = split_tree(accuracy_images, per_identity, tmp)
        paths = _sample(images, n)
        nets = [('LightCNN-9 (random weights)', _random_checkpoint('lightcnn9', os.path.join(tmp, 'l9')), False)]
        if os.path.exists(str(v4) + '.params'):
            nets.append(('LightCNN-V4', str(v4), True))
        else:
            nets.append(('LightCNN-V4 (random weights)', _random_checkpoint('lightcnn_v4', os.path.join(tmp, 'v4')),
                         False))
            notes.append(f'{v4} absent (python models/import_pretrained.py lightcnn-v4): V4 speed with random '
                         'weights, no V4 accuracy')
        if lightcnn9:
            nets.append(('LightCNN-9 (trained)', str(lightcnn9), 'only'))
        for label, stem, real in nets:
            print(f'--- {label}: quantizing ({calibration_mode}, {calibration_count} images)', flush=True)
            int8_stem, seconds, q = _quantize(stem, os.path.join(tmp, 'int8', os.path.basename(stem) + '-int8'),
                                              calib_tree, calibration_count, calibration_mode, exclude)
            quantization[label] = {'seconds': seconds, 'operators': q['operators'], 'excluded': q['excluded'],
                                   'calibration': {k: v for k, v in q['calibration'].items() if k != 'skipped'}}
            pre = Preprocessing.from_dict(load_metadata(stem).get('preprocessing', {}))
            batch_path = os.path.join(tmp, f'batch{len(quantization)}.npy')
            np.save(batch_path, pre.to_batch([pre.load(p) for p in paths[:BATCH]]))
            workers = {FP32: Worker('bench_deploy', 'mxnet_worker', stem=stem, paths=paths, batch_path=batch_path),
                       INT8: Worker('bench_deploy', 'mxnet_worker', stem=int8_stem, paths=paths,
                                    batch_path=batch_path)}
            try:
                if real != 'only':
                    if deploy_python:
                        onnx_path = export_model(stem, 'onnx', os.path.join(tmp, f'onnx{len(raw)}'))['files'][0]
                        workers[ORT] = OnnxWorker(deploy_python, onnx_path, batch_path, threads)
                    else:
                        rows.append(skipped_row(ORT, 'no deploy python (.venv-deploy or $LIGHTCNN_DEPLOY_PYTHON)',
                                                network=label))
                    for variant, w in list(workers.items()):
                        if w.error:
                            rows.append(skipped_row(variant, w.error, network=label))
                            w.close()
                            del workers[variant]
                    if FP32 in workers:
                        print(f'--- {label}: speed', flush=True)
                        net_rows, raw[label] = speed_rows(label, workers, paths, rounds, forwards)
                        rows += net_rows
                if real and accuracy and FP32 in workers and INT8 in workers:
                    print(f'--- {label}: accuracy on held-out pairs', flush=True)
                    accuracy_rows.append(accuracy_row(label, workers[FP32], workers[INT8], heldout_tree, per_fold))
            finally:
                for w in workers.values():
                    w.close()
    kept = f'; kept in fp32: {", ".join(exclude)}' if exclude else ''
    notes += [f'{len(paths)} PubFig83 JPEGs for extraction (every {max(1, 13838 // n)}th), forward on the first '
              f'{BATCH} of them preprocessed; {threads} compute threads each; median of {rounds} alternating '
              'rounds; "x fp32" = median of per-round ratios against MXNet fp32 of the same network',
              f'INT8: MXNet {_version("mxnet")} oneDNN quantization, {calibration_mode} calibration on '
              f'{calibration_count} images of the first {KNOWN} identities of {accuracy_images}, channel-wise '
              f'weight scales; conv+relu fusion off (see models/quantize.py){kept}',
              f'accuracy: the last {HELDOUT} identities of {accuracy_images} (<= {per_identity} images each), '
              f'10 identity-disjoint folds x {per_fold} + {per_fold} pairs, cosine, no flip']
    meta = {'images_root': str(images), 'accuracy_images': accuracy_images, 'threads': threads, 'rounds': rounds,
            'forwards': forwards, 'quantization': quantization, 'accuracy': accuracy_rows, 'raw': raw,
            'target': 'INT8 extraction >= 1.8x fp32 with <= 0.1 points of verification accuracy lost',
            'notes': notes}
    result = finish('deploy', title, rows, COLUMNS, meta, json_path)
    if accuracy_rows:
        print('\n' + markdown_table(accuracy_rows, ACCURACY_COLUMNS))
    result['tables'] = [{'title': f'INT8 verification accuracy (PubFig83, {HELDOUT} held-out identities)',
                         'rows': accuracy_rows, 'columns': [list(c) for c in ACCURACY_COLUMNS]}]
    path = json_path or (BENCH_DIR / 'results' / 'deploy.json')
    with open(path, 'w') as f:
        json.dump(result, f, indent=1, default=_jsonable)
    return result


def _jsonable(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', default=str(DEFAULT_IMAGES))
    parser.add_argument('--v4', default=str(DEFAULT_V4), help='imported V4 checkpoint stem')
    parser.add_argument('--lightcnn9', help='a trained LightCNN-9 checkpoint for the accuracy table')
    parser.add_argument('--n', type=int, default=192, help='images per extraction round')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--forwards', type=int, default=2, help='batch-64 forwards per forward round')
    parser.add_argument('--per-fold', type=int, default=300, help='matched (= mismatched) pairs per fold')
    parser.add_argument('--calibration-count', type=int, default=256)
    parser.add_argument('--calibration-mode', default='naive', choices=('naive', 'entropy'))
    parser.add_argument('--exclude', nargs='*', default=[], help='layers kept in fp32 (export.py --exclude)')
    parser.add_argument('--aligned', default=DEFAULT_ALIGNED, help='aligned PubFig83 (144 px) for accuracy')
    parser.add_argument('--per-identity', type=int, default=60, help='held-out images per identity at most')
    parser.add_argument('--threads', type=int, default=None, help='compute threads per worker (default 2)')
    parser.add_argument('--no-accuracy', action='store_true')
    parser.add_argument('--json', default=None, help='default: bench/results/deploy.json')
    args = parser.parse_args(argv)
    run(args.images, args.v4, args.lightcnn9, args.n, args.rounds, args.forwards, args.per_fold,
        args.calibration_count, args.calibration_mode, not args.no_accuracy, args.json, args.aligned,
        args.per_identity, args.exclude, args.threads)


if __name__ == '__main__':
    main()
