"""The standard linear baseline: a backward model from lagged brain windows to speech features (numpy only).

For every speech frame ``t`` of a window the design row holds the brain samples ``t + lag`` for the lags of a
response window (default: the brain 0.2 s *before* to 0.8 s *after* the speech frame; the brain windows of
:mod:`neurospeech.data.segments` already lag the speech by ``window.lag`` = 0.15 s, so these are window lags
``-0.35 .. +0.65`` s), after a channel PCA. The targets are the speech features as given (the trainer's
scoring representation: principal components of the standardised features).

Fitting (closed-form ridge, the estimator of ``mne.decoding.TimeDelayingRidge`` and ``sklearn.linear_model.Ridge``
written on accumulated normal equations because the lagged design of thousands of windows does not fit in
memory):

- only the rows whose whole lag span lies inside the window enter the normal equations (zero padding would
  teach the decoder that a missing brain sample is a zero one); predictions use every frame (zero padded);
- ``X^T X = V diag(d) V^T`` is diagonalised once, so every ridge penalty of the grid costs one matrix product;
- the penalty is chosen on *validation windows* (another split: sounds never used for the fit) by the
  retrieval criterion of the evaluation (mean percentile rank of each window's own speech among all validation
  windows, CLIP score); when the best penalty lies at either end of the grid the grid is widened by three
  decades on that side (up to ``max_extensions`` times) — the *edge check*;
- after the choice the decoder is refitted on train + validation windows.

Penalties are relative to the mean eigenvalue of ``X^T X`` (``alpha = 1`` shrinks as much as an average
direction carries), so one grid suits any data scale.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import linalg

from ..errors import ConfigError, DataFormatError

__all__ = ["DEFAULT_ALPHAS", "RidgeDecoder", "lags_for_response"]

log = logging.getLogger(__name__)

#: Default grid of relative ridge penalties (widened automatically when the choice is at an end).
DEFAULT_ALPHAS = np.logspace(-4, 5, 10)


def lags_for_response(tmin: float = -0.2, tmax: float = 0.8, sfreq: float = 120.0, window_lag: float = 0.15
                      ) -> tuple[int, int]:
    """Window lags (first lag, number of lags) covering a brain response ``tmin .. tmax`` s after the speech.

    Parameters
    ----------
    tmin, tmax : float
        Response window in seconds of brain time relative to the speech frame (negative: brain before speech).
    sfreq : float
        Sampling rate of the windows (Hz).
    window_lag : float
        The lag already built into the windows (:attr:`neurospeech.preprocessing.WindowSpec.lag`).

    Returns
    -------
    lag_start, lags : int
        Window samples ``lag_start .. lag_start + lags - 1``.
    """
    if not tmax > tmin:
        raise ConfigError(f"the response window needs tmax > tmin, got tmin={tmin!r}, tmax={tmax!r}")
    start = round((tmin - window_lag) * sfreq)
    stop = round((tmax - window_lag) * sfreq)
    return int(start), int(stop - start + 1)


def _lagged(x: NDArray[Any], lag_start: int, lags: int, lag_step: int, times: NDArray[np.int64]
            ) -> NDArray[np.float64]:
    """(n, K, T) -> (n * len(times), K * n_lags) design rows at ``times``; zero outside the window."""
    n, k, t = x.shape
    pad_lo, pad_hi = max(0, -lag_start), max(0, lag_start + lags - 1)
    xp = np.zeros((n, k, t + pad_lo + pad_hi), dtype=np.float64)
    xp[:, :, pad_lo:pad_lo + t] = x
    cols = [xp[:, :, times + pad_lo + lag_start + j] for j in range(0, lags, lag_step)]  # (n, K, nt) each
    z = np.stack(cols, axis=2)  # (n, K, n_lags, nt)
    return z.transpose(0, 3, 1, 2).reshape(n * len(times), k * len(cols))


def _percentile_rank(pred: NDArray[Any], true: NDArray[Any]) -> float:
    """Mean percentile rank (1 = always first) of each row's own target among all targets (CLIP score)."""
    p = pred.reshape(len(pred), -1)
    y = true.reshape(len(true), -1).astype(np.float64)
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    y = y / np.where(norms > 0, norms, 1.0)
    s = p @ y.T
    diag = np.diag(s)[:, None]
    n = len(s)
    if n < 2:
        return 1.0
    return float(1.0 - np.mean(((s > diag).sum(axis=1)) / (n - 1)))


