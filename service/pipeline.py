"""Online preprocessing: stream chunks -> model-rate ring -> quality-checked, scaled windows.

The continuous part is :class:`neurospeech.preprocessing.StreamPreprocessor` (the same object the offline
trainer path feeds whole recordings through), the window part
:func:`neurospeech.preprocessing.preprocess_window` with the subject's
:class:`~neurospeech.preprocessing.RobustScaler` from the model contract. What this module adds is what a live
stream needs:

- the contract check on connect (:func:`check_stream`): reorder by name, unit conversion, rate, types;
- a clock model (:class:`ClockModel`): an exponentially-forgetting linear fit of the LSL stamps against the
  sample count, which dejitters, follows rate drift and detects clock jumps / dropped data;
- continuous *segments*: a jump, a gap or a reconnection resets the filters and starts a new segment, and no
  window straddling two segments is ever decoded;
- bad-sample bookkeeping (non-finite input marks the model-rate samples it touches) and per-window quality
  checks (non-finite, flat, saturated, huge artefact) with a skip / interpolate policy.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..contract import ChannelMap, ModelContract, match_channels
from ..errors import ConfigError, ContractMismatchError, DataFormatError
from ..preprocessing import RobustScaler, StreamPreprocessor, WindowSpec, preprocess_window, window_scaling
from .ringbuffer import RingBuffer, RingSpan

__all__ = [
    "ClockModel",
    "OnlinePipeline",
    "QualitySettings",
    "WindowCut",
    "WindowJob",
    "assess_window",
    "check_stream",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- contract
def check_stream(
    contract: ModelContract,
    names: list[str],
    sfreq: float,
    units: list[str] | None = None,
    types: list[str] | None = None,
    channel_format: str = "float32",
    strict_rate: bool = False,
    unit_override: str | None = None,
) -> ChannelMap:
    """Check a stream against the model contract and return how to map its channels.

    Parameters
    ----------
    contract : ModelContract
    names, units, types : list of str
        Channel labels, units and types in stream order (units/types may hold empty strings: unknown). Units
        are names (``uV``, ``fT``) or mne-lsl's power-of-ten exponents (``-6``); ``units=None`` means the
        data are SI (a file read by MNE). A stream that declares no unit is assumed SI with a warning.
    sfreq : float
        Nominal rate of the stream (0: irregular).
    channel_format : str
        LSL channel format (``float32``, ``double64``, ``int16`` ...; ``string`` is refused).
    strict_rate : bool
        Require ``sfreq == contract.sfreq_raw``.
    unit_override : str or None
        Units to use instead of the stream's (``--units``): ``'uV'`` or ``'mag=fT,grad=fT/cm'``.

    Raises
    ------
    ContractMismatchError
        Saying what differs and how to fix it.
    """
    if channel_format == "string":
        raise ContractMismatchError(
            "the stream carries strings (a marker stream?); connect to the numeric M/EEG data stream "
            "(check --stream-name / --stream-type)"
        )
    model_rate = contract.window.sfreq
    if not (sfreq > 0 and math.isfinite(sfreq)):
        raise ContractMismatchError(
            f"the stream has an irregular sampling rate ({sfreq!r}); the model needs a regular stream of at "
            f"least {model_rate:g} Hz (trained at {contract.sfreq_raw:g} Hz)"
        )
    if sfreq < model_rate:
        raise ContractMismatchError(
            f"stream rate {sfreq:g} Hz is below the model rate {model_rate:g} Hz (trained at "
            f"{contract.sfreq_raw:g} Hz); stream at {contract.sfreq_raw:g} Hz"
        )
    if strict_rate and abs(sfreq - contract.sfreq_raw) > 1e-6 * contract.sfreq_raw:
        raise ContractMismatchError(
            f"stream rate {sfreq:g} Hz differs from the model's training rate {contract.sfreq_raw:g} Hz "
            "(strict_rate is on); stream at the training rate or set strict_rate = false"
        )
    try:
        StreamPreprocessor(sfreq, 1, contract.window, contract.preprocessing)
    except ConfigError as exc:
        raise ContractMismatchError(
            f"stream rate {sfreq:g} Hz cannot be resampled to {model_rate:g} Hz ({exc}); "
            f"stream at {contract.sfreq_raw:g} Hz"
        ) from exc
    cmap = match_channels(contract, list(names), units=units, types=types, unit_override=unit_override)
    if cmap.assumed_units:
        log.warning(
            "UNITS UNKNOWN: the stream declares no unit for %d of the model's %d channels (first: %s); assuming "
            "the model's SI units (%s). If the amplifier sends uV, fT ... every window is scaled wrongly: give "
            "the unit with --units (e.g. --units uV, or --units mag=fT,grad=fT/cm) or fix the outlet's metadata",
            len(cmap.assumed_units), len(contract.channels), cmap.assumed_units[:5],
            ", ".join(sorted({c.unit for c in contract.channels})),
        )
    if cmap.overridden_units:
        declared = sorted({u for u in (units or []) if u})
        log.warning(
            "units of %d channels set by the override %r%s", len(cmap.overridden_units), unit_override,
            f" instead of the stream's {declared[:5]}" if declared else "",
        )
    return cmap


# --------------------------------------------------------------------------------------------- clock
class ClockModel:
    """Linear model ``t(j) = t_ref + j / nominal + a + b * j`` of the stamps of raw sample ``j``.

    Fitted by weighted least squares over chunk means with exponential forgetting (half-time in samples).
    Before the data spans ``min_span`` samples the slope correction ``b`` stays 0 (nominal rate).
    """

    def __init__(self, nominal: float, halftime_samples: float, min_span: float | None = None) -> None:
        self.nominal = float(nominal)
        self.halftime = float(halftime_samples)
        self.min_span = float(min_span if min_span is not None else 2.0 * nominal)
        self.max_slope = 0.05 / self.nominal  # +-5 % of the period
        self.reset()

    def reset(self) -> None:
        self.t_ref: float | None = None
        self.a = 0.0
        self.b = 0.0
        self.fitted = False  # the slope has been estimated from enough data
        self._s = np.zeros(5)  # w, j, r, jj, jr

    def predict(self, j: float | NDArray[np.float64]) -> Any:
        if self.t_ref is None:
            raise RuntimeError("clock model has no data yet")
        return self.t_ref + (j / self.nominal + self.a) + self.b * j

    def residual(self, j: float, t: float) -> float:
        """Observed minus predicted stamp (0 before any data)."""
        if self.t_ref is None:
            return 0.0
        return float(t - self.predict(j))

    def update(self, j: float, t: float, n: int) -> None:
        """Add the point (mean sample index ``j``, mean stamp ``t``) of a chunk of ``n`` samples."""
        if self.t_ref is None:
            self.t_ref = float(t - j / self.nominal)
        r = t - self.t_ref - j / self.nominal
        self._s *= 0.5 ** (n / self.halftime)
        self._s += (1.0, j, r, j * j, j * r)
        w, sj, sr, sjj, sjr = self._s
        mj, mr = sj / w, sr / w
        var = sjj / w - mj * mj
        if var > self.min_span**2 / 12 and w > 2.5:
            b = (sjr / w - mj * mr) / var
            self.b = float(np.clip(b, -self.max_slope, self.max_slope))
            self.fitted = True
        else:
            self.b = 0.0
        self.a = float(mr - self.b * mj)

    @property
    def rate_ratio(self) -> float:
        """Estimated true rate / nominal rate."""
        return float(1.0 / (1.0 + self.b * self.nominal))


# --------------------------------------------------------------------------------------------- quality
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
    positions: NDArray[np.float64] | None = None,
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
    positions : array, shape (n_channels, 2), or None
        2-D layout positions for interpolation (None: bad channels set to 0, the scaled median).
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
        ``nonfinite:<ch,..>``, ``flat:..``, ``saturated:..``, ``artefact:..``, ``interpolated:..``,
        ``skipped``.
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
    good = np.flatnonzero(~bad_mask)
    for i in np.flatnonzero(bad_mask):
        if positions is not None and np.all(np.isfinite(positions)):
            d = np.linalg.norm(positions[good] - positions[i], axis=1)
            nb = good[np.argsort(d, kind="stable")[: quality.n_neighbours]]
            x[i] = x[nb].mean(axis=0)
        else:
            x[i] = 0.0
    flags.append("interpolated:" + ",".join(names[i] for i in np.flatnonzero(bad_mask)[:20]))
    return x, flags, bad


# --------------------------------------------------------------------------------------------- jobs
@dataclass
class WindowJob:
    """One window ready for the encoder (or flagged and skipped).

    Attributes
    ----------
    kind : str
        ``sliding`` or ``word``.
    x : array, shape (n_channels, n_times) float32, or None
        Model input (None: not decodable, see ``flags``).
    flags : list of str
    t_window_start, t_window_end : float
        LSL times of the first and last model-rate sample of the window (including the baseline part).
    t_newest_sample : float
        LSL stamp of the newest raw sample consumed when the window became complete.
    truth : dict or None
        ``{"segment_id", "word", ...}`` from a word marker.
    start : int
        Global ring index of the window's first sample.
    t_created : float
        ``time.perf_counter()`` when the window was cut (processing time starts here).
    """

    kind: str
    x: NDArray[np.float32] | None
    flags: list[str]
    t_window_start: float
    t_window_end: float
    t_newest_sample: float
    truth: dict[str, Any] | None = None
    start: int = 0
    t_created: float = field(default_factory=time.perf_counter)


@dataclass
class WindowCut:
    """A window copied out of the ring, not yet checked or scaled (see :meth:`OnlinePipeline.cut`)."""

    kind: str
    span: RingSpan
    truth: dict[str, Any] | None
    start: int
    t_created: float


# --------------------------------------------------------------------------------------------- pipeline
class OnlinePipeline:
    """Stream chunks in (any rate, stream channel order, stream units), quality-checked windows out.

    Parameters
    ----------
    contract : ModelContract
    channel_map : ChannelMap
        From :func:`check_stream`.
    sfreq : float
        Nominal stream rate in Hz.
    subject : str
        Subject whose scaler is applied.
    ring_seconds : float
        History at the model rate.
    hop : float
        Seconds between sliding windows.
    quality : QualitySettings
    jump_threshold : float
        Clock-model residual (s) taken as a clock jump / data gap.
    clock_halftime : float
        Forgetting half-time of the clock model (s).
    rate_tolerance : float
        Relative difference between the declared rate and the rate the stamps advance at beyond which the
        stream is taken to misdeclare its rate (see Notes).
    future_tolerance : float
        Seconds a stamp may be ahead of the local clock at receipt before it counts as future-dated.
    stop_tolerance : float
        A rate mismatch beyond this stops decoding; one between ``rate_tolerance`` and this flags decisions.

    Notes
    -----
    *Future-dated stamps* (e.g. mne-lsl's ``PlayerLSL`` stamps each chunk one chunk duration ahead, or an
    outlet whose clock jumped forward) are detected when :meth:`process_chunk` is given the receipt time:
    counted in ``timestamp_issues`` (``future_stamps`` samples, ``max_ahead_s``), every window holding such data
    is flagged ``future_stamps:+<s>s``, and its ``t_newest_sample`` is the receipt time instead of the stamp (a
    sample cannot be newer than its arrival), so ``receipt - t_newest_sample`` is never negative.

    *Declared vs actual rate*: an outlet that declares 1200 Hz and sends 1000 Hz makes its stamps drift from
    the sample count by 17 % -- not a clock jump and not lost data. When the stamps of a segment fit a straight
    line whose rate differs from the declared one by more than ``rate_tolerance``, in both halves of the span
    (checked over >= 3 s of stamps, or >= 1 s when the clock model would report a jump, for mismatches beyond
    ``stop_tolerance``, the +-5 % the clock model follows; over >= 8 s for milder ones), the pipeline sets
    ``timestamp_issues.rate_mismatch`` (``declared``, ``measured``, ``decoding_stopped``, ``detected_after_s``)
    and logs an error with the fix. Beyond ``stop_tolerance`` (5 %) it stops writing the ring (no windows, no
    decisions: they would be cut from stretched data) until the stream reconnects or its stamps advance at the
    declared rate again over 5-10 s; below, decoding goes on and every decision is flagged
    ``rate_mismatch:<+-x.x>%`` (a producer starved on a loaded machine looks the same for a while).
    Nothing is counted as a jump, a gap or a drop.
    """

    def __init__(
        self,
        contract: ModelContract,
        channel_map: ChannelMap,
        sfreq: float,
        subject: str,
        ring_seconds: float = 30.0,
        hop: float = 0.25,
        quality: QualitySettings | None = None,
        jump_threshold: float = 0.25,
        clock_halftime: float = 20.0,
        rate_tolerance: float = 0.02,
        future_tolerance: float = 1e-3,
        stop_tolerance: float = 0.05,
    ) -> None:
        self.contract = contract
        self.rate_tolerance = float(rate_tolerance)
        self.stop_tolerance = float(stop_tolerance)
        self.future_tolerance = float(future_tolerance)
        self.window = contract.window
        self.spec = contract.preprocessing
        self.names = contract.channel_names
        self.n_channels = len(self.names)
        pos = [c.pos for c in contract.channels]
        self.positions = None if any(p is None for p in pos) else np.array(pos, dtype=np.float64)
        self.index = np.asarray(channel_map.index, dtype=np.int64)
        self.scale = np.asarray(channel_map.scale, dtype=np.float64)
        # the model's channels are the stream's first ones, in order and SI: a view of them, no gather (trailing
        # stream channels -- EOG, trigger, aux -- are left out by slicing)
        self._identity = bool(
            np.array_equal(self.index, np.arange(len(self.index))) and np.all(self.scale == 1)
        )
        self._n_stream_min = int(self.index.max()) + 1 if len(self.index) else 0
        self.sfreq = float(sfreq)
        self.scaler = contract.scaler(subject)
        self.subject = subject
        self.quality = quality or QualitySettings()
        self.jump_threshold = float(jump_threshold)
        self.pre = StreamPreprocessor(self.sfreq, self.n_channels, self.window, self.spec)
        rs = self.pre.resampler
        self._up, self._down, self._delay_up, self._k = rs.up, rs.down, rs.delay_up, rs.k_taps
        self.clock = ClockModel(self.sfreq, clock_halftime * self.sfreq)
        n_ring = max(round(ring_seconds * self.window.sfreq), 2 * self.window.n_window)
        self.ring = RingBuffer(n_ring, self.n_channels, np.float32)
        self.hop_n = max(1, round(hop * self.window.sfreq))
        self.lock = threading.Lock()  # guards segment bookkeeping read by other threads
        # counters (written by the acquisition thread, read by the status loop)
        self.samples_received = 0
        self.dropped_samples = 0
        self.timestamp_issues: dict[str, Any] = {
            "non_monotonic": 0, "duplicated": 0, "clock_jumps": 0, "future_stamps": 0, "max_ahead_s": 0.0,
            "rate_mismatch": None,
        }
        self._seg_pts: deque[tuple[float, float]] = deque(maxlen=4096)  # (mean sample index, mean stamp)
        self._mm_pts: deque[tuple[float, float]] = deque(maxlen=8192)  # while mismatched: (samples, stamp)
        self._next_rate_check = -math.inf
        self.gaps: deque[dict[str, float]] = deque(maxlen=50)
        self.n_gaps = 0
        self.seg = -1
        self.seg_start = 0
        self.seg_n_out = 0
        self.seg_n_raw = 0
        self.t_newest_raw = float("nan")
        self._t_last_stamp = float("nan")
        self._last_rate_ratio = 1.0
        self.last_quality: dict[str, list[str]] = {}  # channel -> reasons, of the last assessed window
        self._ones_cache = np.ones(0, dtype=np.float32)
        self.new_segment()

    # ------------------------------------------------------------------ segments
    def new_segment(self, jump: bool = False) -> None:
        """Forget filter state and the clock model: the next samples start a new continuous segment.

        A call from outside (a reconnection) also clears a rate mismatch (``jump``: called for a clock jump).
        """
        self._seg_pts.clear()
        if not jump and self.timestamp_issues["rate_mismatch"] is not None:
            log.info("stream reconnected: checking its rate again")
            self.timestamp_issues["rate_mismatch"] = None
        with self.lock:
            if self.clock.fitted:
                self._last_rate_ratio = self.clock.rate_ratio
            self.pre.reset()
            self.clock.reset()
            self.seg += 1
            self.seg_start = self.ring.count
            self.seg_n_out = 0
            self.seg_n_raw = 0
            self._bad_from = np.zeros(self.n_channels, dtype=np.int64)
            self._bad_until = np.zeros(self.n_channels, dtype=np.int64)
            self._last_finite = np.zeros(self.n_channels)
            self._last_raw = np.full(self.n_channels, np.nan)

    def report_gap(self, start: float, duration: float) -> None:
        """Record a gap (stream loss or dropped data) of ``duration`` s starting at LSL time ``start``."""
        self.gaps.append({"start": float(start), "duration": float(duration)})
        self.n_gaps += 1
        if duration > 0 and math.isfinite(duration):
            self.dropped_samples += round(duration * self.sfreq)

    @property
    def rate_ratio(self) -> float:
        """Estimated true / nominal stream rate (the last fitted estimate when the segment is too short)."""
        return self.clock.rate_ratio if self.clock.fitted else self._last_rate_ratio

    # ------------------------------------------------------------------ input
    def _check_stamps(self, stamps: NDArray[np.float64]) -> None:
        d = np.diff(stamps)
        if len(stamps) and math.isfinite(self._t_last_stamp):
            first = stamps[0] - self._t_last_stamp
            d = np.concatenate(([first], d))
        if d.size:
            # clock-sync corrections move stamps by tens of microseconds: only count real reversals
            dup = int(np.count_nonzero(d == 0))
            back = int(np.count_nonzero(d < -0.5 / self.sfreq))
            if dup:
                self.timestamp_issues["duplicated"] += dup
            if back:
                self.timestamp_issues["non_monotonic"] += back
        self._t_last_stamp = float(stamps[-1])

    def process_chunk(
        self, raw: NDArray[Any], stamps: NDArray[np.float64], t_received: float | None = None
    ) -> int:
        """Consume one chunk of stream samples.

        Parameters
        ----------
        raw : array, shape (n, n_stream_channels)
            Samples in stream channel order and stream units (any numeric dtype).
        stamps : array, shape (n,)
            Their LSL time stamps.
        t_received : float or None
            Local LSL clock when the chunk was pulled (None, e.g. for a file: stamps are not checked against
            it).

        Returns
        -------
        int
            Model-rate samples written to the ring.
        """
        n = len(stamps)
        if n == 0:
            return 0
        stamps = np.asarray(stamps, dtype=np.float64)
        raw = np.asarray(raw)
        if raw.ndim != 2 or raw.shape[1] < self._n_stream_min or raw.shape[0] != n:
            raise DataFormatError(
                f"chunk of shape {raw.shape} with {n} stamps; expected (n, >= {self._n_stream_min}) stream samples"
            )
        if self._identity:
            # any float dtype as it comes (the resampler converts while it copies); copied below only if
            # non-finite values must be held. Trailing channels the model does not use are sliced off (a view)
            x = raw[:, : self.n_channels] if raw.shape[1] != self.n_channels else raw
            if not np.issubdtype(x.dtype, np.floating):
                x = x.astype(np.float64)
        else:
            x = np.asarray(raw)[:, self.index].astype(np.float64)
            x *= self.scale
        self.samples_received += n
        self._check_stamps(stamps)
        newest_honest = float(stamps[-1])
        ahead = 0.0
        if t_received is not None and math.isfinite(newest_honest):
            ahead = newest_honest - float(t_received)
            if ahead > self.future_tolerance:
                self._count_future(stamps, float(t_received), ahead)
                newest_honest = float(t_received)
            else:
                ahead = 0.0
        t_mean = float(stamps.mean()) if np.isfinite(stamps).all() else float("nan")
        mm = self.timestamp_issues["rate_mismatch"]
        if mm is not None and mm["decoding_stopped"]:
            self._follow_mismatch(n, stamps)
            return 0  # decoding stopped: windows from this stream would be stretched
        if math.isfinite(t_mean):
            j_mean = self.seg_n_raw + (n - 1) / 2.0
            resid = self.clock.residual(j_mean, t_mean)
            if abs(resid) > self.jump_threshold:
                # beyond what the clock model follows (+-5 %)
                if self._rate_mismatch(j_mean, t_mean, n, stamps, 1.0, max(self.rate_tolerance, 0.05)):
                    return 0
                self.timestamp_issues["clock_jumps"] += 1
                log.warning("stream stamps jumped by %+.3f s (clock jump or lost data): new segment", resid)
                if resid > 0 and ahead <= 0:  # stamps ahead of the local clock are a clock jump, never lost data
                    self.report_gap(self.t_newest_raw, resid)
                self.new_segment(jump=True)
                j_mean = (n - 1) / 2.0
            self.clock.update(j_mean, t_mean, n)
            if not self._seg_pts or t_mean - self._seg_pts[-1][1] >= 0.005:  # <= 200 points/s: 20 s kept
                self._seg_pts.append((j_mean, t_mean))
            self.t_newest_raw = float(stamps[-1])
            if t_mean >= self._next_rate_check:  # least-squares fits at most once per second of stamps
                self._next_rate_check = t_mean + 1.0
                # a gross mismatch (beyond what the clock model follows) from 3 s of stamps, before the first
                # window is complete; a milder one from 8 s
                if self._rate_mismatch(None, None, n, stamps, 3.0, self.stop_tolerance):
                    return 0
                if (
                    self.clock.fitted
                    and abs(self.clock.rate_ratio - 1.0) > self.rate_tolerance
                    and self._rate_mismatch(None, None, n, stamps, min_span=8.0)
                ):
                    return 0
            if mm is not None and self.clock.fitted and abs(self.clock.rate_ratio - 1.0) <= self.rate_tolerance / 2:
                log.warning("the stream's stamps advance at its declared %g Hz again", self.sfreq)
                self.timestamp_issues["rate_mismatch"] = None
        elif self.clock.t_ref is None:
            return 0  # cannot place samples in time without a single finite stamp
        with self.lock:
            # a finite sum means every sample is finite (NaN/Inf propagate); one pass, no mask allocated. Summed
            # per channel by BLAS (a matrix-vector product, twice numpy's sum); an overflow to inf only sends the
            # chunk to the exact element-wise check
            total = float((x.T @ self._ones(n)).sum()) if x.dtype == np.float32 else float(x.sum())
            finite = None if math.isfinite(total) else np.isfinite(x)
            if finite is not None and not finite.all():
                if self._identity and np.shares_memory(x, raw):
                    x = x.copy()  # never modify the caller's chunk
                self._mark_nonfinite(x, finite)
            prev_last = self._last_raw
            self._last_raw = x[-1].copy()
            self._last_finite = x[-1].copy()
            # channel-major from here (a file's chunk (C, n) arrives as its transposed view: no copy); the ring
            # stores channel-major too
            y = self.pre.process_channels(x.T)  # (C, n_out) float32
            m0 = self.seg_n_out
            m1 = m0 + y.shape[1]
            n_before = self.seg_n_raw
            self.seg_n_raw += n
            if m1 == m0:
                return 0
            # raw samples repeating their predecessor exactly (clipped / stuck), checked at the raw sample
            # each output is sampled at (only those: ~10x less work than the whole chunk at 1200 Hz)
            # (gathered channel-major: columns of the chunk's rows, contiguous for a file's chunk)
            j0 = np.clip((np.arange(m0, m1) * self._down) // self._up - n_before, 0, n - 1)
            xc = x.T
            prev = xc[:, np.maximum(j0 - 1, 0)]
            first = j0 == 0
            if first.any():
                prev[:, first] = prev_last[:, None]
            stuck = (xc[:, j0] == prev).T
            p = (np.arange(m0, m1, dtype=np.float64) * self._down - self._delay_up) / self._up
            times = self.clock.predict(p)
            bad = None
            active = self._bad_until > m0
            if active.any():
                m = np.arange(m0, m1)[:, None]
                bad = (m >= self._bad_from[None, :]) & (m < self._bad_until[None, :])
            newest = min(self.t_newest_raw, newest_honest) if ahead > 0 else self.t_newest_raw
            self.ring.write(y.T, times, self.seg, bad, newest=newest, stuck=stuck, ahead=ahead)
            self.seg_n_out = m1
            return m1 - m0

    def _count_future(self, stamps: NDArray[np.float64], t_received: float, ahead: float) -> None:
        ti = self.timestamp_issues
        first = ti["future_stamps"] == 0
        ti["future_stamps"] += int(np.count_nonzero(stamps > t_received + self.future_tolerance))
        if ahead > ti["max_ahead_s"]:
            ti["max_ahead_s"] = float(ahead)
        if first:
            log.warning(
                "stream stamps are ahead of the local clock (by %.3f s at receipt): the outlet stamps samples "
                "before they exist (e.g. mne-lsl's PlayerLSL stamps a chunk one chunk ahead) or its clock is "
                "wrong; windows holding them are flagged future_stamps and their t_newest_sample is the receipt "
                "time", ahead,
            )

    @staticmethod
    def _fit_rate(jj: NDArray[np.float64], tt: NDArray[np.float64]) -> tuple[float, float]:
        """Rate (samples per second of stamps) of a least-squares line through the points, and its largest
        residual (s); rate 0 when the stamps do not advance."""
        slope, icpt = np.polyfit(jj - jj[0], tt - tt[0], 1)
        if not slope > 0:
            return 0.0, math.inf
        resid = np.abs(tt - tt[0] - (icpt + slope * (jj - jj[0])))
        return float(1.0 / slope), float(resid.max())

    def _rate_mismatch(
        self, j: float | None, t: float | None, n: int, stamps: NDArray[np.float64], min_span: float = 1.0,
        tolerance: float | None = None,
    ) -> bool:
        """True (and decoding stopped) when the segment's stamps show a rate other than the declared one.

        ``j, t``: the chunk that the clock model would call a jump (added to the fit), or None. ``min_span``:
        seconds of stamps the fit needs. The stamps must fit one straight line (largest residual below a fifth
        of ``jump_threshold``: a step is a jump or a gap; for a would-be jump, the line must explain the earlier
        points at least twice as well as the declared rate) and both halves of the span must show the same
        mismatch: push-time stamps of a producer that falls behind on a loaded machine and then catches up
        are not a rate mismatch.
        """
        tol = self.rate_tolerance if tolerance is None else tolerance
        pts = list(self._seg_pts)
        if j is not None and t is not None:
            pts.append((j, t))
        if len(pts) < 10:
            return False
        jj = np.array([p[0] for p in pts])
        tt = np.array([p[1] for p in pts])
        span = float(tt[-1] - tt[0])
        if span < min_span:
            return False
        measured, worst = self._fit_rate(jj, tt)
        off = measured / self.sfreq - 1.0
        if abs(off) <= tol:
            return False  # a rate within tolerance
        if j is not None:
            # a would-be jump: a line at another rate must explain the earlier points much better than the
            # declared rate does (a real jump or gap leaves them on the declared rate, the new point off it)
            old_j, old_t = jj[:-1] - jj[0], tt[:-1] - tt[0]
            slope = 1.0 / measured
            line = old_t - slope * old_j
            nominal = old_t - old_j / self.sfreq
            if np.std(line) >= 0.5 * np.std(nominal):
                return False
        elif worst > 0.2 * self.jump_threshold:
            return False  # not one straight line: steps (jumps, gaps) or a producer that stalls
        half = int(np.searchsorted(tt, tt[0] + span / 2))
        for sl in (slice(0, half), slice(half, None)):
            if len(tt[sl]) < 4:
                return False
            r, _ = self._fit_rate(jj[sl], tt[sl])
            if not (r / self.sfreq - 1.0) * np.sign(off) > tol:
                return False  # not sustained
        stop = abs(off) > self.stop_tolerance
        before = self.timestamp_issues["rate_mismatch"]
        self.timestamp_issues["rate_mismatch"] = {
            "declared": self.sfreq, "measured": float(measured), "decoding_stopped": stop,
            "detected_after_s": span if before is None else before["detected_after_s"],  # s of stamps it took
        }
        if not stop:
            if before is None:
                log.error(
                    "the stream declares %g Hz but its stamps advance at %.1f Hz (%+.1f %%, over %.1f s): windows "
                    "are stretched by that much and flagged rate_mismatch. Fix: set the outlet's nominal_srate to "
                    "the rate it really sends (or the amplifier to the declared rate)",
                    self.sfreq, measured, 100 * off, span,
                )
            return False
        self._mm_pts.clear()
        log.error(
            "the stream declares %g Hz but its stamps advance at %.1f Hz (%+.1f %%, over %.1f s): decoding stopped "
            "(windows would be stretched). Fix: set the outlet's nominal_srate to the rate it really sends (or "
            "the amplifier to the declared rate) and restart it; this is not counted as lost data",
            self.sfreq, measured, 100 * off, span,
        )
        self.t_newest_raw = float(stamps[-1])
        return True

    def _follow_mismatch(self, n: int, stamps: NDArray[np.float64]) -> None:
        """While decoding is stopped for a rate mismatch: keep the measured rate current (over the last 10 s of
        stamps) and resume (new segment) if the stamps come back to the declared rate."""
        if not np.isfinite(stamps[-1]):
            return
        self.t_newest_raw = float(stamps[-1])
        self._mm_pts.append((float(self.samples_received), float(stamps[-1])))
        while len(self._mm_pts) > 2 and self._mm_pts[-1][1] - self._mm_pts[1][1] >= 10.0:
            self._mm_pts.popleft()
        if len(self._mm_pts) < 10 or self._mm_pts[-1][1] - self._mm_pts[0][1] < 5.0:
            return
        jj = np.array([p[0] for p in self._mm_pts])
        tt = np.array([p[1] for p in self._mm_pts])
        measured, _ = self._fit_rate(jj, tt)
        mm = self.timestamp_issues["rate_mismatch"]
        mm["measured"] = measured
        if abs(measured / self.sfreq - 1.0) <= self.rate_tolerance / 2:
            log.warning("the stream's stamps advance at its declared %g Hz again: decoding resumed", self.sfreq)
            self.timestamp_issues["rate_mismatch"] = None
            self.new_segment(jump=True)

    def _ones(self, n: int) -> NDArray[np.float32]:
        if len(self._ones_cache) < n:
            self._ones_cache = np.ones(max(n, 2 * len(self._ones_cache)), dtype=np.float32)
        return self._ones_cache[:n]

    def _mark_nonfinite(self, x: NDArray[np.float64], finite: NDArray[np.bool_]) -> None:
        """Hold the last finite value over non-finite samples and mark the outputs they influence."""
        n = x.shape[0]
        ar = np.arange(n)
        for c in np.flatnonzero(~finite.all(axis=0)):
            good = finite[:, c]
            last = np.maximum.accumulate(np.where(good, ar, -1))
            col = x[:, c]
            filled = np.where(last >= 0, col[np.maximum(last, 0)], self._last_finite[c])
            jb = np.flatnonzero(~good)
            x[:, c] = filled
            j_first = self.seg_n_raw + int(jb[0])
            j_last = self.seg_n_raw + int(jb[-1])
            m_from = (j_first * self._up) // self._down
            m_until = ((j_last + self._k) * self._up) // self._down + 2
            if self._bad_until[c] <= m_from:
                self._bad_from[c] = m_from
            self._bad_until[c] = max(int(self._bad_until[c]), m_until)

    # ------------------------------------------------------------------ windows
    def due_sliding(self, last_key: tuple[int, int] | None) -> list[tuple[tuple[int, int], int]]:
        """Sliding windows completed since ``last_key``: list of ``((segment, k), global start)``.

        Windows start every ``hop`` within a segment; window ``k`` starts at ``k * hop_n``.
        """
        with self.lock:
            seg, seg_start, n_out = self.seg, self.seg_start, self.seg_n_out
        k_max = (n_out - self.window.n_window) // self.hop_n
        if k_max < 0:
            return []
        k0 = last_key[1] + 1 if last_key is not None and last_key[0] == seg else 0
        return [((seg, k), seg_start + k * self.hop_n) for k in range(k0, k_max + 1)]

    def locate_anchor(self, anchor: float) -> tuple[str, int | str]:
        """Find the window around an anchor time (LSL clock).

        Returns
        -------
        ('ready', start) | ('wait', '') | ('drop', reason)
        """
        newest = self.ring.newest()
        if newest is None:
            return "wait", ""
        g_new, t_new, _ = newest
        w = self.window
        target = anchor + w.tmin
        if target + (w.n_window - 1) / w.sfreq > t_new + 0.5 / w.sfreq:
            return "wait", ""
        oldest = self.ring.oldest
        times, segs = self.ring.read_meta(oldest, g_new + 1 - oldest)
        if len(times) == 0:
            return "wait", ""
        i = int(np.argmin(np.abs(times - target)))
        if abs(times[i] - target) > 1.5 / w.sfreq:
            return "drop", "window start not in the buffer (too old, or in a gap)"
        start = oldest + i
        if start + w.n_window > g_new + 1:
            return "wait", ""
        if segs[i] != segs[min(i + w.n_window - 1, len(segs) - 1)]:
            return "drop", "window straddles a gap"
        return "ready", start

    def make_job(self, start: int, kind: str, truth: dict[str, Any] | None = None) -> WindowJob | None:
        """Cut, check and scale the window starting at global index ``start`` (None if it left the ring)."""
        cut = self.cut(start, kind, truth)
        if cut is None:
            return None
        job, bad = self.assess(cut)
        if cut.span.continuous:  # a gap keeps the quality of the last window that had data
            self.last_quality = bad
        return job

    def cut(self, start: int, kind: str, truth: dict[str, Any] | None = None) -> WindowCut | None:
        """Copy the window starting at global index ``start`` out of the ring (None if it left the ring).

        The first half of :meth:`make_job`; :meth:`assess` is the second. ``decode-file`` cuts in its reading
        thread and assesses in its workers.
        """
        t0 = time.perf_counter()
        try:
            span: RingSpan = self.ring.read(start, self.window.n_window)
        except IndexError:
            return None
        return WindowCut(kind, span, truth, start, t0)

    def assess(
        self, cut: WindowCut, out: NDArray[np.float32] | None = None
    ) -> tuple[WindowJob, dict[str, list[str]]]:
        """Check and scale a cut window: the :class:`WindowJob` and its bad channels (name -> reasons).

        Reads only settings fixed at construction, so it may run in another thread than the one feeding
        :meth:`process_chunk`. ``out``: where to write the model input, shape ``(n_channels, n_times)``
        float32 (e.g. a row of the encoder's batch); the job's ``x`` is then ``out``.
        """
        span = cut.span
        times0, times1, newest = float(span.times[0]), float(span.times[-1]), float(span.newest[-1])
        if not span.continuous:
            job = WindowJob(cut.kind, None, ["gap", "skipped"], times0, times1, newest, cut.truth, cut.start,
                            cut.t_created)
            return job, {}
        x, flags, bad = assess_window(
            span.data.T,
            self.window,
            self.scaler,
            self.spec.clamp,
            self.quality,
            self.names,
            self.positions,
            span.bad.any(axis=0) if span.any_bad else None,
            np.count_nonzero(span.stuck, axis=0) / len(span.stuck) if span.any_stuck else None,
            out,
        )
        if span.ahead > 0:
            flags = [*flags, f"future_stamps:+{span.ahead:.3f}s"]
        mm = self.timestamp_issues["rate_mismatch"]
        if mm is not None:  # mild (decoding goes on, windows stretched by a few %)
            flags = [*flags, f"rate_mismatch:{100 * (mm['measured'] / mm['declared'] - 1):+.1f}%"]
        return WindowJob(cut.kind, x, flags, times0, times1, newest, cut.truth, cut.start, cut.t_created), bad

    def channel_quality(self) -> dict[str, Any]:
        """Per-channel quality of the last assessed window (for the status heartbeat)."""
        bad = dict(self.last_quality)
        return {"n_channels": self.n_channels, "n_bad": len(bad), "bad": bad}
