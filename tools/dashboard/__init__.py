"""``neurospeech dashboard``: the experimenter's live view of a running service, in the browser.

A small aiohttp server subscribes to the service's PUB endpoint (and asks its state endpoint), keeps what a
page needs (:class:`~neurospeech.tools.dashboard.state.DashboardModel`) and pushes it to the pages over a
WebSocket. The page (``static/``: plain HTML, JavaScript and canvas, no CDN, no build step) shows the
stream/service state, alerts, the word-locked decisions as a ticker, running top-1/top-10 with chance level and
95 % interval, latency and processing time, and per-channel signal quality. Read-only: nothing on the page
can change the service.

Example::

    neurospeech dashboard --pub tcp://127.0.0.1:5556 --state tcp://127.0.0.1:5557   # then open the URL
"""

from __future__ import annotations

from .server import DashboardServer, DashboardSettings
from .state import DashboardModel, ModelSettings

__all__ = ["DashboardModel", "DashboardServer", "DashboardSettings", "ModelSettings"]
