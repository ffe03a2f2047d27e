"""Identification stage: gallery/probe sets, cosine identification (closed and open set), identity classifiers on
embeddings (F-score, open set) and their reports, embedding plots."""
from .classifiers import (CLASSIFIERS, UNKNOWN, CosineCentroid, CosineKNN, IdentityClassifier, fit_classifier,
                          load_classifier, make_estimator)
from .cosine import identify, identity_scores, run_identification
from .gallery import identity_of, load_gallery_probe, split_by_index
from .plots import embedding_plots
from .report import closed_set_report, open_set_report, score_classifier
from .split import split_known_unknown

__all__ = ['CLASSIFIERS', 'UNKNOWN', 'CosineCentroid', 'CosineKNN', 'IdentityClassifier', 'closed_set_report',
           'embedding_plots', 'fit_classifier', 'identify', 'identity_of', 'identity_scores', 'load_classifier',
           'load_gallery_probe', 'make_estimator', 'open_set_report', 'run_identification', 'score_classifier',
           'split_by_index', 'split_known_unknown']
