"""Extraction speed on PubFig83 images: our ``extract_features`` engine vs a PyTorch loop and the seed's loop.

    nice python bench/bench_extract.py [--images ../shared/datasets/pubfig83] [--n 256] [--rounds 2]

All three decode JPEGs with the same ``Preprocessing.load`` (OpenCV, gray 128x128) and run LightCNN-9
(random weights: speed does not depend on them), in separate worker processes with equal threads:

* ours: ``symbols.inference.embed_images`` -- batch 64, hybridized static graph, 2 decode
  threads a few batches ahead of the forward (what ``extract_features.py`` runs);
* PyTorch: the official network (``symbols/torch_reference.py``) in a plain loop -- decode 64, forward 64;
* one image per forward: decode, forward, repeat -- through the hybridized net (the strong form of the
  seed's loop) and through the imperative net (the seed's LightCNN-gluon loop as written).
"""
import argparse
import os
import time

from harness import (REPO_ROOT, Worker, alternate, finish, paired_ratio, pin_threads,
                     rate_summary, skipped_row, torch_available)

DEFAULT_IMAGES = REPO_ROOT.parent / 'shared' / 'datasets' / 'pubfig83'
OURS, TORCH, ONE, SEED = ('ours: embed_images, batch 64, 2 decode threads', 'PyTorch loop, batch 64',
                          'one image per forward (hybridized)', 'seed: one image per forward (imperative)')
COLUMNS = (('variant', 'extraction', ''), ('rate', 'images/s', '.1f'), ('rate_min', 'min', '.1f'),
           ('rate_max', 'max', '.1f'), ('cpu_s_per_item', 'CPU s/image', '.3f'),
           ('ratio', 'ours / this', '.2f'), ('note', 'note', ''))


def _sample(images, n):
    from symbols.inference import items_from_tree
    items = items_from_tree(str(images))
    step = max(1, len(items) // n)
    return [item.source for item in items[::step][:n]]


def _clock(fn, paths):
    wall, cpu = time.perf_counter(), time.process_time()
    fn(paths)
    return {'seconds': time.perf_counter() - wall, 'cpu': time.process_time() - cpu, 'images': len(paths)}


def _mxnet_net(network):
    import mxnet as mx

    from symbols import LightCNNInit, default_preprocessing, get_model
    pre = default_preprocessing(network)
    net = get_model(network, preprocessing=pre)
    net.initialize(LightCNNInit())
    net(mx.nd.zeros((1,) + pre.data_shape)).wait_to_read()
    return net, pre


def ours_worker(network, batch, paths, threads):
    from symbols.inference import Embedder, ImageItem, embed_images
    net, pre = _mxnet_net(network)
    embedder = Embedder(net, pre, batch_size=batch)
    items = [ImageItem(p, p) for p in paths]

    def extract(subset):
        return embed_images(embedder, subset, num_workers=2).features

    extract(items[:batch])  # warm-up: graph built once for the static batch shape
    return lambda n: _clock(extract, items[:n])


def one_image_worker(network, batch, paths, threads, hybridize=True):
    import mxnet as mx
    net, pre = _mxnet_net(network)
    if hybridize:
        net.hybridize(static_alloc=True, static_shape=True)

    def extract(subset):
        return [net(mx.nd.array(pre.to_batch([pre.load(p)]))).asnumpy() for p in subset]

    extract(paths[:2])
    return lambda n: _clock(extract, paths[:n])


def torch_worker(network, batch, paths, threads):
    import torch

    from symbols.torch_reference import REFERENCE_NETS
    from symbols import default_preprocessing
    torch.set_num_threads(threads)
    pre = default_preprocessing(network)
    net = REFERENCE_NETS[network]()
    net.fc2 = torch.nn.Identity()  # features only, as our feature net: (N, 256)
    net.eval()

    def extract(subset):
        out = []
        with torch.no_grad():
            for start in range(0, len(subset), batch):
                images = pre.to_batch([pre.load(p) for p in subset[start:start + batch]])
                # copy into a fresh NCHW tensor: to_batch's transposed view would reach torch as channels-last
                x = torch.empty(images.shape).copy_(torch.from_numpy(images))
                out.append(net(x)[1].numpy())
        return out

    extract(paths[:batch])
    return lambda n: _clock(extract, paths[:n])


def run(images=DEFAULT_IMAGES, n=256, network='lightcnn9', batch=64, rounds=2, json_path=None):
    threads = pin_threads()
    if not os.path.isdir(images):
        rows = [skipped_row('all', f'dataset {images} absent')]
        return finish('extract', 'Feature extraction (decode + forward)', rows, COLUMNS, {}, json_path)
    paths = _sample(images, n)
    kwargs = dict(network=network, batch=batch, paths=paths, threads=threads)
    workers = {OURS: Worker('bench_extract', 'ours_worker', **kwargs)}
    if torch_available():
        workers[TORCH] = Worker('bench_extract', 'torch_worker', **kwargs)
    workers[ONE] = Worker('bench_extract', 'one_image_worker', **kwargs)
    workers[SEED] = Worker('bench_extract', 'one_image_worker', hybridize=False, **kwargs)
    rows = []
    try:
        for label, w in list(workers.items()):
            if w.error:
                rows.append(skipped_row(label, w.error))
                del workers[label]
        results = alternate({k: (lambda w=w: w(len(paths))) for k, w in workers.items()}, rounds)
    finally:
        for w in workers.values():
            w.close()
    table = [{'variant': label, **rate_summary(res, 'images')} for label, res in results.items()]
    for row in table[1:]:
        if OURS in results:
            row['ratio'] = paired_ratio(results[OURS], results[row['variant']], 'images')
    if not torch_available():
        rows.append(skipped_row(TORCH, 'torch not installed'))
    meta = {'images_root': str(images), 'images': len(paths), 'network': network, 'batch': batch,
            'threads': threads, 'rounds': rounds, 'raw': results,
            'target': 'ours >= 1.5x PyTorch loop, >= 1.3x one-image loop',
            'notes': [f'{len(paths)} PubFig83 JPEGs (every {max(1, 13838 // n)}th), {network} 1x128x128, '
                      f'{threads} compute threads each; median of {rounds} alternating rounds; '
                      '"ours / this" = median of per-round ratios']}
    return finish('extract', 'Feature extraction (decode + forward)', table + rows, COLUMNS, meta, json_path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', default=str(DEFAULT_IMAGES))
    parser.add_argument('--n', type=int, default=256, help='images per variant per round')
    parser.add_argument('--network', default='lightcnn9', choices=('lightcnn9', 'lightcnn29'))
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--json', default=None, help='default: bench/results/extract.json')
    args = parser.parse_args(argv)
    run(args.images, args.n, args.network, args.batch, args.rounds, args.json)


if __name__ == '__main__':
    main()