class RidgeDecoder:
    """Backward linear decoder from lagged brain windows to speech features (see the module docstring).

    Parameters
    ----------
    lags : int
        Number of window lags (samples; :func:`lags_for_response` converts a response window in seconds).
    alphas : array of float or None
        Relative ridge penalties to search (None: :data:`DEFAULT_ALPHAS`).
    lag_start : int
        First window lag (0: the brain sample of the window aligned with the speech frame).
    lag_step : int
        Use every ``lag_step``-th lag (fewer columns, same time span; 4 = 33 ms at 120 Hz, finer than the
        scoring representation's pooled frames).
    n_components : int or None
        Channel PCA components kept (None: all channels).
    row_step : int
        Time sub-sampling of the training rows.
    val_fraction : float
        Without validation windows: fraction of the training windows held out to choose alpha (windows of
        one sound overlap, so this is optimistic; pass ``X_val``, ``Y_val`` from another split instead).
    max_extensions : int
        How many times the edge check may widen the grid.
    max_val_windows : int
        Validation windows used to choose alpha (a seeded random subset beyond this).
    seed : int
        Seed of the held-out selection.
    """

    def __init__(
        self,
        lags: int = 121,
        alphas: NDArray[Any] | None = None,
        *,
        lag_start: int = -42,
        lag_step: int = 4,
        n_components: int | None = 64,
        row_step: int = 3,
        val_fraction: float = 0.2,
        max_extensions: int = 3,
        max_val_windows: int = 200,
        seed: int = 0,
    ) -> None:
        if lags < 1:
            raise ConfigError(f"lags must be >= 1, got {lags!r}")
        if row_step < 1:
            raise ConfigError(f"row_step must be >= 1, got {row_step!r}")
        if lag_step < 1:
            raise ConfigError(f"lag_step must be >= 1, got {lag_step!r}")
        if not 0 < val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        if n_components is not None and n_components < 1:
            raise ConfigError(f"n_components must be None or >= 1, got {n_components!r}")
        self.alphas = DEFAULT_ALPHAS.copy() if alphas is None else np.asarray(alphas, dtype=np.float64)
        if self.alphas.ndim != 1 or self.alphas.size == 0 or np.any(self.alphas <= 0):
            raise ConfigError(f"alphas must be a non-empty list of positive numbers, got {alphas!r}")
        self.lags = int(lags)
        self.lag_start = int(lag_start)
        self.lag_step = int(lag_step)
        self.n_components = n_components
        self.row_step = int(row_step)
        self.val_fraction = float(val_fraction)
        self.max_extensions = int(max_extensions)
        self.max_val_windows = int(max_val_windows)
        self.seed = seed
        self.alpha_: float | None = None
        self.val_scores_: dict[float, float] = {}
        self.grid_extensions_ = 0
        self.alpha_at_edge_ = False

    @classmethod
    def for_response(cls, tmin: float = -0.2, tmax: float = 0.8, sfreq: float = 120.0,
                     window_lag: float = 0.15, **kw: Any) -> RidgeDecoder:
        """A decoder whose lags cover the brain response ``tmin .. tmax`` s (see :func:`lags_for_response`)."""
        start, lags = lags_for_response(tmin, tmax, sfreq, window_lag)
        return cls(lags=lags, lag_start=start, **kw)

    def settings(self) -> dict[str, Any]:
        """The decoder's settings (for reports)."""
        return {"lags": self.lags, "lag_start": self.lag_start, "lag_step": self.lag_step,
                "n_components": self.n_components, "row_step": self.row_step,
                "alpha_grid": [float(a) for a in sorted(self.val_scores_) or self.alphas]}

    # ------------------------------------------------------------------ helpers
    def _project(self, x: NDArray[Any]) -> NDArray[np.float64]:
        x = np.asarray(x, dtype=np.float64)
        return np.einsum("kc,nct->nkt", self.components_, x - self.x_mean_[None, :, None])

    def _design(self, x: NDArray[Any], times: NDArray[np.int64]) -> NDArray[np.float64]:
        return _lagged(self._project(x), self.lag_start, self.lags, self.lag_step, times)

    def _fit_rows(self, t: int) -> NDArray[np.int64]:
        """Training rows whose whole lag span lies inside a window of ``t`` samples (all rows if none do)."""
        last_lag = self.lag_start + ((self.lags - 1) // self.lag_step) * self.lag_step
        lo, hi = max(0, -self.lag_start), min(t, t - last_lag)
        if hi - lo < 1:
            log.warning("ridge: the lag span (%d samples) is as long as the window (%d); fitting on zero-padded"
                        " rows", self.lags, t)
            lo, hi = 0, t
        return np.arange(lo, hi, self.row_step)

    @staticmethod
    def _check(x: NDArray[Any], name: str) -> NDArray[Any]:
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[0] == 0:
            raise DataFormatError(f"{name} must have shape (n, channels/features, times), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise DataFormatError(f"{name} contains NaN or infinite values; clean or drop those windows")
        return x

    def _normal(self, X: NDArray[Any], Y: NDArray[Any], rows: NDArray[np.int64]
                ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        n_feat = self.components_.shape[0] * len(range(0, self.lags, self.lag_step))
        xtx = np.zeros((n_feat, n_feat))
        xty = np.zeros((n_feat, Y.shape[1]))
        batch = max(1, 8192 // max(1, len(rows)))
        for b in range(0, len(X), batch):
            d = self._design(X[b:b + batch], rows)
            yy = (np.asarray(Y[b:b + batch], dtype=np.float64)[:, :, rows] - self.y_mean_[None, :, None])
            yy = yy.transpose(0, 2, 1).reshape(-1, Y.shape[1])
            xtx += d.T @ d
            xty += d.T @ yy
        return xtx, xty

    # ------------------------------------------------------------------ API
    def fit(self, X: NDArray[Any], Y: NDArray[Any], X_val: NDArray[Any] | None = None,
            Y_val: NDArray[Any] | None = None) -> RidgeDecoder:
        """Fit on brain windows ``X (n, C, T)`` and speech windows ``Y (n, F, T)``.

        ``X_val (m, C, T)``, ``Y_val (m, F, T)``: validation windows (another split) that choose the penalty;
        without them a ``val_fraction`` of the training windows is held out.
        """
        X = self._check(X, "X")
        Y = self._check(Y, "Y")
        if X.shape[0] != Y.shape[0] or X.shape[2] != Y.shape[2]:
            raise DataFormatError(f"X {X.shape} and Y {Y.shape} must have the same n and T")
        if (X_val is None) != (Y_val is None):
            raise ConfigError("pass both X_val and Y_val, or neither")
        n, c, t = X.shape
        rng = np.random.default_rng(self.seed)
        if X_val is not None and Y_val is not None:
            X_val, Y_val = self._check(X_val, "X_val"), self._check(Y_val, "Y_val")
            if X_val.shape[1:] != X.shape[1:] or Y_val.shape[1:] != Y.shape[1:] or len(X_val) != len(Y_val):
                raise DataFormatError(f"validation windows X_val {X_val.shape}, Y_val {Y_val.shape} do not "
                                      f"match the training windows X {X.shape}, Y {Y.shape}")
            tr = np.arange(n)
            held_out = False
        elif n >= 5:
            perm = rng.permutation(n)
            n_val = max(2, round(n * self.val_fraction))
            X_val, Y_val, tr = X[np.sort(perm[:n_val])], Y[np.sort(perm[:n_val])], np.sort(perm[n_val:])
            held_out = True
        else:
            X_val = Y_val = None
            tr, held_out = np.arange(n), False
        # channel PCA on a sample of time points
        self.x_mean_ = X.mean(axis=(0, 2)).astype(np.float64)
        k = c if self.n_components is None else min(int(self.n_components), c)
        sub = X[:, :, :: max(1, t // 32)].transpose(0, 2, 1).reshape(-1, c).astype(np.float64)
        sub = sub[:: max(1, len(sub) // 20000)] - self.x_mean_
        _, _, vt = np.linalg.svd(sub, full_matrices=False)
        self.components_ = vt[:k]
        self.y_mean_ = Y.mean(axis=(0, 2)).astype(np.float64)
        rows = self._fit_rows(t)
        xtx, xty = self._normal(X[tr], Y[tr], rows)

        self.val_scores_ = {}
        self.grid_extensions_ = 0
        if X_val is not None and Y_val is not None and len(X_val) >= 2:
            if len(X_val) > self.max_val_windows:
                pick = np.sort(rng.choice(len(X_val), self.max_val_windows, replace=False))
                X_val, Y_val = X_val[pick], Y_val[pick]
            self.alpha_ = self._choose_alpha(xtx, xty, X_val, Y_val)
            if held_out:  # refit on every training window
                xtx, xty = self._normal(X, Y, rows)
            else:
                xtx_v, xty_v = self._normal(X_val, Y_val, rows)
                xtx, xty = xtx + xtx_v, xty + xty_v
        else:
            self.alpha_ = float(np.median(self.alphas))
            log.warning("ridge: too few windows to choose alpha; using %g", self.alpha_)
        scale = float(np.trace(xtx) / len(xtx)) or 1.0
        self.coef_ = linalg.solve(xtx + self.alpha_ * scale * np.eye(len(xtx)), xty, assume_a="pos")
        log.info("ridge: alpha=%g (grid widened %d times%s); validation percentile rank %s", self.alpha_,
                 self.grid_extensions_, ", still at an edge" if self.alpha_at_edge_ else "",
                 {f"{a:g}": round(v, 4) for a, v in sorted(self.val_scores_.items())})
        return self

    def _choose_alpha(self, xtx: NDArray[np.float64], xty: NDArray[np.float64], X_val: NDArray[Any],
                      Y_val: NDArray[Any]) -> float:
        """Penalty with the best validation retrieval; the grid widens while the best is at an edge."""
        d, v = linalg.eigh(xtx)
        d = np.clip(d, 0.0, None)
        scale = float(d.mean()) or 1.0
        q = v.T @ xty  # (p, F)
        # validation design in the eigenbasis at every other frame (float32: (m * T / 2, p) stays small)
        rows = np.arange(0, X_val.shape[2], 2)
        dv = np.concatenate([(self._design(X_val[b:b + 16], rows) @ v).astype(np.float32)
                             for b in range(0, len(X_val), 16)])
        y_val = np.asarray(Y_val)[:, :, rows]
        t = len(rows)

        corr: dict[float, float] = {}

        def score(a: float) -> float:
            if a not in self.val_scores_:
                w = ((1.0 / (d + a * scale))[:, None] * q).astype(np.float32)
                flat = dv @ w + self.y_mean_
                pred = flat.reshape(len(X_val), t, -1).transpose(0, 2, 1)
                self.val_scores_[a] = _percentile_rank(pred, y_val)
                corr[a] = _mean_corr(flat, y_val.transpose(0, 2, 1).reshape(len(flat), -1))
            return self.val_scores_[a]

        def key(a: float) -> tuple[float, float]:
            # retrieval first; a saturated retrieval (small validation sets) is broken by the correlation
            return round(self.val_scores_[a], 6), corr[a]

        grid = sorted(float(a) for a in self.alphas)
        for a in grid:
            score(a)
        for _ in range(self.max_extensions + 1):
            grid = sorted(self.val_scores_)
            best = max(grid, key=key)
            if len(grid) < 2 or best not in (grid[0], grid[-1]):
                self.alpha_at_edge_ = False
                return best
            if self.grid_extensions_ >= self.max_extensions:
                break
            self.grid_extensions_ += 1
            factors = 10.0 ** np.arange(1, 4)
            for a in (best / factors if best == grid[0] else best * factors):
                score(float(a))
        self.alpha_at_edge_ = True
        log.warning("ridge: the best alpha %g is still at the edge of the grid after %d extensions",
                    best, self.grid_extensions_)
        return best

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
        rows = np.arange(t)
        for b in range(0, n, 16):
            d = self._design(X[b:b + 16], rows)
            p = d @ self.coef_ + self.y_mean_
            out[b:b + 16] = p.reshape(-1, t, self.coef_.shape[1]).transpose(0, 2, 1)
        return out


def _mean_corr(a: NDArray[Any], b: NDArray[Any]) -> float:
    """Mean over columns of the Pearson correlation between ``a`` and ``b`` (rows are samples)."""
    a = np.asarray(a, dtype=np.float64) - np.mean(a, axis=0)
    b = np.asarray(b, dtype=np.float64) - np.mean(b, axis=0)
    den = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    return float(np.mean(np.where(den > 0, (a * b).sum(axis=0) / np.where(den > 0, den, 1.0), 0.0)))
