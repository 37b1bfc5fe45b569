"""Decoding one feature subset: balanced 2-fold split, within-class trial shuffling, three settings."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neurospeech.errors import ConfigError

__all__ = [
    "SETTINGS",
    "ShrinkageLDA",
    "balanced_halves",
    "evaluate_subset",
    "make_decoder",
    "shuffle_within_cells",
]

SETTINGS = ("unshuffled", "shuffled", "diagonal")


class ShrinkageLDA(ClassifierMixin, BaseEstimator):
    """Linear discriminant analysis with one Ledoit-Wolf covariance of the pooled within-class residuals.

    Same model as ``LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")`` with equal priors, but the
    shrinkage is estimated once on the pooled residuals (scikit-learn shrinks every class covariance
    separately, which is ~10x slower with many classes).
    """

    def fit(self, X: NDArray[np.float64], y: NDArray) -> ShrinkageLDA:
        from scipy.linalg import cho_factor, cho_solve
        from sklearn.covariance import ledoit_wolf_shrinkage

        self.classes_, yi = np.unique(y, return_inverse=True)
        means = np.stack([X[yi == k].mean(axis=0) for k in range(self.classes_.size)])
        resid = X - means[yi]
        p = X.shape[1]
        shrink = float(ledoit_wolf_shrinkage(resid, assume_centered=True))
        cov = (1.0 - shrink) * (resid.T @ resid) / len(resid)
        cov[np.diag_indices(p)] += shrink * np.trace(cov) / ((1.0 - shrink) * p) if shrink < 1 else 1.0
        self.shrinkage_ = shrink
        self.coef_ = cho_solve(cho_factor(cov), means.T).T
        self.intercept_ = -0.5 * np.sum(self.coef_ * means, axis=1)
        return self

    def decision_function(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        return X @ self.coef_.T + self.intercept_

    def predict(self, X: NDArray[np.float64]) -> NDArray:
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]


def make_decoder(decoder: str | BaseEstimator, svm_c: float = 1.0) -> BaseEstimator:
    """Build the classifier used for every subset.

    Parameters
    ----------
    decoder : str or estimator
        ``"svm"`` (one-vs-one ``SVC(kernel="linear")``, the default of Hazon et al.), ``"lda"`` (shrinkage
        LDA, Ledoit-Wolf, :class:`ShrinkageLDA`), ``"module:attribute"`` naming a scikit-learn classifier
        class, or an estimator instance (cloned for every fit).
    svm_c : float
        Regularisation ``C`` of the SVM.

    Returns
    -------
    estimator
        A pipeline ``StandardScaler -> classifier`` (features z-scored on the training half).
    """
    if isinstance(decoder, BaseEstimator):
        clf = clone(decoder)
    elif decoder == "svm":
        from sklearn.svm import SVC

        clf = SVC(kernel="linear", C=svm_c, decision_function_shape="ovo")
    elif decoder == "lda":
        clf = ShrinkageLDA()
    elif isinstance(decoder, str) and ":" in decoder:
        module, attr = decoder.split(":", 1)
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"decoder {decoder!r} cannot be imported ({exc}); give 'svm', 'lda' or "
                f"'package.module:ClassifierClass' of an installed module"
            ) from exc
        clf = cls()
        if not hasattr(clf, "fit") or not hasattr(clf, "predict"):
            raise ConfigError(f"decoder {decoder!r} has no fit/predict; give a scikit-learn classifier class")
    else:
        raise ConfigError(f"decoder={decoder!r} is unknown; use 'svm', 'lda' or 'package.module:Class'")
    return make_pipeline(StandardScaler(), clf)


def balanced_halves(cells: NDArray[np.int64], rng: np.random.Generator) -> NDArray[np.bool_]:
    """Split trials in two halves with every cell (class x group) split as evenly as possible.

    Parameters
    ----------
    cells : ndarray of int, shape (n_trials,)
        Cell index of each trial.
    rng : Generator

    Returns
    -------
    ndarray of bool, shape (n_trials,)
        True for trials of half A.
    """
    in_a = np.zeros(cells.size, dtype=bool)
    for c in np.unique(cells):
        idx = rng.permutation(np.flatnonzero(cells == c))
        n_a = idx.size // 2 + (rng.random() < 0.5 if idx.size % 2 else 0)
        in_a[idx[:n_a]] = True
    return in_a


def shuffle_within_cells(
    X: NDArray[np.float64], cells: NDArray[np.int64], rng: np.random.Generator
) -> NDArray[np.float64]:
    """Permute trials independently for every feature within each cell (removes noise correlations).

    Parameters
    ----------
    X : ndarray, shape (n_trials, n_features)
    cells : ndarray of int, shape (n_trials,)

    Returns
    -------
    ndarray, shape (n_trials, n_features)
        Same marginal distribution per feature and cell; trial-to-trial co-fluctuations destroyed.
    """
    out = np.empty_like(X)
    for c in np.unique(cells):
        idx = np.flatnonzero(cells == c)
        perm = np.argsort(rng.random((idx.size, X.shape[1])), axis=0)
        out[idx] = np.take_along_axis(X[idx], perm, axis=0)
    return out


def _squared_error(
    true_cls: NDArray[np.int64], pred_cls: NDArray[np.int64], class_pos: NDArray[np.float64] | None
) -> NDArray[np.float64]:
    """Squared distance in bins between classes (``class_pos`` = bin position of each class), else 0/1."""
    if class_pos is not None:
        return (class_pos[pred_cls] - class_pos[true_cls]) ** 2
    return (pred_cls != true_cls).astype(np.float64)


def _fit_predict(
    est: BaseEstimator,
    Xtr: NDArray,
    ytr: NDArray,
    gtr: NDArray,
    Xte_list: Sequence[NDArray],
    gte: NDArray,
    separate: bool,
) -> list[NDArray[np.int64]]:
    """Fit on the training half (one decoder per group when ``separate``) and predict every test matrix."""
    preds = [np.empty(gte.size, dtype=np.int64) for _ in Xte_list]
    groups = np.unique(gtr) if separate else [None]
    for g in groups:
        mtr = np.ones(gtr.size, bool) if g is None else gtr == g
        mte = np.ones(gte.size, bool) if g is None else gte == g
        model = clone(est).fit(Xtr[mtr], ytr[mtr])
        for p, Xte in zip(preds, Xte_list, strict=True):
            if mte.any():
                p[mte] = model.predict(Xte[mte])
    return preds


def evaluate_subset(
    X: NDArray[np.float64],
    cls: NDArray[np.int64],
    group: NDArray[np.int64],
    features: NDArray[np.int64],
    estimator: BaseEstimator,
    seed: Any,
    *,
    class_pos: NDArray[np.float64] | None,
    separate_groups: bool,
    both_folds: bool = True,
) -> dict[str, float]:
    """Mean squared error (in bin units squared) of the three settings for one feature subset.

    Parameters
    ----------
    X : ndarray, shape (n_trials, n_features)
    cls : ndarray of int, shape (n_trials,)
        Class index (ordered bins when ``ordinal``).
    group : ndarray of int, shape (n_trials,)
        Nuisance group (all zeros when there is none).
    features : ndarray of int, shape (N,)
        Columns of the subset.
    estimator : estimator
        Unfitted decoder (cloned per fit).
    seed : int or SeedSequence
        Randomness of the split and the shuffles.
    class_pos : ndarray, shape (n_classes,), or None
        Position of each class on the ordinal axis in bins (error = squared distance); None for categorical
        labels (error = 0/1).
    separate_groups, both_folds : bool
        One decoder per group (else one decoder with class x group labels); average both train/test
        directions of the 2-fold split (else A -> B only).

    Returns
    -------
    dict
        ``{"unshuffled": mse, "shuffled": mse, "diagonal": mse}``.
    """
    from threadpoolctl import threadpool_limits

    # one BLAS thread per subset: parallelism comes from joblib over subsets, and multi-threaded BLAS on a
    # busy machine thrashes (a 500 x 500 Cholesky went from 25 ms to 1.8 s with 2 threads under load)
    with threadpool_limits(limits=1):
        return _evaluate(X, cls, group, features, estimator, seed, class_pos, separate_groups, both_folds)


def _evaluate(
    X: NDArray[np.float64],
    cls: NDArray[np.int64],
    group: NDArray[np.int64],
    features: NDArray[np.int64],
    estimator: BaseEstimator,
    seed: Any,
    class_pos: NDArray[np.float64] | None,
    separate_groups: bool,
    both_folds: bool,
) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    Xs = X[:, features]
    n_cls = int(cls.max()) + 1
    cells = group * n_cls + cls
    in_a = balanced_halves(cells, rng)
    halves = (np.flatnonzero(in_a), np.flatnonzero(~in_a))
    real = [Xs[h] for h in halves]
    shuf = [shuffle_within_cells(Xs[h], cells[h], rng) for h in halves]
    labels = cls if separate_groups else cells
    sums = dict.fromkeys(SETTINGS, 0.0)
    count = 0
    folds = [(0, 1), (1, 0)] if both_folds else [(0, 1)]
    for tr, te in folds:
        itr, ite = halves[tr], halves[te]
        (p_real,) = _fit_predict(
            estimator, real[tr], labels[itr], group[itr], [real[te]], group[ite], separate_groups
        )
        p_shuf, p_diag = _fit_predict(
            estimator, shuf[tr], labels[itr], group[itr], [shuf[te], real[te]], group[ite], separate_groups
        )
        for name, pred in zip(SETTINGS, (p_real, p_shuf, p_diag), strict=True):
            pred_cls = pred if separate_groups else pred % n_cls
            sums[name] += float(np.sum(_squared_error(cls[ite], pred_cls, class_pos)))
        count += ite.size
    return {k: v / count for k, v in sums.items()}
