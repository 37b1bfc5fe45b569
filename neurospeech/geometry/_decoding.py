"""Cross-validated LDA decoding of binned features: within time, across time and across contexts."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError, DataFormatError

if TYPE_CHECKING:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

__all__ = ["cross_context_decoding", "cross_temporal_decoding", "decode_lda"]


def _lda() -> LinearDiscriminantAnalysis:
    # scikit-learn (the `analysis` extra) is imported when decoding runs, not with the core
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    return LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")


def _check(x: np.ndarray, y: np.ndarray, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float)
    y = np.asarray(y)
    if x.ndim != ndim or y.ndim != 1 or len(y) != len(x):
        want = "(n_trials, n_features)" if ndim == 2 else "(n_trials, n_times, n_features)"
        raise DataFormatError(
            f"decoding needs data {want} and labels (n_trials,), got {x.shape} and {y.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise DataFormatError("decoding data contain NaN or inf; drop or interpolate those trials first")
    return x, y


def _folds(y: np.ndarray, cv: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    if cv < 2:
        raise ConfigError(f"cv must be >= 2 folds, got {cv}")
    _, counts = np.unique(y, return_counts=True)
    if counts.min() < cv:
        raise DataFormatError(
            f"each class needs >= cv={cv} trials for cross-validation, smallest has {counts.min()}"
        )
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(cv, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def _fit(x: np.ndarray, y: np.ndarray) -> LinearDiscriminantAnalysis:
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", UserWarning
        )  # collinear variables (silent units) are fine with shrinkage
        return _lda().fit(x, y)


def decode_lda(x: np.ndarray, y: np.ndarray, cv: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of a shrinkage LDA decoding labels ``y`` from ``x`` (n_trials, n_features)."""
    x, y = _check(x, y, 2)
    acc = [np.mean(_fit(x[tr], y[tr]).predict(x[te]) == y[te]) for tr, te in _folds(y, cv, seed)]
    return float(np.mean(acc))


def cross_temporal_decoding(x: np.ndarray, y: np.ndarray, cv: int = 5, seed: int = 0) -> np.ndarray:
    """Temporal generalisation matrix.

    Parameters
    ----------
    x : ndarray, shape (n_trials, n_times, n_features)
    y : ndarray, shape (n_trials,)

    Returns
    -------
    ndarray, shape (n_times, n_times)
        ``acc[i, j]``: accuracy of a decoder trained at time ``i`` (training folds) and tested at time ``j``
        (held-out folds).
    """
    x, y = _check(x, y, 3)
    n_t = x.shape[1]
    acc = np.zeros((n_t, n_t))
    folds = _folds(y, cv, seed)
    for tr, te in folds:
        for i in range(n_t):
            clf = _fit(x[tr, i], y[tr])
            for j in range(n_t):
                acc[i, j] += np.mean(clf.predict(x[te, j]) == y[te])
    return acc / len(folds)


def cross_context_decoding(
    x: np.ndarray, feature_bin: np.ndarray, context: np.ndarray, cv: int = 5, seed: int = 0
) -> dict:
    """Decode the binned feature in one context with a decoder trained in the other.

    Parameters
    ----------
    x : ndarray, shape (n_trials, n_features)
    feature_bin : ndarray of int, shape (n_trials,)
    context : ndarray of int (0/1), shape (n_trials,)

    Returns
    -------
    dict
        ``within`` (mean cross-validated accuracy inside each context), ``cross`` (mean of train-0/test-1 and
        train-1/test-0 accuracies), ``cross_0to1``, ``cross_1to0``.
    """
    x, feature_bin = _check(x, feature_bin, 2)
    context = np.asarray(context)
    out: dict[str, float] = {}
    within = []
    for c in (0, 1):
        m = context == c
        if not m.any():
            raise DataFormatError(
                f"context {c} has no trials; cross-context decoding needs both contexts 0 and 1"
            )
        within.append(decode_lda(x[m], feature_bin[m], cv, seed))
    for a, b in ((0, 1), (1, 0)):
        ma, mb = context == a, context == b
        clf = _fit(x[ma], feature_bin[ma])
        out[f"cross_{a}to{b}"] = float(np.mean(clf.predict(x[mb]) == feature_bin[mb]))
    out["within"] = float(np.mean(within))
    out["cross"] = float(np.mean([out["cross_0to1"], out["cross_1to0"]]))
    return out
