"""ZeroMQ publisher of the live service: decode decisions and status heartbeats (wire format in
:mod:`neurospeech.service.messages`).

- A PUB socket bound to ``127.0.0.1`` by default (subscribers connect). Binding another interface without
  CURVE keys logs a warning.
- ``publish`` never blocks: ``send_multipart(..., zmq.NOBLOCK)`` on an XPUB socket. Each subscriber has its own
  queue of ``sndhwm`` messages. The socket runs with ``XPUB_NODROP`` as a detector: when the queue of a
  subscriber that matches the topic is full, the send fails with EAGAIN. By default (``nodrop=False``) the
  publisher then counts a *slow-subscriber event* (``stats()["slow_subscriber_events"]``, in ``status``) and
  sends the same message again in lossy mode, so every subscriber that keeps up still gets it and only the full
  one loses it. libzmq then stops offering messages to that subscriber until it has read its queue down, so one
  event marks the start of a run of losses for one subscriber (at least one message each), not one message.
  Such a run covers every topic the subscriber takes, yet only its first message fails with EAGAIN: the first
  message of each other subscribed topic published after it is counted as an event of that topic too (an upper
  bound: the subscriber may have caught up in between, which the publisher cannot see).
  the exact count of lost messages is known only to the subscriber, from the per-topic sequence numbers
  (:class:`~neurospeech.service.client.Subscriber` counts them). With ``nodrop=True`` a full queue drops the
  message *for every subscriber*, and each such message is counted in ``stats()["dropped"]`` (exact count at
  the publisher, at the price of head-of-line loss for the readers that keep up). The sequence number is
  consumed either way, so any loss shows as a gap downstream.
- Subscribers are counted from the XPUB (un)subscription messages (``XPUB_VERBOSER``):
  ``stats()["subscribers"]`` is the number of live subscriptions (one per subscriber and topic prefix).
- Late joiners: an optional REQ/REP ``state`` endpoint (``state_endpoint``), answered by a small thread,
  replies with the model info and the last ``status`` header published (schema ``neurospeech.v1.state``).
  A REP endpoint was chosen over an XPUB last-value cache because it answers only the client that asks
  (an LVC on a PUB socket re-sends to everyone) and works with any request/reply client.
- Optional CURVE encryption + client authentication (:mod:`neurospeech.service._curve`) on both sockets.
- ``linger=0``: closing never waits for slow peers.
- Optional JSONL log: one line per message (``topic``, the header, ``dropped``), array data not included.
  Each line goes out in one unbuffered write; when a write fails (disk full) the partial line is cut off again,
  logging stops (publishing goes on) and ``stats()["message_log"]`` says so (``state: "stopped"``, the error).
"""

from __future__ import annotations

import errno
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import zmq

from ..errors import ConfigError, TransportError
from . import _curve
from .messages import ENCODINGS, KINDS, STATE_SCHEMA, TOPIC_PREFIX, encode_header, encode_message, topic_of

__all__ = ["Publisher", "PublisherSettings"]

log = logging.getLogger(__name__)

_LOOPBACK = ("127.", "localhost", "[::1]", "::1")


