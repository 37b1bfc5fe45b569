"""Process helpers of the benchmarks: the synthetic stream, the service and listeners as subprocesses,
readiness by deadline, CPU/RSS sampling with psutil, clean termination."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from ...errors import NeurospeechError, StreamError, TransportError
from ...resources import ensure_lsl_config

__all__ = ["ProcSampler", "free_port", "service", "stream", "wait_running"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    ensure_lsl_config(env)
    return env


def _stop(proc: subprocess.Popen, timeout: float = 5.0) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


@contextlib.contextmanager
def stream(
    workdir: Path,
    chunk: float = 0.01,
    markers: bool = False,
    seconds: float = 60.0,
    n_channels: int = 275,
    sfreq: float = 1200.0,
    nice: int = 0,
) -> Iterator[dict[str, Any]]:
    """A synthetic MEG replay subprocess (LSL outlet ``bench-<random>``) for the duration of the block."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    log = Path(workdir) / f"{name}.stream.log"
    cmd = [
        sys.executable,
        "-m",
        "neurospeech.tools.bench._synthetic",
        "--name",
        name,
        "--chunk",
        str(chunk),
        "--seconds",
        str(seconds),
        "--channels",
        str(n_channels),
        "--sfreq",
        str(sfreq),
    ]
    if markers:
        cmd.append("--markers")
    with open(log, "w") as err:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=_env(),
            preexec_fn=(lambda: os.nice(nice)) if nice else None,
        )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if line.strip() != "ready":
            raise StreamError(f"synthetic stream did not start: {_tail(log)}")
        yield {"name": name, "pid": proc.pid, "proc": proc, "log": str(log)}
    finally:
        _stop(proc)


@contextlib.contextmanager
def service(
    workdir: Path,
    model: str,
    bank: str,
    stream_name: str,
    hop: float,
    threads: int = 1,
    markers: bool = False,
    extra: list[str] | None = None,
    tag: str = "svc",
    nice: int = 0,
) -> Iterator[dict[str, Any]]:
    """``neurospeech serve`` as a subprocess on random loopback ports (PUB + state)."""
    pub, state = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    log = Path(workdir) / f"{tag}-{uuid.uuid4().hex[:6]}.serve.log"
    cmd = [
        sys.executable,
        "-m",
        "neurospeech",
        "serve",
        "--model",
        model,
        "--bank",
        bank,
        "--stream-name",
        stream_name,
        "--pub",
        pub,
        "--state",
        state,
        "--hop",
        str(hop),
        "--threads",
        str(threads),
    ]
    if not markers:
        cmd.append("--no-markers")
    cmd += extra or []
    with open(log, "w") as err:
        proc = subprocess.Popen(
            cmd,
            stdout=err,
            stderr=subprocess.STDOUT,
            env=_env(),
            preexec_fn=(lambda: os.nice(nice)) if nice else None,
        )
    info = {"pub": pub, "state": state, "pid": proc.pid, "proc": proc, "log": str(log), "cmd": cmd}
    try:
        yield info
    finally:
        info["returncode"] = _stop(proc)


def wait_running(svc: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """Poll the state endpoint until the service reports ``running``; returns the state reply."""
    from ...service.client import request_state

    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if svc["proc"].poll() is not None:
            raise NeurospeechError(
                f"service exited with code {svc['proc'].returncode} before running:\n"
                + _tail(Path(svc["log"]))
            )
        try:
            st = request_state(svc["state"], timeout=1.0)
        except TransportError:
            continue
        last = st
        if (st.get("status") or {}).get("state") == "running":
            return st
        time.sleep(0.2)  # polling an external process
    raise StreamError(
        f"service not running after {timeout} s (last state {last}):\n{_tail(Path(svc['log']))}"
    )


class ProcSampler:
    """CPU (% of one core) and RSS of a process between :meth:`start` and :meth:`stop`."""

    def __init__(self, pid: int) -> None:
        self.p = psutil.Process(pid)
        self.t0 = self.c0 = 0.0

    def _cpu(self) -> float:
        t = self.p.cpu_times()
        return float(t.user + t.system)

    def start(self) -> None:
        self.t0, self.c0 = time.monotonic(), self._cpu()

    def cpu_percent(self) -> float:
        return 100.0 * (self._cpu() - self.c0) / max(1e-9, time.monotonic() - self.t0)

    def rss_mb(self) -> float:
        return self.p.memory_info().rss / 2**20

    def peak_rss_mb(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.p.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None
