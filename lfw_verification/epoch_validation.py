"""Verification accuracy on LFW-format pairs after every training epoch (insightface's in-training LFW check).

A validator for ``training.train(..., validators=[...])``; ``train_lightcnn.py`` passes one for
``--val-pairs``/``--val-images``. It lives here, not in ``training/``, because it needs the extraction
engine and the evaluation of the later stages: the same code as ``extract_features.py`` + ``lfw_eval.py``,
without the files.
"""
import numpy as np

from common.errors import UsageError
from common.images import ImageError, read_image
from data_tools.pairs import read_pairs
from extract_features.extraction import Embedder, embed_images, items_from_pairs
from lfw_verification.evaluate import pair_rows, pair_scores
from lfw_verification.metrics import verification_metrics


class PairVerification:
    """Validator: ``(net, preprocessing, contexts) -> {'val_verification': accuracy}``.

    Parameters
    ----------
    pairs_path : str
        LFW-format ``pairs.txt`` (or the label-file form of ``data_tools.pairs.read_pairs``).
    images_root : str
        Directory the pair paths are relative to.
    batch_size : int
        Images per forward.

    The accuracy is the mean 10-fold (the file's folds) accuracy with each fold's threshold chosen on the
    other folds, a fraction in [0, 1]; with a single fold, the best-threshold (optimistic) accuracy.
    The network is the training one (``return_features=True``), run on ``contexts[0]`` without
    hybridising it for inference.
    """

    metrics = ('val_verification',)

    def __init__(self, pairs_path, images_root, batch_size=64):
        self.pairs_path, self.images_root, self.batch_size = pairs_path, images_root, batch_size

    def check(self):
        """Before the first step (the trainer calls it): every pair image found under the root and decodable.

        Raises
        ------
        UsageError
            The pairs file is unreadable, or images are missing/undecodable (counted, the first few named).
        """
        items = items_from_pairs(self.pairs_path, self.images_root)
        bad = []
        for item in items:
            if item.source is None:
                bad.append(f'{item.label} (not found)')
                continue
            try:
                read_image(item.source, 'gray')
            except ImageError as err:
                bad.append(f'{item.label} ({err})')
        if bad:
            raise UsageError(f'{len(bad)} of the {len(items)} images {self.pairs_path} names cannot be used '
                             f'under {self.images_root}: {", ".join(bad[:3])}{", ..." if len(bad) > 3 else ""}')

    def __call__(self, net, preprocessing, contexts):
        pairs = read_pairs(self.pairs_path)
        embedder = Embedder(net, preprocessing, contexts[0], batch_size=self.batch_size, hybridize=False)
        extraction = embed_images(embedder, items_from_pairs(self.pairs_path, self.images_root))
        idx1, idx2 = pair_rows(extraction.labels, pairs)
        scores = pair_scores(extraction.features.astype(np.float64), idx1, idx2)
        metrics = verification_metrics(scores, np.array([p.issame for p in pairs], dtype=bool),
                                       np.array([p.fold for p in pairs]))
        accuracy = metrics['accuracy_mean']
        return dict(val_verification=accuracy if accuracy is not None else metrics['optimistic_accuracy'])
