"""The systemd notify protocol (``sd_notify``), spoken by ``neurospeech serve`` under ``Type=notify``.

systemd passes ``NOTIFY_SOCKET`` (a Unix datagram socket: a path, or ``@name`` for the abstract namespace) and,
with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``). The service sends

- ``READY=1`` once the publisher is bound, the stream resolved and checked, and the threads run;
- ``WATCHDOG=1`` with every status heartbeat (at least once a second, well inside ``WatchdogSec``), so a
  hung control loop stops feeding the watchdog and systemd restarts the service;
- ``STATUS=...`` (the stream state, shown by ``systemctl status``) and ``STOPPING=1`` on shutdown.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op. A send that fails is logged once and never
stops the service. Protocol: ``man sd_notify`` (plain text datagrams, ``KEY=VALUE`` lines).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping

__all__ = ["SystemdNotifier"]

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends ``sd_notify`` datagrams to ``NOTIFY_SOCKET``; a no-op without it.

    Parameters
    ----------
    env : mapping or None
        Where ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` are read (default ``os.environ``).
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if raw.startswith("@"):
            self.address = b"\0" + raw[1:].encode()
        elif raw.startswith("/"):
            self.address = raw
        elif raw:
            log.warning("NOTIFY_SOCKET=%r is neither a path nor an @abstract name: not notifying systemd", raw)
        self.watchdog_usec = 0
        pid = env.get("WATCHDOG_PID", "")
        if env.get("WATCHDOG_USEC", "").isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_usec = int(env["WATCHDOG_USEC"])
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._ready = False
        self._failed = False
        self._last_status = ""

    @property
    def enabled(self) -> bool:
        """True under systemd ``Type=notify`` (``NOTIFY_SOCKET`` set)."""
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram; False when disabled or the send failed."""
        if self.address is None or not fields:
            return False
        data = "\n".join(fields).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(data, self.address)
                return True
            except OSError as exc:
                if not self._failed:
                    log.warning("systemd notification to %r failed: %s", self.address, exc)
                    self._failed = True
                return False

    def ready(self, status: str) -> None:
        """``READY=1``: start-up is complete (the heartbeat feeds the watchdog from now on)."""
        self._ready = True
        self._last_status = status
        self.notify("READY=1", f"STATUS={status}")

    def heartbeat(self, state: str) -> None:
        """Feed the watchdog (after :meth:`ready`) and report the stream state when it changed."""
        if not self._ready:
            return
        fields = ["WATCHDOG=1"] if self.watchdog_usec else []
        status = f"stream {state}"
        if status != self._last_status:
            self._last_status = status
            fields.append(f"STATUS={status}")
        self.notify(*fields)

    def stopping(self) -> None:
        """``STOPPING=1``: shutdown has begun."""
        self.notify("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
