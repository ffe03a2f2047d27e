"""LFW-style verification (10-fold accuracy, EER, AUC, TAR@FAR, ROC; pairs files and insightface .bin sets) and
closed/open-set identification."""
from .bin_eval import bin_metrics, evaluate_bin
from .evaluate import (evaluate_verification, image_key, load_features, pair_metrics, pair_rows, pair_scores, plot_roc,
                       recommended_threshold, write_json)
from .identification import identity_scores, run_identification, split_by_index
from .metrics import best_threshold, equal_error_rate, threshold_at_far, verification_metrics

__all__ = ['best_threshold', 'bin_metrics', 'equal_error_rate', 'evaluate_bin', 'evaluate_verification', 'identity_scores', 'image_key',
           'load_features', 'pair_metrics', 'pair_rows', 'pair_scores', 'plot_roc', 'recommended_threshold',
           'run_identification', 'split_by_index', 'threshold_at_far', 'verification_metrics', 'write_json']
