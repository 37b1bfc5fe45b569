"""The live decoding service: LSL in, ZeroMQ out.

Threads
-------
- **acquisition** (``neurospeech-acq``, in :mod:`._acquisition_loop`): pulls chunks from the inlet
  (``min_samples=1`` into a preallocated buffer), runs the online preprocessing into the model-rate ring, pulls
  word markers, detects loss (no samples for ``loss_timeout``, or liblsl's LostError) and re-resolves the
  stream (by ``source_id``) until it returns.
- **control** (``neurospeech-control``): woken by every chunk; asks the :mod:`.scheduler` to cut the newest
  complete sliding window every hop of data and the word-locked windows whose markers are complete, and
  publishes the status heartbeat (every ``status_interval``, and at once on a state change).
- **worker** (``neurospeech-infer``): encoder + scoring + publish of the jobs the scheduler hands over. It holds
  at most one pending sliding window (a newer one replaces it: the older is counted as a skipped decision) and
  a short queue of word windows, so an encoder slower than the hop skips decisions instead of queueing without
  bound.

This module holds the lifecycle (start, stop, join, signals, thread guards), the control and worker loops
and the status.

A crash in any thread stops the service with a logged traceback and a non-zero exit code. SIGINT/SIGTERM stop
it within a second (``run()`` installs the handlers when called from the main thread).

Programmatic use::

    server = Server(settings)      # loads and checks the artifacts (refusals raise here)
    server.start()                 # binds the publisher, resolves and checks the stream, starts threads
    ...                            # server.stats() -> dict (the status header fields)
    server.stop(); server.join()   # or: exit_code = Server(settings).run()  (blocks until a signal/stop)
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
import traceback
from collections import deque
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from ..early import delays_of
from ..errors import ConfigError, NeurospeechError, TransportError
from ._acquisition_loop import AcquisitionLoop
from ._systemd import SystemdNotifier
from .acquisition import DataInlet, MarkerInlet, StreamDescription, _pylsl, resolve_stream
from .config import ServeSettings
from .decoder import Decoder, load_artifacts
from .early_decisions import EarlyJob, early_header
from .pipeline import OnlinePipeline
from .quality import QualitySettings
from .rescale import scaler_status
from .scheduler import Scheduler

__all__ = ["Server"]

log = logging.getLogger(__name__)

class Server(AcquisitionLoop):
    """The ``serve`` runtime.

    Parameters
    ----------
    settings : ServeSettings
    publisher : object or None
        Anything with ``publish(kind, header, arrays=None) -> seq``, ``stats()`` and ``close()``; default: a
        :class:`neurospeech.service.publisher.Publisher` built from ``settings.publish`` in :meth:`start`.

    Raises
    ------
    ConfigError, ArtifactError, ContractMismatchError
        At construction: bad settings, missing/corrupted model, bank for another model, unknown subject.
    """

    def __init__(self, settings: ServeSettings, publisher: Any = None) -> None:
        settings.validate(need_stream=True)
        self.settings = settings
        self.model, self.bank, self.subject = load_artifacts(
            settings.model, settings.bank, settings.subject, settings.intra_op_threads
        )
        self.contract = self.model.contract
        self.decoder = Decoder(self.model, self.bank, self.subject, settings.topk)
        self.quality = QualitySettings.from_settings(settings)
        self.model_info = {
            "model_id": self.contract.model_id,
            "model_sha256": self.model.sha256,
            "preset": self.contract.preset,
            "subject": self.subject,
            "n_candidates": len(self.bank),
            "bank_sha256": None,
            "channels": [c.to_dict() for c in self.contract.channels],  # layout for dashboards
        }
        self.publisher = publisher
        self._own_publisher = publisher is None
        self.state = "connecting"
        self.description: StreamDescription | None = None
        self.pipeline: OnlinePipeline | None = None
        self._inlet: DataInlet | None = None
        self._marker_inlet: MarkerInlet | None = None
        self._marker_resolver: Any = None
        self._data_resolver: Any = None
        self._lost_uid = ""
        self._stop = threading.Event()
        self._systemd = SystemdNotifier()  # Type=notify: READY, WATCHDOG fed by the heartbeat, STOPPING
        self._done = threading.Event()
        self._status_now = threading.Event()
        self._data_cond = threading.Condition()
        # early word decisions when the model declares them (neurospeech.early; word_early messages)
        self.scheduler = Scheduler(settings.ring_seconds, delays_of(self.contract))
        self._threads: list[threading.Thread] = []
        self._fatal: BaseException | None = None
        self._fatal_tb = ""
        self._t_start = time.monotonic()
        self._last_data = time.monotonic()
        self._lost_stamp = math.nan
        self._untimed_in_gap = 0
        self._lost_since: float | None = None
        self._started = False
        # counters
        self.overruns = 0
        self.decisions = {"sliding": 0, "word": 0, **({"word_early": 0} if delays_of(self.contract) else {})}
        self.flagged_windows = 0
        self.reconnects = 0
        self.losses = 0
        self._proc_ms: deque[float] = deque(maxlen=2000)
        import psutil

        self._process = psutil.Process()
        self._process.cpu_percent(None)  # starts the measurement: each status reports CPU since the previous one

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Bind the publisher, resolve and check the stream, start the threads.

        Raises
        ------
        TransportError, StreamNotFoundError, ContractMismatchError
        """
        if self._started:
            raise RuntimeError("server already started")
        self._started = True
        self._t_start = time.monotonic()
        if self._stop.is_set():  # stopped (a signal) before start-up: nothing to open
            self.state = "stopped"
            return
        if self.publisher is None:
            from .publisher import Publisher, PublisherSettings

            try:
                pub_settings = PublisherSettings(**self.settings.publish)
            except TypeError as exc:
                raise ConfigError(f"bad [publish] settings {self.settings.publish!r}: {exc}") from exc
            self.publisher = Publisher(pub_settings, self.model_info)
        if self.settings.lsl_outlet:  # decisions and status into LSL too (LabRecorder -> the same XDF)
            from .lsl_outlet import TeePublisher

            try:
                self.publisher = TeePublisher(self.publisher, self.settings.lsl_outlet, self.model_info,
                                              own=self._own_publisher)
            except BaseException:
                self._close_publisher()
                raise
            self._own_publisher = True
        try:
            self._publish_status()
            s = self.settings
            info = resolve_stream(
                s.stream_name, s.stream_type, s.source_id, s.resolve_timeout, should_stop=self._stop.is_set
            )
            if info is not None and not self._stop.is_set():
                self._open(info, first=True)
        except BaseException:
            self._close_publisher()
            raise
        if self._stop.is_set():  # a stop request during start-up is a clean stop, not a missing stream
            log.info("stopped during start-up")
            return
        if self.settings.markers and self.settings.marker_stream_name:
            pylsl = _pylsl()
            self._marker_resolver = pylsl.ContinuousResolver(
                pred=f"name='{self.settings.marker_stream_name}' and type='Markers'"
            )
        for target, name in (
            (self._acq_loop, "neurospeech-acq"),
            (self._worker_loop, "neurospeech-infer"),
            (self._control_loop, "neurospeech-control"),
        ):
            t = threading.Thread(target=self._guard, args=(target,), name=name, daemon=True)
            self._threads.append(t)
            t.start()
        d = self.description
        assert d is not None
        log.info(
            "serving model %s (%s) for subject %s on stream %s (%d ch @ %g Hz); hop %.3g s",
            self.contract.model_id,
            self.model.sha256[:12],
            self.subject,
            d.name,
            d.n_channels,
            d.sfreq,
            self.settings.hop,
        )
        self._systemd.ready(f"serving {d.name} ({d.n_channels} ch @ {d.sfreq:g} Hz)")

    def stop(self) -> None:
        """Ask every thread to stop (returns at once; :meth:`join` waits)."""
        self._stop.set()
        with self._data_cond:
            self._data_cond.notify_all()
        self.scheduler.wake()

    def join(self, timeout: float = 1.0) -> None:
        """Wait for the threads (up to ``timeout`` in all), publish the final status, close everything."""
        self._systemd.stopping()
        t0 = time.monotonic()
        deadline = t0 + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                log.warning("thread %s did not stop within %.1f s", t.name, timeout)
        if self.state != "stopped":
            self.state = "stopped"
            if self.publisher is not None:
                try:
                    self._publish_status()
                except NeurospeechError:
                    log.debug("final status not sent", exc_info=True)
        t1 = time.monotonic()
        self._close_inlets()
        self._marker_resolver = self._data_resolver = None
        self._close_publisher()
        self._done.set()
        log.debug("stopped: threads joined in %.0f ms, closed in %.0f ms", 1e3 * (t1 - t0),
                  1e3 * (time.monotonic() - t1))

    @property
    def exit_code(self) -> int:
        """0 after a requested stop; the error's exit code (or 1) after a crash."""
        if self._fatal is None:
            return 0
        return self._fatal.exit_code if isinstance(self._fatal, NeurospeechError) else 1

    @property
    def error(self) -> BaseException | None:
        return self._fatal

    def run(self) -> int:
        """Start, serve until SIGINT/SIGTERM (or :meth:`stop`, or a crash), stop; returns the exit code."""
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            with threadpool_limits(self.settings.blas_threads, user_api="blas"):
                self.start()
                while not self._stop.wait(0.05):
                    pass
                self.join(1.0)
        finally:
            for sig, h in handlers.items():
                signal.signal(sig, h)
        if self._fatal is not None:
            log.error("service stopped after an error: %s", self._fatal)
        return self.exit_code

    def _on_signal(self, signum: int, frame: Any) -> None:
        log.info("signal %d received: stopping", signum)
        self.stop()

    def _guard(self, target: Any) -> None:
        try:
            target()
        except NeurospeechError as exc:  # a refusal (e.g. the stream came back with another layout): no traceback
            self._fatal = exc
            self._fatal_tb = traceback.format_exc()
            log.error("stopping the service: %s", exc)
            log.debug("in thread %s:\n%s", threading.current_thread().name, self._fatal_tb)
            self.stop()
        except BaseException as exc:
            self._fatal = exc
            self._fatal_tb = traceback.format_exc()
            log.critical(
                "thread %s crashed; stopping the service:\n%s",
                threading.current_thread().name,
                self._fatal_tb,
            )
            self.stop()

    # ------------------------------------------------------------------ connection
    # ------------------------------------------------------------------ control thread
    def _control_loop(self) -> None:
        p = self.pipeline
        assert p is not None
        interval = self.settings.status_interval
        next_status = time.monotonic() + interval
        while not self._stop.is_set():
            with self._data_cond:
                wait = next_status - time.monotonic()
                if wait > 0 and not self._status_now.is_set():
                    self._data_cond.wait(min(wait, 0.1))
            if self._stop.is_set():
                break
            if self.state == "running":
                self.scheduler.schedule_sliding(p)
                self.scheduler.schedule_words(p)
            now = time.monotonic()
            if now >= next_status or self._status_now.is_set():
                self._status_now.clear()
                self._publish_status()
                next_status = max(next_status + interval, now + 0.5 * interval)

    # ------------------------------------------------------------------ worker thread
    def _worker_loop(self) -> None:
        with_latent = self.settings.send_latent
        while not self._stop.is_set():
            job = self.scheduler.next_job(0.1)
            if job is None:
                continue
            if self.state != "running" or self._stop.is_set():
                self.scheduler.skip()  # never publish after a loss / stop from data queued before it
                continue
            header, arrays = self.decoder.decide(job, with_latent)
            if self._stop.is_set():
                break
            kind = "decode"
            if isinstance(job, EarlyJob):  # a provisional word decision: its own topic (messages.py)
                kind, header = "word_early", early_header(header, job.delay_s, self.contract.window, job.t_onset)
            try:
                self.publisher.publish(kind, header, arrays or None)
            except TransportError:
                if self._stop.is_set():  # closed under us during shutdown
                    break
                raise
            self._proc_ms.append(header["processing_ms"])
            self.decisions[job.kind] += 1
            if job.x is None:
                self.flagged_windows += 1
            if job.kind == "word":
                self.scheduler.markers["decoded"] += 1

    # ------------------------------------------------------------------ status
    def stats(self) -> dict[str, Any]:
        """The status header fields (see ``service/schema/status.v1.json``) plus extra counters."""
        p = self.pipeline
        pub = self.publisher.stats() if self.publisher is not None else {"sent": {}, "dropped": {}}
        # lag: local clock - stamp of the newest sample received, never negative: a future-dated stamp counts from
        # its receipt, and the status says by how much it was ahead (stamps_ahead_s > 0, with
        # timestamp_issues.future_stamps)
        lag = None
        ahead = 0.0
        if p is not None and math.isfinite(p.t_newest_received):
            lag = float(_pylsl().local_clock() - p.t_newest_received)
            ahead = p.newest_ahead_s
            if lag < 0:  # not reachable with a receipt time; clamped (and flagged) for any other source
                ahead = max(ahead, -lag)
                lag = 0.0
        proc = np.array(self._proc_ms) if self._proc_ms else None
        issues: dict[str, Any] = dict(p.timestamp_issues) if p is not None else {}
        if p is not None:
            issues["rate_ratio"] = p.rate_ratio
        return {
            "state": self.state,
            "stream": self.description.summary() if self.description else None,
            "buffer_fill": p.ring.fill if p is not None else 0.0,
            "lag_s": lag,
            "stamps_ahead_s": ahead,
            "samples_received": p.samples_received if p is not None else 0,
            "dropped_samples": p.dropped_samples if p is not None else 0,
            "overruns": self.overruns,
            "skipped_decisions": self.scheduler.skipped_decisions,
            "messages_sent": pub.get("sent", {}),
            "dropped_messages": pub.get("dropped", {}),
            "slow_subscriber_events": pub.get("slow_subscriber_events", {}),
            "message_log": pub.get("message_log"),
            "subscribers": pub.get("subscribers", 0),
            "gaps": list(p.gaps)[-20:] if p is not None else [],
            "n_gaps": p.n_gaps if p is not None else 0,
            "channel_quality": p.channel_quality() if p is not None else None,
            "scaler": scaler_status(p) if p is not None else None,
            "uptime_s": time.monotonic() - self._t_start,
            "timestamp_issues": issues,
            "decisions": dict(self.decisions),
            "flagged_windows": self.flagged_windows,
            "markers": {**self.scheduler.markers, "pending": self.scheduler.n_pending_markers},
            "processing_ms": None
            if proc is None
            else {
                "p50": float(np.percentile(proc, 50)),
                "p99": float(np.percentile(proc, 99)),
                "max": float(proc.max()),
            },
            "losses": self.losses,
            "reconnects": self.reconnects,
            "segment": p.seg if p is not None else 0,
            "hop": self.settings.hop,
            "cpu_percent": self._process.cpu_percent(None),  # of one core, since the previous status
            "inlet": self._inlet.stats() if self._inlet is not None else None,
        }

    def _publish_status(self) -> None:
        if self.publisher is not None:
            self.publisher.publish("status", self.stats())
            self._systemd.heartbeat(self.state)

    def _close_publisher(self) -> None:
        if self.publisher is not None and self._own_publisher:
            pub, self.publisher = self.publisher, None
            pub.close()
