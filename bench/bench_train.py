"""Training-step speed: our hybridized Gluon LightCNN vs the official network in PyTorch, same CPU and batch.

    nice python bench/bench_train.py [--networks lightcnn9 lightcnn29] [--batch 64] [--rounds 3]

One step = forward, softmax cross-entropy, backward, SGD with momentum 0.9 and weight decay 1e-4 (the
official recipe), fp32 on CPU, one fixed random batch in memory (input speed is ``bench_input.py``).
Each framework lives in its own worker process with the same thread count; rounds alternate between them.
"""
import argparse
import time

from harness import (Worker, alternate, finish, paired_ratio, pin_threads, rate_summary,
                     skipped_row, torch_available)

NETWORKS = ('lightcnn9', 'lightcnn29')
COLUMNS = (('network', 'network', ''), ('variant', 'implementation', ''), ('rate', 'samples/s', '.2f'),
           ('rate_min', 'min', '.2f'), ('rate_max', 'max', '.2f'), ('cpu_s_per_item', 'CPU s/sample', '.3f'),
           ('ratio', 'ours / PyTorch', '.2f'), ('note', 'note', ''))


def mxnet_step(network, batch, num_classes, threads, feed=None):
    """Build our net + trainer; return ``run(n)`` timing ``n`` training steps (engine drained at the end).

    ``feed`` (optional) returns the next ``mx.io.DataBatch`` (``bench_input.py``); default: one fixed batch.
    """
    import mxnet as mx
    import numpy as np
    from mxnet import autograd, gluon

    from symbols import LightCNNInit, get_model

    net = get_model(network, num_classes=num_classes)
    net.initialize(LightCNNInit())
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = gluon.Trainer(net.collect_params(), 'sgd',
                            {'learning_rate': 0.01, 'momentum': 0.9, 'wd': 1e-4})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    rng = np.random.RandomState(0)
    data = mx.nd.array(rng.rand(batch, 1, 128, 128))
    label = mx.nd.array(rng.randint(0, num_classes, batch))

    def step():
        x, y = (data, label) if feed is None else _unpack(feed())
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(batch)

    def _unpack(b):  # as the trainer does: batches arrive in pinned memory, the net lives on cpu(0)
        return b.data[0].as_in_context(mx.cpu()), b.label[0].as_in_context(mx.cpu())

    def run(n):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            step()
        mx.nd.waitall()
        return {'seconds': time.perf_counter() - wall, 'cpu': time.process_time() - cpu, 'samples': n * batch}

    run(1)  # warm-up: graph caching, oneDNN primitive creation, memory planning
    return run


def torch_step(network, batch, num_classes, threads):
    """The same step in PyTorch with the official network definition (``symbols/torch_reference.py``)."""
    import torch

    from symbols.torch_reference import REFERENCE_NETS

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = REFERENCE_NETS[network](num_classes=num_classes)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    data = torch.rand(batch, 1, 128, 128)
    label = torch.randint(0, num_classes, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        logits, _ = net(data)
        loss_fn(logits, label).backward()
        opt.step()

    def run(n):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            step()
        return {'seconds': time.perf_counter() - wall, 'cpu': time.process_time() - cpu, 'samples': n * batch}

    run(1)
    return run


def bench_network(network, batch, num_classes, rounds, steps, threads):
    """Rows for one network: ours, PyTorch (or why it is missing), and the paired ratio."""
    kwargs = dict(network=network, batch=batch, num_classes=num_classes, threads=threads)
    workers = {'ours (Gluon, hybridized)': Worker('bench_train', 'mxnet_step', **kwargs)}
    rows = []
    if torch_available():
        workers['PyTorch (official net)'] = Worker('bench_train', 'torch_step', **kwargs)
    else:
        rows.append(skipped_row('PyTorch (official net)', 'torch not installed', network=network))
    try:
        for label, w in list(workers.items()):
            if w.error:
                rows.append(skipped_row(label, w.error, network=network))
                del workers[label]
        results = alternate({k: (lambda w=w: w(steps)) for k, w in workers.items()}, rounds)
    finally:
        for w in workers.values():
            w.close()
    for label, res in results.items():
        rows.insert(len([r for r in rows if 'rate' in r]),
                    {'network': network, 'variant': label, **rate_summary(res, 'samples')})
    ours, anchor = results.get('ours (Gluon, hybridized)'), results.get('PyTorch (official net)')
    if ours and anchor:
        rows[0]['ratio'] = paired_ratio(ours, anchor, 'samples')
    return rows, results


def run(networks=NETWORKS, batch=64, num_classes=10575, rounds=3, steps=1, json_path=None):
    threads = pin_threads()
    rows, raw = [], {}
    for network in networks:
        net_rows, raw[network] = bench_network(network, batch, num_classes, rounds, steps, threads)
        rows += net_rows
    meta = {'batch': batch, 'num_classes': num_classes, 'rounds': rounds, 'steps_per_round': steps,
            'threads': threads, 'raw': raw, 'target': 'ours / PyTorch >= 1.2',
            'notes': [f'batch {batch}, 1x128x128 fp32, SGD momentum 0.9 wd 1e-4, {num_classes} classes, '
                      f'{threads} threads each; median of {rounds} alternating rounds x {steps} step(s); '
                      'ratio = median of per-round ratios']}
    return finish('train', 'Training step (CPU)', rows, COLUMNS, meta, json_path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--networks', nargs='+', default=list(NETWORKS), choices=NETWORKS)
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--num-classes', type=int, default=10575, help='fc2 size (CASIA-WebFace: 10575)')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--steps', type=int, default=1, help='training steps per round')
    parser.add_argument('--json', default=None, help='default: bench/results/train.json')
    args = parser.parse_args(argv)
    run(args.networks, args.batch, args.num_classes, args.rounds, args.steps, args.json)


if __name__ == '__main__':
    main()
