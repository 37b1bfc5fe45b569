"""Click commands ``neurospeech replay``, ``neurospeech listen`` and ``neurospeech keys``."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any

import click

__all__ = ["keys", "listen", "replay"]

log = logging.getLogger(__name__)


@click.command("replay")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--subject", default=None, help="BIDS root: subject of the run to replay.")
@click.option("--session", default=None, help="BIDS root: session.")
@click.option("--task", default=None, help="BIDS root: task.")
@click.option("--run", "run_", default=None, help="BIDS root: run.")
@click.option("--events", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="FIF/EDF: events .tsv with word rows (default: the BIDS sibling *_events.tsv if present).")
@click.option("--stream", "xdf_stream", default=None, help="XDF: name of the data stream to replay.")
@click.option("--replay-stream", "replay_streams", multiple=True,
              help="XDF: also re-play this recorded string stream (e.g. the decisions of serve --lsl-outlet) as "
                   "<name>-<stream>, each sample on its data sample; repeatable. Default: such streams are ignored.")
@click.option("--name", default=None, help="LSL stream name [file/run name]; markers go to <name>-markers.")
@click.option("--source-id", default=None, help="LSL source_id [neurospeech-replay-<name>].")
@click.option("--speed", type=float, default=1.0, show_default=True, help="1 = real time, 2 = twice as fast.")
@click.option("--chunk", "chunk_s", type=float, default=0.02, show_default=True, help="Seconds per chunk.")
@click.option("--loop", is_flag=True, help="Start again at the end (until Ctrl-C).")
@click.option("--no-markers", is_flag=True, help="Do not create the word-marker stream.")
@click.option("--units", type=click.Choice(["si", "display"]), default="si", show_default=True,
              help="Declared units: SI (V, T, T/m) or display (uV, fT, fT/cm, data scaled).")
@click.option("--start", "start_s", type=float, default=0.0, help="Start this many seconds into the file.")
@click.option("--duration", "duration_s", type=float, default=None, help="Replay only this many seconds.")
def replay(source: Path, subject: str | None, session: str | None, task: str | None, run_: str | None,
           events: Path | None, xdf_stream: str | None, replay_streams: tuple[str, ...], name: str | None,
           source_id: str | None, speed: float, chunk_s: float, loop: bool, no_markers: bool, units: str,
           start_s: float, duration_s: float | None) -> None:
    """Replay a recording into LSL at real-time pace, with channel metadata and word markers.

    SOURCE is a BIDS root (pick the run with --subject/--task/--run; default the first run), a .fif, .edf,
    .bdf or .vhdr file, or an .xdf file. Samples are stamped with the LSL clock at push time (never
    future-dated); markers carry the stamp of their word-onset sample. Stops at the end (or Ctrl-C/SIGTERM).

    Example: neurospeech replay data/sim --subject 01 --task listen --name sim-meg --speed 1
    """
    from ..service.acquisition import ensure_lsl_config

    ensure_lsl_config()
    from .replay import Replayer, ReplaySettings, load_source

    src = load_source(source, subject=subject, session=session, task=task, run=run_, events=events,
                      stream=xdf_stream, replay_streams=replay_streams)
    settings = ReplaySettings(speed=speed, chunk_s=chunk_s, loop=loop, name=name, source_id=source_id,
                              markers=not no_markers, units=units, start_s=start_s, duration_s=duration_s)
    rep = Replayer(src, settings)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        rep.stop()
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        click.echo(f"replaying {src.name!r} as LSL stream {rep.name!r} (source_id {rep.source_id!r}), "
                   f"{src.data.shape[1]} channels @ {src.sfreq:g} Hz, {len(src.markers)} word markers, "
                   f"{src.duration:.1f} s at speed {speed:g}{' (loop)' if loop else ''}", err=True)
        stats = rep.run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        rep.close()
    click.echo(json.dumps(stats.to_dict()))


@click.command("listen")
@click.option("--endpoint", "--pub", "endpoint", default="tcp://127.0.0.1:5556", show_default=True,
              help="The service's PUB endpoint.")
@click.option("--state", "state_endpoint", default=None,
              help="The service's state endpoint: print the current status first.")
@click.option("--status", "show_status", is_flag=True, help="Print status heartbeats too.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (for scripts).")
@click.option("--count", type=int, default=None, help="Stop after this many decode messages.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--topk", type=int, default=3, show_default=True, help="Candidates shown per decision.")
@click.option("--curve-secret", "curve_secret_key", type=click.Path(dir_okay=False), default=None,
              help="CURVE: this client's .key_secret file.")
@click.option("--curve-server", "curve_server_key", type=click.Path(dir_okay=False), default=None,
              help="CURVE: the service's public .key file.")
@click.option("--words-only", is_flag=True, help="Print word-locked decisions only (no sliding ones).")
@click.option("--wait", type=float, default=5.0, show_default=True,
              help="Print a line when no message arrives for this many seconds.")
@click.option("--loop", is_flag=True, help="The replay loops: also print accuracy per pass.")
@click.option("--candidates", type=int, default=None,
              help="Bank size for the chance level (default: from --state).")
@click.option("--early/--no-early", default=True, show_default=True,
              help="Print provisional early word decisions (topic word_early, models trained with early decisions) "
                   "and, on each word's final line, how its top candidate firmed up; --no-early hides them.")
def listen(**opts: Any) -> None:
    """Subscribe to a running service and print decoded words live.

    With ground truth in the messages (word-locked decisions during a replay with markers), prints running
    top-1/top-10 accuracy with its chance level and 95 % interval (per pass with --loop). Several listeners may
    run at once. Ctrl-C stops and prints a summary (accuracy, latency).

    Example: neurospeech listen --pub tcp://127.0.0.1:5556 --state tcp://127.0.0.1:5557
    """
    from .listen import ListenSettings
    from .listen import listen as run_listen

    stop = threading.Event()
    # both signals set the stop flag explicitly: a process started in the background by a script inherits SIGINT
    # ignored, and Python then never raises KeyboardInterrupt (the demo's listener did not stop)
    old = {sig: signal.signal(sig, lambda *a: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        run_listen(ListenSettings(**opts), should_stop=stop.is_set)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@click.command("keys")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the key files.")
@click.option("--name", required=True, help="Key name: writes <name>.key (public) and <name>.key_secret.")
def keys(directory: Path, name: str) -> None:
    """Create a ZeroMQ CURVE key pair for the service or a subscriber.

    The service uses its .key_secret (--curve-secret-key / [publish] curve_secret_key) and a folder of
    authorised client public .key files; each client uses its own .key_secret and the service's .key.
    """
    from ..service._curve import generate_keys

    pub, sec = generate_keys(directory, name)
    click.echo(f"public key: {pub}\nsecret key: {sec}  (keep private)")
