"""The acquisition side of :class:`~neurospeech.service.server.Server`: connect, pull, detect loss, reconnect.

The ``neurospeech-acq`` thread (:meth:`AcquisitionLoop._acq_loop`) pulls chunks from the inlet
(``min_samples=1`` into a preallocated buffer), runs the online preprocessing into the model-rate ring, pulls
word markers, detects loss (no samples for ``loss_timeout``, or liblsl's LostError) and re-resolves the stream
(by ``source_id``) until it returns. :meth:`AcquisitionLoop._open` checks a (re)connected stream against the
model contract; a stream that comes back with another layout is refused.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import numpy as np

from ..contract import ModelContract
from ..errors import ContractMismatchError
from .acquisition import DataInlet, MarkerInlet, StreamDescription, _pylsl
from .config import ServeSettings
from .pipeline import OnlinePipeline
from .quality import QualitySettings
from .rescale import attach_rescaler
from .scheduler import Scheduler
from .streamcheck import check_stream

__all__ = ["AcquisitionLoop"]

log = logging.getLogger("neurospeech.service.server")  # one logger for the service's runtime messages


class AcquisitionLoop:
    """Mixin of :class:`~neurospeech.service.server.Server`: the stream connection and the acquisition thread.

    Uses the server's attributes declared below.
    """

    settings: ServeSettings
    contract: ModelContract
    quality: QualitySettings
    subject: str
    scheduler: Scheduler
    state: str
    description: StreamDescription | None
    pipeline: OnlinePipeline | None
    _inlet: DataInlet | None
    _marker_inlet: MarkerInlet | None
    _marker_resolver: Any
    _data_resolver: Any
    _lost_uid: str
    _stop: threading.Event
    _status_now: threading.Event
    _data_cond: threading.Condition
    _last_data: float
    _lost_stamp: float
    _lost_since: float | None
    _untimed_in_gap: int  # untimed samples counted as dropped since the loss (see _acq_loop)
    overruns: int
    reconnects: int
    losses: int

    def _open(self, info: Any, first: bool, open_timeout: float = 2.0) -> None:
        s = self.settings
        inlet = DataInlet(info, s.max_buflen, s.clocksync, s.dejitter, s.chunk_samples, open_timeout)
        d = inlet.description
        try:
            cmap = check_stream(
                self.contract, d.labels, d.sfreq, d.units, d.types, d.channel_format, s.strict_rate, s.units
            )
        except ContractMismatchError:
            inlet.close()
            raise
        if first:
            self.pipeline = OnlinePipeline(
                self.contract,
                cmap,
                d.sfreq,
                self.subject,
                s.ring_seconds,
                s.hop,
                self.quality,
                s.jump_threshold,
                s.clock_halftime,
            )
            attach_rescaler(self.pipeline, s, self.contract, self.subject)  # per-session scaling (if asked)
        else:
            p = self.pipeline
            assert p is not None
            was = self.description
            diffs = []
            if d.sfreq != p.sfreq:
                diffs.append(f"rate {d.sfreq:g} Hz, was {p.sfreq:g} Hz")
            if was is not None and d.labels != was.labels:
                diffs.append(
                    f"{d.n_channels} channels, was {was.n_channels}" if d.n_channels != was.n_channels
                    else "the same channels in another order" if sorted(d.labels) == sorted(was.labels)
                    else "other channel names"
                )
            if not np.array_equal(cmap.index, p.index) and not diffs:
                diffs.append("another channel mapping")
            if not np.allclose(cmap.scale, p.scale):
                diffs.append("other channel units")
            if diffs:
                inlet.close()
                raise ContractMismatchError(
                    f"the stream {d.name!r} came back after a loss with another layout ({'; '.join(diffs)}); the "
                    "decoder cannot switch layouts mid-run: restart the service (it checks the new layout at "
                    "start-up)"
                )
            p.new_segment()
            if p.rescaler is not None:  # maybe a new acquisition session (another gain): estimate its scaler
                p.rescaler.restart(p.ring.count, f"{d.name!r} reconnected")
        if cmap.extra:
            log.info(
                "ignoring %d stream channels the model does not use (first: %s)",
                len(cmap.extra),
                cmap.extra[:5],
            )
        self.description = d
        self._inlet = inlet
        self._last_data = time.monotonic()

    def _close_inlets(self) -> None:
        for name in ("_inlet", "_marker_inlet"):
            inl = getattr(self, name)
            if inl is not None:
                setattr(self, name, None)
                inl.close()

    def _set_state(self, state: str) -> None:
        if state != self.state:
            log.info("stream state: %s -> %s", self.state, state)
            self.state = state
            self._status_now.set()
            with self._data_cond:
                self._data_cond.notify_all()

    def _on_lost(self, why: str) -> None:
        p = self.pipeline
        assert p is not None
        self.losses += 1
        self._lost_stamp = p.t_newest_raw
        self._lost_since = time.monotonic()
        self._lost_uid = self.description.uid if self.description else ""
        log.warning("stream %s lost (%s)", self.description.name if self.description else "?", why)
        if self._inlet is not None:
            inl, self._inlet = self._inlet, None
            inl.close()
        p.new_segment()
        self._set_state("lost")

    def _reconnect(self) -> None:
        """One attempt to get the stream back (by source_id, else name/type), from a background resolver."""
        d = self.description
        assert d is not None
        if self._data_resolver is None:
            pylsl = _pylsl()
            pred = f"source_id='{d.source_id}'" if d.source_id else f"name='{d.name}' and type='{d.type}'"
            self._data_resolver = pylsl.ContinuousResolver(pred=pred, forget_after=2.0)
        found = self._data_resolver.results()
        # a killed outlet lingers in the resolver for a while: try other (new) uids first
        found = sorted(found, key=lambda i: i.uid() == self._lost_uid)
        for info in found:
            if self._stop.is_set():
                return
            try:
                self._open(info, first=False, open_timeout=0.5)
            except ContractMismatchError:
                raise
            except Exception as exc:  # a dead outlet still listed, or it vanished again
                log.debug("reconnect to %s failed: %s", info.uid(), exc)
                continue
            self.reconnects += 1
            log.info("stream %s found again (uid %s); waiting for samples", d.name, info.uid())
            return
        self._stop.wait(self.settings.reconnect_interval)

    # ------------------------------------------------------------------ acquisition thread
    def _acq_loop(self) -> None:
        pylsl = _pylsl()
        lost_error = pylsl.util.LostError
        s = self.settings
        p = self.pipeline
        assert p is not None
        next_marker_check = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if self._marker_resolver is not None and now >= next_marker_check:
                next_marker_check = now + 0.5
                self._poll_markers(lost_error)
            if self._inlet is None:
                self._reconnect()
                continue
            try:
                data, stamps = self._inlet.pull(0.05)
            except lost_error:
                self._on_lost("the outlet closed")
                continue
            untimed = self._inlet.take_untimed()
            if untimed:  # dropped on arrival: counted now (the stream may end before a gap would count them)
                p.dropped_samples += untimed
                if self.state == "lost":  # they lie in the loss's gap, reported with the next timed sample
                    self._untimed_in_gap += untimed
            n = len(stamps)
            if n == 0:
                quiet = max(s.loss_timeout, self._inlet.quiet_allowance)  # an outlet sending 10-s chunks
                if self.state == "running" and time.monotonic() - self._last_data > quiet:
                    self._on_lost(f"no samples for {quiet:g} s")
                continue
            self._last_data = time.monotonic()
            if self.state != "running":
                if self.state == "lost" and math.isfinite(self._lost_stamp):
                    p.report_gap(self._lost_stamp, float(stamps[0]) - self._lost_stamp, self._untimed_in_gap)
                self._untimed_in_gap = 0
                self._set_state("running")
            if n >= self._inlet.max_samples:
                self.overruns += 1
            p.process_chunk(data, stamps, self._inlet.t_received)
            if self._marker_inlet is not None:
                self._poll_markers(lost_error)
            with self._data_cond:
                self._data_cond.notify_all()

    def _poll_markers(self, lost_error: type[BaseException]) -> None:
        if self._marker_inlet is None:
            if self._marker_resolver is None:
                return
            found = self._marker_resolver.results()
            if not found:
                return
            try:
                self._marker_inlet = MarkerInlet(found[0], self.settings.clocksync)
                log.info("word markers from stream %s", found[0].name())
            except Exception as exc:  # the marker outlet may vanish between resolve and open
                log.debug("marker inlet failed: %s", exc)
                return
        try:
            got = self._marker_inlet.pull()
        except lost_error:
            inl, self._marker_inlet = self._marker_inlet, None
            inl.close()
            return
        if got:
            self.scheduler.add_markers(got)