@dataclass
class PublisherSettings:
    """Settings of :class:`Publisher`.

    Attributes
    ----------
    endpoint : str
        ZeroMQ endpoint the PUB socket binds, e.g. ``tcp://127.0.0.1:5556`` or ``ipc:///tmp/ns.pub``.
    encoding : str
        Header encoding: ``'json'`` (default) or ``'msgpack'``.
    sndhwm : int
        Send high-water mark in messages, per subscriber.
    state_endpoint : str or None
        Endpoint of the REP socket answering late joiners (model info + last status); None: no such socket.
    curve_secret_key : Path or None
        Server ``.key_secret`` file: enables CURVE encryption on both sockets.
    curve_authorized_keys : Path or None
        Folder of client public ``.key`` files allowed to connect (None with a secret key: any CURVE client).
    jsonl_log : Path or None
        Append every published header as one JSON line here.
    nodrop : bool
        Strict mode: a full subscriber queue drops the message for every subscriber and each such message is
        counted in ``dropped``. Default False: only the full subscriber loses it (counted as a slow-subscriber
        event; see the module docstring).
    """

    endpoint: str = "tcp://127.0.0.1:5556"
    encoding: str = "json"
    sndhwm: int = 1000
    state_endpoint: str | None = None
    curve_secret_key: Path | None = None
    curve_authorized_keys: Path | None = None
    jsonl_log: Path | None = None
    nodrop: bool = False

    def __post_init__(self) -> None:
        # strict types: TOML's ``nodrop = "no"`` would read as true, ``sndhwm = "lots"`` would crash in int()
        if not isinstance(self.nodrop, bool):
            raise ConfigError(f"[publish] nodrop must be true or false (a TOML boolean), got {self.nodrop!r}")
        if isinstance(self.sndhwm, bool) or not isinstance(self.sndhwm, int) or not 1 <= self.sndhwm <= 10_000_000:
            raise ConfigError(
                f"[publish] sndhwm must be an integer number of messages in [1, 10000000], got {self.sndhwm!r}"
            )
        if not isinstance(self.encoding, str) or self.encoding not in ENCODINGS:
            raise ConfigError(
                f"publisher encoding {self.encoding!r} is not supported; use one of {ENCODINGS}"
            )
        for name in ("endpoint", "state_endpoint"):
            ep = getattr(self, name)
            if ep is not None and not isinstance(ep, str):
                raise ConfigError(f"[publish] {name} must be a string such as 'tcp://127.0.0.1:5556', got {ep!r}")
        for name in ("curve_secret_key", "curve_authorized_keys", "jsonl_log"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, (str, Path)):
                raise ConfigError(f"[publish] {name} must be a path string, got {v!r}")
        for name in ("endpoint", "state_endpoint"):
            ep = getattr(self, name)
            if ep is not None and "://" not in str(ep):
                raise ConfigError(
                    f"{name} {ep!r} is not a ZeroMQ endpoint; write e.g. 'tcp://127.0.0.1:5556' or 'ipc:///tmp/ns'"
                )
        same = self.state_endpoint is not None and self.state_endpoint == self.endpoint
        if same and "*" not in self.endpoint:
            raise ConfigError(f"state_endpoint must differ from endpoint (both {self.endpoint!r})")
        if self.curve_authorized_keys is not None and self.curve_secret_key is None:
            raise ConfigError(
                "curve_authorized_keys needs curve_secret_key (the server's .key_secret file) as well"
            )
        for name in ("curve_secret_key", "curve_authorized_keys", "jsonl_log"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, Path):
                setattr(self, name, Path(v))


def _bind(sock: zmq.Socket, endpoint: str, what: str) -> str:
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        if exc.errno == errno.EADDRINUSE or exc.errno == zmq.EADDRINUSE:
            raise TransportError(
                f"{what} address {endpoint!r} is already in use (another `neurospeech serve` running?); stop "
                "that process or choose a free port/endpoint (e.g. --pub tcp://127.0.0.1:5566)"
            ) from exc
        raise TransportError(
            f"cannot bind {what} to {endpoint!r}: {exc}; check the endpoint syntax/interface"
        ) from exc
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


