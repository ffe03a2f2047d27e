"""Identity classifiers on face embeddings, with an open-set ("unknown") threshold and joblib persistence.

Every classifier sees L2-normalised embeddings (the unit sphere LightCNN features are compared on) and
gives a score per enrolled identity; the prediction is the best-scoring identity, ``top_k`` the next ones.

==========  =======================================================================  ================================
kind        estimator (scikit-learn)                                                 score per identity
==========  =======================================================================  ================================
svm         ``SVC(kernel='linear', probability=True)`` (FaceNet's ``classifier.py``)  Platt-scaled probability
logreg      ``LogisticRegression(max_iter=2000)`` (multinomial)                       softmax probability
knn         :class:`CosineKNN` (``k`` nearest gallery images by cosine)               sum of their cosines / ``k``
centroid    :class:`CosineCentroid` (mean of the unit gallery features, renormalised) cosine to the centroid
==========  =======================================================================  ================================

Open set. A probe whose best score is ``<= threshold`` is "unknown". The threshold is chosen on the
*gallery* for a target false-accept rate: identities are split into ``threshold_folds`` groups
(``GroupKFold``); for each group a classifier is fitted on the other identities and scores the group's
images, whose best score is then an *impostor* score -- what a person who is not enrolled gets. The threshold is
the lowest candidate (:func:`common.verification.threshold_at_far`) whose impostor false-accept rate is
``<= far``; with ``n`` impostor images a FAR below ``1/n`` is not measurable: the threshold then rejects every
impostor seen, and its ``threshold_info`` says the target was not measured. For the
probability scores of ``svm``/``logreg`` each fold's classifier knows ~80 % of the identities, so its
probabilities run a little higher than the full model's: the threshold errs towards rejecting.

Saved files are joblib pickles; :func:`load_classifier` reads them with an unpickler that resolves only
scikit-learn estimator classes, numpy's array rebuilders and this module's classes (a crafted file naming any
other callable is refused before anything runs).
"""
import os
import pickle
import struct
import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from common.errors import ParameterError, UsageError
from common.fileio import atomic_write
from common.safe_pickle import UnsafePickleError, numpy_array_globals
from common.textio import short_printable
from common.verification import far_measurable, l2_normalize, threshold_at_far, unmeasurable_far_note

CLASSIFIERS = ('svm', 'logreg', 'knn', 'centroid')
UNKNOWN = 'unknown'
FORMAT = 'lightcnn-identity-classifier'


def l2_rows(x):
    """Rows scaled to unit length (zero rows stay zero), float64 (:func:`common.verification.l2_normalize`)."""
    return l2_normalize(np.asarray(x, dtype=np.float64))


class CosineCentroid(ClassifierMixin, BaseEstimator):
    """Nearest identity centroid by cosine: the centroid is the mean of the L2-normalised gallery
    features of an identity, renormalised; the score is the cosine to it (in [-1, 1])."""

    def fit(self, X, y):
        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        centroids = np.zeros((len(self.classes_), np.shape(X)[1]))
        np.add.at(centroids, codes, l2_rows(X))
        self.centroids_ = l2_rows(centroids)
        return self

    def decision_function(self, X):
        return l2_rows(X) @ self.centroids_.T

    def predict(self, X):
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]


class CosineKNN(ClassifierMixin, BaseEstimator):
    """``n_neighbors`` nearest gallery images by cosine; the score of an identity is the sum of the cosines
    of its images among them, divided by ``n_neighbors`` -- a similarity-weighted vote that reaches 1 only
    when all neighbours are identical images of one identity, so it also measures how *close* the probe is
    (which plain vote fractions do not, and an open-set threshold needs).

    Parameters
    ----------
    n_neighbors : int
        ``k`` (capped at the gallery size).
    chunk : int
        Probes scored at a time (memory: ``chunk`` x gallery cosines).
    """

    def __init__(self, n_neighbors=5, chunk=2048):
        self.n_neighbors = n_neighbors
        self.chunk = chunk

    def fit(self, X, y):
        self.classes_, self.codes_ = np.unique(np.asarray(y), return_inverse=True)
        self.gallery_ = l2_rows(X).astype(np.float32)
        return self

    def decision_function(self, X):
        X = l2_rows(X).astype(np.float32)
        k = min(int(self.n_neighbors), len(self.gallery_))
        out = np.zeros((len(X), len(self.classes_)))
        for start in range(0, len(X), self.chunk):
            cos = X[start:start + self.chunk] @ self.gallery_.T
            near = np.argpartition(-cos, k - 1, axis=1)[:, :k]
            rows = np.repeat(np.arange(len(cos)), k)
            np.add.at(out[start:start + self.chunk], (rows, self.codes_[near].ravel()),
                      np.take_along_axis(cos, near, axis=1).ravel())
        return out / k

    def predict(self, X):
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]


