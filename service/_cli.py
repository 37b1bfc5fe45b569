"""Click commands ``neurospeech serve`` and ``neurospeech decode-file`` (registered in neurospeech/cli.py)."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from .config import load_settings

__all__ = ["decode_file", "serve"]

log = logging.getLogger(__name__)


def _common(f: Any) -> Any:
    opts = [
        click.option(
            "--config",
            "config",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="TOML settings (see deploy/configs/serve.example.toml); options below override it.",
        ),
        click.option(
            "--model",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Exported ONNX encoder (contract in its metadata).",
        ),
        click.option(
            "--bank",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Candidate bank (.npz) built for that model.",
        ),
        click.option(
            "--subject", default=None, help="Subject whose scaler to use (default: the model's only one)."
        ),
        click.option(
            "--hop", type=float, default=None, help="Seconds of data between sliding decisions [0.25]."
        ),
        click.option("--topk", type=int, default=None, help="Candidates per decision [10]."),
        click.option(
            "--policy",
            "bad_channel_policy",
            type=click.Choice(["skip", "interpolate"]),
            default=None,
            help="Bad-channel policy [skip].",
        ),
        click.option(
            "--threads", "intra_op_threads", type=int, default=None, help="onnxruntime intra-op threads [1]."
        ),
        click.option(
            "--blas-threads", type=int, default=None, help="numpy BLAS threads (resampler, scoring) [1]."
        ),
        click.option(
            "--rescale-seconds",
            type=float,
            default=None,
            help="Re-estimate the robust scaler from the first N s of clean data (0: off) "
            "[60 for a subject adapted by `adapt`, else off].",
        ),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@click.command("serve")
@_common
@click.option("--stream-name", default=None, help="LSL stream name to decode.")
@click.option("--stream-type", default=None, help="LSL stream type (e.g. EEG, MEG).")
@click.option("--source-id", default=None, help="LSL source_id (used to re-resolve after a loss).")
@click.option("--resolve-timeout", type=float, default=None, help="Seconds to wait for the stream [10].")
@click.option("--no-markers", is_flag=True, help="Ignore the word-marker stream.")
@click.option(
    "--units",
    default=None,
    help="Units the stream's values are in, instead of its metadata (e.g. uV, or mag=fT,grad=fT/cm).",
)
@click.option("--pub", "endpoint", default=None, help="ZeroMQ PUB endpoint [tcp://127.0.0.1:5556].")
@click.option(
    "--state", "state_endpoint", default=None, help="REP endpoint answering late joiners (optional)."
)
@click.option(
    "--encoding", type=click.Choice(["json", "msgpack"]), default=None, help="Header encoding [json]."
)
@click.option(
    "--log-messages",
    "jsonl_log",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append every published header to this JSONL file.",
)
@click.option(
    "--lsl-outlet",
    default=None,
    help="Also publish decisions as an LSL marker stream of this name (+ NAME-status), for LabRecorder.",
)
def serve(
    config: Path | None,
    no_markers: bool,
    endpoint: str | None,
    state_endpoint: str | None,
    encoding: str | None,
    jsonl_log: Path | None,
    **opts: Any,
) -> None:
    """Decode a live LSL stream and publish decisions and status over ZeroMQ.

    Runs until SIGINT/SIGTERM (also during start-up: exit 0). Exit codes: 0 clean stop, 2 bad settings, 4
    model/bank problem, 5 stream does not fit the model, 6 stream not found, 7 publisher address problem, 1
    crash (traceback logged).

    Example: neurospeech serve --model m.onnx --bank b.npz --stream-name sim-meg --pub tcp://127.0.0.1:5556
    """
    from ..errors import Interrupted
    from .acquisition import ensure_lsl_config

    # SIGINT/SIGTERM from the very start: a stop while the model loads or the stream is being resolved is a
    # clean stop (exit 0), not a KeyboardInterrupt or a "stream not found"
    stop_early = threading.Event()
    server: Any = None

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %d received: stopping", signum)
        stop_early.set()
        if server is None:  # still importing / loading the model: abandon that at once (main() exits 0)
            raise Interrupted(signum, "serve")
        server.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    ensure_lsl_config()
    from .server import Server

    publish = {
        k: v
        for k, v in (
            ("endpoint", endpoint),
            ("state_endpoint", state_endpoint),
            ("encoding", encoding),
            ("jsonl_log", jsonl_log),
        )
        if v is not None
    }
    settings = load_settings(config, markers=False if no_markers else None, publish=publish, **opts)
    log.info("loading model %s and bank %s", settings.model, settings.bank)
    server = Server(settings)
    if stop_early.is_set():
        server.stop()
    code = server.run()
    # Every thread is joined and every socket/inlet closed at this point. The interpreter's own teardown
    # (module finalisation of scipy, onnxruntime ...) takes another 0.5-1 s on this machine, which would break
    # the "stopped within 1 s of SIGTERM" promise, so the process ends here.
    log.debug("serve returned %d", code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@click.command("decode-file")
@click.argument("recording", type=click.Path(path_type=Path))
@_common
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Decisions as JSON lines.",
)
@click.option(
    "--events",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Events table with word rows (default: the BIDS run's _events.tsv when present).",
)
@click.option(
    "--chunk",
    "chunk_seconds",
    type=float,
    default=1.0,
    show_default=True,
    help="Seconds fed per step (the result does not depend on it).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Threads that check, encode and score windows while the main thread reads and resamples "
    "(0: one thread; the decisions do not depend on it).",
)
def decode_file(
    recording: Path,
    config: Path | None,
    out: Path,
    events: Path | None,
    chunk_seconds: float,
    workers: int,
    **opts: Any,
) -> None:
    """Run the streaming pipeline over a recording file (FIF/EDF/BrainVision, BIDS runs) as fast as possible.

    Writes every sliding and word-locked decision to --out and prints a JSON summary (real-time factor,
    word-level top-1/top-10 when the events carry segment ids). --out appears only when the run is complete
    (written to a temporary file next to it, renamed at the end). Exit codes: 0 done, 2 bad settings or an
    --out that cannot be written (read-only, full disk), 3 unreadable recording, 4 model/bank problem, 5
    recording does not fit the model, 128+N stopped by signal N (130 SIGINT, 143 SIGTERM, 129 SIGHUP).

    Example: neurospeech decode-file sub-01_task-x_meg.fif --model m.onnx --bank b.npz --out decisions.jsonl
    """
    from ..errors import Interrupted
    from .filesource import decode_file as run

    def on_signal(signum: int, frame: Any) -> None:
        # raised in the main thread wherever it is; decode_file's clean-up removes the unfinished output
        raise Interrupted(signum, "decode-file")

    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        old[sig] = signal.signal(sig, on_signal)
    try:
        settings = load_settings(config, **opts)
        summary = run(
            recording, out, settings, events=events, chunk_seconds=chunk_seconds, progress=sys.stderr.isatty(),
            workers=workers,
        )
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    click.echo(json.dumps(summary, indent=1, allow_nan=False))
