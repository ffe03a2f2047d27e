"""LFW-style verification (10-fold accuracy, EER, AUC, TAR@FAR, ROC) and closed/open-set identification."""
from common.features_mat import read_features as load_features
from common.verification import (best_threshold, equal_error_rate, image_key, pair_rows, pair_scores,
                                 threshold_at_far, verification_metrics)

from .evaluate import evaluate_verification, plot_roc, write_json
from .identification import identity_scores, run_identification, split_by_index

__all__ = ['best_threshold', 'equal_error_rate', 'evaluate_verification', 'identity_scores', 'image_key',
           'load_features', 'pair_rows', 'pair_scores', 'plot_roc', 'run_identification', 'split_by_index',
           'threshold_at_far', 'verification_metrics', 'write_json']
