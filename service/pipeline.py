"""Online preprocessing: stream chunks -> model-rate ring -> quality-checked, scaled windows.

The continuous part is :class:`neurospeech.preprocessing.StreamPreprocessor` (the same object the offline
trainer path feeds whole recordings through), the window part
:func:`neurospeech.preprocessing.preprocess_window` with the subject's
:class:`~neurospeech.preprocessing.RobustScaler` from the model contract. :class:`OnlinePipeline` adds what a
live stream needs, from these modules:

- :mod:`.streamcheck`: the contract check on connect (:func:`check_stream`): reorder by name, unit
  conversion, rate, types;
- :mod:`.clock`: the clock model (:class:`~neurospeech.service.clock.StreamClock`), which dejitters, follows
  rate drift and detects clock jumps, dropped data, future-dated stamps and a misdeclared rate;
- continuous *segments* (here): a jump, a gap or a reconnection resets the filters and starts a new segment,
  and no window straddling two segments is ever decoded;
- bad-sample bookkeeping (here: non-finite input is held at the last finite value and marks the model-rate
  samples it touches) and :mod:`.quality`: per-window quality checks (non-finite, flat, saturated, huge
  artefact) with a skip / interpolate policy;
- :mod:`.jobs`: the windows handed to the encoder.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..contract import ChannelMap, ModelContract
from ..errors import DataFormatError
from ..preprocessing import StreamPreprocessor
from .clock import ClockModel, StreamClock
from .interpolation import ChannelInterpolator
from .jobs import WindowCut, WindowJob
from .quality import QualitySettings, assess_window
from .ringbuffer import RingBuffer, RingSpan

__all__ = ["OnlinePipeline"]


@dataclass
class _Held:
    """A chunk held while the clock model decides whether its stamps are late or a jump."""

    x: NDArray[Any]
    stamps: NDArray[np.float64]
    t_mean: float
    ahead: float
    newest_honest: float

    @property
    def n(self) -> int:
        return len(self.x)

    @property
    def newest(self) -> float:
        return float(self.stamps[-1])


class OnlinePipeline:
    """Stream chunks in (any rate, stream channel order, stream units), quality-checked windows out.

    Parameters
    ----------
    contract : ModelContract
    channel_map : ChannelMap
        From :func:`~neurospeech.service.streamcheck.check_stream`.
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

    *Stamps off the clock line* (a late push of a starved producer, or the start of a jump or gap): the chunk is
    held (copied, not yet written to the ring) with the chunks after it until
    :class:`~neurospeech.service.clock.StreamClock` decides: back on the line (late chunks, written where their
    sample count places them, in the same segment) or a new offset (a new segment from the first held chunk).
    A reconnection writes chunks still held into a segment of their own first.
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
        self.interpolator = ChannelInterpolator(contract.channels, self.quality.n_neighbours)
        self.rescaler: Any = None  # a SessionRescaler (service/rescale.py attach_rescaler): per-session scaler
        self.stamps = StreamClock(
            self.sfreq, jump_threshold, clock_halftime, rate_tolerance, future_tolerance, stop_tolerance
        )
        self.clock: ClockModel = self.stamps.model
        self.pre = StreamPreprocessor(self.sfreq, self.n_channels, self.window, self.spec)
        rs = self.pre.resampler
        self._up, self._down, self._delay_up, self._k = rs.up, rs.down, rs.delay_up, rs.k_taps
        n_ring = max(round(ring_seconds * self.window.sfreq), 2 * self.window.n_window)
        self.ring = RingBuffer(n_ring, self.n_channels, np.float32)
        self.hop_n = max(1, round(hop * self.window.sfreq))
        self.lock = threading.Lock()  # guards segment bookkeeping read by other threads
        # counters (written by the acquisition thread, read by the status loop)
        self.samples_received = 0
        self.dropped_samples = 0
        self.timestamp_issues = self.stamps.timestamp_issues  # the same dict (read by the status)
        self.gaps: deque[dict[str, float]] = deque(maxlen=50)
        self.n_gaps = 0
        self.seg = -1
        self.seg_start = 0
        self.seg_n_out = 0
        self.seg_n_raw = 0
        self.t_newest_raw = float("nan")
        self.t_newest_received = float("nan")  # stamp of the newest sample received, at most its receipt time
        self.newest_ahead_s = 0.0  # how far that stamp was ahead of its receipt (future-dated stamps)
        self.last_quality: dict[str, list[str]] = {}  # channel -> reasons, of the last assessed window
        self._ones_cache = np.ones(0, dtype=np.float32)
        self._held: list[_Held] = []  # chunks the clock model holds (their stamps left the line)
        self._held_n = 0
        self.new_segment()

    # ------------------------------------------------------------------ segments
    def new_segment(self, jump: bool = False) -> None:
        """Forget filter state and the clock model: the next samples start a new continuous segment.

        A call from outside (a reconnection) also clears a rate mismatch (``jump``: called for a clock jump), and
        first writes the chunks the clock model still holds into a segment of their own.
        """
        if not jump and self._held:
            held, self._held, self._held_n = self._held, [], 0
            self._segment_from(held, self.timestamp_issues["rate_mismatch"])
        self.stamps.new_segment(jump)
        with self.lock:
            self.stamps.reset_model()
            self.pre.reset()
            self.seg += 1
            self.seg_start = self.ring.count
            self.seg_n_out = 0
            self.seg_n_raw = 0
            self._bad_from = np.zeros(self.n_channels, dtype=np.int64)
            self._bad_until = np.zeros(self.n_channels, dtype=np.int64)
            self._last_finite = np.zeros(self.n_channels)
            self._last_raw = np.full(self.n_channels, np.nan)

    def report_gap(self, start: float, duration: float, counted: int = 0) -> None:
        """Record a gap (stream loss or dropped data) of ``duration`` s starting at LSL time ``start``.

        ``counted``: samples inside the gap already counted in ``dropped_samples`` (untimed samples dropped on
        arrival, see :meth:`~neurospeech.service.acquisition.DataInlet.take_untimed`); not counted twice.
        """
        self.gaps.append({"start": float(start), "duration": float(duration)})
        self.n_gaps += 1
        if duration > 0 and math.isfinite(duration):
            self.dropped_samples += max(0, round(duration * self.sfreq) - int(counted))

    @property
    def rate_ratio(self) -> float:
        """Estimated true / nominal stream rate (the last fitted estimate when the segment is too short)."""
        return self.stamps.rate_ratio

    # ------------------------------------------------------------------ input

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
        st = self.stamps
        st.check_stamps(stamps)
        ahead, newest_honest = st.check_future(stamps, t_received)
        if math.isfinite(newest_honest):  # the newest sample received, capped at its receipt (for the status lag)
            capped = newest_honest if t_received is None else min(newest_honest, float(t_received))
            self.t_newest_received, self.newest_ahead_s = capped, ahead
        t_mean = float(stamps.mean()) if np.isfinite(stamps).all() else float("nan")
        mm = self.timestamp_issues["rate_mismatch"]
        if st.decoding_stopped:
            if math.isfinite(stamps[-1]):
                self.t_newest_raw = float(stamps[-1])
            if st.follow_mismatch(self.samples_received, stamps):
                self.new_segment(jump=True)  # back at the declared rate: resume
            return 0  # decoding stopped: windows from this stream would be stretched
        if not math.isfinite(t_mean):
            if self._held:  # judged with the held chunks around it
                self._hold(x, raw, stamps, t_mean, ahead, newest_honest)
                return 0
            if self.clock.t_ref is None:
                return 0  # cannot place samples in time without a single finite stamp
            return self._write(x, raw, ahead, newest_honest)
        j_mean = self.seg_n_raw + self._held_n + (n - 1) / 2.0
        verdict, resid = st.judge(j_mean, t_mean, n, stamps)
        if verdict == "hold":
            self._hold(x, raw, stamps, t_mean, ahead, newest_honest)
            return 0
        held, self._held, self._held_n = self._held, [], 0
        if verdict == "stop":
            self.t_newest_raw = float(stamps[-1])
            return 0
        out = 0
        if verdict == "release":  # late pushes: placed on the line by their sample count, not added to the fit
            self.t_newest_raw = max(float(stamps[-1]), max(h.newest for h in held))
            for h in held:
                out += self._write(h.x, None, h.ahead, h.newest_honest)
        elif verdict == "jump":  # a new segment from the first held chunk on
            first_ahead = held[0].ahead if held else ahead
            if resid > 0 and first_ahead <= 0:  # stamps ahead of the local clock are a clock jump, never lost data
                self.report_gap(self.t_newest_raw, resid)
            out, stopped = self._segment_from(held, mm)
            if stopped:
                return out
            j_mean = self.seg_n_raw + (n - 1) / 2.0
        self.t_newest_raw = float(stamps[-1])
        if st.add(j_mean, t_mean, n, stamps, mm):
            return out
        return out + self._write(x, raw, ahead, newest_honest)

    def _segment_from(self, held: list[_Held], mm: Any) -> tuple[int, bool]:
        """Start a new segment with the held chunks; (model-rate samples written, decoding stopped)."""
        self.new_segment(jump=True)
        out = 0
        for h in held:
            self.t_newest_raw = h.newest
            if math.isfinite(h.t_mean):
                if self.stamps.add(self.seg_n_raw + (h.n - 1) / 2.0, h.t_mean, h.n, h.stamps, mm):
                    return out, True
            elif self.clock.t_ref is None:
                continue
            out += self._write(h.x, None, h.ahead, h.newest_honest)
        return out, False

    def _hold(
        self, x: NDArray[Any], raw: NDArray[Any], stamps: NDArray[np.float64], t_mean: float, ahead: float,
        newest_honest: float,
    ) -> None:
        """Keep a chunk (a copy: the caller may reuse its buffer) until the clock model knows where it belongs."""
        x = np.array(x, copy=True)
        self._held.append(_Held(x, stamps.copy(), t_mean, ahead, newest_honest))
        self._held_n += len(x)

    def _write(
        self, x: NDArray[Any], raw: NDArray[Any] | None, ahead: float, newest_honest: float
    ) -> int:
        """Preprocess a chunk (``x``: model channels, SI) into the ring at the times the clock model gives."""
        n = len(x)
        with self.lock:
            # a finite sum means every sample is finite (NaN/Inf propagate); one pass, no mask allocated. Summed
            # per channel by BLAS (a matrix-vector product, twice numpy's sum); an overflow to inf only sends the
            # chunk to the exact element-wise check
            total = float((x.T @ self._ones(n)).sum()) if x.dtype == np.float32 else float(x.sum())
            finite = None if math.isfinite(total) else np.isfinite(x)
            if finite is not None and not finite.all():
                if self._identity and raw is not None and np.shares_memory(x, raw):
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
            if self.rescaler is not None:
                self.rescaler.feed(y, bad, self.seg, self.ring.count)
            self.seg_n_out = m1
            return m1 - m0

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

    def locate_anchor(self, anchor: float, n_samples: int | None = None) -> tuple[str, int | str]:
        """Find the window around an anchor time (LSL clock).

        ``n_samples``: only the window's first ``n_samples`` samples are needed (an early decision, cut before
        the whole window has arrived); default: the whole window (``n_window``).

        Returns
        -------
        ('ready', start) | ('wait', '') | ('drop', reason)
        """
        newest = self.ring.newest()
        if newest is None:
            return "wait", ""
        g_new, t_new, _ = newest
        w = self.window
        n = w.n_window if n_samples is None else int(n_samples)
        target = anchor + w.tmin
        if target + (n - 1) / w.sfreq > t_new + 0.5 / w.sfreq:
            return "wait", ""
        oldest = self.ring.oldest
        times, segs = self.ring.read_meta(oldest, g_new + 1 - oldest)
        if len(times) == 0:
            return "wait", ""
        i = int(np.argmin(np.abs(times - target)))
        if abs(times[i] - target) > 1.5 / w.sfreq:
            return "drop", "window start not in the buffer (too old, or in a gap)"
        start = oldest + i
        if start + n > g_new + 1:
            return "wait", ""
        if segs[i] != segs[min(i + n - 1, len(segs) - 1)]:
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
        scaler, pending = (self.scaler, False) if self.rescaler is None else self.rescaler.scaler_for(cut.start)
        x, flags, bad = assess_window(
            span.data.T,
            self.window,
            scaler,
            self.spec.clamp,
            self.quality,
            self.names,
            self.interpolator,
            span.bad.any(axis=0) if span.any_bad else None,
            np.count_nonzero(span.stuck, axis=0) / len(span.stuck) if span.any_stuck else None,
            out,
        )
        if pending:
            flags = [*flags, "scaler:training"]
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
