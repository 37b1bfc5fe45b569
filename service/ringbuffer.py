"""A fixed-size ring of model-rate samples, written in place by one thread and read by others.

Samples are addressed by a global index ``g`` (0, 1, 2, ... since the service started, across reconnections).
The ring keeps the last ``capacity`` of them. A write copies only the new samples into their slots
(at most two slices when it wraps); readers copy out just the span they ask for. One lock guards both, held
only for those small copies, so a reader never sees a half-written span and the writer never waits long.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import DataFormatError

__all__ = ["RingBuffer", "RingSpan"]


class RingSpan:
    """A copied-out span of the ring.

    Attributes
    ----------
    start : int
        Global index of the first sample.
    data : array, shape (n, n_channels)
        A transposed view of a channel-major copy: ``data.T`` is C-contiguous ``(n_channels, n)``, the model's
        layout (window checks and scaling run on it without a strided pass).
    times : array, shape (n,)
        Time of each sample (LSL clock).
    seg : array of int64, shape (n,)
        Continuous-segment number of each sample (changes at a gap or reconnection).
    bad : array of bool, shape (n, n_channels)
        Samples computed from non-finite input (channel-major like ``data``; a shared read-only all-False view
        when the span has none).
    newest : array, shape (n,)
        LSL stamp of the newest raw sample consumed when each sample was produced (for latency), never later
        than the local time that sample was received.
    stuck : array of bool, shape (n, n_channels)
        The raw sample behind each sample repeated its predecessor exactly (clipping / stuck ADC)
        (as ``bad``).
    any_bad, any_stuck : bool
        Whether ``bad`` / ``stuck`` hold any True (known from per-sample flags: no pass over the arrays).
    ahead : float
        The most (s) by which a stamp behind the span was ahead of the local clock when received (0: none was
        future-dated).
    """

    __slots__ = ("ahead", "any_bad", "any_stuck", "bad", "data", "newest", "seg", "start", "stuck", "times")

    def __init__(
        self, start: int, data: Any, times: Any, seg: Any, bad: Any, newest: Any, stuck: Any = None,
        any_bad: bool | None = None, any_stuck: bool | None = None, ahead: float = 0.0,
    ) -> None:
        self.start = start
        self.data = data
        self.times = times
        self.seg = seg
        self.bad = bad
        self.newest = newest
        self.stuck = stuck
        self.any_bad = bool(np.any(bad)) if any_bad is None else any_bad
        self.any_stuck = (stuck is not None and bool(np.any(stuck))) if any_stuck is None else any_stuck
        self.ahead = float(ahead)

    @property
    def continuous(self) -> bool:
        """True when every sample belongs to one segment (no gap inside)."""
        return bool(len(self.seg) == 0 or self.seg[0] == self.seg[-1])


class RingBuffer:
    """Ring of ``capacity`` samples of ``n_channels`` with times, segment numbers and bad-sample masks.

    Parameters
    ----------
    capacity : int
        Samples kept.
    n_channels : int
        Channels per sample.
    dtype : numpy dtype
        Sample type (float32, as the offline path stores model-rate data).

    Notes
    -----
    Samples are stored channel-major, ``(n_channels, capacity)``: each sample is transposed once when written,
    instead of once per window that contains it when read (at a 0.25 s hop every sample is in 12 windows).
    """

    def __init__(self, capacity: int, n_channels: int, dtype: Any = np.float32) -> None:
        if capacity < 1 or n_channels < 1:
            raise DataFormatError(
                f"ring needs capacity >= 1 and n_channels >= 1, got {capacity}, {n_channels}"
            )
        self.capacity = int(capacity)
        self.n_channels = int(n_channels)
        self._data = np.zeros((self.n_channels, self.capacity), dtype=dtype)
        self._times = np.zeros(self.capacity, dtype=np.float64)
        self._seg = np.full(self.capacity, -1, dtype=np.int64)
        self._bad = np.zeros((self.n_channels, self.capacity), dtype=bool)
        self._newest = np.full(self.capacity, np.nan, dtype=np.float64)
        self._ahead = np.zeros(self.capacity, dtype=np.float32)
        self._stuck = np.zeros((self.n_channels, self.capacity), dtype=bool)
        # per sample: any channel bad / stuck (a span without any reads as a shared all-False view: no copy)
        self._any_bad = np.zeros(self.capacity, dtype=bool)
        self._any_stuck = np.zeros(self.capacity, dtype=bool)
        self._count = 0
        self._false_views: dict[int, NDArray[np.bool_]] = {}
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        """Samples written so far (the global index of the next sample)."""
        return self._count

    @property
    def oldest(self) -> int:
        """Global index of the oldest sample still held."""
        return max(0, self._count - self.capacity)

    @property
    def fill(self) -> float:
        """Fraction of the ring holding data (0..1)."""
        return min(self._count, self.capacity) / self.capacity

    def write(
        self,
        data: NDArray[Any],
        times: NDArray[np.float64],
        seg: int,
        bad: NDArray[np.bool_] | None = None,
        newest: float = float("nan"),
        stuck: NDArray[np.bool_] | None = None,
        ahead: float = 0.0,
    ) -> int:
        """Append samples in place.

        Parameters
        ----------
        data : array, shape (n, n_channels)
        times : array, shape (n,)
        seg : int
            Segment number of these samples.
        bad : array of bool, shape (n, n_channels), or None (all good)
        newest : float
            LSL stamp of the newest raw sample consumed to produce these samples.
        stuck : array of bool, shape (n, n_channels), or None
        ahead : float
            How far (s) the newest stamp was ahead of the local clock at receipt (0: not future-dated).

        Returns
        -------
        int
            The new :attr:`count`.
        """
        n = len(data)
        if n == 0:
            return self._count
        if data.ndim != 2 or data.shape[1] != self.n_channels or len(times) != n:
            raise DataFormatError(
                f"ring write needs data (n, {self.n_channels}) and times (n,), got {data.shape}, {len(times)}"
            )
        if n > self.capacity:  # only the newest capacity samples can be kept
            skip = n - self.capacity
            with self._lock:
                self._count += skip
            data, times = data[skip:], times[skip:]
            bad = None if bad is None else bad[skip:]
            stuck = None if stuck is None else stuck[skip:]
            n = self.capacity
        with self._lock:
            i0 = self._count % self.capacity
            first = min(n, self.capacity - i0)
            for dst, src in (
                (slice(i0, i0 + first), slice(0, first)),
                (slice(0, n - first), slice(first, n)),
            ):
                if src.stop - src.start <= 0:
                    continue
                self._data[:, dst] = data[src].T
                self._times[dst] = times[src]
                self._seg[dst] = seg
                self._newest[dst] = newest
                self._ahead[dst] = ahead
                for mask, any_flag, given in ((self._bad, self._any_bad, bad), (self._stuck, self._any_stuck, stuck)):
                    mask[:, dst] = False if given is None else given[src].T
                    any_flag[dst] = False if given is None else given[src].any(axis=1)
            self._count += n
            return self._count

    def read(self, start: int, n: int) -> RingSpan:
        """Copy out samples ``start .. start + n - 1`` (global indices).

        Raises
        ------
        IndexError
            If part of the span has been overwritten or not written yet.
        """
        with self._lock:
            if n < 0 or start < max(0, self._count - self.capacity) or start + n > self._count:
                raise IndexError(
                    f"span [{start}, {start + n}) is not in the ring (holds [{self.oldest}, {self._count}))"
                )
            i0 = start % self.capacity
            parts = [slice(i0, min(i0 + n, self.capacity))]
            if i0 + n > self.capacity:  # wraps around: the end of the ring, then its start
                parts.append(slice(0, i0 + n - self.capacity))

            any_bad = any(bool(self._any_bad[p].any()) for p in parts)
            any_stuck = any(bool(self._any_stuck[p].any()) for p in parts)

            def take(a: NDArray[Any], flags: bool | None = None) -> NDArray[Any]:
                if flags is False:
                    return self._all_false(n)
                # along the last axis (time); .T: (n, n_channels) view of a channel-major copy (1-D: no-op)
                cm = np.concatenate([a[..., p] for p in parts], axis=-1) if len(parts) > 1 else a[..., parts[0]].copy()
                return cm.T

            return RingSpan(
                start,
                take(self._data),
                take(self._times),
                take(self._seg),
                take(self._bad, any_bad),
                take(self._newest),
                take(self._stuck, any_stuck),
                any_bad,
                any_stuck,
                max(float(self._ahead[p].max()) for p in parts),
            )

    def _all_false(self, n: int) -> NDArray[np.bool_]:
        """A read-only all-False ``(n, n_channels)`` view, shared (one per span length: windows are all alike)."""
        view = self._false_views.get(n)
        if view is None:
            view = np.broadcast_to(np.False_, (n, self.n_channels))
            if len(self._false_views) < 8:
                self._false_views[n] = view
        return view

    def read_meta(self, start: int, n: int) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """Times and segment numbers only (cheap search for a time)."""
        with self._lock:
            start = max(start, self._count - self.capacity, 0)
            stop = min(start + n, self._count)
            idx = np.arange(start, stop) % self.capacity
            return self._times[idx], self._seg[idx]

    def newest(self) -> tuple[int, float, int] | None:
        """``(global index, time, segment)`` of the newest sample, or None when empty."""
        with self._lock:
            if self._count == 0:
                return None
            i = (self._count - 1) % self.capacity
            return self._count - 1, float(self._times[i]), int(self._seg[i])
