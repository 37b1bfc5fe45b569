"""Simulated place-cell ensembles with and without information-limiting noise correlations.

A generator for checking :mod:`neurospeech.tools.analyses.noise_limits` against known ground truth, after
the set-up of Hazon et al. (2022, Nat. Commun. 13:4276): place-tuned units on a linear track, binned
position, two running directions, many traversals (trials).

Each unit ``i`` has a Gaussian place field per running direction (independent centres, so fields remap
between directions), with a peak rate, a width and a baseline. On trial ``t`` at position ``x_t`` the
response is::

    r_it = f_i(x_t + d_t) + e_it,   d_t ~ N(0, s_d^2) shared by all units,   e_it ~ N(0, sigma^2) independent

The shared jitter ``d_t`` of the *encoded* position makes the noise correlations information-limiting
(differential correlations, Moreno-Bote et al. 2014): the population cannot tell ``x + d`` from ``x``, so no
decoder, however many units it reads, can do better than an RMS error of about ``s_d`` (plus the quantisation
of the bins). With ``s_d = 0`` (the control) only independent noise remains and the error keeps falling as
units are added. Trial shuffling within a position bin destroys the shared jitter, which is exactly what the
analysis exploits.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from neurospeech.errors import ConfigError

__all__ = ["PlaceCellData", "PlaceCellSettings", "save_place_cells", "simulate_place_cells"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlaceCellSettings:
    """Parameters of the place-cell generator.

    Attributes
    ----------
    n_units : int
        Number of units (features).
    track_length : float
        Track length in cm.
    n_bins : int
        Number of position bins (classes); bin width = track_length / n_bins.
    n_directions : int
        Running directions (1 or 2); used as the nuisance group.
    trials_per_bin : int
        Trials (traversal samples) per position bin and direction.
    s_d : float
        SD in cm of the shared jitter of the encoded position (0 = independent noise only).
    noise_sd : float
        SD of the independent additive noise (same units as the rates).
    field_width : tuple of float
        Range (cm) from which each place field's Gaussian SD is drawn uniformly.
    peak_rate : tuple of float
        Range from which each field's peak (above baseline) is drawn log-uniformly.
    baseline : float
        Baseline rate added to every field.
    position_jitter : float
        Trials are placed at the bin centre plus a uniform offset of +- position_jitter * bin_width / 2
        (0 = exactly at the centre).
    seed : int
        Random seed (tuning and trials).
    """

    n_units: int = 500
    track_length: float = 120.0
    n_bins: int = 20
    n_directions: int = 2
    trials_per_bin: int = 100
    s_d: float = 4.0
    noise_sd: float = 0.3
    field_width: tuple[float, float] = (6.0, 12.0)
    peak_rate: tuple[float, float] = (0.5, 2.0)
    baseline: float = 0.2
    position_jitter: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            ("n_units", self.n_units >= 1, "an integer >= 1"),
            ("track_length", self.track_length > 0, "a positive length in cm"),
            ("n_bins", self.n_bins >= 2, "an integer >= 2"),
            ("n_directions", self.n_directions in (1, 2), "1 or 2"),
            ("trials_per_bin", self.trials_per_bin >= 4, "an integer >= 4 (2 per half for the 2-fold split)"),
            ("s_d", self.s_d >= 0, "a non-negative SD in cm"),
            ("noise_sd", self.noise_sd > 0, "a positive SD"),
            ("position_jitter", 0 <= self.position_jitter <= 1, "a fraction in [0, 1]"),
        ]
        for key, ok, allowed in checks:
            if not ok:
                raise ConfigError(
                    f"place-cell setting {key}={getattr(self, key)!r} is invalid; use {allowed}"
                )
        for key in ("field_width", "peak_rate"):
            lo, hi = getattr(self, key)
            if not 0 < lo <= hi:
                raise ConfigError(f"place-cell setting {key}={(lo, hi)!r} is invalid; use 0 < low <= high")

    @property
    def bin_width(self) -> float:
        """Width of one position bin in cm."""
        return self.track_length / self.n_bins


@dataclass
class PlaceCellData:
    """A simulated data set.

    Attributes
    ----------
    X : ndarray, shape (n_trials, n_units)
        Responses.
    y : ndarray of int, shape (n_trials,)
        Position bin (class) of each trial, 0 .. n_bins - 1.
    position : ndarray, shape (n_trials,)
        True position in cm.
    direction : ndarray of int, shape (n_trials,)
        Running direction (the nuisance group).
    jitter : ndarray, shape (n_trials,)
        The shared jitter d_t of each trial in cm.
    centers, widths, peaks : ndarray, shape (n_directions, n_units)
        Place-field parameters.
    settings : PlaceCellSettings
    """

    X: NDArray[np.float64]
    y: NDArray[np.int64]
    position: NDArray[np.float64]
    direction: NDArray[np.int64]
    jitter: NDArray[np.float64]
    centers: NDArray[np.float64]
    widths: NDArray[np.float64]
    peaks: NDArray[np.float64]
    settings: PlaceCellSettings

    @property
    def bin_width(self) -> float:
        return self.settings.bin_width

    def tuning(self, x: NDArray[np.float64], direction: int) -> NDArray[np.float64]:
        """Mean rates at positions ``x`` (shape (n,)) for one direction -> shape (n, n_units)."""
        c, w, p = self.centers[direction], self.widths[direction], self.peaks[direction]
        return self.settings.baseline + p * np.exp(-0.5 * ((np.asarray(x)[:, None] - c) / w) ** 2)

    def linear_fisher_per_cm2(self, direction: int = 0, n_units: int | None = None) -> tuple[float, float]:
        """Linearised Fisher information about position (cm^-2), averaged over bin centres.

        Returns ``(shuffled, real)`` for the first ``n_units`` units: with ``a = f'^T f' / sigma^2``, the real
        value is ``a / (1 + s_d^2 a)`` (Sherman-Morrison; the ceiling is ``1 / s_d^2``) and the shuffled value
        is ``sum_i f_i'^2 / (sigma^2 + s_d^2 f_i'^2)`` (the jitter still inflates every unit's own variance).
        """
        s = self.settings
        n = s.n_units if n_units is None else n_units
        x = (np.arange(s.n_bins) + 0.5) * s.bin_width
        c, w, p = self.centers[direction, :n], self.widths[direction, :n], self.peaks[direction, :n]
        u = (x[:, None] - c) / w
        fp2 = (p * u / w * np.exp(-0.5 * u**2)) ** 2
        a = np.sum(fp2, axis=1) / s.noise_sd**2
        real = float(np.mean(a / (1.0 + s.s_d**2 * a)))
        shuffled = float(np.mean(np.sum(fp2 / (s.noise_sd**2 + s.s_d**2 * fp2), axis=1)))
        return shuffled, real


def simulate_place_cells(settings: PlaceCellSettings | None = None, **overrides: Any) -> PlaceCellData:
    """Simulate place-cell responses.

    Parameters
    ----------
    settings : PlaceCellSettings, optional
        Generator parameters (defaults if omitted).
    **overrides
        Fields of :class:`PlaceCellSettings` to replace, e.g. ``s_d=0``.

    Returns
    -------
    PlaceCellData
        ``X`` has shape (n_bins * n_directions * trials_per_bin, n_units).
    """
    s = settings or PlaceCellSettings()
    if overrides:
        try:
            s = PlaceCellSettings(**{**asdict(s), **overrides})
        except TypeError as exc:
            raise ConfigError(
                f"unknown place-cell setting in {sorted(overrides)}: {exc}; use fields of PlaceCellSettings"
            ) from exc
    rng = np.random.default_rng(s.seed)
    shape = (s.n_directions, s.n_units)
    centers = rng.uniform(0.0, s.track_length, size=shape)
    widths = rng.uniform(*s.field_width, size=shape)
    peaks = np.exp(rng.uniform(np.log(s.peak_rate[0]), np.log(s.peak_rate[1]), size=shape))

    n_per = s.trials_per_bin
    y = np.tile(np.repeat(np.arange(s.n_bins), n_per), s.n_directions)
    direction = np.repeat(np.arange(s.n_directions), s.n_bins * n_per)
    n = y.size
    offset = rng.uniform(-0.5, 0.5, size=n) * s.position_jitter * s.bin_width
    position = (y + 0.5) * s.bin_width + offset
    jitter = rng.normal(0.0, s.s_d, size=n) if s.s_d > 0 else np.zeros(n)
    encoded = position + jitter
    X = np.empty((n, s.n_units))
    for k in range(s.n_directions):
        m = direction == k
        u = (encoded[m, None] - centers[k]) / widths[k]
        X[m] = s.baseline + peaks[k] * np.exp(-0.5 * u**2)
    X += rng.normal(0.0, s.noise_sd, size=X.shape)
    log.debug("simulated %d trials x %d units (s_d=%.2f cm)", n, s.n_units, s.s_d)
    return PlaceCellData(
        X=X,
        y=y.astype(np.int64),
        position=position,
        direction=direction.astype(np.int64),
        jitter=jitter,
        centers=centers,
        widths=widths,
        peaks=peaks,
        settings=s,
    )


def save_place_cells(data: PlaceCellData, path: str | Path) -> Path:
    """Write ``data`` as an ``.npz`` readable by ``neurospeech analyze noise-limits``.

    Keys: ``X``, ``y`` (bin index), ``group`` (direction), ``position``, ``jitter``, ``bin_width`` (cm),
    ``unit`` and ``settings`` (a JSON string).
    """
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        X=data.X,
        y=data.y,
        group=data.direction,
        position=data.position,
        jitter=data.jitter,
        bin_width=np.float64(data.bin_width),
        unit=np.str_("cm"),
        settings=np.str_(json.dumps(asdict(data.settings))),
    )
    return path
