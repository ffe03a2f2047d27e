"""Applying a saved identity classifier to new faces (``identification/predict.py``)."""
import os
import sys

import numpy as np

from common.checks import check_number
from common.errors import ParameterError
from common.features_mat import read_features
from common.fileio import check_outputs
from common.images import check_image_root, list_images
from common.textio import printable
from identification.classifiers import load_classifier
from models.api import load_model
from symbols.checkpoint import checkpoint_files
from symbols.inference import Embedder, ImageItem, describe_failures, embed_images


def predict_table(clf, features, labels, top_k=1, open_set=True):
    """pandas DataFrame: ``image``, ``identity`` (``'unknown'`` below the threshold), ``score`` and, for
    ``top_k > 1``, ``top{k}`` (``name:score`` best first)."""
    import pandas as pd
    names, scores = clf.identify(features, open_set)
    table = pd.DataFrame({'image': labels, 'identity': names, 'score': scores})
    if top_k > 1:
        ranked, rs = clf.rank(features, top_k)
        table[f'top{ranked.shape[1]}'] = [';'.join(f'{n}:{s:.4f}' for n, s in zip(r, q)) for r, q in zip(ranked, rs)]
    return table


def run_prediction(classifier_path, features=None, model=None, images=(), tree=None, flip=None, center_crop=None,
                   top_k=1, open_set=True, csv_path=None, skip_missing=False):
    """Load the classifier, embed or load the faces, identify, write ``csv_path``, then print the table.

    Images that cannot be read stop the run with one error naming them all, unless ``skip_missing``: then
    they are left out, counted and listed on stderr (and in ``table.attrs['skipped']`` as ``(label,
    reason)``). The CSV is written before anything is printed, so a closed standard output (``| head``)
    loses nothing.

    Raises
    ------
    UsageError
        Bad ``top_k`` / ``center_crop``, an unreadable classifier, a features file without rows, no images,
        unreadable images (without ``skip_missing``), a ``csv_path`` that is one of the inputs.
    """
    check_outputs({'csv_path': csv_path}, inputs={'classifier_path': classifier_path, 'features': features,
                                                  'images': list(images or ()),
                                                  'model': checkpoint_files(model) if model else None},
                  trees={'tree': tree})
    check_number(top_k, 'top_k', minimum=1, integer=True)
    check_number(center_crop, 'center_crop', minimum=1, integer=True, optional=True, qualifier=' (pixels)')
    clf = load_classifier(classifier_path)
    skipped = []
    if features is not None:
        data, labels = read_features(features, name='features')
    else:
        paths = list(images or ())
        if tree:
            check_image_root(tree, 'tree')
            found = list_images(tree)
            if not found:
                raise ParameterError(lambda n: f'no images under {n("tree")} {tree}')
            paths += [os.path.join(tree, rel) for rel in found]
        fm = load_model(model)
        recorded = clf.info.get('flip')
        flip = bool(recorded) if flip is None and recorded is not None else bool(flip)
        items = [ImageItem(os.fspath(p), os.fspath(p)) for p in paths]
        embedder = Embedder(fm.net, fm.preprocessing, fm.ctx, max(1, min(64, len(items))))
        result = embed_images(embedder, items, center_crop, None, flip, skip_missing, num_workers=2)
        data, labels, skipped = result.features, result.labels, result.skipped
    table = predict_table(clf, np.asarray(data), labels, top_k, open_set)
    table.attrs['skipped'] = list(skipped)
    if csv_path:
        table.to_csv(csv_path, index=False)
    if skipped:
        print(f'skipped {describe_failures(skipped)}:', file=sys.stderr)
        for label, reason in skipped:
            print(f'  {printable(label)}: {reason}', file=sys.stderr)
    import pandas as pd
    with pd.option_context('display.max_rows', 200, 'display.width', 160):
        print(table.to_string(index=False, float_format=lambda v: f'{v:.4f}'))
    print(f'{len(table)} images: {int((table["identity"] == "unknown").sum())} unknown'
          + ('' if clf.threshold is None or not open_set else f' (score <= {clf.threshold:.4f})')
          + (f'; {len(skipped)} skipped' if skipped else ''))
    if csv_path:
        print(f'wrote {csv_path}')
    return table
