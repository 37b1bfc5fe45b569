"""The window quality gate: is a window fit for the model, and what to do with its bad channels.

:func:`assess_window` checks one model-rate window (non-finite input, flat, saturated/stuck, huge artefact per
channel), scales it with the subject's :class:`~neurospeech.preprocessing.RobustScaler` exactly as
:func:`neurospeech.preprocessing.preprocess_window` does, and applies the bad-channel policy of
:class:`QualitySettings` (``skip`` the window, or ``interpolate`` its bad channels from good channels of the
same type, :class:`~neurospeech.service.interpolation.ChannelInterpolator`; a bad channel that cannot be
rebuilt is set to 0 and flagged ``zeroed:``, not ``interpolated:``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..preprocessing import RobustScaler, WindowSpec, preprocess_window, window_scaling
from .interpolation import ChannelInterpolator

__all__ = ["QualitySettings", "assess_window"]


@dataclass(frozen=True)
class QualitySettings:
    """Window quality thresholds and policy (see :class:`neurospeech.service.config.ServeSettings`)."""

    policy: str = "skip"
    flat_rel: float = 1e-3
    artefact_threshold: float = 100.0
    saturation_fraction: float = 0.2
    max_bad_fraction: float = 0.25
    n_neighbours: int = 4

    @classmethod
    def from_settings(cls, s: Any) -> QualitySettings:
        return cls(
            s.bad_channel_policy,
            s.flat_rel,
            s.artefact_threshold,
            s.saturation_fraction,
            s.max_bad_fraction,
            s.n_neighbours,
        )


def assess_window(
    raw_window: NDArray[np.floating[Any]],
    window: WindowSpec,
    scaler: RobustScaler,
    clamp: float,
    quality: QualitySettings,
    names: list[str],
    interpolator: ChannelInterpolator | None = None,
    bad_input: NDArray[np.bool_] | None = None,
    stuck_fraction: NDArray[np.float64] | None = None,
    out: NDArray[np.float32] | None = None,
) -> tuple[NDArray[np.float32] | None, list[str], dict[str, list[str]]]:
    """Check and prepare one window for the model.

    Parameters
    ----------
    raw_window : array, shape (n_channels, n_window)
        Model-rate data (not baselined), model channel order.
    window, scaler, clamp
        As in :func:`neurospeech.preprocessing.preprocess_window`.
    quality : QualitySettings
    names : list of str
        Channel names (for flags).
    interpolator : ChannelInterpolator or None
        Rebuilds bad channels from good channels of the same type (None: bad channels set to 0, the scaled
        median, and flagged ``zeroed:``).
    bad_input : array of bool, shape (n_channels,), or None
        Channels whose samples were computed from non-finite input.
    stuck_fraction : array, shape (n_channels,), or None
        Fraction of the window's samples whose raw sample repeated its predecessor exactly (clipping).
    out : array, shape (n_channels, n_times) float32, or None
        Where to write the model input (e.g. a row of the encoder's batch).

    Returns
    -------
    x : array, shape (n_channels, n_times) float32, or None
        What the model sees (None: the window must be skipped).
    flags : list of str
        ``nonfinite:<ch,..>``, ``flat:..``, ``saturated:..``, ``artefact:..``, ``interpolated:..`` (rebuilt
        from same-type channels), ``zeroed:..`` (could not be rebuilt: no position or no good channel of its
        type; set to 0), ``skipped``.
    bad : dict
        Channel name -> reasons, for the channels found bad.
    """
    w = np.asarray(raw_window, dtype=np.float32)
    n_ch = w.shape[0]
    lag = window.n_lag

    def extremes(w: NDArray[np.float32]) -> tuple[Any, Any, Any, Any]:
        # of the model part (what the model sees) and of the whole window (the flat check), in 2 passes
        hi_m, lo_m = w[:, lag:].max(axis=1), w[:, lag:].min(axis=1)
        if lag:
            return hi_m, lo_m, np.maximum(hi_m, w[:, :lag].max(axis=1)), np.minimum(lo_m, w[:, :lag].min(axis=1))
        return hi_m, lo_m, hi_m, lo_m

    hi_m, lo_m, hi, lo = extremes(w)
    # max/min are NaN (or +-inf) for a row holding any non-finite value: no extra pass over the window
    nonfinite: NDArray[np.bool_] = ~(np.isfinite(hi) & np.isfinite(lo))
    if bad_input is not None:
        nonfinite |= bad_input
    if nonfinite.any():
        w = np.where(nonfinite[:, None] | ~np.isfinite(w), 0.0, w).astype(np.float32)
        hi_m, lo_m, hi, lo = extremes(w)
    ptp = hi.astype(np.float64) - lo
    flat = (ptp <= quality.flat_rel * scaler.scale) & ~nonfinite
    if stuck_fraction is None:
        saturated = np.zeros(n_ch, dtype=bool)
    else:
        saturated = (stuck_fraction >= quality.saturation_fraction) & ~flat & ~nonfinite
    # the largest |scaled value| before the clamp, from the raw extremes: scaling is monotonic per channel and
    # done in the same float32 steps as preprocess_window, so this equals max |x| of the unclamped window
    off, gain = window_scaling(w, window, scaler.center, scaler.scale)
    peak = np.maximum(np.abs((hi_m[:, None] - off) * gain), np.abs((lo_m[:, None] - off) * gain))[:, 0]
    artefact = (peak > quality.artefact_threshold) & ~nonfinite & ~flat
    # the clamp is a no-op (and its pass over the window skipped) when no scaled extreme exceeds it (NaN: clamp)
    needs_clamp = not bool(peak.max() <= clamp)
    x = preprocess_window(
        w, window, scaler.center, scaler.scale, clamp=clamp if needs_clamp else np.inf, out=out, scaling=(off, gain)
    )
    bad_mask = nonfinite | flat | saturated | artefact
    if not bad_mask.any():
        return x, [], {}
    flags: list[str] = []
    bad: dict[str, list[str]] = {}
    for reason, mask in (
        ("nonfinite", nonfinite),
        ("flat", flat),
        ("saturated", saturated),
        ("artefact", artefact),
    ):
        idx = np.flatnonzero(mask)
        if idx.size:
            flags.append(
                f"{reason}:" + ",".join(names[i] for i in idx[:20]) + ("..." if idx.size > 20 else "")
            )
            for i in idx:
                bad.setdefault(names[i], []).append(reason)
    n_bad = int(bad_mask.sum())
    if quality.policy == "skip" or n_bad > quality.max_bad_fraction * n_ch:
        flags.append("skipped")
        return None, flags, bad
    if interpolator is None:
        rows: NDArray[np.intp] = np.zeros(0, dtype=np.intp)
        zeroed = np.flatnonzero(bad_mask)
        x[zeroed] = 0.0
    else:
        op = interpolator.operator(bad_mask)
        op.apply(x)
        rows, zeroed = op.rows, op.zeroed
    for reason, idx in (("interpolated", rows), ("zeroed", zeroed)):
        if len(idx):
            flags.append(f"{reason}:" + ",".join(names[i] for i in idx[:20]) + ("..." if len(idx) > 20 else ""))
    return x, flags, bad
