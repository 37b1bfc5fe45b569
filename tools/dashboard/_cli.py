"""Click command ``neurospeech dashboard`` (registered in neurospeech/cli.py)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

__all__ = ["dashboard"]

log = logging.getLogger(__name__)


@click.command("dashboard")
@click.option("--pub", "--endpoint", "endpoint", default="tcp://127.0.0.1:5556", show_default=True,
              help="The service's PUB endpoint.")
@click.option("--state", "state_endpoint", default=None,
              help="The service's state endpoint (current state at once; bank size for the chance level).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address the web server binds (loopback: only this machine can open the page).")
@click.option("--port", type=int, default=8765, show_default=True, help="HTTP port (0: a free one).")
@click.option("--curve-secret", "curve_secret_key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CURVE: this client's .key_secret file.")
@click.option("--curve-server", "curve_server_key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CURVE: the service's public .key file.")
@click.option("--history", type=int, default=60, show_default=True,
              help="Word decisions a newly opened page gets (its ticker shows 60).")
@click.option("--silence", "silence_s", type=float, default=3.0, show_default=True,
              help="Seconds without a heartbeat before the 'service silent' alert.")
def dashboard(endpoint: str, state_endpoint: str | None, host: str, port: int, curve_secret_key: Path | None,
              curve_server_key: Path | None, history: int, silence_s: float) -> None:
    """Serve a live dashboard of a running service in the browser (read-only).

    Prints the page's URL on stdout once it listens; Ctrl-C/SIGTERM stops it. Works offline (every file is
    part of the package). Exit codes: 2 bad settings, 7 address in use.

    Example: neurospeech dashboard --pub tcp://127.0.0.1:5556 --state tcp://127.0.0.1:5557
    """
    from .server import DashboardServer, DashboardSettings, summary_json
    from .state import ModelSettings

    settings = DashboardSettings(endpoint=endpoint, state_endpoint=state_endpoint, host=host, port=port,
                                 curve_secret_key=curve_secret_key, curve_server_key=curve_server_key,
                                 model=ModelSettings(word_history=history, silence_s=silence_s))
    server = DashboardServer(settings)

    def ready(url: str) -> None:
        click.echo(f"dashboard on {url}")
        sys.stdout.flush()

    server.run(on_ready=ready)
    click.echo(summary_json(server))
