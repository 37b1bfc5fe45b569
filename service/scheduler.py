"""Which windows get decoded, and when: the scheduler between the pipeline and the encoder worker.

The control thread calls :meth:`Scheduler.schedule_sliding` (the newest complete sliding window, every hop of
data) and :meth:`Scheduler.schedule_words` (the word-locked windows whose markers are complete); the worker
takes jobs with :meth:`Scheduler.next_job`. The worker holds at most one pending sliding window (a newer one
replaces it: the older is counted as a skipped decision) and a short queue of word windows, so an encoder
slower than the hop skips decisions instead of queueing without bound.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from .acquisition import Marker
from .jobs import WindowJob
from .pipeline import OnlinePipeline

__all__ = ["MAX_PENDING_MARKERS", "MAX_WORD_QUEUE", "Scheduler"]

log = logging.getLogger(__name__)

MAX_PENDING_MARKERS = 1000
MAX_WORD_QUEUE = 64


class Scheduler:
    """Sliding and word-locked window scheduling, and the bounded hand-over to the worker.

    Parameters
    ----------
    ring_seconds : float
        History of the ring: a word marker whose window is older than this is dropped.
    """

    def __init__(self, ring_seconds: float) -> None:
        self.ring_seconds = float(ring_seconds)
        self.cond = threading.Condition()  # guards the slot and the word queue; the worker waits on it
        self._count_lock = threading.Lock()  # skipped_decisions is counted from the control and worker threads
        self._skipped = 0
        self._markers_in: deque[Marker] = deque(maxlen=MAX_PENDING_MARKERS)
        self._pending: list[Marker] = []
        self.word_queue: deque[WindowJob] = deque()
        self._sliding_slot: WindowJob | None = None
        self._last_key: tuple[int, int] | None = None
        self.markers = {"received": 0, "decoded": 0, "dropped": 0}

    # ------------------------------------------------------------------ counters
    @property
    def skipped_decisions(self) -> int:
        """Windows that were due but not decoded (encoder too slow, window left the ring, stream lost)."""
        return self._skipped

    def skip(self, n: int = 1) -> None:
        """Count ``n`` skipped decisions (thread-safe)."""
        if n:
            with self._count_lock:
                self._skipped += n

    @property
    def n_pending_markers(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------------ input (acquisition thread)
    def add_markers(self, markers: list[Marker]) -> None:
        """Word markers pulled from the marker inlet."""
        self.markers["received"] += len(markers)
        self._markers_in.extend(markers)

    # ------------------------------------------------------------------ control thread
    def schedule_sliding(self, p: OnlinePipeline) -> None:
        """Hand the newest complete sliding window to the worker (the older due ones are skipped)."""
        due = p.due_sliding(self._last_key)
        if not due:
            return
        key, start = due[-1]
        self.skip(len(due) - 1)
        self._last_key = key
        job = p.make_job(start, "sliding")
        if job is None:
            self.skip()
            return
        with self.cond:
            if self._sliding_slot is not None:
                self.skip()
            self._sliding_slot = job
            self.cond.notify()

    def schedule_words(self, p: OnlinePipeline) -> None:
        """Hand the word-locked windows whose data are complete to the worker; drop the hopeless ones."""
        while self._markers_in:
            if len(self._pending) >= MAX_PENDING_MARKERS:
                self._markers_in.popleft()
                self.markers["dropped"] += 1
            else:
                self._pending.append(self._markers_in.popleft())
        if not self._pending:
            return
        keep: list[Marker] = []
        newest = p.ring.newest()
        horizon = self.ring_seconds
        for m in self._pending:
            status, where = p.locate_anchor(m.time)
            if status == "wait":
                if newest is not None and newest[1] - m.time > horizon:
                    self.markers["dropped"] += 1
                else:
                    keep.append(m)
                continue
            if status == "drop":
                log.debug("word marker %s at %.3f dropped: %s", m.payload.get("segment_id"), m.time, where)
                self.markers["dropped"] += 1
                continue
            truth: dict[str, Any] = {
                k: m.payload[k]
                for k in ("segment_id", "word", "sound", "sound_time", "sentence")
                if k in m.payload
            }
            job = p.make_job(int(where), "word", truth)
            if job is None:
                self.markers["dropped"] += 1
                continue
            with self.cond:
                if len(self.word_queue) >= MAX_WORD_QUEUE:
                    self.skip()
                else:
                    self.word_queue.append(job)
                    self.cond.notify()
        self._pending = keep

    # ------------------------------------------------------------------ worker thread
    def next_job(self, timeout: float = 0.1) -> WindowJob | None:
        """The next job (word windows first), waiting up to ``timeout`` s; None when there is none."""
        with self.cond:
            if not self.word_queue and self._sliding_slot is None:
                self.cond.wait(timeout)
            if self.word_queue:
                return self.word_queue.popleft()
            if self._sliding_slot is not None:
                job, self._sliding_slot = self._sliding_slot, None
                return job
        return None

    def wake(self) -> None:
        """Wake a waiting worker (on stop)."""
        with self.cond:
            self.cond.notify_all()
