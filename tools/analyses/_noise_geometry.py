"""Noise geometry per class and bias-corrected linear Fisher information (Kanitscheider et al. 2015)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._noise_decode import shuffle_within_cells

__all__ = ["fisher_bias_corrected", "noise_geometry"]


def fisher_bias_corrected(a: NDArray[np.float64], b: NDArray[np.float64], ds: float) -> float:
    """Bias-corrected linear Fisher information between two stimuli (Kanitscheider et al. 2015, eq. 7).

    ``I = (dmu^T S^-1 dmu / ds^2) (2T - N - 3) / (2T - 2) - 2N / (T ds^2)`` with ``S`` the pooled sample
    covariance and ``T`` trials per stimulus (the smaller count is used; extra trials of the other stimulus
    are dropped).

    Parameters
    ----------
    a, b : ndarray, shape (T_a, N) and (T_b, N)
        Responses to the two stimuli.
    ds : float
        Stimulus difference (in the units in which the information is wanted).

    Returns
    -------
    float
        Information in 1 / unit^2; NaN when ``N >= 2T - 3`` (the estimator is undefined).
    """
    t = min(len(a), len(b))
    a, b = a[:t], b[:t]
    n = a.shape[1]
    if n >= 2 * t - 3:
        return float("nan")
    dmu = b.mean(axis=0) - a.mean(axis=0)
    cov = 0.5 * (np.cov(a, rowvar=False) + np.cov(b, rowvar=False))
    cov = np.atleast_2d(cov)
    try:
        naive = float(dmu @ np.linalg.solve(cov, dmu)) / ds**2
    except np.linalg.LinAlgError:
        return float("nan")
    return naive * (2 * t - n - 3) / (2 * t - 2) - 2 * n / (t * ds**2)


def _pairs(
    cls: NDArray[np.int64], group: NDArray[np.int64], class_pos: NDArray[np.float64]
) -> list[tuple[NDArray, NDArray, float]]:
    """Index arrays of adjacent classes (k, k+1) within each group, with their distance in bins."""
    out = []
    for g in np.unique(group):
        present = np.unique(cls[group == g])
        for k0, k1 in itertools.pairwise(present):
            ia = np.flatnonzero((group == g) & (cls == k0))
            ib = np.flatnonzero((group == g) & (cls == k1))
            out.append((ia, ib, float(abs(class_pos[k1] - class_pos[k0]))))
    return out


def _residuals(X: NDArray[np.float64], cells: NDArray[np.int64]) -> NDArray[np.float64]:
    r = X.copy()
    for c in np.unique(cells):
        m = cells == c
        r[m] -= r[m].mean(axis=0)
    return r


def _top_eigvecs(R: NDArray[np.float64], k: int) -> NDArray[np.float64]:
    """Top ``k`` eigenvectors (rows, largest first) of the covariance ``R^T R`` of residuals R (n, p)."""
    from scipy.linalg import eigh

    n, p = R.shape
    k = min(k, n, p)
    if n < p:  # through the smaller Gram matrix: R^T R v = s v  <=>  R R^T u = s u, v = R^T u / |R^T u|
        _, u = eigh(R @ R.T, subset_by_index=[n - k, n - 1])
        v = R.T @ u[:, ::-1]
        return (v / np.linalg.norm(v, axis=0)).T
    _, v = eigh(R.T @ R, subset_by_index=[p - k, p - 1])
    return v[:, ::-1].T


def noise_geometry(
    X: NDArray[np.float64],
    cls: NDArray[np.int64],
    group: NDArray[np.int64],
    sizes: NDArray[np.int64],
    bin_width: float,
    rng: np.random.Generator,
    *,
    class_pos: NDArray[np.float64] | None = None,
    n_subsets: int = 3,
    n_eig: int = 3,
) -> dict[str, Any]:
    """Where the trial-to-trial noise lies relative to the signal, for real and trial-shuffled data.

    Features are first scaled by their pooled within-class SD, so a direction along which the noise is
    independent has a variance of about 1.

    Parameters
    ----------
    X : ndarray, shape (n_trials, n_features)
    cls, group : ndarray of int, shape (n_trials,)
    sizes : ndarray of int, shape (k,)
        Ensemble sizes at which to evaluate the N-dependent quantities.
    bin_width : float
        Stimulus distance between adjacent classes (for the Fisher information).
    rng : Generator
    class_pos : ndarray, shape (n_classes,), optional
        Bin position of each class (ordinal labels); None for categorical labels, whose "adjacent" pairs
        are then consecutive class indices at a distance of one (Fisher information = d'^2 per pair).
    n_subsets : int
        Random feature subsets averaged per size.
    n_eig : int
        Number of top noise eigenvectors compared with the signal direction.

    Returns
    -------
    dict
        ``sizes``; ``signal_noise_variance`` {real, shuffled} per size (noise variance along the unit signal
        direction between adjacent classes, mean over pairs); ``mean_noise_variance`` (average per-feature
        noise variance, = 1 after scaling); ``fisher`` {real, shuffled} per size (bias-corrected, 1/unit^2,
        NaN where N >= 2T - 3); ``rms_noise_correlation`` {real, shuffled} over all features;
        ``top_eig_cosine`` {real, shuffled}: mean |cos| of the top ``n_eig`` noise eigenvectors with the
        signal direction; ``chance_cosine`` = 1/sqrt(n_features).
    """
    n_cls = int(cls.max()) + 1
    cells = group * n_cls + cls
    res = _residuals(X, cells)
    scale = res.std(axis=0, ddof=1)
    scale[scale == 0] = 1.0
    data = {"real": X / scale, "shuffled": shuffle_within_cells(X / scale, cells, rng)}
    ordinal = class_pos is not None
    pos = np.asarray(class_pos, dtype=np.float64) if ordinal else np.arange(n_cls, dtype=np.float64)
    pairs = _pairs(cls, group, pos)
    n_feat = X.shape[1]
    subsets = {
        int(n): [rng.choice(n_feat, size=int(n), replace=False) for _ in range(n_subsets)] for n in sizes
    }
    out: dict[str, Any] = {"sizes": [int(n) for n in sizes], "n_pairs": len(pairs), "ordinal": ordinal}
    sig_var: dict[str, list[float]] = {}
    fisher: dict[str, list[float]] = {}
    rms_corr: dict[str, float] = {}
    cosines: dict[str, list[float]] = {}
    for name, Z in data.items():
        R = _residuals(Z, cells)
        blocks = [(Z[ia], Z[ib], np.concatenate([R[ia], R[ib]]), dk) for ia, ib, dk in pairs]
        sv, fi = [], []
        for n in sizes:
            vals, fvals = [], []
            for feats in subsets[int(n)]:
                for Za, Zb, Rp, dk in blocks:
                    za, zb = Za[:, feats], Zb[:, feats]
                    dmu = zb.mean(axis=0) - za.mean(axis=0)
                    norm = np.linalg.norm(dmu)
                    if norm > 0:
                        vals.append(float(np.var(Rp[:, feats] @ (dmu / norm), ddof=1)))
                    fvals.append(fisher_bias_corrected(za, zb, dk * bin_width))
            sv.append(float(np.mean(vals)) if vals else float("nan"))
            f = np.asarray(fvals)
            fi.append(float(np.mean(f)) if np.isfinite(f).all() and f.size else float("nan"))
        sig_var[name], fisher[name] = sv, fi
        corr_sq = []
        for c in np.unique(cells):
            Rc = R[cells == c]
            if len(Rc) < 3 or n_feat < 2:
                continue
            cc = np.corrcoef(Rc, rowvar=False)
            off = cc[~np.eye(n_feat, dtype=bool)]
            corr_sq.append(float(np.nanmean(off**2)))
        rms_corr[name] = float(np.sqrt(np.mean(corr_sq))) if corr_sq else float("nan")
        cos = []
        for Za, Zb, Rp, _ in blocks:
            dmu = Zb.mean(axis=0) - Za.mean(axis=0)
            norm = np.linalg.norm(dmu)
            if norm == 0:
                continue
            cos.append(np.abs(_top_eigvecs(Rp, n_eig) @ (dmu / norm)))
        cosines[name] = np.mean(cos, axis=0).tolist() if cos else []
    out["signal_noise_variance"] = sig_var
    out["mean_noise_variance"] = 1.0
    out["fisher"] = fisher
    out["fisher_units"] = "1/unit^2 (unit of bin_width)"
    out["rms_noise_correlation"] = rms_corr
    out["top_eig_cosine"] = cosines
    out["chance_cosine"] = float(1.0 / np.sqrt(n_feat))
    return out
