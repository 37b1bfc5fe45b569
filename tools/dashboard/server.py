"""The dashboard's web server: aiohttp (HTTP + WebSocket), fed by a ZeroMQ subscriber thread.

::

    service PUB ──ZeroMQ──> subscriber thread ──call_soon_threadsafe──> DashboardModel (event loop)
    service state (REQ/REP) <── state thread (at start, while silent, and for every page that connects)
    DashboardModel events ──> one bounded queue per page ──WebSocket──> browser (static/dashboard.js)

The server is read-only towards the service: it only subscribes and asks the state endpoint; nothing a page
sends reaches the service (the WebSocket ignores incoming messages, there is no route that writes). It binds
to 127.0.0.1 by default; WebSocket upgrades from a page of another origin are refused (a foreign site open in
the same browser cannot read the stream). Static files (``index.html``, ``dashboard.js``, ``dashboard.css``)
are package data, read once at start: no CDN, the page works offline.

A page that does not keep up (its queue of ``client_queue`` events is full) gets a fresh snapshot instead of
the backlog, so one slow browser never slows the others or the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ...errors import ConfigError, TransportError
from ...service.messages import encode_header
from .state import DashboardModel, ModelSettings

__all__ = ["DashboardServer", "DashboardSettings"]

log = logging.getLogger(__name__)

_STATIC = {"index.html": "text/html", "dashboard.js": "text/javascript", "dashboard.css": "text/css"}
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@dataclass
class DashboardSettings:
    """Settings of ``neurospeech dashboard``.

    Attributes
    ----------
    endpoint : str
        The service's PUB endpoint.
    state_endpoint : str or None
        The service's state endpoint (late joiners: current status and model info at once; the bank size for
        the chance level). None: the page fills in from the heartbeats.
    host, port : str, int
        HTTP bind address (loopback by default; port 0 picks a free one).
    curve_secret_key, curve_server_key : Path or None
        CURVE: this client's ``.key_secret`` and the service's public ``.key`` (as for ``listen``).
    model : ModelSettings
        History sizes and alert thresholds.
    client_queue : int
        Events queued per page before it is resynchronised with a snapshot.
    state_timeout : float
        Seconds to wait for a state reply.
    """

    endpoint: str = "tcp://127.0.0.1:5556"
    state_endpoint: str | None = None
    host: str = "127.0.0.1"
    port: int = 8765
    curve_secret_key: Path | None = None
    curve_server_key: Path | None = None
    model: ModelSettings = field(default_factory=ModelSettings)
    client_queue: int = 500
    state_timeout: float = 1.0

    def __post_init__(self) -> None:
        for name in ("endpoint", "state_endpoint"):
            v = getattr(self, name)
            if v is not None and "://" not in str(v):
                raise ConfigError(f"{name} {v!r} is not a ZeroMQ endpoint; write e.g. 'tcp://127.0.0.1:5556'")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be an integer in [0, 65535], got {self.port!r}")
        if (self.curve_secret_key is None) != (self.curve_server_key is None):
            raise ConfigError("CURVE needs both --curve-secret (this client's .key_secret) and --curve-server "
                              "(the service's public .key)")
        if self.client_queue < 10:
            raise ConfigError(f"client_queue must be >= 10 events, got {self.client_queue!r}")


def _static_files() -> dict[str, bytes]:
    root = resources.files(__package__).joinpath("static")
    out = {}
    for name in _STATIC:
        try:
            out[name] = root.joinpath(name).read_bytes()
        except FileNotFoundError as exc:
            raise ConfigError(f"the dashboard's {name} is missing from the installed package ({exc}); "
                              "reinstall neurospeech") from exc
    return out


def _dumps(event: dict[str, Any]) -> str:
    return encode_header(event, "json").decode("utf-8")


class _Client:
    def __init__(self, ws: Any, size: int) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=size)
        self.resyncs = 0


class DashboardServer:
    """Run the dashboard: :meth:`run` blocks (SIGINT/SIGTERM stop it); :meth:`start`/:meth:`stop` for async use.

    Attributes
    ----------
    url : str
        ``http://host:port/`` once started (the real port when ``port=0``).
    model : DashboardModel
        What the pages show.
    """

    def __init__(self, settings: DashboardSettings, lsl_clock: Callable[[], float] | None = None) -> None:
        self.settings = settings
        self.model = DashboardModel(settings.model, lsl_clock=lsl_clock)
        self._static = _static_files()
        self._clients: set[_Client] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_threads = threading.Event()
        self._threads: list[threading.Thread] = []
        self._runner: Any = None
        self._tick_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._want_state = threading.Event()
        self._ctx: Any = None
        self.url = ""
        self.stats = {"messages": 0, "events": 0, "pages": 0, "resyncs": 0, "state_replies": 0}

    # ------------------------------------------------------------------ web app
    def app(self) -> Any:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._file)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/api/snapshot", self._snapshot)
        return app

    def _headers(self) -> dict[str, str]:
        return {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer"}

    async def _index(self, request: Any) -> Any:
        from aiohttp import web

        return web.Response(body=self._static["index.html"], content_type="text/html", charset="utf-8",
                            headers=self._headers())

    async def _file(self, request: Any) -> Any:
        from aiohttp import web

        name = request.match_info["name"]
        if name not in self._static or name == "index.html":
            raise web.HTTPNotFound(text=f"no static file {name!r}")
        return web.Response(body=self._static[name], content_type=_STATIC[name], charset="utf-8",
                            headers=self._headers())

    async def _snapshot(self, request: Any) -> Any:
        from aiohttp import web

        return web.Response(text=_dumps(self._snapshot_event()), content_type="application/json",
                            headers=self._headers())

    def _snapshot_event(self) -> dict[str, Any]:
        return {**self.model.snapshot(), "endpoint": self.settings.endpoint}

    def _same_origin(self, request: Any) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:  # not a browser page (scripts, tests)
            return True
        return urlsplit(origin).netloc == request.host

    async def _ws(self, request: Any) -> Any:
        from aiohttp import WSMsgType, web

        if not self._same_origin(request):
            log.warning("refused a WebSocket from origin %r (host %r)", request.headers.get("Origin"), request.host)
            raise web.HTTPForbidden(text="cross-origin WebSocket refused")
        ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=4096)
        await ws.prepare(request)
        client = _Client(ws, self.settings.client_queue)
        self.stats["pages"] += 1
        # a late-opened page: the current state at once. Before any heartbeat reached this server, the snapshot
        # waits for the state endpoint's answer; otherwise it goes at once and a fresh state follows as events.
        refresh = self.settings.state_endpoint is not None
        if refresh and self.model.status is None:
            await self._refresh_state()
            refresh = False
        # the snapshot goes first in this page's queue, and the page joins the broadcast in the same step of the
        # event loop: no event is lost or repeated between the snapshot and the live events
        client.queue.put_nowait(_dumps(self._snapshot_event()))
        self._clients.add(client)
        writer = asyncio.create_task(self._writer(client))
        if refresh:
            self._background.add(task := asyncio.create_task(self._refresh_state()))
            task.add_done_callback(self._background.discard)
        try:
            async for msg in ws:  # nothing a page sends changes anything; read only to notice closing
                if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            self._clients.discard(client)
            writer.cancel()
        return ws

    async def _refresh_state(self) -> None:
        reply = await asyncio.get_running_loop().run_in_executor(None, self._ask_state)
        if reply is not None:
            self._broadcast(self.model.on_state_reply(reply))

    async def _writer(self, client: _Client) -> None:
        try:
            while True:
                text = await client.queue.get()
                await client.ws.send_str(text)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass

    def _broadcast(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        self.stats["events"] += len(events)
        texts = [_dumps(e) for e in events]
        for client in list(self._clients):
            for text in texts:
                try:
                    client.queue.put_nowait(text)
                except asyncio.QueueFull:  # this page fell behind: replace its backlog by a snapshot
                    while not client.queue.empty():
                        client.queue.get_nowait()
                    client.queue.put_nowait(_dumps(self._snapshot_event()))
                    client.resyncs += 1
                    self.stats["resyncs"] += 1
                    break

    # ------------------------------------------------------------------ ZeroMQ side
    def _ask_state(self) -> dict[str, Any] | None:
        from ...errors import NeurospeechError
        from ...service.client import request_state

        s = self.settings
        if s.state_endpoint is None:
            return None
        try:
            reply = request_state(s.state_endpoint, timeout=s.state_timeout, context=self._ctx,
                                  curve_secret_key=s.curve_secret_key, curve_server_key=s.curve_server_key)
        except NeurospeechError as exc:
            log.debug("state request failed: %s", exc)
            return None
        self.stats["state_replies"] += 1
        return reply

    def _on_message(self, kind: str, header: dict[str, Any], received: float | None, missed: int) -> None:
        self.stats["messages"] += 1
        self._broadcast(self.model.on_message(kind, header, received, missed))

    def _on_state(self, reply: dict[str, Any]) -> None:
        self._broadcast(self.model.on_state_reply(reply))

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # loop closing
                pass

    def _subscriber_loop(self) -> None:
        from ...service.client import ALL_TOPICS, Subscriber

        s = self.settings
        # every topic: decode, status and the provisional word_early decisions (models trained for them)
        with Subscriber(s.endpoint, context=self._ctx, curve_secret_key=s.curve_secret_key,
                        curve_server_key=s.curve_server_key, topics=ALL_TOPICS) as sub:
            while not self._stop_threads.is_set():
                msg = sub.recv(timeout=0.1)
                if msg is not None:
                    self._call(self._on_message, msg.kind, msg.header, msg.t_received, msg.missed)

    def _state_loop(self) -> None:
        """Ask the state endpoint at start, then every 2 s while no heartbeat arrives (service down/restarting)."""
        while not self._stop_threads.is_set():
            silent = self.model.status_at is None or time.time() - self.model.status_at > 1.5
            if silent or self._want_state.is_set():
                self._want_state.clear()
                reply = self._ask_state()
                if reply is not None:
                    self._call(self._on_state, reply)
            self._stop_threads.wait(2.0)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            self._broadcast(self.model.tick())

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> str:
        """Bind the HTTP server, start the subscriber and the ticker; returns the URL."""
        import zmq
        from aiohttp import web

        s = self.settings
        if s.host not in _LOOPBACK:
            log.warning("the dashboard listens on %s: anyone who can reach this address can watch the decoding "
                        "(it cannot change the service); prefer 127.0.0.1 and an SSH tunnel", s.host)
        self._loop = asyncio.get_running_loop()
        self._ctx = zmq.Context()
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.host, s.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._ctx.term()
            raise TransportError(f"cannot serve the dashboard on {s.host}:{s.port}: {exc}; choose another "
                                 "--port (0 picks a free one)") from exc
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else s.port
        host = f"[{s.host}]" if ":" in s.host else s.host
        self.url = f"http://{host}:{port}/"
        for target, name in ((self._subscriber_loop, "dashboard-sub"), (self._state_loop, "dashboard-state")):
            t = threading.Thread(target=self._guard, args=(target,), name=name, daemon=True)
            self._threads.append(t)
            t.start()
        self._tick_task = asyncio.create_task(self._ticker())
        log.info("dashboard on %s (service %s, state %s)", self.url, s.endpoint, s.state_endpoint)
        return self.url

    def _guard(self, target: Callable[[], None]) -> None:
        try:
            target()
        except Exception:
            log.exception("dashboard thread %s crashed", threading.current_thread().name)

    async def stop(self) -> None:
        """Close the pages, the HTTP server and the ZeroMQ sockets."""
        self._stop_threads.set()
        if self._tick_task is not None:
            self._tick_task.cancel()
        for c in list(self._clients):
            await c.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
        loop = asyncio.get_running_loop()
        for t in self._threads:
            await loop.run_in_executor(None, t.join, 2.0)
        if self._ctx is not None:
            self._ctx.term()

    def run(self, on_ready: Callable[[str], None] | None = None) -> int:
        """Serve until SIGINT/SIGTERM; ``on_ready(url)`` is called once the server listens. Returns 0."""

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            url = await self.start()
            if on_ready is not None:
                on_ready(url)
            try:
                await stop.wait()
            finally:
                await self.stop()

        asyncio.run(main())
        return 0


def summary_json(server: DashboardServer) -> str:
    """Counters of a finished run (messages, events, pages, resyncs) as one JSON line."""
    return json.dumps({"type": "dashboard-summary", **server.stats})
