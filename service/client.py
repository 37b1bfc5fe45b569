"""Python client for apps that consume the service's messages.

Example::

    from neurospeech.service.client import Subscriber

    with Subscriber("tcp://127.0.0.1:5556", state_endpoint="tcp://127.0.0.1:5557") as sub:
        print(sub.state()["status"])            # current status right away (late joiner)
        for msg in sub:                          # blocks; Ctrl-C to stop
            if msg.kind == "decode":
                best = msg["topk"][0]
                print(best["word"], best["prob"], "latency", msg.latency)
            if msg.missed:
                print("lost", msg.missed, "messages before this one")

Early (provisional) word decisions arrive on their own topic, only when asked for::

    with Subscriber("tcp://127.0.0.1:5556", topics=ALL_TOPICS) as sub:
        for msg in sub:
            if msg.provisional:                  # kind 'word_early', made at onset + msg.delay_s
                print("so far:", msg["topk"][0]["word"], "after", msg.delay_s, "s")
            elif msg.kind == "decode" and msg["kind"] == "word":
                print("final:", msg["topk"][0]["word"])

A subscriber with the default topics (``decode``, ``status``) receives exactly what it received before early
decisions existed.

Messages are :class:`~neurospeech.service.messages.Message` objects (``kind``, ``header``, ``arrays``,
``seq``, ``t_received``, ``missed``, ``latency``). Sequence gaps per topic are counted (``stats()``); a
sequence number going backwards means the service restarted (counted as a restart, not a gap). A subscriber
that connects misses what was published before its subscription reached the service (ZeroMQ "slow joiner");
:meth:`Subscriber.state` returns the last status at once. Malformed messages are skipped and counted, never
raised. For a remote service with CURVE, pass this client's ``.key_secret`` file and the server's public
``.key`` file (see :mod:`neurospeech.service._curve`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pylsl
import zmq

from ..errors import ConfigError, DataFormatError, TransportError
from . import _curve
from .messages import ALL_TOPICS, DEFAULT_TOPICS, KINDS, TOPIC_PREFIX, Message, decode_header, decode_message

__all__ = ["ALL_TOPICS", "DEFAULT_TOPICS", "Subscriber", "request_state"]

log = logging.getLogger(__name__)


def _check_endpoint(ep: str, what: str) -> str:
    if "://" not in str(ep):
        raise ConfigError(f"{what} {ep!r} is not a ZeroMQ endpoint; write e.g. 'tcp://127.0.0.1:5556'")
    return str(ep)


class Subscriber:
    """Subscribe to a running service.

    Parameters
    ----------
    endpoint : str
        The service's PUB endpoint (``tcp://host:port``).
    topics : sequence of str
        Message kinds to receive: ``'decode'``, ``'status'`` (the default: both), ``'word_early'`` (early
        word decisions; ``ALL_TOPICS``: all three).
    state_endpoint : str or None
        The service's REP state endpoint, for :meth:`state`.
    curve_secret_key : path or None
        This client's ``.key_secret`` file (CURVE); needs ``curve_server_key``.
    curve_server_key : path or None
        The service's public ``.key`` file.
    rcvhwm : int
        Receive high-water mark (messages).
    context : zmq.Context or None
        Share a context; default: a private one, terminated by :meth:`close`.
    """

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5556",
        topics: Sequence[str] = DEFAULT_TOPICS,
        *,
        state_endpoint: str | None = None,
        curve_secret_key: str | Path | None = None,
        curve_server_key: str | Path | None = None,
        rcvhwm: int = 10000,
        context: zmq.Context | None = None,
    ) -> None:
        self.endpoint = _check_endpoint(endpoint, "endpoint")
        self.state_endpoint = (
            None if state_endpoint is None else _check_endpoint(state_endpoint, "state_endpoint")
        )
        if isinstance(topics, str):
            topics = [topics]
        for t in topics:
            if t not in KINDS:
                raise ConfigError(f"unknown topic {t!r}; use any of {KINDS}")
        if (curve_secret_key is None) != (curve_server_key is None):
            raise ConfigError(
                "CURVE needs both curve_secret_key (this client's) and curve_server_key (the service's)"
            )
        self.topics = tuple(topics)
        self._curve: tuple[str | Path, str | Path] | None = None
        if curve_secret_key is not None and curve_server_key is not None:
            self._curve = (curve_secret_key, curve_server_key)
        self._own_ctx = context is None
        self.ctx = context if context is not None else zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.linger = 0
        self.sock.rcvhwm = int(rcvhwm)
        try:
            if self._curve is not None:
                _curve.apply_client(self.sock, *self._curve)
            for t in self.topics:
                self.sock.setsockopt(zmq.SUBSCRIBE, (TOPIC_PREFIX + t).encode())
            self.sock.connect(self.endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise TransportError(f"cannot connect to {self.endpoint!r}: {exc}") from exc
        except BaseException:
            self.close()
            raise
        self._poller = zmq.Poller()
        self._poller.register(self.sock, zmq.POLLIN)
        self._last_seq: dict[str, int] = {}
        self.received: dict[str, int] = dict.fromkeys(self.topics, 0)
        self.missed: dict[str, int] = dict.fromkeys(self.topics, 0)
        self.restarts: dict[str, int] = dict.fromkeys(self.topics, 0)
        self.first_seq: dict[str, int] = {}
        self.malformed = 0
        self._closed = False

    # ------------------------------------------------------------------ receiving
    def recv(self, timeout: float | None = None) -> Message | None:
        """The next message, or None after ``timeout`` seconds (None: wait until one arrives).

        Malformed messages are skipped (counted in ``stats()['malformed']``).
        """
        deadline = None if timeout is None else pylsl.local_clock() + max(0.0, timeout)
        while True:
            if deadline is None:
                wait_ms = 200
            else:
                wait_ms = int(max(0.0, deadline - pylsl.local_clock()) * 1000)
            if self._poller.poll(min(wait_ms, 200) if deadline is None else wait_ms):
                frames = self.sock.recv_multipart(copy=True)
                t = pylsl.local_clock()
                msg = self._parse(frames, t)
                if msg is not None:
                    return msg
                continue
            if deadline is not None and pylsl.local_clock() >= deadline:
                return None

    def _parse(self, frames: list[bytes], t: float) -> Message | None:
        try:
            msg = decode_message(frames)
        except DataFormatError as exc:
            self.malformed += 1
            log.warning("skipping a malformed message: %s", exc)
            return None
        msg.t_received = t
        seq = msg.seq
        if seq is not None and msg.kind in self.received:
            last = self._last_seq.get(msg.kind)
            if last is None:
                self.first_seq[msg.kind] = seq
            elif seq > last + 1:
                msg.missed = seq - last - 1
                self.missed[msg.kind] += msg.missed
            elif seq <= last:
                self.restarts[msg.kind] += 1
                log.info("%s sequence went back from %d to %d: the service restarted", msg.kind, last, seq)
            self._last_seq[msg.kind] = seq
        if msg.kind in self.received:
            self.received[msg.kind] += 1
        return msg

    def __iter__(self) -> Iterator[Message]:
        """Yield messages until :meth:`close` (blocking)."""
        while not self._closed:
            msg = self.recv(timeout=0.2)
            if msg is not None:
                yield msg

    def messages(self, duration: float) -> Iterator[Message]:
        """Yield the messages that arrive within the next ``duration`` seconds."""
        end = pylsl.local_clock() + duration
        while True:
            left = end - pylsl.local_clock()
            if left <= 0:
                return
            msg = self.recv(timeout=left)
            if msg is not None:
                yield msg

    # ------------------------------------------------------------------ state
    def state(self, timeout: float = 2.0) -> dict[str, Any]:
        """Ask the state endpoint: ``{'model': ..., 'status': <last status header or None>, 'seq': ...}``.

        Raises
        ------
        ConfigError
            No ``state_endpoint`` was given.
        TransportError
            No reply within ``timeout`` seconds.
        """
        if self.state_endpoint is None:
            raise ConfigError("this Subscriber has no state_endpoint; pass state_endpoint='tcp://host:port'")
        return request_state(self.state_endpoint, timeout=timeout, context=self.ctx,
                             curve_secret_key=None if self._curve is None else self._curve[0],
                             curve_server_key=None if self._curve is None else self._curve[1])

    def stats(self) -> dict[str, Any]:
        """Per-topic ``received``, ``missed`` (sequence gaps), ``restarts``; ``malformed`` count."""
        return {"received": dict(self.received), "missed": dict(self.missed), "restarts": dict(self.restarts),
                "first_seq": dict(self.first_seq), "malformed": self.malformed}

    def close(self) -> None:
        """Close the socket (linger 0) and the private context. Idempotent."""
        self._closed = True
        sock = getattr(self, "sock", None)
        if sock is not None and not sock.closed:
            sock.close(linger=0)
        if self._own_ctx and not self.ctx.closed:
            self.ctx.term()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request_state(
    endpoint: str,
    timeout: float = 2.0,
    *,
    context: zmq.Context | None = None,
    curve_secret_key: str | Path | None = None,
    curve_server_key: str | Path | None = None,
) -> dict[str, Any]:
    """One request to a service's REP state endpoint (a fresh REQ socket, so a lost reply never wedges it).

    Returns the decoded ``neurospeech.v1.state`` header.
    """
    _check_endpoint(endpoint, "state endpoint")
    ctx = context if context is not None else zmq.Context.instance()
    req = ctx.socket(zmq.REQ)
    req.linger = 0
    try:
        if curve_secret_key is not None and curve_server_key is not None:
            _curve.apply_client(req, curve_secret_key, curve_server_key)
        req.connect(endpoint)
        # a REQ send can block while its connection is not up yet (seen with CURVE under load: a test hung in
        # send for minutes): the request gets the same deadline as the reply
        req.sndtimeo = int(timeout * 1000)
        try:
            req.send(b"state")
        except zmq.Again:
            sent = False
        else:
            sent = True
        if not sent or not req.poll(int(timeout * 1000)):
            raise TransportError(
                f"no reply from the state endpoint {endpoint!r} within {timeout} s; is `neurospeech serve` "
                "running with a state endpoint (and, with CURVE, is this client's key authorised)?"
            )
        frames = req.recv_multipart()
    finally:
        req.close(linger=0)
    if len(frames) < 2:
        raise DataFormatError(f"state reply has {len(frames)} frames (expected topic + header)")
    return decode_header(frames[1])
