"""Applying a saved identity classifier to new faces (``identification/predict.py``)."""
import os

import numpy as np

from common.errors import ParameterError, UsageError
from common.features_mat import read_features
from common.fileio import check_output_paths
from common.images import list_images
from identification.classifiers import load_classifier
from models.api import load_model


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
                   top_k=1, open_set=True, csv_path=None):
    """Load the classifier, embed or load the faces, identify, print (and write ``csv_path``)."""
    check_output_paths(csv_path)
    if top_k < 1:
        raise ParameterError(lambda n: f'{n("top_k")} must be >= 1, got {top_k}')
    clf = load_classifier(classifier_path)
    if features is not None:
        data, labels = read_features(features)
    else:
        paths = list(images or ())
        if tree:
            found = list_images(tree)
            if not found:
                raise UsageError(f'no images under {tree}')
            paths += [os.path.join(tree, rel) for rel in found]
        fm = load_model(model)
        recorded = clf.info.get('flip')
        flip = bool(recorded) if flip is None and recorded is not None else bool(flip)
        data, labels = fm.embed(paths, flip=flip, center_crop=center_crop), paths
    import pandas as pd
    table = predict_table(clf, np.asarray(data), labels, top_k, open_set)
    with pd.option_context('display.max_rows', 200, 'display.width', 160):
        print(table.to_string(index=False, float_format=lambda v: f'{v:.4f}'))
    print(f'{len(table)} images: {int((table["identity"] == "unknown").sum())} unknown'
          + ('' if clf.threshold is None or not open_set else f' (score <= {clf.threshold:.4f})'))
    if csv_path:
        table.to_csv(csv_path, index=False)
        print(f'wrote {csv_path}')
    return table