class Publisher:
    """Publish ``decode`` and ``status`` messages of one model.

    Parameters
    ----------
    settings : PublisherSettings
        Endpoints, encoding, HWM, keys, log.
    model_info : dict
        At least ``model_id`` and ``model_sha256`` (added to every header); the whole dict is what the state
        endpoint returns as ``model``.

    Raises
    ------
    TransportError
        Address in use, bad endpoint, unreadable key files.
    """

    def __init__(self, settings: PublisherSettings, model_info: dict[str, Any]) -> None:
        self.settings = settings
        self.model_info = dict(model_info)
        self._model_fields = {"model_id": self.model_info.get("model_id"),
                              "model_sha256": self.model_info.get("model_sha256")}
        self._lock = threading.Lock()
        self._seq = dict.fromkeys(KINDS, 0)
        self._sent = dict.fromkeys(KINDS, 0)
        self._dropped = dict.fromkeys(KINDS, 0)
        self._slow = dict.fromkeys(KINDS, 0)
        self._run_open = dict.fromkeys(KINDS, False)
        self._subscriptions: dict[bytes, int] = {}
        self._bytes = 0
        self._state_requests = 0
        self._last_status: dict[str, Any] | None = None
        self._closed = False
        self._auth: Any = None
        self._state_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._log_file: IO[bytes] | None = None
        self._log_good = 0  # file offset after the last complete line
        self._log_error: str | None = None
        import pylsl  # here, not at import: ServeSettings validates PublisherSettings before LSLAPICFG is set

        self._clock = pylsl.local_clock
        self.ctx = zmq.Context()
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ set-up
    def _secure(self, sock: zmq.Socket) -> None:
        if self.settings.curve_secret_key is not None:
            _curve.apply_server(sock, self.settings.curve_secret_key)

    def _open(self) -> None:
        s = self.settings
        if s.curve_secret_key is not None:
            _curve.load_keypair(s.curve_secret_key)  # fail early with a clear error
            self._auth = _curve.start_authenticator(self.ctx, s.curve_authorized_keys)
        elif not any(h in s.endpoint for h in _LOOPBACK) and not s.endpoint.startswith(("ipc://", "inproc://")):
            log.warning("publishing on %s without CURVE encryption: anyone on that network can subscribe "
                        "(set curve_secret_key / curve_authorized_keys)", s.endpoint)
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.linger = 0
        self.sock.sndhwm = int(s.sndhwm)
        self.sock.setsockopt(zmq.XPUB_NODROP, 1)  # a full subscriber queue -> EAGAIN (see the module docstring)
        self.sock.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscription reaches us: subscriber count
        self._secure(self.sock)
        self.endpoint = _bind(self.sock, s.endpoint, "publisher")
        self.state_endpoint: str | None = None
        if s.state_endpoint is not None:
            rep = self.ctx.socket(zmq.REP)
            rep.linger = 0
            self._secure(rep)
            try:
                self.state_endpoint = _bind(rep, s.state_endpoint, "state endpoint")
            except TransportError:
                rep.close(0)
                raise
            self._state_thread = threading.Thread(target=self._serve_state, args=(rep,),
                                                  name="neurospeech-state", daemon=True)
            self._state_thread.start()
        if s.jsonl_log is not None:
            try:
                s.jsonl_log.parent.mkdir(parents=True, exist_ok=True)
                self._log_file = open(s.jsonl_log, "ab", buffering=0)  # one write() per line
                self._log_good = self._log_file.seek(0, 2)
            except OSError as exc:  # a settings problem (the path), not a ZeroMQ one
                raise ConfigError(
                    f"cannot open the message log {str(s.jsonl_log)!r}: {exc.strerror or exc}; choose a writable "
                    "path for --log-messages / [publish] jsonl_log"
                ) from exc
        log.info("publishing on %s (%s headers)%s", self.endpoint, s.encoding,
                 f", state on {self.state_endpoint}" if self.state_endpoint else "")

    # ------------------------------------------------------------------ API
    def publish(self, kind: str, header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> int:
        """Send one message without blocking; returns its sequence number (per topic, from 0).

        Parameters
        ----------
        kind : str
            ``'decode'`` or ``'status'``.
        header : dict
            The fields of the schema (the publisher adds ``schema``, ``seq``, ``t_sent``, ``model_id``,
            ``model_sha256``, ``encoding``; the caller's dict is not modified).
        arrays : dict of str to ndarray, optional
            Sent as raw frames (dtype/shape described in the header).
        """
        if kind not in KINDS:
            raise ConfigError(f"message kind {kind!r} is not one of {KINDS}")
        with self._lock:
            if self._closed:
                raise TransportError("publish() after close(); the publisher is closed")
            seq = self._seq[kind]
            self._seq[kind] = seq + 1
            full = dict(header)
            full.update(self._model_fields)
            full["schema"] = TOPIC_PREFIX + kind
            full["seq"] = seq
            full["encoding"] = self.settings.encoding
            full["t_sent"] = self._clock()
            frames = encode_message(kind, full, arrays, self.settings.encoding)
            self._drain_subscriptions()
            dropped = False
            try:
                self.sock.send_multipart(frames, flags=zmq.NOBLOCK)
            except zmq.Again:
                if self.settings.nodrop:
                    dropped = True
                    self._dropped[kind] += 1
                else:
                    self._send_lossy(kind, frames)
            else:
                if self._run_open[kind]:  # a run that began on another topic swallows this topic too
                    self._run_open[kind] = False
                    self._slow[kind] += 1
            if not dropped:
                self._sent[kind] += 1
                self._bytes += sum(len(f) if isinstance(f, bytes) else f.nbytes for f in frames)
            if kind == "status":
                self._last_status = full
            if self._log_file is not None:
                self._write_log(kind, full, dropped)
            return seq

    def stats(self) -> dict[str, Any]:
        """Counters: ``sent``/``dropped``/``next_seq`` per topic, totals, bytes, state requests.

        Pending (un)subscriptions are read first, so ``subscribers`` counts every subscription that libzmq has
        processed so far (one that a subscriber sent but the socket has not yet handled shows up later).
        """
        with self._lock:
            if not self._closed:
                self._drain_subscriptions()
            return {
                "sent": dict(self._sent),
                "dropped": dict(self._dropped),
                "next_seq": dict(self._seq),
                "sent_total": sum(self._sent.values()),
                "dropped_total": sum(self._dropped.values()),
                "slow_subscriber_events": dict(self._slow),
                "subscribers": sum(self._subscriptions.values()),
                "subscriptions": {k.decode("utf-8", "replace"): v for k, v in self._subscriptions.items()},
                "bytes_sent": self._bytes,
                "state_requests": self._state_requests,
                "message_log": self.log_state(),
                "endpoint": getattr(self, "endpoint", None),
                "state_endpoint": getattr(self, "state_endpoint", None),
            }

    def close(self) -> None:
        """Stop the state thread, close the sockets (linger 0) and the context. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._state_thread is not None:
            self._state_thread.join(timeout=2.0)
        sock = getattr(self, "sock", None)
        if sock is not None:
            sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self.ctx.term()
        if self._log_file is not None:
            self._log_file.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _send_lossy(self, kind: str, frames: list[Any]) -> None:
        # a matching subscriber's queue is full: deliver to the others, the full one loses this message
        self._slow[kind] += 1
        self._run_open[kind] = False
        # libzmq now skips that subscriber for every topic until it has read its queue down, without another
        # EAGAIN: the next message of each other subscribed topic is counted as the start of its own run there
        for other in KINDS:
            if other != kind and any(topic_of(other).startswith(p) for p in self._subscriptions):
                self._run_open[other] = True
        if self._slow[kind] == 1 or self._slow[kind] % 100 == 0:
            log.warning("a subscriber of %r is not keeping up (queue of %d messages full): it loses messages "
                        "(%d such events)", kind, self.settings.sndhwm, self._slow[kind])
        self.sock.setsockopt(zmq.XPUB_NODROP, 0)
        try:
            self.sock.send_multipart(frames, flags=zmq.NOBLOCK)
        finally:
            self.sock.setsockopt(zmq.XPUB_NODROP, 1)

    def _drain_subscriptions(self) -> None:
        # an XPUB queues (un)subscription messages for the application: count them, so they never pile up
        while True:
            try:
                msg = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if not msg or msg[0] not in (0, 1):
                continue
            prefix = bytes(msg[1:])
            n = self._subscriptions.get(prefix, 0) + (1 if msg[0] == 1 else -1)
            if n > 0:
                self._subscriptions[prefix] = n
            else:
                self._subscriptions.pop(prefix, None)

    def _write_log(self, kind: str, full: dict[str, Any], dropped: bool) -> None:
        rec = {"topic": (TOPIC_PREFIX + kind), "dropped": dropped, "header": full}
        f = self._log_file
        assert f is not None
        line = encode_header(rec, "json") + b"\n"
        try:
            view = memoryview(line)
            while view:  # a short write (disk filling up) is continued, never left as a cut line
                n = f.write(view)
                if not n:
                    raise OSError(errno.ENOSPC, "short write")
                view = view[n:]
            self._log_good += len(line)
        except (OSError, ValueError) as exc:  # the log must never stop publishing
            self._log_error = str(exc)
            self._log_file = None
            try:  # drop a partly written last line, so the log ends with a complete record
                f.truncate(self._log_good)
            except (OSError, ValueError):
                log.debug("message log truncate failed", exc_info=True)
            try:
                f.close()
            except OSError:
                log.debug("message log close failed", exc_info=True)
            log.error("message log %s: write failed (%s); message logging stopped (status.message_log)",
                      self.settings.jsonl_log, exc)

    def log_state(self) -> dict[str, Any] | None:
        """The message log's state for the status: ``{"path", "state": "ok"|"stopped", "error"}`` (or None)."""
        if self.settings.jsonl_log is None:
            return None
        return {"path": str(self.settings.jsonl_log), "state": "stopped" if self._log_error else "ok",
                "error": self._log_error}

    def _state_reply(self) -> bytes:
        with self._lock:
            self._state_requests += 1
            if not self._closed:
                self._drain_subscriptions()  # the socket is only ever used under the lock
            body = {
                "schema": STATE_SCHEMA,
                "t_sent": self._clock(),
                "encoding": self.settings.encoding,
                "model": self.model_info,
                "status": self._last_status,
                "seq": dict(self._seq),
                "stats": {"sent": dict(self._sent), "dropped": dict(self._dropped),
                          "slow_subscriber_events": dict(self._slow),
                          "subscribers": sum(self._subscriptions.values())},
                "endpoint": self.endpoint,
            }
        return encode_header(body, self.settings.encoding)

    def _serve_state(self, rep: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(rep, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(100):
                    continue
                try:
                    rep.recv_multipart(zmq.NOBLOCK)  # any request: the reply is always the state
                except zmq.Again:
                    continue
                try:
                    rep.send_multipart([topic_of("state"), self._state_reply()], zmq.NOBLOCK)
                except zmq.ZMQError as exc:  # peer vanished: REP resets for the next request
                    log.debug("state reply failed: %s", exc)
        except zmq.ContextTerminated:
            pass
        finally:
            rep.close(linger=0)
