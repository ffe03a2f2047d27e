"""Identification stage: identity classifiers on embeddings (F-score, open set), their reports, embedding plots."""
from .classifiers import (CLASSIFIERS, UNKNOWN, CosineCentroid, CosineKNN, IdentityClassifier, fit_classifier,
                          load_classifier, make_estimator)
from .plots import embedding_plots
from .report import closed_set_report, open_set_report, score_classifier
from .split import split_known_unknown

__all__ = ['CLASSIFIERS', 'UNKNOWN', 'CosineCentroid', 'CosineKNN', 'IdentityClassifier', 'closed_set_report',
           'embedding_plots', 'fit_classifier', 'load_classifier', 'make_estimator', 'open_set_report',
           'score_classifier', 'split_known_unknown']
