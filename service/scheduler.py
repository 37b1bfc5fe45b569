"""Which windows get decoded, and when: the scheduler between the pipeline and the encoder worker.

The control thread calls :meth:`Scheduler.schedule_sliding` (the newest complete sliding window, every hop of
data) and :meth:`Scheduler.schedule_words` (the word-locked windows whose markers are complete); the worker
takes jobs with :meth:`Scheduler.next_job`. The worker holds at most one pending sliding window (a newer one
replaces it: the older is counted as a skipped decision) and a short queue of word windows, so an encoder
slower than the hop skips decisions instead of queueing without bound.

Early decisions (a model whose contract declares ``early_decisions``, see :mod:`neurospeech.early`): every
word marker is also tracked by an :class:`~neurospeech.service.early_decisions.EarlyTracker`, whose partial
windows (the data up to onset + 0.5, 1.0, 1.5, 2.0 s, the rest masked) join the word queue as soon as their
data have arrived -- always before the word's full window, whose data come later.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

from .acquisition import Marker
from .early_decisions import EarlyTracker
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
    early_delays : tuple of float
        Decision delays of the early word decisions (empty: none; the contract's ``early_decisions``).
    """

    def __init__(self, ring_seconds: float, early_delays: tuple[float, ...] = ()) -> None:
        self.ring_seconds = float(ring_seconds)
        self.early = EarlyTracker(tuple(early_delays))
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
                m = self._markers_in.popleft()
                self._pending.append(m)
                self.early.add(m.time, _truth(m))
        if self.early.pending:
            self._queue(self.early.due(p))
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
            job = p.make_job(int(where), "word", _truth(m))
            if job is None:
                self.markers["dropped"] += 1
                continue
            self._queue([job])
        self._pending = keep

    def _queue(self, jobs: Sequence[WindowJob]) -> None:
        """Word-queue ``jobs`` for the worker (bounded: beyond ``MAX_WORD_QUEUE`` a job is a skipped decision)."""
        if not jobs:
            return
        with self.cond:
            for job in jobs:
                if len(self.word_queue) >= MAX_WORD_QUEUE:
                    self.skip()
                else:
                    self.word_queue.append(job)
            self.cond.notify()

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


def _truth(m: Marker) -> dict[str, Any]:
    """The ground-truth fields a word marker carries (published as the decision's ``truth``)."""
    return {k: m.payload[k] for k in ("segment_id", "word", "sound", "sound_time", "sentence") if k in m.payload}
