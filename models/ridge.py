"""Ridge-regression baseline: lagged brain windows -> speech features (numpy only, never torch).

For each speech time ``t`` the features are the brain samples ``t + lag_start .. t + lag_start + lags - 1``
(the brain responds after the speech; the windows of :mod:`neurospeech.data.segments` already shift the
brain by the 150 ms lag). The ridge penalty is chosen on a held-out fraction of the training windows
from ``alphas``.
Channels are first reduced by PCA (``n_components``) and rows are sub-sampled in time (``row_step``) so the
normal equations stay small.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import linalg

from ..errors import ConfigError, DataFormatError

__all__ = ["RidgeDecoder"]

log = logging.getLogger(__name__)


def _lagged(x: NDArray[Any], lags: int, lag_start: int, step: int = 1, lag_step: int = 1
            ) -> NDArray[np.float64]:
    """(n, C, T) -> (n * ceil(T/step), C * n_lags): rows are time points, zero padded outside the window."""
    n, c, t = x.shape
    pad_lo, pad_hi = max(0, -lag_start), max(0, lag_start + lags - 1)
    xp = np.zeros((n, c, t + pad_lo + pad_hi), dtype=np.float64)
    xp[:, :, pad_lo:pad_lo + t] = x
    times = np.arange(0, t, step)
    cols = [xp[:, :, times + pad_lo + lag_start + j] for j in range(0, lags, lag_step)]  # (n, C, nt)
    z = np.stack(cols, axis=2)  # (n, C, lags, nt)
    return z.transpose(0, 3, 1, 2).reshape(n * len(times), c * len(cols))


class RidgeDecoder:
    """Linear decoder from lagged brain windows to speech features.

    Parameters
    ----------
    lags : int
        Number of brain samples (at 120 Hz) used per speech sample.
    alphas : array of float
        Candidate ridge penalties (relative to the mean eigenvalue of the normal matrix).
    lag_start : int
        First lag in samples (0: the brain sample aligned with the speech sample; negative looks earlier).
    lag_step : int
        Use every ``lag_step``-th lag (fewer features, same time span).
    n_components : int or None
        PCA components of the channels kept (None: all channels).
    row_step : int
        Time sub-sampling of the training rows.
    val_fraction : float
        Fraction of training windows held out to choose alpha.
    seed : int
        Seed of the held-out selection.
    """

    def __init__(
        self,
        lags: int = 30,
        alphas: NDArray[Any] | None = None,
        *,
        lag_start: int = 0,
        lag_step: int = 1,
        n_components: int | None = 64,
        row_step: int = 4,
        val_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        if lags < 1:
            raise ConfigError(f"lags must be >= 1, got {lags!r}")
        if row_step < 1:
            raise ConfigError(f"row_step must be >= 1, got {row_step!r}")
        if not 0 < val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        self.lags = int(lags)
        self.alphas = np.logspace(-1, 6, 8) if alphas is None else np.asarray(alphas, dtype=np.float64)
        if self.alphas.ndim != 1 or self.alphas.size == 0 or np.any(self.alphas < 0):
            raise ConfigError(f"alphas must be a non-empty list of non-negative numbers, got {alphas!r}")
        self.lag_start = int(lag_start)
        if lag_step < 1:
            raise ConfigError(f"lag_step must be >= 1, got {lag_step!r}")
        self.lag_step = int(lag_step)
        self.n_components = n_components
        self.row_step = int(row_step)
        self.val_fraction = float(val_fraction)
        self.seed = seed
        self.alpha_: float | None = None
        self.val_scores_: dict[float, float] = {}

    # ------------------------------------------------------------------ helpers
    def _project(self, x: NDArray[Any]) -> NDArray[np.float64]:
        x = np.asarray(x, dtype=np.float64)
        return np.einsum("kc,nct->nkt", self.components_, x - self.x_mean_[None, :, None])

    def _design(self, x: NDArray[Any], step: int) -> NDArray[np.float64]:
        return _lagged(self._project(x), self.lags, self.lag_start, step, self.lag_step)

    @staticmethod
    def _check(x: NDArray[Any], name: str) -> NDArray[Any]:
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[0] == 0:
            raise DataFormatError(f"{name} must have shape (n, channels/features, times), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise DataFormatError(f"{name} contains NaN or infinite values")
        return x

    # ------------------------------------------------------------------ API
    def fit(self, X: NDArray[Any], Y: NDArray[Any]) -> RidgeDecoder:
        """Fit on brain windows ``X (n, C, T)`` and speech windows ``Y (n, F, T)``."""
        X = self._check(X, "X")
        Y = self._check(Y, "Y")
        if X.shape[0] != Y.shape[0] or X.shape[2] != Y.shape[2]:
            raise DataFormatError(f"X {X.shape} and Y {Y.shape} must have the same n and T")
        n, c, _ = X.shape
        # channel PCA on a sample of time points
        self.x_mean_ = X.mean(axis=(0, 2)).astype(np.float64)
        k = c if self.n_components is None else min(int(self.n_components), c)
        sub = X[:, :, :: max(1, self.row_step * 2)].transpose(0, 2, 1).reshape(-1, c).astype(np.float64)
        sub -= self.x_mean_
        _, _, vt = np.linalg.svd(sub[:: max(1, len(sub) // 20000)], full_matrices=False)
        self.components_ = vt[:k]
        self.y_mean_ = Y.mean(axis=(0, 2)).astype(np.float64)

        rng = np.random.default_rng(self.seed)
        n_val = max(1, round(n * self.val_fraction)) if n >= 5 else 0
        perm = rng.permutation(n)
        val, tr = perm[:n_val], perm[n_val:]

        def normal(idx: NDArray[np.int64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
            n_feat = k * len(range(0, self.lags, self.lag_step))
            xtx = np.zeros((n_feat, n_feat))
            xty = np.zeros((n_feat, Y.shape[1]))
            for b in range(0, len(idx), 256):
                sel = np.sort(idx[b:b + 256])
                d = self._design(X[sel], self.row_step)
                yy = (Y[sel][:, :, :: self.row_step] - self.y_mean_[None, :, None]).transpose(0, 2, 1)
                yy = yy.reshape(-1, Y.shape[1])
                xtx += d.T @ d
                xty += d.T @ yy
            return xtx, xty

        xtx_tr, xty_tr = normal(tr if n_val else perm)
        if n_val and len(self.alphas) > 1:
            scale = float(np.trace(xtx_tr) / len(xtx_tr)) or 1.0
            dv = self._design(X[np.sort(val)], self.row_step)
            yv = (Y[np.sort(val)][:, :, :: self.row_step] - self.y_mean_[None, :, None]).transpose(0, 2, 1)
            yv = yv.reshape(-1, Y.shape[1])
            best, best_a = -np.inf, float(self.alphas[0])
            eye = np.eye(len(xtx_tr))
            for a in self.alphas:
                w = linalg.solve(xtx_tr + a * scale * eye, xty_tr, assume_a="pos")
                r = _mean_corr(dv @ w, yv)
                self.val_scores_[float(a)] = r
                if r > best:
                    best, best_a = r, float(a)
            self.alpha_ = best_a
            xtx_v, xty_v = normal(val)
            xtx, xty = xtx_tr + xtx_v, xty_tr + xty_v
        else:
            self.alpha_ = float(self.alphas[0])
            xtx, xty = xtx_tr, xty_tr
        scale = float(np.trace(xtx) / len(xtx)) or 1.0
        self.coef_ = linalg.solve(xtx + self.alpha_ * scale * np.eye(len(xtx)), xty, assume_a="pos")
        log.info("ridge: alpha=%g (validation corr %s)", self.alpha_,
                 {f"{a:g}": round(v, 4) for a, v in self.val_scores_.items()})
        return self

    def predict(self, X: NDArray[Any]) -> NDArray[np.float32]:
        """Predict speech windows ``(n, F, T)`` from brain windows ``(n, C, T)``."""
        if not hasattr(self, "coef_"):
            raise ConfigError("RidgeDecoder.predict called before fit")
        X = self._check(X, "X")
        if X.shape[1] != len(self.x_mean_):
            raise DataFormatError(
                f"X has {X.shape[1]} channels, the decoder was fitted on {len(self.x_mean_)}"
            )
        n, _, t = X.shape
        out = np.empty((n, self.coef_.shape[1], t), dtype=np.float32)
        for b in range(0, n, 256):
            d = self._design(X[b:b + 256], 1)
            p = d @ self.coef_ + self.y_mean_
            out[b:b + 256] = p.reshape(-1, t, self.coef_.shape[1]).transpose(0, 2, 1)
        return out


def _mean_corr(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    num = (a * b).sum(axis=0)
    den = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    den[den == 0] = 1.0
    return float(np.mean(num / den))
