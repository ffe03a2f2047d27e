"""Identity-balanced batches for the triplet loss: P identities x K images each, from a ``.rec``.

Online triplet mining needs positives and negatives in every batch (Schroff et al., FaceNet, CVPR 2015,
Sec. 3.2; the "P x K" batches of Hermans et al., "In Defense of the Triplet Loss for Person
Re-Identification", 2017). :class:`IdentityBalancedSampler` draws them from the records' labels, read from
the ``.rec`` headers (:func:`training.data.scan_records`); :class:`IdentityBatches` decodes and augments the drawn records
(random crop + mirror, the pixels of :class:`common.preprocessing.Preprocessing`, as ``ImageRecordIter``
gives the other losses) and serves them like :class:`training.data.RecordBatches`.
"""
import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import cv2
import mxnet as mx
import numpy as np
from mxnet import gluon

from common.errors import UsageError
from data_tools.records import scan_records  # (training.data's; imported from its home: data imports this module)

from .errors import ParameterError


class IdentityBalancedSampler(gluon.data.Sampler):
    """Batches of ``p`` identities x ``k`` samples, every sample once per epoch where the counts allow.

    Each epoch every identity's samples are shuffled and cut into chunks of ``k``; a last short chunk is
    completed with other samples of the same identity (repeats only when it has fewer than ``k``). Each
    batch takes one chunk from ``p`` different identities, drawn in proportion to their chunks left, except
    that an identity with as many chunks left as there are batches left must be taken: then every chunk fits
    into ``max(ceil(chunks / p), max chunks of one identity)`` batches, a number fixed by the counts alone
    (the LR schedule counts updates). Where fewer than ``p`` identities have chunks left, the batch is
    filled with fresh random chunks of other identities.

    Parameters
    ----------
    labels : array of int, shape (n,)
        Class of every sample; the batches hold positions into it.
    p, k : int
        Identities per batch (at most the number of identities) and samples per identity.
    seed : int
        With the epoch, fixes the batches (:meth:`batches` of epoch ``e`` is the same in every run).

    Iterating yields the batches of the epoch set with :meth:`set_epoch`: int64 arrays of ``p * k``
    positions, the ``k`` of one identity next to each other.
    """

    def __init__(self, labels, p, k, seed=0):
        labels = np.asarray(labels).astype(np.int64).ravel()
        self.p, self.k, self.seed, self.epoch = int(p), int(k), int(seed), 0
        self.identities, inverse = np.unique(labels, return_inverse=True)
        if len(self.identities) < self.p:
            raise ParameterError(lambda n: f'{n("batch_size")} / {n("triplet_k")} = {self.p} identities per '
                                           f'batch, but the data has only {len(self.identities)}')
        order = np.argsort(inverse, kind='stable')
        self.members = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
        self.chunks = np.array([math.ceil(len(m) / self.k) for m in self.members])
        self.num_batches = max(math.ceil(self.chunks.sum() / self.p), int(self.chunks.max()))
        self.padded = int(self.chunks.sum() * self.k - len(labels))  # repeats completing short chunks
        self.filled = int(self.num_batches * self.p - self.chunks.sum())  # fresh chunks of the last batches

    def __len__(self):
        return self.num_batches

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __iter__(self):
        return iter(self.batches(self.epoch))

    def describe(self):
        total = self.num_batches * self.p * self.k
        return (f'triplet batches: {self.p} identities x {self.k} images, {self.num_batches} per epoch; of '
                f'{total} image slots {total - self.padded - self.filled * self.k} show every training image '
                f'once, {self.padded} repeat images of identities whose count is not a multiple of {self.k}, '
                f'{self.filled * self.k} fill {self.filled} identity places of the last batches')

    def batches(self, epoch):
        """The ``num_batches`` batches of ``epoch`` (a list of int64 arrays of ``p * k`` positions)."""
        rng = np.random.default_rng((self.seed % 2 ** 32, int(epoch)))
        queues = [deque(self._chunks(rng, m)) for m in self.members]
        left = np.array([len(q) for q in queues])
        batches = []
        for remaining in range(self.num_batches, 0, -1):
            available = np.flatnonzero(left)
            forced = available[left[available] == remaining]
            others = available[left[available] < remaining]
            take = min(self.p, len(available)) - len(forced)
            drawn = (rng.choice(others, take, replace=False, p=left[others] / left[others].sum())
                     if take else np.zeros(0, np.int64))
            chosen = np.concatenate([forced, drawn]).astype(np.int64)
            parts = [queues[i].popleft() for i in chosen]
            left[chosen] -= 1
            spare = np.setdiff1d(np.arange(len(self.members)), chosen)
            for i in rng.choice(spare, self.p - len(chosen), replace=False):
                m = self.members[i]
                parts.append(rng.choice(m, self.k, replace=len(m) < self.k))
            batches.append(np.concatenate([parts[j] for j in rng.permutation(len(parts))]))
        assert not left.any()
        return batches

    def _chunks(self, rng, members):
        order = rng.permutation(members)
        short = len(order) % self.k
        if short:
            whole = order[:len(order) - short]  # pad from images outside the short chunk if possible
            need = self.k - short
            pool, repeat = (whole, False) if len(whole) >= need else (order, True)
            order = np.concatenate([order, rng.choice(pool, need, replace=repeat)])
        return list(order.reshape(-1, self.k))


