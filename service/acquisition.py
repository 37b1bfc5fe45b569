"""LSL acquisition with pylsl >= 1.18: resolve, describe, pull into a preallocated buffer, word markers.

``pull_chunk(timeout, max_samples, dest_obj=buffer, min_samples=1)`` returns once one sample is there and
then drains what is already available, straight into a C-contiguous buffer of the stream's dtype (no Python
lists, no per-chunk allocation of the data). The inlet's buffer is small (``max_buflen`` seconds) so that a
stalled consumer drops old data instead of drifting minutes behind; an outlet whose chunks are as large as that
buffer makes the inlet re-open itself with a larger one (see :class:`DataInlet`).

Set ``LSLAPICFG`` (e.g. to the packaged ``lsl_api.cfg``) before pylsl is imported for reliable discovery on one
machine; :func:`ensure_lsl_config` does that when it is unset.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ContractMismatchError, StreamError, StreamNotFoundError

__all__ = [
    "DataInlet",
    "Marker",
    "MarkerInlet",
    "StreamDescription",
    "ensure_lsl_config",
    "list_streams",
    "resolve_stream",
]

log = logging.getLogger(__name__)

_FORMATS = {1: "float32", 2: "double64", 3: "string", 4: "int32", 5: "int16", 6: "int8", 7: "int64"}
_DTYPES = {
    "float32": np.float32,
    "double64": np.float64,
    "int32": np.int32,
    "int16": np.int16,
    "int8": np.int8,
    "int64": np.int64,
}


def ensure_lsl_config() -> None:
    """Point ``LSLAPICFG`` at the packaged ``lsl_api.cfg`` (:mod:`neurospeech.resources`) when unset."""
    from ..resources import ensure_lsl_config as _ensure

    _ensure()


def _pylsl() -> Any:
    ensure_lsl_config()
    import pylsl

    return pylsl


@dataclass(frozen=True)
class StreamDescription:
    """What the service knows about a data stream (from the full LSL stream info)."""

    name: str
    type: str
    source_id: str
    uid: str
    hostname: str
    sfreq: float
    n_channels: int
    channel_format: str
    labels: list[str]
    types: list[str]
    units: list[str]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source_id": self.source_id,
            "sfreq": self.sfreq,
            "n_channels": self.n_channels,
        }


def _quote(v: str) -> str:
    if "'" in v:
        raise StreamError(f"stream query value {v!r} contains a quote; use a name without quotes")
    return f"'{v}'"


def list_streams(wait: float = 1.0) -> list[str]:
    """One line per stream visible on the network (for error messages)."""
    pylsl = _pylsl()
    out = []
    for s in pylsl.resolve_streams(wait_time=wait):
        out.append(
            f"{s.name()} (type {s.type()}, source_id {s.source_id() or '-'}, "
            f"{s.channel_count()} ch @ {s.nominal_srate():g} Hz, host {s.hostname()})"
        )
    return sorted(out)


def resolve_stream(
    name: str | None = None,
    type: str | None = None,
    source_id: str | None = None,
    timeout: float = 10.0,
    should_stop: Any = None,
    list_on_failure: bool = True,
) -> Any:
    """Find one stream by name / type / source_id.

    Polls a background resolver (``should_stop()`` can interrupt) until ``timeout``.

    Returns
    -------
    pylsl.StreamInfo or None
        None when ``should_stop()`` became true first (a stop request is not a missing stream: no listing,
        no error).

    Raises
    ------
    StreamNotFoundError
        Listing the streams that were found instead.
    """
    pylsl = _pylsl()
    parts = []
    if name:
        parts.append(f"name={_quote(name)}")
    if type:
        parts.append(f"type={_quote(type)}")
    if source_id:
        parts.append(f"source_id={_quote(source_id)}")
    if not parts:
        raise StreamError("give a stream name, type or source_id to resolve")
    pred = " and ".join(parts)
    deadline = time.monotonic() + timeout
    # a background resolver keeps sending resolve waves; a single short resolve call can miss a stream
    resolver = pylsl.ContinuousResolver(pred=pred)
    log.info("waiting up to %g s for an LSL stream matching %s", timeout, pred)
    try:
        while True:
            found = resolver.results()
            if found:
                if len(found) > 1:
                    log.warning("%d streams match %s; using the first (%s)", len(found), pred, found[0].uid())
                return found[0]
            if should_stop is not None and should_stop():
                return None
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
    finally:
        del resolver
    if not list_on_failure:
        raise StreamNotFoundError(f"no LSL stream matches {pred}")
    others = list_streams(0.5)
    listing = "; ".join(others[:20]) if others else "none"
    raise StreamNotFoundError(
        f"no LSL stream matches {pred} within {timeout:g} s. Streams found: {listing}. "
        "Fix: start the amplifier/replay, check the name, and that LSLAPICFG points at deploy/lsl_api.cfg "
        "(or your lab's copy) on both machines"
    )


def _describe(info: Any) -> StreamDescription:
    n = info.channel_count()
    labels, types, units = [], [], []
    ch = info.desc().child("channels").child("channel")
    for _ in range(n):
        if ch.empty():
            break
        labels.append(ch.child_value("label"))
        types.append(ch.child_value("type"))
        units.append(ch.child_value("unit"))
        ch = ch.next_sibling("channel")
    if len(labels) != n or not all(labels):
        # the stream was found; it does not say which channel is which, so it cannot fit a model (exit 5)
        raise ContractMismatchError(
            f"stream {info.name()!r} has {n} channels but labels for {sum(map(bool, labels))} of them in "
            "desc/channels/channel/label (pylsl's SendData example writes none). Fix: the outlet must describe "
            "every channel with a label (the model's channel names), a type and a unit, as pylsl's "
            "SendDataAdvanced example does (desc().append_child('channels'), one 'channel' child per channel)"
        )
    stype = info.type()
    types = [t or stype for t in types]
    return StreamDescription(
        name=info.name(),
        type=stype,
        source_id=info.source_id(),
        uid=info.uid(),
        hostname=info.hostname(),
        sfreq=float(info.nominal_srate()),
        n_channels=n,
        channel_format=_FORMATS.get(info.channel_format(), str(info.channel_format())),
        labels=labels,
        types=types,
        units=units,
    )


# what an inlet learned about an outlet's bursts, by source_id (or name): a reconnection (a silence between two
# 10-s chunks can look like a loss before the first one was seen) starts with the buffer already grown
_LEARNED: dict[str, dict[str, float]] = {}


class DataInlet:
    """A numeric LSL inlet pulling into a preallocated buffer.

    Parameters
    ----------
    info : pylsl.StreamInfo
        From :func:`resolve_stream`.
    max_buflen : int
        Inlet buffer in seconds (liblsl keeps ``max_buflen x rate`` samples and drops the oldest beyond).
    clocksync, dejitter : bool
        liblsl post-processing flags.
    chunk_samples : int
        Size of the pull buffer in samples (0: a quarter second).
    open_timeout : float
        Seconds to wait for the full stream info.

    Notes
    -----
    An outlet that sends its data in bursts larger than the inlet buffer (e.g. 10-s chunks into a 2-s buffer)
    loses the oldest samples of every burst inside liblsl. A sequence of pulls that together drain >= 90 % of
    the buffer faster than twice real time is taken as such a burst: ``chunking_exceeds_buffer`` is set
    (reported in the status ``inlet`` field) and the inlet is re-opened with a buffer of twice the outlet's
    burst period (<= 360 s, grown again once that period is known); the old
    inlet is drained first and samples the new one repeats are dropped by stamp, so the switch loses nothing
    that had arrived. Samples lost before the switch show as a stamp gap, which the pipeline counts in
    ``dropped_samples``. ``quiet_allowance`` is how long the outlet may legitimately stay silent between
    bursts (twice its burst period: the service's loss timeout is at least that).
    """

    def __init__(
        self,
        info: Any,
        max_buflen: int = 2,
        clocksync: bool = True,
        dejitter: bool = False,
        chunk_samples: int = 0,
        open_timeout: float = 2.0,
    ) -> None:
        pylsl = _pylsl()
        self._pylsl = pylsl
        flags = 0
        if clocksync:
            flags |= pylsl.proc_clocksync
        if dejitter:
            flags |= pylsl.proc_dejitter
        self.processing_flags = flags
        self._info = info
        self._key = info.source_id() or info.name()
        learned = _LEARNED.get(self._key, {})
        self.max_buflen = max(int(max_buflen), int(learned.get("max_buflen", 0)))
        self.inlet = pylsl.StreamInlet(info, max_buflen=self.max_buflen, recover=False, processing_flags=flags)
        try:
            full = self.inlet.info(timeout=open_timeout)
        except Exception as exc:
            self.inlet.close_stream()
            raise StreamError(
                f"could not read the stream's description ({exc}); is the outlet alive?"
            ) from exc
        fmt = _FORMATS.get(full.channel_format(), str(full.channel_format()))
        if fmt not in _DTYPES:
            self.inlet.close_stream()
            raise ContractMismatchError(
                f"stream {full.name()!r} (type {full.type()!r}) has channel format {fmt!r}; the model needs a "
                "numeric M/EEG stream (float32, double64 or integers). Is it a marker stream? Connect to the "
                "data stream (check --stream-name / --stream-type)"
            )
        try:
            self.description = _describe(full)
        except ContractMismatchError:
            self.inlet.close_stream()
            raise
        self.dtype = np.dtype(_DTYPES[fmt])
        sfreq = self.description.sfreq
        n = chunk_samples or max(16, int(sfreq * 0.25))
        self.buffer = np.zeros((n, self.description.n_channels), dtype=self.dtype)
        self.max_samples = n
        self.inlet.open_stream(timeout=open_timeout)
        self.t_received = float("nan")  # local_clock() right after the last pull that returned samples
        # burst bookkeeping (see Notes)
        self._old: Any = None  # the previous inlet, drained after a buffer switch
        self._last_stamp = -math.inf
        self._switched = False
        self._timed = False
        self._idle = False
        self._burst_idle = False
        self._burst_wait = 0.0
        self._in_burst = False
        self._burst = 0
        self._burst_t0 = math.nan
        self._prev_burst_t0 = learned.get("prev_burst_t0", math.nan)
        self.largest_burst = int(learned.get("largest_burst", 0))  # samples
        self.burst_period = learned.get("burst_period", 0.0)  # s between the starts of the last two large bursts
        self.chunking_exceeds_buffer = bool(learned.get("chunking_exceeds_buffer", False))
        self.buffer_switches = int(learned.get("buffer_switches", 0))
        self.untimed_samples = 0  # dropped: stamps liblsl deduced from 0 (see pull)
        self._untimed_new = 0  # of which not yet taken by take_untimed()
        self._n_seen = 0

    @property
    def capacity(self) -> int:
        """Samples the liblsl inlet buffer holds."""
        return int(self.max_buflen * self.description.sfreq)

    @property
    def quiet_allowance(self) -> float:
        """Seconds the outlet may stay silent between its chunks (0 while it streams in small chunks)."""
        largest = self.largest_burst / self.description.sfreq if self.description.sfreq > 0 else 0.0
        return 2.0 * max(self.burst_period, largest) if largest >= 0.5 else 0.0

    def stats(self) -> dict[str, Any]:
        """For the status heartbeat: inlet buffer and the outlet's chunking as seen here."""
        sf = self.description.sfreq
        return {
            "buffer_s": self.max_buflen,
            "largest_chunk_s": self.largest_burst / sf if sf > 0 else None,
            "chunking_exceeds_buffer": self.chunking_exceeds_buffer,
            "buffer_switches": self.buffer_switches,
            "untimed_samples": self.untimed_samples,
            "quiet_allowance_s": max(self.quiet_allowance, 0.0),
        }

    def pull(self, timeout: float) -> tuple[NDArray[Any], NDArray[np.float64]]:
        """Wait up to ``timeout`` for at least one sample, then take what is there (up to the buffer size).

        Returns a view ``(n, n_channels)`` of the internal buffer (valid until the next pull) and the stamps.

        Raises
        ------
        StreamLostError-like
            ``pylsl.util.LostError`` propagates when the outlet is gone.
        """
        if self._old is not None:  # drain the inlet replaced by a larger one first
            try:
                _, stamps = self._old.pull_chunk(timeout=0.0, max_samples=self.max_samples, dest_obj=self.buffer)
            except Exception:  # lost: the new inlet carries on (or reports the loss itself)
                stamps = []
            if len(stamps):
                return self._deliver(len(stamps), np.asarray(stamps, dtype=np.float64))
            self._close(self._old)
            self._old = None
        _, stamps = self.inlet.pull_chunk(
            timeout=timeout, max_samples=self.max_samples, dest_obj=self.buffer, min_samples=1
        )
        st = np.asarray(stamps, dtype=np.float64)
        n = len(st)
        self._n_seen += n
        if n and self._switched:  # a new inlet after a switch may repeat what the old one gave: drop by stamp
            if st[0] <= self._last_stamp:
                n, st = self._keep(n, st, st > self._last_stamp)
            else:
                self._switched = False  # (outside a switch, overlapping stamps are the pipeline's to count)
        if n and not self._timed and st[0] <= self._n_seen / max(self.description.sfreq, 1.0) + 1.0:
            # liblsl sends one explicit stamp per pushed chunk and "deduces" the others from the previous
            # sample; an inlet that connects in the middle of a chunk deduces them from 0 (stamps k / rate):
            # they cannot be placed in time. Dropped, and counted as dropped by the caller (take_untimed)
            keep = st > self._n_seen / max(self.description.sfreq, 1.0) + 1.0
            untimed = n - int(np.count_nonzero(keep))
            self.untimed_samples += untimed
            self._untimed_new += untimed
            if self.untimed_samples == untimed:
                log.warning(
                    "stream %s: %d samples arrived without a usable time stamp (an inlet opened in the middle "
                    "of a pushed chunk); dropped", self.description.name, untimed,
                )
            n, st = self._keep(n, st, keep)
        if n:
            self._timed = True  # only a new inlet's first chunk can lack an explicit stamp
        return self._deliver(n, st)

    def take_untimed(self) -> int:
        """Samples dropped as untimed (see :meth:`pull`) since the last call: the caller counts them as dropped.

        They are counted when they are dropped, not later from the gap their absence leaves: a stream that
        ends (or is lost again) before its next timed sample leaves no gap to count them by.
        """
        k, self._untimed_new = self._untimed_new, 0
        return k

    def _keep(
        self, n: int, st: NDArray[np.float64], keep: NDArray[np.bool_]
    ) -> tuple[int, NDArray[np.float64]]:
        k = int(np.count_nonzero(keep))
        if k < n:
            self.buffer[:k] = self.buffer[:n][keep]
        return k, st[keep]

    def _deliver(self, n: int, stamps: NDArray[np.float64]) -> tuple[NDArray[Any], NDArray[np.float64]]:
        if n == 0:
            if self._in_burst:
                self._end_burst()
            self._idle = True
            return self.buffer[:0], stamps
        now = float(self._pylsl.local_clock())
        gap = now - self.t_received if math.isfinite(self.t_received) else math.inf
        self.t_received = now
        self._last_stamp = float(stamps[-1])
        sf = self.description.sfreq
        if self._in_burst and sf > 0 and (self._burst + n) / sf < 2.0 * (now - self._burst_t0):
            # no longer arriving faster than real time: the burst ended with the previous pull. (Not "a pull
            # returned less than the pull buffer": under CPU load liblsl hands over one 3-s chunk in many small
            # pieces, and the burst was cut into pieces too small to be noticed.)
            self._end_burst()
        if not self._in_burst:
            # the outlet's own burst arrives while this inlet waits (an empty pull before it, and a wait of at
            # least half of it); a backlog of a consumer that fell behind does not
            self._in_burst, self._burst, self._burst_t0 = True, 0, now
            self._burst_idle, self._burst_wait = self._idle, gap
        self._idle = False
        self._burst += n
        return self.buffer[:n], stamps

    def _end_burst(self) -> None:
        self._in_burst = False
        burst = self._burst
        sf = self.description.sfreq
        chunking = sf > 0 and burst >= 0.5 * sf and self._burst_idle and self._burst_wait >= 0.5 * burst / sf
        if not chunking:
            # data arrived between two of the outlet's large chunks (small chunks, or a large chunk a loaded
            # consumer received in pieces): the time between those two is not the outlet's chunk period. (Under
            # three busy loops, 25 s of pieces gave a "period" of 25.3 s, a 50-s quiet allowance: a stream that
            # died then was declared lost 50 s late.) The allowance falls back to the largest chunk
            self._prev_burst_t0 = math.nan
        if sf <= 0 or burst < 0.5 * sf:  # ordinary small chunks
            return
        log.debug("burst of %d samples from t=%.3f (idle before: %s, waited %.3f s; previous burst t=%.3f)",
                  burst, self._burst_t0, self._burst_idle, self._burst_wait, self._prev_burst_t0)
        if chunking:  # the outlet's chunking: a large burst after a silence at least half as long
            if math.isfinite(self._prev_burst_t0):
                self.burst_period = self._burst_t0 - self._prev_burst_t0
            self._prev_burst_t0 = self._burst_t0
            self.largest_burst = max(self.largest_burst, burst)
        if burst >= 0.9 * self.capacity:  # lost in liblsl whoever caused it: a larger buffer
            self.chunking_exceeds_buffer = True
            self._grow(burst / sf)
        elif self.chunking_exceeds_buffer and self.max_buflen < 2 * max(self.burst_period, self.largest_burst / sf):
            # grown once while the chunking was still unknown (e.g. to 4 s for 3-s chunks): now that the burst
            # period is known, the promised twice-the-period buffer, whatever order the pulls came in
            self._grow(self.largest_burst / sf)
        _LEARNED[self._key] = {
            "max_buflen": self.max_buflen, "prev_burst_t0": self._prev_burst_t0,
            "largest_burst": self.largest_burst, "burst_period": self.burst_period,
            "chunking_exceeds_buffer": self.chunking_exceeds_buffer, "buffer_switches": self.buffer_switches,
        }

    def _grow(self, burst_s: float) -> None:
        """Re-open the inlet with a buffer for the outlet's bursts (the old one is drained, then closed)."""
        want = int(min(360, max(2 * self.max_buflen, math.ceil(2 * max(burst_s, self.burst_period)) + 1)))
        if want <= self.max_buflen or self._old is not None:
            return
        log.warning(
            "stream %s arrives in bursts of >= %.1f s (every %.1f s), as large as the %d-s inlet buffer: samples "
            "were lost; re-opening the inlet with a %d-s buffer",
            self.description.name, burst_s, self.burst_period, self.max_buflen, want,
        )
        try:
            new = self._pylsl.StreamInlet(
                self._info, max_buflen=want, recover=False, processing_flags=self.processing_flags
            )
            new.open_stream(timeout=2.0)
        except Exception as exc:  # keep the old inlet
            log.warning("could not re-open the inlet with a larger buffer: %s", exc)
            return
        self._old, self.inlet = self.inlet, new
        self._switched = True
        self._timed, self._n_seen = False, 0
        self.max_buflen = want
        self.buffer_switches += 1

    def time_correction(self, timeout: float = 1.0) -> float:
        return float(self.inlet.time_correction(timeout=timeout))

    @staticmethod
    def _close(inlet: Any) -> None:
        try:
            inlet.close_stream()
        except Exception:  # closing a lost stream may raise in liblsl; nothing to do about it
            log.debug("close_stream failed", exc_info=True)

    def close(self) -> None:
        if self._old is not None:
            self._close(self._old)
            self._old = None
        self._close(self.inlet)
        del self.inlet


@dataclass(frozen=True)
class Marker:
    """One word marker: LSL stamp of the word onset and the JSON payload (segment_id, word, sound ...)."""

    time: float
    payload: dict[str, Any]


class MarkerInlet:
    """The replay's word-marker stream (1 string channel of JSON objects, irregular rate)."""

    def __init__(self, info: Any, clocksync: bool = True, max_buflen: int = 60) -> None:
        pylsl = _pylsl()
        flags = pylsl.proc_clocksync if clocksync else 0
        self.name = info.name()
        self.inlet = pylsl.StreamInlet(info, max_buflen=max_buflen, recover=False, processing_flags=flags)
        self.inlet.open_stream(timeout=2.0)
        self.malformed = 0

    def pull(self) -> list[Marker]:
        """Markers available now (never blocks); malformed payloads are counted and dropped."""
        samples, stamps = self.inlet.pull_chunk(timeout=0.0, max_samples=256)
        out = []
        for s, t in zip(samples or [], stamps or [], strict=False):
            try:
                payload = json.loads(s[0])
            except (ValueError, TypeError, IndexError):
                payload = None
            if not isinstance(payload, dict) or not isinstance(payload.get("segment_id"), str):
                self.malformed += 1
                continue
            out.append(Marker(float(t), payload))
        return out

    def close(self) -> None:
        try:
            self.inlet.close_stream()
        except Exception:
            log.debug("close_stream failed", exc_info=True)
        del self.inlet