def make_estimator(kind, seed=0):
    """An unfitted scikit-learn estimator of ``kind`` (see the module table); inputs are L2-normalised by it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer
    from sklearn.svm import SVC
    if kind == 'svm':
        return make_pipeline(Normalizer(), SVC(kernel='linear', probability=True, random_state=seed))
    if kind == 'logreg':
        return make_pipeline(Normalizer(), LogisticRegression(max_iter=2000))
    if kind == 'knn':
        return CosineKNN()
    if kind == 'centroid':
        return CosineCentroid()
    raise UsageError(f'classifier must be one of {", ".join(CLASSIFIERS)}, not {kind!r}')


def estimator_scores(estimator, X):
    """``(N, C)`` scores, columns in ``estimator.classes_`` order: probabilities where the estimator has
    them, else its decision function."""
    if hasattr(estimator, 'predict_proba'):
        return estimator.predict_proba(X)
    return estimator.decision_function(X)


def _check_training_set(features, identities):
    features, identities = np.asarray(features), np.asarray(identities).astype(str)
    if features.ndim != 2 or len(features) != len(identities):
        raise UsageError(f'features must be N x D with one identity each, got {features.shape} and '
                         f'{len(identities)} identities')
    if not np.isfinite(features).all():
        raise UsageError('features hold NaN or inf values')
    names = np.unique(identities)
    if len(names) < 2:
        raise UsageError(f'a classifier needs at least 2 identities in the gallery, got {len(names)}')
    return features, identities


def impostor_scores(kind, features, identities, folds=5, seed=0):
    """Best score of every gallery image under a classifier fitted *without its identity* (module docstring).

    Returns
    -------
    numpy.ndarray (N,)
        One impostor score per gallery image.
    """
    from sklearn.model_selection import GroupKFold
    n_groups = len(np.unique(identities))
    folds = min(int(folds), n_groups)
    if folds < 2:
        raise UsageError(f'threshold_folds must be >= 2 (identities are held out in turn), got {folds}')
    # identities are dealt to folds in a seeded order, so the split does not follow the name order
    names, codes = np.unique(identities, return_inverse=True)
    shuffled = np.random.default_rng(seed).permutation(len(names))[codes]
    out = np.empty(len(features))
    for train, test in GroupKFold(n_splits=folds).split(features, groups=shuffled):
        if kind in ('svm', 'logreg') and len(np.unique(identities[train])) < 2:
            raise UsageError(f'the open-set threshold of the {kind} classifier holds identities out in turn and '
                             f'needs at least 3 gallery identities, got {n_groups} (enrol more identities, or use '
                             f'the knn or centroid classifier)')
        est = make_estimator(kind, seed).fit(features[train], identities[train])
        out[test] = estimator_scores(est, features[test]).max(axis=1)
    return out


def open_set_threshold(impostor, far):
    """Lowest threshold (``score > t`` = accept) whose impostor accept rate is ``<= far``.

    Returns
    -------
    (float, dict)
        The threshold and what it achieves: ``n_impostors``, ``target_far``, ``impostor_far`` (measured).
        When ``far < 1/len(impostor)`` the threshold rejects every impostor seen and ``note`` says that the
        target is below what the gallery can measure (the true FAR is unknown below ``1/n``).
    """
    impostor = np.asarray(impostor, dtype=np.float64)
    n = len(impostor)
    if not 0.0 <= far <= 1.0:
        raise ParameterError(lambda n: f'{n("far")} must be in [0, 1], got {far}')
    if n == 0:
        raise UsageError('no impostor scores to choose an open-set threshold from')
    # threshold_at_far wants both classes; one dummy positive above everything never changes the choice
    scores = np.r_[impostor, impostor.max() + 1.0]
    threshold = threshold_at_far(scores, np.r_[np.zeros(n, bool), True], far)
    info = {'n_impostors': n, 'target_far': far, 'impostor_far': float(np.mean(impostor > threshold))}
    if not far_measurable(far, n):
        info['note'] = (unmeasurable_far_note(far, n) + '; the threshold rejects every held-out impostor, '
                        'its true FAR is not measured')
    return threshold, info


class IdentityClassifier:
    """A fitted identity classifier: estimator, identity names, open-set threshold, how it was made.

    Attributes
    ----------
    kind : str
        One of :data:`CLASSIFIERS`.
    estimator : sklearn estimator
        Its ``classes_`` are the identity names, in :attr:`names` order.
    names : numpy.ndarray of str
        Score columns.
    threshold : float or None
        Open-set threshold (``score > threshold`` = accepted as that identity); ``None``: closed set.
    threshold_info : dict
        ``target_far``, ``n_impostors``, ``impostor_far`` (+ ``note`` when not measurable), or ``reason``.
    info : dict
        ``feature_dim``, ``n_gallery``, ``fit_seconds``, ``threshold_seconds``, ``seed`` and what the caller
        adds (gallery file, model, flip...).
    """

    def __init__(self, kind, estimator, threshold=None, threshold_info=None, info=None):
        self.kind, self.estimator = kind, estimator
        self.names = np.asarray(estimator.classes_).astype(str)
        self.threshold, self.threshold_info = threshold, dict(threshold_info or {})
        self.info = dict(info or {})

    def __repr__(self):
        t = 'closed set' if self.threshold is None else f'unknown at score <= {self.threshold:.4f}'
        return f'IdentityClassifier({self.kind}, {len(self.names)} identities, {t})'

    def _check(self, features):
        features = np.asarray(features)
        if features.ndim == 1:
            features = features[None]
        dim = self.info.get('feature_dim')
        if features.ndim != 2 or (dim and features.shape[1] != dim):
            raise UsageError(f'features must be N x {dim} (as the gallery), got {features.shape}')
        if not len(features):
            raise ParameterError(lambda n: f'{n("features")} holds no rows: no face to identify')
        return features

    def scores(self, features):
        """``(N, C)`` float scores, columns :attr:`names`."""
        return np.asarray(estimator_scores(self.estimator, self._check(features)), dtype=np.float64)

    def rank(self, features, top_k=5):
        """``(names (N, k), scores (N, k))``, best first, from :meth:`scores`."""
        s = self.scores(features)
        k = min(int(top_k), s.shape[1])
        order = np.argsort(-s, axis=1, kind='stable')[:, :k]
        return self.names[order], np.take_along_axis(s, order, axis=1)

    def identify(self, features, open_set=True):
        """Names and scores of the best identity per row; ``'unknown'`` where the score is ``<= threshold``.

        Parameters
        ----------
        features : array (N, D) or (D,)
            Embeddings made the way the gallery's were (same model, same flip).
        open_set : bool
            Apply :attr:`threshold` (when there is one).

        Returns
        -------
        (numpy.ndarray of str (N,), numpy.ndarray of float (N,))
        """
        names, scores = self.rank(features, 1)
        names, scores = names[:, 0].astype(object), scores[:, 0]
        if open_set and self.threshold is not None:
            names[scores <= self.threshold] = UNKNOWN
        return names.astype(str), scores

    def identify_images(self, images, model, flip=None, open_set=True, **embed_options):
        """:meth:`identify` on images embedded by ``model`` (a :class:`models.api.FaceModel`).

        ``flip`` defaults to how the gallery was embedded when that was recorded (``info['flip']``).
        """
        flip = bool(self.info.get('flip', False)) if flip is None else flip
        return self.identify(model.embed(images, flip=flip, **embed_options), open_set)

    def save(self, path):
        """Write a joblib file (read it back with :func:`load_classifier`)."""
        import joblib
        with atomic_write(path) as f:  # a temporary name, renamed when complete; its folder created
            joblib.dump({'format': FORMAT, 'version': 1, 'kind': self.kind, 'estimator': self.estimator,
                         'threshold': self.threshold, 'threshold_info': self.threshold_info, 'info': self.info},
                        f)
        return path


def fit_classifier(features, identities, kind='svm', far=0.01, threshold_folds=5, seed=0, info=None):
    """Fit ``kind`` on gallery ``features`` (N x D) labelled ``identities`` (N names) and choose its
    open-set threshold for ``far`` (module docstring); ``far=None`` skips the threshold (closed set).

    Raises
    ------
    UsageError
        Fewer than 2 identities (3 for an svm/logreg open-set threshold), mismatched shapes, non-finite
        features, an unknown ``kind``.
    """
    features, identities = _check_training_set(features, identities)
    make_estimator(kind, seed)  # validates kind before any work
    start = time.perf_counter()
    estimator = make_estimator(kind, seed).fit(features, identities)
    fit_seconds = time.perf_counter() - start
    threshold, threshold_info, threshold_seconds = None, {'reason': 'closed set (no far given)'}, 0.0
    if far is not None:
        start = time.perf_counter()
        threshold, threshold_info = open_set_threshold(
            impostor_scores(kind, features, identities, threshold_folds, seed), far)
        threshold_seconds = time.perf_counter() - start
        n_identities = len(np.unique(identities))
        threshold_info['threshold_folds'] = int(min(threshold_folds, n_identities))
        if threshold_folds > n_identities:  # one identity per fold at most: said, not silently capped
            threshold_info['threshold_folds_requested'] = int(threshold_folds)
            threshold_info['folds_note'] = (f'{int(threshold_folds)} threshold folds asked, {n_identities} used '
                                            f'(one per gallery identity at most)')
    meta = {'feature_dim': int(features.shape[1]), 'n_gallery': int(len(features)),
            'n_identities': int(len(np.unique(identities))), 'fit_seconds': round(fit_seconds, 3),
            'threshold_seconds': round(threshold_seconds, 3), 'seed': seed, **(info or {})}
    return IdentityClassifier(kind, estimator, threshold, threshold_info, meta)


# ------------------------------------------------------------------------------------------- loading
def _allowed_classes():
    """``(module, name) -> object`` an identity-classifier file may name: the estimator classes
    :func:`make_estimator` builds, joblib's array wrapper and numpy's rebuilders -- nothing else."""
    from joblib.numpy_pickle import NumpyArrayWrapper
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import Normalizer
    from sklearn.svm import SVC
    allowed = {**numpy_array_globals(), ('joblib.numpy_pickle', 'NumpyArrayWrapper'): NumpyArrayWrapper}
    for cls in (Pipeline, Normalizer, SVC, LogisticRegression, CosineKNN, CosineCentroid):
        allowed[(cls.__module__, cls.__name__)] = cls
    return allowed


def load_classifier(path):
    """Read a classifier written by :meth:`IdentityClassifier.save`.

    Raises
    ------
    UsageError
        Missing or unreadable file, not a classifier file; :class:`~common.safe_pickle.UnsafePickleError`
        when it names anything but estimator classes and numpy arrays (nothing from it is called).
    """
    from joblib import numpy_pickle
    if not os.path.isfile(path):
        raise UsageError(f'classifier file not found: {path}')
    allowed = _allowed_classes()

    class _Restricted(numpy_pickle.NumpyUnpickler):
        def find_class(self, module, name):
            if (module, name) in allowed:
                return allowed[(module, name)]
            raise UnsafePickleError(f'{path} refers to {module}.{name}, which an identity classifier file '
                                    'never holds; refusing to load it (the file may be crafted to run code)')

    try:
        with open(path, 'rb') as f:
            obj = _Restricted(path, f, ensure_native_byte_order=True).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            ImportError, struct.error, UnicodeDecodeError) as err:  # the pure-Python unpickler's failures
        raise UsageError(f'{path} is not a readable classifier file ({type(err).__name__}: '
                         f'{short_printable(err)})') from None
    if not isinstance(obj, dict) or obj.get('format') != FORMAT:
        raise UsageError(f'{path} is not an identity classifier written by identify.py --save-classifier')
    return IdentityClassifier(obj['kind'], obj['estimator'], obj['threshold'], obj['threshold_info'], obj['info'])
