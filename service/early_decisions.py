"""Early (provisional) word decisions in the live pipeline: which partial windows are due, and their jobs.

For a model whose contract declares ``early_decisions`` (:mod:`neurospeech.early`), every word marker gets, at
word onset + each declared delay (0.5, 1.0, 1.5, 2.0 s), a decision from the data the ring holds at that moment:
:class:`EarlyTracker` finds the markers whose data through ``onset + delay`` have arrived, :func:`early_job`
copies that partial window out of the ring, checks and scales it with the full windows' code (its unseen tail
edge-padded for the checks, so no new extreme or flat span appears), and sets the unseen samples to NaN
(:func:`neurospeech.early.mask_unseen`), which the model masks. The seen samples are the ones the full window
will hold (every step after the causal resampler is per sample and the baseline lies before the onset), so an
early decision is the offline masked window's decision. The worker publishes them on the ``word_early`` topic
(:func:`early_header`); the final decision is the usual ``word`` decode message.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..early import mask_unseen, n_seen
from .jobs import WindowCut, WindowJob
from .pipeline import OnlinePipeline
from .ringbuffer import RingSpan

__all__ = ["EarlyJob", "EarlyTracker", "early_header", "early_job"]


@dataclass
class EarlyJob(WindowJob):
    """A :class:`WindowJob` of kind ``word_early``: the window's data up to ``t_onset + delay_s``.

    Attributes
    ----------
    delay_s : float
        Seconds after the word onset at which the decision is made.
    t_onset : float
        LSL time of the word onset.
    """

    delay_s: float = 0.0
    t_onset: float = math.nan


def early_job(p: OnlinePipeline, start: int, delay: float, anchor: float,
              truth: dict[str, Any] | None) -> EarlyJob | None:
    """Cut, check and scale the partial window from global index ``start`` seen through ``anchor + delay``.

    The partial span is edge-padded to the full window length (the checks see no new extreme, no new flat
    stretch) and goes through :meth:`OnlinePipeline.assess` -- the very code of every full window (scaler,
    bad-channel policy, flags) -- then the unseen samples are set to NaN. Returns None when the samples left
    the ring. The job's ``x`` has the full window shape ``(n_channels, n_times)``, or is None (flags ``gap``,
    ``skipped``) for a span with a gap or as the quality checks decide.
    """
    t0 = time.perf_counter()
    w = p.window
    n_avail = w.n_lag + n_seen(w, delay)
    try:
        span = p.ring.read(start, n_avail)
    except IndexError:
        return None
    pad = w.n_window - n_avail
    times = np.concatenate([span.times, span.times[-1] + np.arange(1, pad + 1) / w.sfreq])
    seen = np.asarray(span.data.T)  # (C, n_avail)
    full = np.empty((seen.shape[0], w.n_window), dtype=seen.dtype)
    full[:, :n_avail] = seen
    full[:, n_avail:] = seen[:, -1:]

    def padded(a: Any, fill: Any) -> Any:
        a = np.asarray(a)
        return np.concatenate([a, np.full((pad, *a.shape[1:]), fill, dtype=a.dtype)])

    padded_span = RingSpan(
        start, full.T, times, padded(span.seg, span.seg[-1]), padded(span.bad, False),
        padded(span.newest, span.newest[-1]), None if span.stuck is None else padded(span.stuck, False),
        span.any_bad, span.any_stuck, span.ahead,
    )
    job, _ = p.assess(WindowCut("word_early", padded_span, truth, start, t0))
    x = None if job.x is None else mask_unseen(job.x, w, delay)
    return EarlyJob("word_early", x, job.flags, job.t_window_start, job.t_window_end, float(span.newest[-1]),
                    truth, start, t0, float(delay), float(anchor))


def early_header(header: dict[str, Any], delay: float, window: Any, t_onset: float | None = None,
                 from_full_window: bool = False) -> dict[str, Any]:
    """A decoder header of an early job with the ``word_early`` fields (``service/schema/word_early.v1.json``):
    ``kind``, ``delay_s``, ``t_onset`` (default: ``t_window_start - window.tmin``).

    ``from_full_window``: the job was masked from a complete window (decode-file), whose ``t_newest_sample``
    is then clamped to onset + delay (the newest data the decision used, on the file's clock); live, the
    partial window's own stamp is kept (latency = receipt - it, as for every decision).
    """
    if t_onset is None:
        t_start = header.get("t_window_start")
        t_onset = None if t_start is None else float(t_start) - float(window.tmin)
    out = dict(header)
    out["kind"] = "word_early"
    out["delay_s"] = float(delay)
    out["t_onset"] = t_onset
    if from_full_window and t_onset is not None and header.get("t_newest_sample") is not None:
        out["t_newest_sample"] = min(float(header["t_newest_sample"]), t_onset + float(delay))
    return out


@dataclass
class _Pending:
    time: float
    truth: dict[str, Any] | None
    next: int = 0  # index of the next delay to decide


@dataclass
class EarlyTracker:
    """Word markers waiting for their early decisions.

    Parameters
    ----------
    delays : tuple of float
        Decision delays (the contract's ``early_decisions.delays_s``).
    max_pending : int
        Markers tracked at once (the oldest is dropped beyond it).
    """

    delays: tuple[float, ...]
    max_pending: int = 1000
    pending: list[_Pending] = field(default_factory=list)
    dropped: int = 0
    made: int = 0

    def add(self, t: float, truth: dict[str, Any] | None) -> None:
        """Track a word marker at LSL time ``t``."""
        if not self.delays:
            return
        if len(self.pending) >= self.max_pending:
            self.pending.pop(0)
            self.dropped += 1
        self.pending.append(_Pending(float(t), truth))

    def due(self, p: OnlinePipeline) -> list[EarlyJob]:
        """The early jobs whose data have arrived, oldest marker and shortest delay first.

        Every delay is decided, each from its own data (a burst that brings several delays' data at once gives
        several decisions at once). A marker whose window start has left the ring (or whose window straddles a
        gap) stops being tracked, as does one whose every delay is decided.
        """
        out: list[EarlyJob] = []
        keep: list[_Pending] = []
        for m in self.pending:
            gone = False
            while m.next < len(self.delays):
                d = self.delays[m.next]
                status, where = p.locate_anchor(m.time, p.window.n_lag + n_seen(p.window, d))
                if status == "wait":
                    break
                if status == "drop":
                    gone = True
                    break
                job = early_job(p, int(where), d, m.time, m.truth)
                m.next += 1
                if job is None:
                    gone = True
                    break
                out.append(job)
                self.made += 1
            if gone:
                self.dropped += len(self.delays) - m.next
            elif m.next < len(self.delays):
                keep.append(m)
        self.pending = keep
        return out