class IdentityBatches:
    """One worker's P x K training batches: like :class:`training.data.RecordBatches`, from the sampler.

    Worker ``part_index`` of ``num_parts`` takes batches ``part_index, part_index + num_parts, ...`` of
    the epoch's sampler order (all workers: every batch once), wrapping round so that every worker makes
    ``updates`` steps. ``epoch(e)`` yields ``mx.io.DataBatch`` es: ``data[0]`` float32
    ``(p * k,) + data_shape`` (a random ``input_size`` crop, mirrored with probability 1/2, seeded by
    ``(seed, epoch, batch)``), ``label[0]`` float32 class ids. ``threads`` decode in parallel, one batch
    ahead of the training step. ``scan`` (:func:`training.data.scan_records` of ``rec_path``) saves reading
    the headers again.
    """

    def __init__(self, rec_path, preprocessing, p, k, seed=0, num_parts=1, part_index=0, threads=4, scan=None):
        self.rec_path, self.preprocessing = os.fspath(rec_path), preprocessing
        self.seed, self.num_parts, self.part_index, self.threads = seed, num_parts, part_index, threads
        scan = scan or scan_records(self.rec_path)  # keys and labels of the image records, checked
        self.keys, self.labels = scan.keys, scan.labels
        self.sampler = IdentityBalancedSampler(self.labels, p, k, seed)
        self.updates = math.ceil(len(self.sampler) / num_parts)

    def describe(self):
        return self.sampler.describe()

    def epoch(self, epoch):
        batches = self.sampler.batches(epoch)
        mine = [(b, batches[b]) for b in ((j * self.num_parts + self.part_index) % len(batches)
                                          for j in range(self.updates))]
        record = mx.recordio.MXIndexedRecordIO(self.rec_path[:-4] + '.idx', self.rec_path, 'r')
        pool = ThreadPoolExecutor(max(1, self.threads))
        try:
            pending = deque()
            for number, positions in mine:
                pending.append(self._submit(pool, record, epoch, number, positions))
                if len(pending) > 1:
                    yield self._collect(*pending.popleft())
            while pending:
                yield self._collect(*pending.popleft())
        finally:
            pool.shutdown(wait=True)
            record.close()

    def _submit(self, pool, record, epoch, number, positions):
        rng = np.random.default_rng((self.seed % 2 ** 32, int(epoch), int(number)))
        where = rng.random((len(positions), 3))  # crop y, crop x, mirror
        jobs = [pool.submit(self._decode, record.read_idx(self.keys[i]), self.keys[i], *w)
                for i, w in zip(positions, where)]
        return jobs, self.labels[positions]

    def _collect(self, jobs, labels):
        batch = self.preprocessing.to_batch([job.result() for job in jobs])
        return mx.io.DataBatch(data=[mx.nd.array(batch)], label=[mx.nd.array(labels.astype(np.float32))],
                               pad=0)

    def _decode(self, item, key, crop_y, crop_x, mirror):
        pre = self.preprocessing
        buf = mx.recordio.unpack(item)[1]
        img = cv2.imdecode(np.frombuffer(buf, np.uint8),
                           cv2.IMREAD_GRAYSCALE if pre.channels == 'gray' else cv2.IMREAD_COLOR)
        if img is None:
            raise UsageError(f'{self.rec_path}: record {key} is not a decodable image')
        if pre.channels == 'rgb':  # ImageRecordIter's colour order
            img = img[:, :, ::-1]
        h, w, side = img.shape[0], img.shape[1], pre.input_size
        if h < side or w < side:
            raise UsageError(f'{self.rec_path}: record {key} is {w}x{h}, smaller than the {side} crop')
        y, x = int(crop_y * (h - side + 1)), int(crop_x * (w - side + 1))
        img = img[y:y + side, x:x + side]
        if mirror < 0.5:
            img = img[:, ::-1]
        return np.ascontiguousarray(img if img.ndim == 3 else img[:, :, None])
