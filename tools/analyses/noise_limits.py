"""How much do correlated fluctuations limit what a set of features carries? (Hazon et al. 2022)

Decoding error versus ensemble size for real trials and for trials shuffled within class, after Hazon, Minces,
Tomas, Ganguli, Schnitzer & Jercog (2022) "Noise correlations in neural ensemble activity limit the accuracy
of hippocampal spatial representations", Nat. Commun. 13:4276.

For every ensemble size ``N`` (log-spaced up to all features) and ``R`` random feature subsets per size the
trials are split in two halves balanced by class (and nuisance group); within each half every feature's trials
are permuted independently within class (and group), which keeps each feature's tuning and variability but
destroys trial-to-trial co-fluctuations. Three settings are decoded with both train/test directions of
the split: *unshuffled* (train and test on real trials), *shuffled* (train and test shuffled) and
*diagonal* (train shuffled, test real: a decoder blind to correlations). The error is the mean squared
distance between true and decoded bin times ``bin_width**2`` (0/1 for categorical labels). The inverse MSE
is fitted with ``IMSE(N) = I0 N / (1 + N/N*)`` by bounded nonlinear least squares, separately per setting;
``I_inf = I0 N*`` is the asymptotic information, ``RMS_inf = I_inf**-0.5`` the error floor, and ``99 N*``
the size reaching 99 % of it. Intervals come from resampling the subsets (bootstrap). Information-limiting
("differential") correlations show as a finite N* for real data and a much larger one after shuffling.
A classifier's error saturates at chance for small N, where IMSE is not proportional to N; the default fit
(least squares on IMSE itself) is therefore dominated by the large ensembles that carry the asymptote, and
N* is an effective value of the decoder, not of the population code.

M/EEG note (field spread): every sensor sees a weighted mix of the same sources, so sensor-level "noise
correlations" are dominated by volume conduction and by shared background activity, not by correlations
between neural populations. Shuffling removes both, so the real/shuffled gap at sensor level measures how much
*mixing plus* shared fluctuations limit decoding, and N is a number of (highly redundant) sensors.
Whitening the features with a Ledoit-Wolf noise covariance (``whiten=True``; estimated from reference samples
such as the pre-stimulus baseline when given, else from the within-class residuals) removes the stationary
mixing first, so that what remains reflects stimulus-period fluctuations beyond the background; source parcels
or model latents are the cleaner features for this question.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator

from neurospeech.errors import ConfigError, DataFormatError

from ._noise_decode import SETTINGS, evaluate_subset, make_decoder
from ._noise_fit import ImseFit, bootstrap_fits, fit_imse, imse_model
from ._noise_geometry import noise_geometry

__all__ = [
    "Labels",
    "NoiseLimitResult",
    "NoiseLimitSettings",
    "chance_mse",
    "ensemble_sizes",
    "prepare_labels",
    "run_noise_limits",
    "validate_inputs",
    "whiten_features",
    "write_outputs",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NoiseLimitSettings:
    """Settings of the analysis.

    Attributes
    ----------
    sizes : tuple of int, optional
        Explicit ensemble sizes N; default: ``n_sizes`` log-spaced sizes from ``min_size`` to all features.
    n_sizes : int
        Number of log-spaced sizes when ``sizes`` is not given.
    min_size : int
        Smallest N of the default grid.
    n_subsets : int
        Random feature subsets R per size (each with its own split and shuffles).
    decoder : str
        ``"svm"`` (one-vs-one linear SVC), ``"lda"`` (shrinkage LDA) or ``"package.module:Class"``; a
        classifier instance can also be passed to :func:`run_noise_limits`.
    svm_c : float
        ``C`` of the linear SVM.
    group_decoding : str
        ``"separate"``: one decoder per nuisance group (e.g. running direction); ``"joint"``: one decoder
        whose classes are class x group, scored on the class only.
    both_folds : bool
        Test on both halves (train A/test B and train B/test A); else A -> B only (half the cost).
    bin_width : float
        Width of one bin in physical units (errors and information are reported in these units).
    unit : str
        Name of that unit (for reports), e.g. ``"cm"``.
    whiten : bool
        Ledoit-Wolf whitening of the features before the analysis (see the M/EEG note in the module doc).
    min_trials_per_class : int
        Smallest number of trials allowed in a class (x group) cell; at least 4 (2 per half, to shuffle).
    n_boot : int
        Bootstrap resamples for the intervals.
    ci : float
        Confidence level of the intervals.
    n_star_max_factor : float
        Upper bound of N* as a multiple of the largest N.
    fit_space : str
        ``"linear"``: least squares on IMSE (large N dominate, default); ``"log"``: on log IMSE.
    geometry : bool
        Compute the noise geometry and the bias-corrected Fisher information.
    n_jobs : int
        joblib workers over subsets.
    seed : int
        Seed of subsets, splits, shuffles and bootstrap.
    progress : bool
        Show a tqdm progress bar.
    """

    sizes: tuple[int, ...] | None = None
    n_sizes: int = 10
    min_size: int = 1
    n_subsets: int = 10
    decoder: str = "svm"
    svm_c: float = 1.0
    group_decoding: str = "separate"
    both_folds: bool = True
    bin_width: float = 1.0
    unit: str = "bins"
    whiten: bool = False
    min_trials_per_class: int = 4
    n_boot: int = 200
    ci: float = 0.95
    n_star_max_factor: float = 1000.0
    fit_space: str = "linear"
    geometry: bool = True
    n_jobs: int = 1
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        checks = [
            ("n_sizes", self.n_sizes >= 2, "an integer >= 2"),
            ("min_size", self.min_size >= 1, "an integer >= 1"),
            ("n_subsets", self.n_subsets >= 1, "an integer >= 1"),
            ("svm_c", self.svm_c > 0, "a positive number"),
            ("group_decoding", self.group_decoding in ("separate", "joint"), "'separate' or 'joint'"),
            ("bin_width", self.bin_width > 0 and math.isfinite(self.bin_width), "a positive number"),
            ("min_trials_per_class", self.min_trials_per_class >= 4, "an integer >= 4"),
            ("n_boot", self.n_boot >= 10, "an integer >= 10"),
            ("ci", 0 < self.ci < 1, "a level in (0, 1), e.g. 0.95"),
            ("n_star_max_factor", self.n_star_max_factor > 1, "a number > 1"),
            ("fit_space", self.fit_space in ("linear", "log"), "'linear' or 'log'"),
            ("n_jobs", self.n_jobs != 0, "a positive number of workers (or -1 for all cores)"),
        ]
        for key, ok, allowed in checks:
            if not ok:
                raise ConfigError(
                    f"noise-limits setting {key}={getattr(self, key)!r} is invalid; use {allowed}"
                )
        if self.sizes is not None and (len(self.sizes) < 2 or min(self.sizes) < 1):
            raise ConfigError(
                f"noise-limits setting sizes={self.sizes!r} is invalid; give at least two ensemble sizes >= 1"
            )


@dataclass(frozen=True)
class Labels:
    """Class labels ready for decoding.

    Attributes
    ----------
    cls : ndarray of int, shape (n_trials,)
        Compact class index 0 .. n_classes - 1.
    names : list of str
        Label of each class (bin centre or category).
    class_pos : ndarray, shape (n_classes,), or None
        Position of each class on the ordinal axis, in bins; None for categorical labels.
    bin_width : float
        Physical width of one bin (1 for categorical labels).
    """

    cls: NDArray[np.int64]
    names: list[str]
    class_pos: NDArray[np.float64] | None
    bin_width: float

    @property
    def ordinal(self) -> bool:
        return self.class_pos is not None


def prepare_labels(
    y: ArrayLike,
    *,
    n_bins: int | None = None,
    bin_width: float | None = None,
    lo: float | None = None,
    hi: float | None = None,
    categorical: bool = False,
    quantiles: bool = False,
) -> Labels:
    """Turn trial labels into classes.

    Parameters
    ----------
    y : array-like, shape (n_trials,)
        Continuous targets (binned when ``n_bins`` or ``bin_width`` is given), integer bin indices / ordered
        numeric levels (kept, ``bin_width`` = physical size of one index step, default 1), or strings
        (categorical).
    n_bins, bin_width : optional
        Bin continuous targets into ``n_bins`` equal bins over ``[lo, hi]`` (default: the data range), or into
        bins of ``bin_width`` starting at ``lo``.
    lo, hi : float, optional
        Range of the bins.
    categorical : bool
        Treat numeric labels as unordered categories (error = 0/1 misclassification).
    quantiles : bool
        With ``n_bins``: equal-count bins (edges at quantiles); errors are then in bins (bin width 1).

    Returns
    -------
    Labels
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataFormatError(
            f"labels y must be one value per trial (1-D), got shape {y.shape}; flatten it or give one column"
        )
    numeric = np.issubdtype(y.dtype, np.number) or y.dtype == bool
    if numeric:
        yf = y.astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(yf))
        if bad.size:
            raise DataFormatError(
                f"labels y contain {bad.size} NaN/inf values (first at trial {bad[0]}); "
                f"drop those trials before the analysis (keep = np.isfinite(y))"
            )
    if not numeric or categorical:
        if n_bins is not None or (bin_width is not None and not numeric):
            raise ConfigError(
                "n_bins/bin_width apply to numeric labels only; drop them for categorical labels"
            )
        cats, cls = np.unique(y.astype(str), return_inverse=True)
        return Labels(cls=cls.astype(np.int64), names=[str(n) for n in cats], class_pos=None, bin_width=1.0)
    if quantiles:
        if n_bins is None or n_bins < 2:
            raise ConfigError(f"quantile binning needs n_bins >= 2, got {n_bins}; give --n-bins")
        edges = np.quantile(yf, np.linspace(0, 1, n_bins + 1))
        idx = np.clip(np.searchsorted(edges[1:-1], yf, side="right"), 0, n_bins - 1)
        present, cls = np.unique(idx, return_inverse=True)
        names: list[str] = [f"{edges[k]:.4g}..{edges[k + 1]:.4g}" for k in present]
        return Labels(
            cls=cls.astype(np.int64), names=names, class_pos=present.astype(np.float64), bin_width=1.0
        )
    if n_bins is not None or (bin_width is not None and not np.allclose(yf, np.round(yf))):
        lo_ = float(np.min(yf)) if lo is None else float(lo)
        if n_bins is not None:
            if n_bins < 2:
                raise ConfigError(f"n_bins={n_bins} is invalid; give at least 2 bins")
            hi_ = float(np.max(yf)) if hi is None else float(hi)
            if not hi_ > lo_:
                raise DataFormatError(f"labels span [{lo_}, {hi_}], an empty range; give lo < hi or vary y")
            width = (hi_ - lo_) / n_bins
        else:
            width = float(bin_width)  # type: ignore[arg-type]
            if not width > 0:
                raise ConfigError(f"bin_width={bin_width} is invalid; give a positive width")
        idx = np.floor((yf - lo_) / width).astype(np.int64)
        if n_bins is not None:
            idx = np.clip(idx, 0, n_bins - 1)  # the top edge belongs to the last bin
        if idx.min() < 0 or (hi is not None and np.any(yf > hi)):
            raise DataFormatError(
                f"{np.sum((yf < lo_) | (yf > (hi if hi is not None else np.inf)))} labels "
                f"lie outside the bin range [{lo_}, {hi}]; widen lo/hi or drop those trials"
            )
        present, cls = np.unique(idx, return_inverse=True)
        bin_names: list[str] = [f"{lo_ + (k + 0.5) * width:g}" for k in present]
        return Labels(
            cls=cls.astype(np.int64), names=bin_names, class_pos=present.astype(np.float64), bin_width=width
        )
    levels, cls = np.unique(yf, return_inverse=True)
    if levels.size > 100 and not np.allclose(levels, np.round(levels)):
        raise DataFormatError(
            f"labels y look continuous ({levels.size} distinct non-integer values); "
            f"bin them: give n_bins (e.g. --n-bins 20) or bin_width"
        )
    if np.allclose(levels, np.round(levels)):
        pos = levels - levels.min()
    else:
        pos = np.arange(levels.size, dtype=np.float64)
    return Labels(
        cls=cls.astype(np.int64),
        names=[f"{v:g}" for v in levels],
        class_pos=pos.astype(np.float64),
        bin_width=1.0 if bin_width is None else float(bin_width),
    )


