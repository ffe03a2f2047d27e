"""LFW-style verification (10-fold accuracy, EER, AUC, TAR@FAR, ROC; pairs files and insightface .bin sets);
``identify.py`` runs the identification stage (:mod:`identification`), whose cosine identification is
re-exported here under its old names.

The ``.bin`` path (:mod:`lfw_verification.bin_eval`) loads MXNet and is imported on its own, so that scoring
a features ``.mat`` never does."""
from common.features_mat import read_features as load_features
from common.verification import (best_threshold, equal_error_rate, image_key, pair_rows, pair_scores,
                                 threshold_at_far, verification_metrics)
from identification.cosine import identity_scores, run_identification
from identification.gallery import split_by_index

from .evaluate import evaluate_verification, pair_metrics, plot_roc, recommended_threshold, write_json

__all__ = ['best_threshold', 'equal_error_rate', 'evaluate_verification',
           'identity_scores', 'image_key', 'load_features', 'pair_metrics', 'pair_rows', 'pair_scores', 'plot_roc',
           'recommended_threshold', 'run_identification', 'split_by_index', 'threshold_at_far',
           'verification_metrics', 'write_json']
