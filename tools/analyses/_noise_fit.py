"""Fit of the inverse mean squared error, IMSE(N) = I0 N / (1 + N / N*), with bootstrap intervals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

__all__ = ["ImseFit", "bootstrap_fits", "fit_imse", "imse_model"]


def imse_model(n: NDArray[np.float64], i0: float, n_star: float) -> NDArray[np.float64]:
    """IMSE(N) = I0 N / (1 + N / N*) (Hazon et al. 2022; linear Fisher information with limiting noise)."""
    n = np.asarray(n, dtype=np.float64)
    return i0 * n / (1.0 + n / n_star)


@dataclass(frozen=True)
class ImseFit:
    """Result of one fit.

    Attributes
    ----------
    i0 : float
        Information per feature at small N (1 / unit^2).
    n_star : float
        Ensemble size at which half the asymptotic information is reached.
    at_bound : bool
        N* sits at its upper bound (no saturation detectable: the asymptote is a lower bound).
    at_lower_bound : bool
        N* sits at its lower bound (no growth with N: e.g. decoding at chance level).
    cost : float
        Half the sum of squared residuals (see :func:`fit_imse`).
    """

    i0: float
    n_star: float
    at_bound: bool
    cost: float
    at_lower_bound: bool = False

    @property
    def i_inf(self) -> float:
        """Asymptotic information I0 N* (1 / unit^2)."""
        return self.i0 * self.n_star

    @property
    def rms_inf(self) -> float:
        """Asymptotic RMS error (I0 N*)^-1/2 (units)."""
        return float(self.i_inf**-0.5)

    @property
    def n99(self) -> float:
        """Ensemble size reaching 99 % of the asymptotic information (99 N*)."""
        return 99.0 * self.n_star

    def as_dict(self) -> dict[str, Any]:
        return {
            "I0": self.i0,
            "N_star": self.n_star,
            "I_inf": self.i_inf,
            "RMS_inf": self.rms_inf,
            "N99": self.n99,
            "at_bound": self.at_bound,
            "at_lower_bound": self.at_lower_bound,
            "cost": self.cost,
        }


def fit_imse(
    n: NDArray[np.float64],
    imse: NDArray[np.float64],
    n_star_max: float,
    space: str = "linear",
    start: ImseFit | None = None,
) -> ImseFit:
    """Bounded nonlinear least squares of :func:`imse_model` on IMSE.

    With ``space="linear"`` (default) the residuals are IMSE differences scaled by the largest observed IMSE,
    so the large ensembles, which carry the asymptote, dominate and the near-chance small ensembles (where a
    classifier's error saturates at chance level and IMSE is not proportional to N) weigh little. With
    ``space="log"`` every size weighs the same.

    Parameters
    ----------
    n : ndarray, shape (k,)
        Ensemble sizes (>= 1).
    imse : ndarray, shape (k,)
        Inverse mean squared errors (> 0).
    n_star_max : float
        Upper bound of N* (e.g. 1000 x the largest N).
    space : str
        ``"linear"`` or ``"log"`` residuals.
    start : ImseFit, optional
        Single starting point (used by the bootstrap); by default three starts are tried.

    Returns
    -------
    ImseFit
    """
    n = np.asarray(n, dtype=np.float64)
    obs = np.asarray(imse, dtype=np.float64)
    y = np.log(obs)
    scale = float(obs.max())
    if space not in ("linear", "log"):
        raise ValueError(f"space={space!r}; use 'linear' or 'log'")

    def resid(theta: NDArray[np.float64]) -> NDArray[np.float64]:
        log_i0, log_ns = theta
        log_model = log_i0 + np.log(n) - np.log1p(n / np.exp(log_ns))
        if space == "log":
            return log_model - y
        return (np.exp(log_model) - obs) / scale

    lo = np.array([np.min(y - np.log(n)) - 10.0, np.log(1e-2)])
    hi = np.array([np.max(y) + 10.0, np.log(n_star_max)])
    best = None
    if start is not None:
        starts = [(start.i0, start.n_star)]
    else:
        starts = []
        for ns0 in (0.3 * n.max(), 3.0 * n.max(), 0.1 * n_star_max):
            starts.append((np.exp(np.max(y - np.log(n))) * (1 + n.min() / ns0), ns0))
    for i00, ns0 in starts:
        x0 = np.clip([np.log(i00), np.log(ns0)], lo + 1e-9, hi - 1e-9)
        res = least_squares(resid, x0, bounds=(lo, hi), method="trf", x_scale=1.0)
        if best is None or res.cost < best.cost:
            best = res
    assert best is not None
    i0, ns = np.exp(best.x)
    at_bound = bool(best.x[1] >= hi[1] - 1e-3)
    at_lower = bool(best.x[1] <= lo[1] + 1e-3)
    return ImseFit(
        i0=float(i0), n_star=float(ns), at_bound=at_bound, cost=float(best.cost), at_lower_bound=at_lower
    )


def bootstrap_fits(
    n: NDArray[np.float64],
    mse: dict[str, NDArray[np.float64]],
    floor: float,
    n_star_max: float,
    n_boot: int,
    rng: np.random.Generator,
    space: str = "linear",
    starts: dict[str, ImseFit] | None = None,
) -> dict[str, list[ImseFit]]:
    """Refit after resampling the subsets of every ensemble size with replacement.

    The same resampled subset indices are used for every setting (the settings share their subsets, so
    ratios between settings get paired intervals).

    Parameters
    ----------
    n : ndarray, shape (k,)
    mse : dict of ndarray, shape (k, R)
        Per-subset mean squared errors of every setting.
    floor : float
        Smallest MSE allowed for a mean (one off-by-one error in all test trials), so IMSE stays finite.
    n_star_max : float
    n_boot : int
    space : str
        Residual space of the fit (see :func:`fit_imse`).
    starts : dict of ImseFit, optional
        Point fits used as the single starting point of every refit.
    rng : Generator

    Returns
    -------
    dict of list of ImseFit
        ``n_boot`` fits per setting.
    """
    k, r = next(iter(mse.values())).shape
    out: dict[str, list[ImseFit]] = {name: [] for name in mse}
    for _ in range(n_boot):
        idx = rng.integers(0, r, size=(k, r))
        for name, m in mse.items():
            means = np.maximum(np.take_along_axis(m, idx, axis=1).mean(axis=1), floor)
            out[name].append(
                fit_imse(n, 1.0 / means, n_star_max, space, None if starts is None else starts[name])
            )
    return out