def validate_inputs(
    X: ArrayLike, labels: Labels, group: ArrayLike | None, min_trials: int
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Check shapes, finiteness and trial counts; return ``X`` as float64 and the group index.

    Raises
    ------
    DataFormatError
        With the offending value and the fix.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise DataFormatError(
            f"X must be a 2-D array (trials x features), got shape {X.shape}; reshape it, "
            f"e.g. X.reshape(n_trials, -1)"
        )
    if not np.issubdtype(X.dtype, np.number):
        raise DataFormatError(f"X must be numeric, got dtype {X.dtype}; convert it with X.astype(float)")
    X = X.astype(np.float64, copy=False)
    n = X.shape[0]
    if labels.cls.size != n:
        raise DataFormatError(
            f"shape mismatch: X has {n} trials (rows) but y has {labels.cls.size} labels; "
            f"give one label per row of X (transpose X if its rows are features)"
        )
    if X.shape[1] < 2:
        raise DataFormatError(f"X has {X.shape[1]} feature(s); the analysis needs at least 2 columns")
    bad = ~np.isfinite(X)
    if bad.any():
        t, f = np.argwhere(bad)[0]
        raise DataFormatError(
            f"X contains {int(bad.sum())} NaN/inf values (first at trial {t}, feature {f}; "
            f"{int(bad.any(axis=1).sum())} trials affected); drop those trials "
            f"(X[np.isfinite(X).all(axis=1)]) or features, or impute them"
        )
    if group is None:
        g = np.zeros(n, dtype=np.int64)
    else:
        ga = np.asarray(group)
        if ga.ndim != 1 or ga.size != n:
            raise DataFormatError(
                f"shape mismatch: group has shape {ga.shape} but X has {n} trials; give one "
                f"group value per trial or none"
            )
        if np.issubdtype(ga.dtype, np.floating) and not np.isfinite(ga).all():
            raise DataFormatError("group contains NaN; drop those trials or give every trial a group")
        _, g = np.unique(ga.astype(str), return_inverse=True)
        g = g.astype(np.int64)
    n_cls = int(labels.cls.max()) + 1
    if n_cls < 2:
        raise DataFormatError(
            f"y has a single class ({labels.names[0]!r}); decoding needs at least 2 classes"
        )
    counts = np.zeros((int(g.max()) + 1, n_cls), dtype=np.int64)
    np.add.at(counts, (g, labels.cls), 1)
    low = np.argwhere((counts > 0) & (counts < min_trials))
    if low.size:
        gi, ci = low[0]
        where = f"class {labels.names[ci]!r}" + (f" in group {gi}" if group is not None else "")
        raise DataFormatError(
            f"too few trials per class: {where} has {counts[gi, ci]} trials "
            f"({len(low)} cells below {min_trials}); need >= {min_trials} (2 per half to "
            f"shuffle): merge bins (fewer --n-bins), drop rare classes, or record more trials"
        )
    return X, g


def whiten_features(
    X: NDArray[np.float64], cells: NDArray[np.int64], X_ref: NDArray[np.float64] | None = None
) -> NDArray[np.float64]:
    """Whiten features with a Ledoit-Wolf noise covariance.

    Parameters
    ----------
    X : ndarray, shape (n_trials, n_features)
    cells : ndarray of int, shape (n_trials,)
        Class x group cell of each trial (residuals around cell means define the noise when no reference).
    X_ref : ndarray, shape (n_samples, n_features), optional
        Reference noise samples (e.g. pre-stimulus baseline); preferred, since it does not use the labels.

    Returns
    -------
    ndarray, shape (n_trials, n_features)
        ``X @ C^-1/2`` (symmetric inverse square root).
    """
    from sklearn.covariance import LedoitWolf

    if X_ref is None:
        ref = X.copy()
        for c in np.unique(cells):
            ref[cells == c] -= ref[cells == c].mean(axis=0)
    else:
        ref = np.asarray(X_ref, dtype=np.float64)
        if ref.ndim != 2 or ref.shape[1] != X.shape[1]:
            raise DataFormatError(
                f"whitening reference has shape {ref.shape} but X has {X.shape[1]} features; "
                f"give reference samples x the same features"
            )
    cov = LedoitWolf().fit(ref).covariance_
    w, v = np.linalg.eigh(cov)
    w = np.maximum(w, w.max() * 1e-12)
    return X @ (v / np.sqrt(w)) @ v.T


def ensemble_sizes(n_features: int, settings: NoiseLimitSettings) -> NDArray[np.int64]:
    """The grid of ensemble sizes N (sorted, unique, at most ``n_features``)."""
    if settings.sizes is not None:
        sizes = np.unique(np.asarray(settings.sizes, dtype=np.int64))
        if sizes.max() > n_features:
            raise ConfigError(
                f"ensemble size {int(sizes.max())} exceeds the {n_features} features of X; "
                f"give sizes <= {n_features}"
            )
        return sizes
    lo = min(settings.min_size, n_features)
    grid = np.unique(np.round(np.geomspace(lo, n_features, settings.n_sizes)).astype(np.int64))
    return grid


@dataclass
class NoiseLimitResult:
    """Everything the analysis measured.

    Attributes
    ----------
    sizes : ndarray of int, shape (k,)
    mse : dict of ndarray, shape (k, R)
        Per-subset mean squared error (unit^2) of each setting.
    fits : dict of ImseFit
        Point fits of each setting.
    boot : dict of list of ImseFit
        Bootstrap fits.
    mse_floor : float
        Smallest mean MSE used in the fits (one off-by-one error among all test trials).
    geometry : dict or None
    info : dict
        Data description, runtime, warnings.
    settings : NoiseLimitSettings
    """

    sizes: NDArray[np.int64]
    mse: dict[str, NDArray[np.float64]]
    fits: dict[str, ImseFit]
    boot: dict[str, list[ImseFit]]
    mse_floor: float
    geometry: dict[str, Any] | None
    info: dict[str, Any]
    settings: NoiseLimitSettings
    boot_rms: dict[str, NDArray[np.float64]] = field(default_factory=dict)

    def rms(self, setting: str) -> NDArray[np.float64]:
        """RMS error per size, sqrt of the mean MSE over subsets, shape (k,)."""
        return np.sqrt(self.mse[setting].mean(axis=1))

    def rms_at(self, setting: str, n: int) -> float:
        """RMS error at ensemble size ``n`` (must be on the grid)."""
        hit = np.flatnonzero(self.sizes == n)
        if not hit.size:
            raise ConfigError(f"N={n} is not on the grid {self.sizes.tolist()}; pick one of those")
        return float(self.rms(setting)[hit[0]])

    def rms_ci(self, setting: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Bootstrap interval of the RMS error per size (over subsets), each shape (k,)."""
        a = (1 - self.settings.ci) / 2
        b = self.boot_rms[setting]
        return np.quantile(b, a, axis=0), np.quantile(b, 1 - a, axis=0)

    def fit_ci(self, setting: str, key: str) -> tuple[float, float]:
        """Bootstrap interval of a fitted quantity (``I0``, ``N_star``, ``I_inf``, ``RMS_inf``, ``N99``)."""
        vals = np.array([f.as_dict()[key] for f in self.boot[setting]], dtype=np.float64)
        a = (1 - self.settings.ci) / 2
        return float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a))

    def n_star_ratio(self, num: str = "shuffled", den: str = "unshuffled") -> tuple[float, float, float]:
        """N* of ``num`` over N* of ``den``: point value and paired bootstrap interval."""
        point = self.fits[num].n_star / self.fits[den].n_star
        r = np.array([a.n_star / b.n_star for a, b in zip(self.boot[num], self.boot[den], strict=True)])
        a = (1 - self.settings.ci) / 2
        return float(point), float(np.quantile(r, a)), float(np.quantile(r, 1 - a))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (per-subset errors included)."""
        curves = {}
        for name in self.mse:
            lo, hi = self.rms_ci(name)
            curves[name] = {
                "rms": self.rms(name).tolist(),
                "rms_ci_low": lo.tolist(),
                "rms_ci_high": hi.tolist(),
                "mse_mean": self.mse[name].mean(axis=1).tolist(),
                "mse_per_subset": self.mse[name].tolist(),
            }
        fits = {}
        n_max = int(self.sizes.max())
        for name, f in self.fits.items():
            d = f.as_dict()
            d["ci"] = {k: list(self.fit_ci(name, k)) for k in ("I0", "N_star", "I_inf", "RMS_inf", "N99")}
            d["extrapolated"] = bool(f.n_star > n_max)
            d["at_bound_fraction"] = float(np.mean([b.at_bound for b in self.boot[name]]))
            fits[name] = d
        ratio = self.n_star_ratio()
        return {
            "analysis": "noise-limits (Hazon et al. 2022, Nat. Commun. 13:4276)",
            "settings": asdict(self.settings),
            "info": self.info,
            "sizes": self.sizes.tolist(),
            "unit": self.settings.unit,
            "bin_width": self.settings.bin_width,
            "mse_floor": self.mse_floor,
            "curves": curves,
            "fits": fits,
            "n_star_ratio_shuffled_over_real": {"value": ratio[0], "ci": [ratio[1], ratio[2]]},
            "geometry": self.geometry,
        }

    def summary(self) -> str:
        """A short text summary."""
        return _summary_text(self)


def run_noise_limits(
    X: ArrayLike,
    y: ArrayLike | Labels,
    group: ArrayLike | None = None,
    settings: NoiseLimitSettings | None = None,
    *,
    decoder: BaseEstimator | None = None,
    X_ref: ArrayLike | None = None,
) -> NoiseLimitResult:
    """Decoding error vs ensemble size for real, shuffled and diagonal decoders, with IMSE fits.

    Parameters
    ----------
    X : array-like, shape (n_trials, n_features)
        Sensors, source parcels, model latents or neurons.
    y : array-like, shape (n_trials,), or Labels
        Class labels; integer bins (with ``settings.bin_width`` as the physical width), strings (categorical)
        or a :class:`Labels` from :func:`prepare_labels` (continuous targets binned).
    group : array-like, shape (n_trials,), optional
        Nuisance group (e.g. running direction): splits and shuffles stay within class x group.
    settings : NoiseLimitSettings, optional
    decoder : estimator, optional
        Any scikit-learn classifier (overrides ``settings.decoder``).
    X_ref : array-like, shape (n_samples, n_features), optional
        Reference noise samples for whitening (used when ``settings.whiten``).

    Returns
    -------
    NoiseLimitResult
    """
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    s = settings or NoiseLimitSettings()
    t0 = time.perf_counter()
    if isinstance(y, Labels):  # binned by the caller: its bin width wins
        labels = y
        if labels.ordinal and labels.bin_width != s.bin_width:
            s = replace(s, bin_width=labels.bin_width)
    else:  # class labels as given; settings.bin_width = physical size of one step
        labels = prepare_labels(y)
        if labels.ordinal:
            labels = replace(labels, bin_width=s.bin_width)
    X, g = validate_inputs(X, labels, group, s.min_trials_per_class)
    cls = labels.cls
    n_cls = int(cls.max()) + 1
    cells = g * n_cls + cls
    warnings: list[str] = []
    if s.whiten:
        X = whiten_features(X, cells, None if X_ref is None else np.asarray(X_ref, dtype=np.float64))
    sizes = ensemble_sizes(X.shape[1], s)
    estimator = make_decoder(decoder if decoder is not None else s.decoder, s.svm_c)
    separate = s.group_decoding == "separate" and group is not None
    root = np.random.SeedSequence(s.seed)
    sub_seq, task_seq, boot_seq, geo_seq = root.spawn(4)
    sub_rng = np.random.default_rng(sub_seq)
    tasks = []
    for i, n in enumerate(sizes):
        for r in range(s.n_subsets):
            feats = np.sort(sub_rng.choice(X.shape[1], size=int(n), replace=False))
            tasks.append((i, r, feats))
    seeds = task_seq.spawn(len(tasks))
    log.info(
        "noise limits: %d trials x %d features, %d classes, %d groups; %d sizes x %d subsets, decoder %s",
        X.shape[0],
        X.shape[1],
        n_cls,
        int(g.max()) + 1,
        sizes.size,
        s.n_subsets,
        type(estimator[-1]).__name__,
    )
    jobs = (
        delayed(evaluate_subset)(
            X,
            cls,
            g,
            feats,
            estimator,
            seed,
            class_pos=labels.class_pos,
            separate_groups=separate,
            both_folds=s.both_folds,
        )
        for (_, _, feats), seed in zip(tasks, seeds, strict=True)
    )
    mse = {name: np.zeros((sizes.size, s.n_subsets)) for name in SETTINGS}
    par = Parallel(n_jobs=s.n_jobs, return_as="generator")
    bar = tqdm(
        par(jobs), total=len(tasks), desc="noise-limits subsets", disable=not s.progress, unit="subset"
    )
    for (i, r, _), out in zip(tasks, bar, strict=True):
        for name in SETTINGS:
            mse[name][i, r] = out[name] * s.bin_width**2
    t_decode = time.perf_counter() - t0
    n_tested = X.shape[0] if s.both_folds else int(np.ceil(X.shape[0] / 2))
    floor = s.bin_width**2 / (n_tested * s.n_subsets)
    n_star_max = s.n_star_max_factor * float(sizes.max())
    fits = {}
    for name in SETTINGS:
        means = mse[name].mean(axis=1)
        if np.any(means < floor):
            warnings.append(
                f"{name}: no error at N={sizes[means < floor].tolist()}; IMSE floored at one "
                f"off-by-one error in all test trials"
            )
        fits[name] = fit_imse(
            sizes.astype(np.float64), 1.0 / np.maximum(means, floor), n_star_max, s.fit_space
        )
    boot_rng = np.random.default_rng(boot_seq)
    boot = bootstrap_fits(
        sizes.astype(np.float64), mse, floor, n_star_max, s.n_boot, boot_rng, s.fit_space, fits
    )
    # RMS per size over resampled subsets (same resampling for every setting: paired intervals)
    idx = boot_rng.integers(0, s.n_subsets, size=(s.n_boot, sizes.size, s.n_subsets))
    boot_rms = {
        name: np.sqrt(np.take_along_axis(mse[name][None], idx, axis=2).mean(axis=2)) for name in SETTINGS
    }
    for name, f in fits.items():
        if f.n_star > sizes.max():
            warnings.append(
                f"{name}: N*={f.n_star:.3g} exceeds the largest N={int(sizes.max())}; the asymptote "
                f"is extrapolated" + (" (N* at its upper bound: no saturation seen)" if f.at_bound else "")
            )
    geometry = None
    if s.geometry:
        from threadpoolctl import threadpool_limits

        t_geo = time.perf_counter()
        with threadpool_limits(limits=1):
            geometry = noise_geometry(
                X, cls, g, sizes, s.bin_width, np.random.default_rng(geo_seq), class_pos=labels.class_pos
            )
        log.debug("noise geometry took %.1f s", time.perf_counter() - t_geo)
    counts = np.bincount(cells)
    chance = chance_mse(cls, labels.class_pos) * s.bin_width**2
    rms_last = float(np.sqrt(mse["unshuffled"][-1].mean()))
    at_chance = bool(rms_last > 0.9 * np.sqrt(chance))
    if at_chance:
        warnings.append(
            f"decoding is near chance level (real RMS error {rms_last:.3g} at N={int(sizes[-1])} vs "
            f"{np.sqrt(chance):.3g} {s.unit} for guessing): the fits and N* say nothing; use more trials, "
            f"another label or time window"
        )
    for name, f in fits.items():
        if f.at_lower_bound:
            warnings.append(f"{name}: N* at its lower bound: the error does not fall with N")
    info = {
        "n_trials": int(X.shape[0]),
        "n_features": int(X.shape[1]),
        "n_classes": n_cls,
        "class_names": labels.names,
        "ordinal": labels.ordinal,
        "chance_mse": chance,
        "at_chance": at_chance,
        "n_groups": int(g.max()) + 1,
        "group_given": group is not None,
        "min_trials_per_cell": int(counts[counts > 0].min()),
        "decoder": repr(estimator[-1]),
        "separate_group_decoders": separate,
        "whitened": s.whiten,
        "whitening_reference": X_ref is not None,
        "runtime_s": time.perf_counter() - t0,
        "decode_runtime_s": t_decode,
        "warnings": warnings,
    }
    for w in warnings:
        log.warning(w)
    return NoiseLimitResult(
        sizes=sizes,
        mse=mse,
        fits=fits,
        boot=boot,
        mse_floor=floor,
        geometry=geometry,
        info=info,
        settings=s,
        boot_rms=boot_rms,
    )


def chance_mse(cls: NDArray[np.int64], class_pos: NDArray[np.float64] | None) -> float:
    """MSE (in bins^2) of guessing classes at random with their observed frequencies.

    Parameters
    ----------
    cls : ndarray of int, shape (n_trials,)
    class_pos : ndarray, shape (n_classes,), or None
        Bin positions (ordinal); None for categorical labels (0/1 error).
    """
    p = np.bincount(cls) / cls.size
    if class_pos is None:
        return float(1.0 - np.sum(p**2))
    d2 = (class_pos[:, None] - class_pos[None, :]) ** 2
    return float(p @ d2 @ p)


def _fmt_ci(lo: float, hi: float) -> str:
    return f"[{lo:.3g}, {hi:.3g}]"


def _summary_text(res: NoiseLimitResult) -> str:
    s, info, u = res.settings, res.info, res.settings.unit
    n_max = int(res.sizes.max())
    lines = [
        f"Noise limits ({info['decoder']}): {info['n_trials']} trials x {info['n_features']} features, "
        f"{info['n_classes']} {'ordinal bins' if info['ordinal'] else 'categories'}"
        + (f" (bin width {s.bin_width:g} {u})" if info["ordinal"] else "")
        + f", {info['n_groups']} group(s); N = {res.sizes.min()}..{n_max} ({res.sizes.size} sizes x "
        f"{s.n_subsets} subsets); runtime {info['runtime_s']:.1f} s.",
        f"RMS error at N={n_max}: "
        + "; ".join(
            f"{name} {res.rms(name)[-1]:.3g} {u} {_fmt_ci(*(c[-1] for c in res.rms_ci(name)))}"
            for name in SETTINGS
        ),
        f"Fit IMSE(N) = I0 N / (1 + N/N*), {int(s.ci * 100)}% bootstrap intervals:",
    ]
    for name in SETTINGS:
        f = res.fits[name]
        note = ""
        if f.n_star > n_max:
            note = "  [N* > largest N: asymptote extrapolated" + (", N* at bound" if f.at_bound else "") + "]"
        lines.append(
            f"  {name:<11} I0={f.i0:.3g} {_fmt_ci(*res.fit_ci(name, 'I0'))} /{u}^2, "
            f"N*={f.n_star:.3g} {_fmt_ci(*res.fit_ci(name, 'N_star'))}, "
            f"RMS_inf={f.rms_inf:.3g} {_fmt_ci(*res.fit_ci(name, 'RMS_inf'))} {u}, "
            f"99% of I_inf at N={f.n99:.3g}{note}"
        )
    ratio = res.n_star_ratio()
    lines.append(f"N* shuffled / real = {ratio[0]:.3g} {_fmt_ci(ratio[1], ratio[2])}.")
    geo = res.geometry
    if geo:
        sv = geo["signal_noise_variance"]
        lines.append(
            f"Noise geometry: RMS noise correlation {geo['rms_noise_correlation']['real']:.3f} (shuffled "
            f"{geo['rms_noise_correlation']['shuffled']:.3f}); noise variance along the signal direction "
            f"{sv['real'][0]:.3g} -> {sv['real'][-1]:.3g} from N={geo['sizes'][0]} to {geo['sizes'][-1]} "
            f"(shuffled {sv['shuffled'][0]:.3g} -> {sv['shuffled'][-1]:.3g}; independent noise = 1); "
            f"top noise eigenvector |cos| with the signal {geo['top_eig_cosine']['real'][0]:.2f} (shuffled "
            f"{geo['top_eig_cosine']['shuffled'][0]:.2f}, chance {geo['chance_cosine']:.2f})."
        )
    real, shuf = res.fits["unshuffled"], res.fits["shuffled"]
    if info.get("at_chance"):
        verdict = "Decoding is at chance level: no conclusion about noise correlations is possible."
    elif ratio[1] > 1.0 and real.n_star <= n_max:
        verdict = (
            f"Correlations limit decoding: real error saturates near {real.rms_inf:.3g} {u} "
            f"(N* = {real.n_star:.3g}); without them the ensemble would keep improving."
        )
    elif ratio[1] > 1.0:
        verdict = (
            "Correlations reduce information, but the real asymptote lies beyond the data (extrapolated)."
        )
    else:
        verdict = "No evidence that noise correlations limit decoding (shuffled and real N* not separated)."
    lines.append(verdict)
    if shuf.at_bound:
        lines.append("Shuffled N* at its upper bound: no saturation without correlations within the data.")
    lines.extend(f"Warning: {w}" for w in info["warnings"])
    return "\n".join(lines)


def write_outputs(
    result: NoiseLimitResult, outdir: str | Path, stem: str = "noise_limits"
) -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.png`` and ``<stem>.txt`` into ``outdir``.

    Returns
    -------
    dict
        ``{"json": path, "png": path, "txt": path}``.
    """
    from ._noise_plot import plot_result

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {"json": outdir / f"{stem}.json", "png": outdir / f"{stem}.png", "txt": outdir / f"{stem}.txt"}
    paths["json"].write_text(
        json.dumps(_finite(result.to_dict()), indent=1, default=_json_default, allow_nan=False)
    )
    plot_result(result, paths["png"])
    paths["txt"].write_text(result.summary() + "\n")
    return paths


def _finite(o: Any) -> Any:
    """Replace NaN/inf by None (strict JSON)."""
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_finite(v) for v in o]
    if isinstance(o, float | np.floating):
        return float(o) if math.isfinite(o) else None
    return o


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def model_curve(fit: ImseFit, n: NDArray[np.float64]) -> NDArray[np.float64]:
    """RMS error of a fit at sizes ``n``: IMSE(n)^-1/2."""
    return imse_model(n, fit.i0, fit.n_star) ** -0.5
