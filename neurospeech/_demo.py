"""``neurospeech demo``: the whole product end to end on an embedded default.

simulate (ci preset) -> train (efficient encoder, contrastive, mel targets) -> evaluate (with baselines)
-> export (ONNX + contract) -> bank (held-out segments) -> live: replay | serve | listen on loopback
-> decode-file (the same pipeline offline).

Every step runs the real command in a subprocess, exactly as a user would type it; the commands are printed
so that they can be rerun one by one. A summary is printed and written to ``OUT/demo-summary.json``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from .errors import ConfigError, NeurospeechError

__all__ = ["DemoSettings", "demo", "run_demo"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSettings:
    """Settings of the end-to-end demo.

    Attributes
    ----------
    out : Path
        Output folder (dataset, run, report, model, bank, decisions, logs).
    preset : str
        Encoder preset to train (``efficient`` or ``paper``).
    features : str
        Speech representation (``mel`` needs no weights; ``whisper`` uses the ``speech`` extra).
    epochs : int
        Maximum training epochs.
    seed : int
        Seed for simulation and training.
    speed : float
        Replay speed of the live part (1 = real time).
    live : bool
        Run the live replay | serve | listen part.
    """

    out: Path
    preset: str = "efficient"
    features: str = "mel"
    epochs: int = 15
    seed: int = 0
    speed: float = 1.0
    live: bool = True


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "neurospeech", *args]


def _show(cmd: list[str]) -> str:
    return "neurospeech " + " ".join(cmd[3:])


def _run(cmd: list[str], log_file: Path, timeout: float) -> tuple[str, float]:
    click.echo(f"$ {_show(cmd)}")
    t0 = time.perf_counter()
    with open(log_file, "w") as lf:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=lf, text=True, timeout=timeout, check=False)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "".join(log_file.read_text().splitlines(keepends=True)[-15:])
        raise NeurospeechError(
            f"step `{_show(cmd)}` failed with exit code {proc.returncode} after {dt:.1f} s; "
            f"its log is {log_file}:\n{tail}"
        )
    return proc.stdout, dt


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _test_recording(data: Path) -> tuple[Any, int]:
    """The recording with the most held-out (test-split) words."""
    from .data import load_dataset, split_of

    best, n_best = None, -1
    for rec in load_dataset(data):
        words = rec.load_events().words()
        n = sum(split_of(str(s)) == "test" for s in words.sound)
        if n > n_best:
            best, n_best = rec, n
    if best is None or n_best <= 0:
        raise NeurospeechError(f"no recording in {data} has test-split words; re-simulate the dataset")
    return best, n_best


def _live(s: DemoSettings, model: Path, bank: Path, rec: Any, logs: Path) -> dict[str, Any]:
    """replay | serve | listen on loopback; returns live accuracy and latency figures."""
    name = f"neurospeech-demo-{uuid.uuid4().hex[:8]}"
    port = _free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ)
    from .resources import ensure_lsl_config  # the packaged lsl_api.cfg: found from a wheel too

    ensure_lsl_config(env)
    serve_cmd = _cmd("serve", "--model", str(model), "--bank", str(bank), "--subject", rec.subject,
                     "--stream-name", name, "--resolve-timeout", "60", "--pub", endpoint)
    listen_cmd = _cmd("listen", "--endpoint", endpoint, "--json")
    replay_cmd = _cmd("replay", str(rec.bids_path.fpath), "--name", name, "--speed", str(s.speed))
    procs: list[subprocess.Popen[str]] = []
    try:
        for cmd, tag in ((serve_cmd, "serve"), (listen_cmd, "listen")):
            click.echo(f"$ {_show(cmd)} &")
            procs.append(subprocess.Popen(
                cmd, stdout=open(logs / f"{tag}.out", "w"), stderr=open(logs / f"{tag}.log", "w"),
                text=True, env=env,
            ))
        click.echo(f"$ {_show(replay_cmd)}")
        t0 = time.perf_counter()
        rp = subprocess.run(replay_cmd, stdout=subprocess.DEVNULL, stderr=open(logs / "replay.log", "w"),
                            env=env, timeout=600, check=False)
        if rp.returncode != 0:
            raise NeurospeechError(f"replay failed with exit code {rp.returncode}; see {logs / 'replay.log'}")
        replay_s = time.perf_counter() - t0
        # the last word-locked windows complete 2.5 s after their onset; then stop cleanly with SIGINT
        deadline = time.monotonic() + 6.0
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            time.sleep(0.2)
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        codes = [p.wait(timeout=10) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    if codes[0] != 0:
        raise NeurospeechError(f"serve exited with {codes[0]}; see {logs / 'serve.log'}")
    lines = [json.loads(x) for x in (logs / "listen.out").read_text().splitlines() if x.startswith("{")]
    summ = next((x for x in reversed(lines) if x.get("type") == "summary"), None)
    if summ is None:
        raise NeurospeechError(f"listen printed no summary; see {logs / 'listen.log'}")
    word = (summ.get("accuracy") or {}).get("word") or {}
    return {
        "stream": name, "endpoint": endpoint, "replay_seconds": round(replay_s, 2),
        "decode_messages": summ["decode_messages"], "word_locked": word.get("n", 0),
        "live_word_top1": word.get("top1"), "live_word_top10": word.get("top10"),
        "latency_ms_p50": (summ.get("latency_ms") or {}).get("p50"),
        "latency_ms_p99": (summ.get("latency_ms") or {}).get("p99"),
        "messages_lost": sum((summ.get("subscriber") or {}).get("missed", {}).values()),
    }


def run_demo(s: DemoSettings) -> dict[str, Any]:
    """Run every step; returns the summary (also written to ``OUT/demo-summary.json``)."""
    if s.preset not in ("efficient", "paper"):
        raise ConfigError(f"preset must be 'efficient' or 'paper', got {s.preset!r}")
    if s.epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {s.epochs}")
    out = s.out.resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    data, run, report = out / "data", out / "run", out / "report"
    model, bank, decisions = out / "model.onnx", out / "bank.npz", out / "decisions.jsonl"
    times: dict[str, float] = {}
    summary: dict[str, Any] = {"settings": {k: str(v) for k, v in asdict(s).items()}}

    if not (data / "dataset_description.json").is_file():
        _, times["simulate"] = _run(_cmd("simulate", str(data), "--preset", "ci", "--seed", str(s.seed)),
                                    logs / "simulate.log", 600)
    _, times["train"] = _run(_cmd("train", "--data", str(data), "--out", str(run), "--preset", s.preset,
                                  "--features", s.features, "--epochs", str(s.epochs), "--seed", str(s.seed),
                                  "--device", "cpu", "--no-resume"), logs / "train.log", 1800)
    _, times["evaluate"] = _run(_cmd("evaluate", str(run), "--out", str(report)), logs / "evaluate.log", 1800)
    _, times["export"] = _run(_cmd("export", str(run), "--out", str(model)), logs / "export.log", 600)
    _, times["bank"] = _run(_cmd("bank", "--model", str(model), "--data", str(data), "--out", str(bank)),
                            logs / "bank.log", 600)
    rec, n_test = _test_recording(data)
    if s.live:
        t0 = time.perf_counter()
        summary["live"] = _live(s, model, bank, rec, logs)
        times["live"] = time.perf_counter() - t0
    stdout, times["decode_file"] = _run(
        _cmd("decode-file", str(rec.bids_path.fpath), "--model", str(model), "--bank", str(bank),
             "--subject", rec.subject, "--out", str(decisions)), logs / "decode-file.log", 600)
    try:
        summary["decode_file"] = json.loads(stdout)
    except json.JSONDecodeError:
        summary["decode_file"] = {"stdout": stdout[-2000:]}
    metrics_file = report / "report.json"
    if metrics_file.is_file():
        summary["evaluation"] = json.loads(metrics_file.read_text())
    summary["test_recording"] = {"subject": rec.subject, "run": rec.run, "test_words": n_test}
    summary["seconds"] = {k: round(v, 1) for k, v in times.items()}
    summary["artifacts"] = {"dataset": str(data), "run": str(run), "report": str(report), "model": str(model),
                            "bank": str(bank), "decisions": str(decisions), "logs": str(logs)}
    (out / "demo-summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


@click.command("demo")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"))
@click.option("--preset", type=click.Choice(["efficient", "paper"]), default="efficient", show_default=True)
@click.option("--features", type=click.Choice(["mel", "whisper"]), default="mel", show_default=True)
@click.option("--epochs", type=int, default=15, show_default=True, help="Maximum training epochs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--speed", type=float, default=1.0, show_default=True, help="Replay speed of the live part.")
@click.option("--no-live", is_flag=True, help="Skip the live replay | serve | listen part.")
def demo(out: Path, preset: str, features: str, epochs: int, seed: int, speed: float, no_live: bool) -> None:
    """Run the whole pipeline end to end on simulated data (ci preset) into OUT [demo-output].

    simulate -> train -> evaluate -> export -> bank -> replay | serve | listen -> decode-file.
    """
    s = DemoSettings(out=out, preset=preset, features=features, epochs=epochs, seed=seed, speed=speed,
                     live=not no_live)
    summary = run_demo(s)
    click.echo("")
    click.echo("neurospeech demo: summary")
    for step, sec in summary["seconds"].items():
        click.echo(f"  {step:<12} {sec:8.1f} s")
    live = summary.get("live")
    if live:
        click.echo(f"  live: {live['decode_messages']} decisions, {live['word_locked']} word-locked, "
                   f"top-1 {_pct(live['live_word_top1'])}, top-10 {_pct(live['live_word_top10'])}, "
                   f"latency p50 {_ms(live['latency_ms_p50'])}")
    click.echo(f"  summary: {s.out / 'demo-summary.json'}")


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}%"


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f} ms"
