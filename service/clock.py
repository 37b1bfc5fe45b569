"""The clock model of a live stream: where in time each sample is, and when the stamps cannot be trusted.

- :class:`ClockModel`: an exponentially-forgetting linear fit of the LSL stamps against the sample count
  (dejitters, follows a rate drift of up to +-5 %).
- :class:`StreamClock`: the per-stream timestamp bookkeeping around it, fed chunk by chunk by
  :class:`~neurospeech.service.pipeline.OnlinePipeline`: reversed / duplicated stamps, stamps ahead of the
  local clock (future-dated), clock jumps and gaps (a residual beyond ``jump_threshold``), and a stream whose
  stamps advance at another rate than the one it declares (rate mismatch). The pipeline turns a jump into a
  new segment and a gap into counted lost data; :attr:`StreamClock.timestamp_issues` is what the status
  reports.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["ClockModel", "StreamClock"]

log = logging.getLogger(__name__)

_MIN_JITTER_SCALE = 2e-3  # s: residuals below this always count fully in the clock fit


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

    def update(self, j: float, t: float, n: int, weight: float = 1.0) -> None:
        """Add the point (mean sample index ``j``, mean stamp ``t``) of a chunk of ``n`` samples, with a weight
        in (0, 1] (robust fitting: a point far off the line counts less)."""
        if self.t_ref is None:
            self.t_ref = float(t - j / self.nominal)
        r = t - self.t_ref - j / self.nominal
        self._s *= 0.5 ** (n / self.halftime)
        self._s += weight * np.array((1.0, j, r, j * j, j * r))
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


class StreamClock:
    """Timestamp bookkeeping of one stream (see the module docstring and :class:`OnlinePipeline`'s Notes).

    Parameters
    ----------
    sfreq : float
        Declared stream rate (Hz).
    jump_threshold : float
        Clock-model residual (s) taken as a clock jump / data gap.
    clock_halftime : float
        Forgetting half-time of the clock model (s).
    rate_tolerance, stop_tolerance, future_tolerance : float
        As in :class:`~neurospeech.service.pipeline.OnlinePipeline`.
    hold : float
        Seconds of samples a new offset of the stamps must persist (steady within the producer's jitter) before
        it is taken as a clock jump or a gap.
    max_hold : float
        Seconds of samples after which stamps that neither come back to the line nor settle on a new offset
        are taken as a jump anyway.

    Notes
    -----
    Many producers stamp a chunk with ``local_clock()`` when they push it (pylsl's ``SendData`` example, much
    acquisition software), not when its samples were acquired. Starved by CPU load, such a producer pushes a
    chunk late (its stamps sit above the line that the sample count predicts) and then catches up in a burst of
    chunks stamped almost at once (each one chunk-duration closer to the line) until it is back on schedule.
    The sample count was never broken, so this is neither a jump nor lost data. A chunk whose residual exceeds
    ``jump_threshold`` is therefore only a *candidate*: it is held (with the chunks after it; the pipeline
    buffers their data, they are not yet decoded) and judged by what follows:

    - the stamps come back within ``jump_threshold`` of the line: the held chunks were late (or early)
      pushes; they are placed on the line (dejittered, never added to the fit) and counted in
      ``timestamp_issues.late_chunks`` (``max_late_s``: the largest excursion);
    - the residuals settle on a new offset (their spread over the last ``hold`` s of samples stays within
      ``max(jump_threshold / 5, 4 x jitter)``, at most ``jump_threshold / 2``; ``jitter`` is the median absolute
      residual of the last 128 accepted chunks, in ``timestamp_issues.jitter_s``): a clock jump (forward: a gap
      of that offset, counted as lost data unless the stamps are ahead of the local clock; backward: never lost
      data), a new segment from the first held chunk;
    - neither within ``max_hold`` s of samples: a jump too (a stream that cannot be placed in time).

    Chunks within ``jump_threshold`` still enter the fit robustly: weighted ``1 / (1 + (r / c)^2)`` with
    ``c = max(3 x jitter, 2 ms)``, so the tail of a late push barely moves the line while a drift (which moves
    every residual, hence the jitter) is followed. A clock jump or a gap thus costs ``hold`` s of latency once;
    a late push costs the time until the producer is back on schedule, nothing else. A producer that falls
    behind and never catches up looks exactly like a gap (the stamps cannot tell them apart).
    """

    def __init__(
        self,
        sfreq: float,
        jump_threshold: float,
        clock_halftime: float,
        rate_tolerance: float,
        future_tolerance: float,
        stop_tolerance: float,
        hold: float = 0.5,
        max_hold: float = 3.0,
    ) -> None:
        self.sfreq = float(sfreq)
        self.jump_threshold = float(jump_threshold)
        self.rate_tolerance = float(rate_tolerance)
        self.stop_tolerance = float(stop_tolerance)
        self.future_tolerance = float(future_tolerance)
        self.model = ClockModel(self.sfreq, clock_halftime * self.sfreq)
        self.timestamp_issues: dict[str, Any] = {
            "non_monotonic": 0, "duplicated": 0, "clock_jumps": 0, "future_stamps": 0, "max_ahead_s": 0.0,
            "rate_mismatch": None, "late_chunks": 0, "max_late_s": 0.0, "jitter_s": 0.0,
        }
        self.hold = float(hold)
        self.max_hold = float(max(max_hold, hold))
        self.jitter = 0.0  # median absolute residual of the last accepted chunks (s)
        self._abs_resid: deque[float] = deque(maxlen=128)
        self._pending: list[tuple[float, float, int, float]] = []  # held candidates: (j, t, n, residual)
        self._seg_pts: deque[tuple[float, float]] = deque(maxlen=4096)  # (mean sample index, mean stamp)
        self._mm_pts: deque[tuple[float, float]] = deque(maxlen=8192)  # while mismatched: (samples, stamp)
        self._next_rate_check = -math.inf
        self._t_last_stamp = float("nan")
        self._last_rate_ratio = 1.0

    # ------------------------------------------------------------------ segments
    def new_segment(self, jump: bool) -> None:
        """Forget the clock model (a new segment); a reconnection (``jump`` False) also clears a rate mismatch."""
        self._seg_pts.clear()
        self._pending.clear()
        if not jump and self.timestamp_issues["rate_mismatch"] is not None:
            log.info("stream reconnected: checking its rate again")
            self.timestamp_issues["rate_mismatch"] = None

    def reset_model(self) -> None:
        """Reset the clock model, keeping its last fitted rate for :attr:`rate_ratio` (under the pipeline lock)."""
        if self.model.fitted:
            self._last_rate_ratio = self.model.rate_ratio
        self.model.reset()

    @property
    def rate_ratio(self) -> float:
        """Estimated true / nominal stream rate (the last fitted estimate when the segment is too short)."""
        return self.model.rate_ratio if self.model.fitted else self._last_rate_ratio

    @property
    def decoding_stopped(self) -> bool:
        """A gross rate mismatch stopped decoding."""
        mm = self.timestamp_issues["rate_mismatch"]
        return mm is not None and bool(mm["decoding_stopped"])

    # ------------------------------------------------------------------ per chunk
    def check_stamps(self, stamps: NDArray[np.float64]) -> None:
        """Count duplicated and reversed stamps (across chunks too)."""
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

    def check_future(self, stamps: NDArray[np.float64], t_received: float | None) -> tuple[float, float]:
        """``(ahead, newest_honest)``: how far (s) the newest stamp is ahead of the receipt time (0 when not
        beyond ``future_tolerance``), and the newest stamp capped at the receipt time."""
        newest_honest = float(stamps[-1])
        ahead = 0.0
        if t_received is not None and math.isfinite(newest_honest):
            ahead = newest_honest - float(t_received)
            if ahead > self.future_tolerance:
                self._count_future(stamps, float(t_received), ahead)
                newest_honest = float(t_received)
            else:
                ahead = 0.0
        return ahead, newest_honest

    @property
    def holding(self) -> bool:
        """Chunks are held: their stamps left the line and it is not yet known why."""
        return bool(self._pending)

    def judge(self, j_mean: float, t_mean: float, n: int, stamps: NDArray[np.float64]) -> tuple[str, float]:
        """Judge a chunk (mean sample index ``j_mean`` in the segment, mean stamp ``t_mean``) before it is added.

        ``j_mean`` counts the samples of held chunks too (see the class Notes).

        Returns
        -------
        verdict : str
            ``ok``: on the line (the caller adds it with :meth:`add`); ``hold``: off the line, the caller holds
            it; ``release``: back on the line, the held chunks were late pushes (the caller writes them where
            the model places them, then adds this one); ``jump``: the held chunks and this one start a new
            segment (counted here); ``stop``: a gross rate mismatch, decoding stopped (held chunks dropped).
        residual : float
            For ``jump``: the offset of the stamps (s; > 0: forward).
        """
        resid = self.model.residual(j_mean, t_mean)
        thr = self.jump_threshold
        if abs(resid) <= thr:
            if not self._pending:
                self._note_jitter(resid)
                return "ok", 0.0
            # back on the line: the held chunks were pushed late (or early); the sample count is unbroken
            worst = max((p[3] for p in self._pending), key=abs)
            ti = self.timestamp_issues
            if ti["late_chunks"] == 0:
                log.warning(
                    "stream stamps left the clock model's line by %+.3f s and came back: the outlet stamps chunks "
                    "when it pushes them and was late (starved of CPU?); such chunks are placed by the sample "
                    "count and counted in timestamp_issues.late_chunks", worst,
                )
            ti["late_chunks"] += len(self._pending)
            ti["max_late_s"] = max(ti["max_late_s"], abs(worst))
            self._pending.clear()
            self._note_jitter(resid)
            return "release", 0.0
        # beyond what the clock model follows (+-5 %)
        if self._rate_mismatch(j_mean, t_mean, n, stamps, 1.0, max(self.rate_tolerance, 0.05)):
            self._pending.clear()
            return "stop", 0.0
        self._pending.append((j_mean, t_mean, n, resid))
        offset = self._settled()
        if offset is None:
            return "hold", 0.0
        self._pending.clear()
        self.timestamp_issues["clock_jumps"] += 1
        log.warning("stream stamps jumped by %+.3f s (clock jump or lost data): new segment", offset)
        return "jump", offset

    def _settled(self) -> float | None:
        """The new offset when the held residuals have settled on one (or ``max_hold`` is reached), else None."""
        pend = self._pending
        j_end = pend[-1][0] + pend[-1][2] / 2
        span = (j_end - (pend[0][0] - pend[0][2] / 2)) / self.sfreq
        if span < self.hold or len(pend) < 2:
            return None
        tail = [p[3] for p in pend if (j_end - (p[0] - p[2] / 2)) / self.sfreq <= self.hold + 1e-9] or [pend[-1][3]]
        if len(tail) < 2 and len(pend) >= 2:
            tail = [pend[-2][3], pend[-1][3]]
        tol = min(max(0.2 * self.jump_threshold, 4.0 * self.jitter), 0.5 * self.jump_threshold)
        if max(tail) - min(tail) <= tol or span >= self.max_hold:
            return float(np.median(tail))
        return None

    def _note_jitter(self, resid: float) -> None:
        """Update the producer's measured jitter with an accepted chunk's residual."""
        self._abs_resid.append(abs(resid))
        self.jitter = float(np.median(self._abs_resid))
        self.timestamp_issues["jitter_s"] = self.jitter

    def add(self, j_mean: float, t_mean: float, n: int, stamps: NDArray[np.float64], mm: Any) -> bool:
        """Add a chunk's point to the clock model and check the rate; True when decoding must stop.

        ``mm``: the rate mismatch as it was before this chunk (None: none).
        """
        # robust: a chunk off the line by more than the producer's usual jitter (e.g. the tail of a late push
        # that is within jump_threshold) barely moves the fit (Cauchy weight on the residual)
        r = self.model.residual(j_mean, t_mean) / max(3.0 * self.jitter, _MIN_JITTER_SCALE)
        self.model.update(j_mean, t_mean, n, 1.0 / (1.0 + r * r))
        if not self._seg_pts or t_mean - self._seg_pts[-1][1] >= 0.005:  # <= 200 points/s: 20 s kept
            self._seg_pts.append((j_mean, t_mean))
        if t_mean >= self._next_rate_check:  # least-squares fits at most once per second of stamps
            self._next_rate_check = t_mean + 1.0
            # a gross mismatch (beyond what the clock model follows) from 3 s of stamps, before the first
            # window is complete; a milder one from 8 s
            if self._rate_mismatch(None, None, n, stamps, 3.0, self.stop_tolerance):
                return True
            if (
                self.model.fitted
                and abs(self.model.rate_ratio - 1.0) > self.rate_tolerance
                and self._rate_mismatch(None, None, n, stamps, min_span=8.0)
            ):
                return True
        if mm is not None and self.model.fitted and abs(self.model.rate_ratio - 1.0) <= self.rate_tolerance / 2:
            log.warning("the stream's stamps advance at its declared %g Hz again", self.sfreq)
            self.timestamp_issues["rate_mismatch"] = None
        return False

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
        return True

    def follow_mismatch(self, samples_received: int, stamps: NDArray[np.float64]) -> bool:
        """While decoding is stopped for a rate mismatch: keep the measured rate current (over the last 10 s of
        stamps); True when the stamps came back to the declared rate (the caller resumes with a new segment)."""
        if not np.isfinite(stamps[-1]):
            return False
        self._mm_pts.append((float(samples_received), float(stamps[-1])))
        while len(self._mm_pts) > 2 and self._mm_pts[-1][1] - self._mm_pts[1][1] >= 10.0:
            self._mm_pts.popleft()
        if len(self._mm_pts) < 10 or self._mm_pts[-1][1] - self._mm_pts[0][1] < 5.0:
            return False
        jj = np.array([p[0] for p in self._mm_pts])
        tt = np.array([p[1] for p in self._mm_pts])
        measured, _ = self._fit_rate(jj, tt)
        mm = self.timestamp_issues["rate_mismatch"]
        mm["measured"] = measured
        if abs(measured / self.sfreq - 1.0) <= self.rate_tolerance / 2:
            log.warning("the stream's stamps advance at its declared %g Hz again: decoding resumed", self.sfreq)
            self.timestamp_issues["rate_mismatch"] = None
            return True
        return False
