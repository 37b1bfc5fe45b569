"""The deploy files: a systemd unit that systemd accepts and whose restart policy follows the exit codes, the
notify protocol spoken by ``neurospeech serve`` (a fake ``NOTIFY_SOCKET``), and example configs that load
and name no machine-specific path."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path

import pytest
import zmq
from _service_fixtures import Player, build_artifacts
from neurospeech.service._systemd import SystemdNotifier

import neurospeech.errors as errors
from neurospeech.resources import EXAMPLE_CONFIGS, example_config

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "neurospeech-serve.service"

# what a restart can fix (the cause may go away by itself) vs what needs a person to change something
PERMANENT = (errors.ConfigError, errors.DataFormatError, errors.ArtifactError, errors.ContractMismatchError)
TRANSIENT = (errors.StreamError, errors.TransportError)


def _unit() -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (keys may repeat in a unit file)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out[section] = {}
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


def _codes(classes: tuple[type[errors.NeurospeechError], ...]) -> set[int]:
    return {c.exit_code for c in classes}


def test_unit_restart_policy_follows_the_exit_code_table():
    svc = _unit()["Service"]
    assert svc["Type"] == ["notify"] and svc["NotifyAccess"] == ["main"]
    assert int(svc["WatchdogSec"][0]) >= 5, "the heartbeat is <= 1 s apart: a few seconds of slack"
    assert svc["Restart"] == ["on-failure"]
    prevent = {int(c) for c in svc["RestartPreventExitStatus"][0].split()}
    assert prevent == _codes(PERMANENT) == {2, 3, 4, 5}
    assert not prevent & (_codes(TRANSIENT) | {1}), "stream-not-found, address-in-use and crashes must restart"
    # every exit code of the error hierarchy is in the unit's table, classified as the policy does
    all_codes = {c.exit_code for c in vars(errors).values()
                 if isinstance(c, type) and issubclass(c, errors.NeurospeechError)}
    table = dict(re.findall(r"^#\s+(\d) .*?\b(permanent|transient|stays stopped)\b", UNIT.read_text(), re.M))
    assert all_codes | {0} <= {int(c) for c in table}, table
    assert {int(c) for c, kind in table.items() if kind == "permanent"} == prevent
    # the issues of the first unit: a user nobody creates, a log folder nobody makes, CPU throttling
    assert svc["DynamicUser"] == ["yes"] and "User" not in svc
    assert svc["StateDirectory"] == ["neurospeech"] and svc["LogsDirectory"] == ["neurospeech"]
    assert "CPUQuota" not in svc and "ReadWritePaths" not in svc
    assert _unit()["Unit"]["StartLimitIntervalSec"] == ["0"]


def test_unit_passes_systemd_analyze_verify(tmp_path):
    exe = shutil.which("systemd-analyze")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing: .ci/run installs the Debian package `systemd`")
        pytest.skip("systemd-analyze is not installed (Debian package `systemd`)")
    # the unit names /opt/neurospeech/venv/bin/neurospeech; verify checks that ExecStart is executable
    script = shutil.which("neurospeech") or str(Path(sys.executable).with_name("neurospeech"))
    assert Path(script).is_file(), script
    unit = tmp_path / UNIT.name
    text = UNIT.read_text()
    assert "ExecStart=/opt/neurospeech/venv/bin/neurospeech serve" in text
    unit.write_text(text.replace("/opt/neurospeech/venv/bin/neurospeech", script))
    out = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    complaints = [line for line in (out.stdout + out.stderr).splitlines() if UNIT.name in line]
    assert out.returncode == 0 and not complaints, out.stdout + out.stderr


# ------------------------------------------------------------------------------------ notify protocol
def _listener(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(0.2)
    return s


def _drain(s: socket.socket, until: float, stop=lambda got: False) -> list[str]:
    got: list[str] = []
    while time.monotonic() < until and not stop(got):
        try:
            got.append(s.recv(4096).decode())
        except TimeoutError:
            continue
    return got


def test_notifier_is_silent_outside_systemd_and_speaks_to_an_abstract_socket():
    off = SystemdNotifier({})
    assert not off.enabled and off.notify("READY=1") is False
    name = f"neurospeech-test-{uuid.uuid4().hex}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(b"\0" + name.encode())
    s.settimeout(5)
    try:
        n = SystemdNotifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "4000000"})
        n.heartbeat("running")  # before READY: nothing (start-up is governed by TimeoutStartSec)
        n.ready("serving x")
        assert s.recv(4096).decode().split("\n") == ["READY=1", "STATUS=serving x"]
        n.heartbeat("running")
        assert s.recv(4096).decode().split("\n") == ["WATCHDOG=1", "STATUS=stream running"]
        n.heartbeat("running")  # unchanged state: the watchdog only
        assert s.recv(4096).decode() == "WATCHDOG=1"
        n.stopping()
        assert s.recv(4096).decode().split("\n") == ["STOPPING=1", "STATUS=stopping"]
        n.close()
    finally:
        s.close()
    # the watchdog belongs to another process (WATCHDOG_PID): not fed from here
    assert SystemdNotifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_usec == 0


@pytest.mark.integration
def test_serve_speaks_the_notify_protocol(tmp_path):
    """READY=1 after start-up, WATCHDOG=1 with the heartbeats, STOPPING=1 on SIGTERM, exit 0."""
    art = build_artifacts(tmp_path, duration=8.0, n_distractors=10)
    sock_path = Path(f"/tmp/ns-notify-{uuid.uuid4().hex[:12]}.sock")  # AF_UNIX paths are short
    listener = _listener(sock_path)
    ctx = zmq.Context()
    probe = ctx.socket(zmq.PUB)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(0)
    ctx.term()
    player = Player(art.data, art.sfreq, art.names, loop=True).start()
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "10000000"}
    env.pop("WATCHDOG_PID", None)
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "neurospeech", "serve", "--model", str(art.model), "--bank", str(art.bank),
         "--stream-name", player.name, "--pub", f"tcp://127.0.0.1:{port}", "--no-markers",
         "--resolve-timeout", "60"],
        stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=tmp_path,
    )
    try:
        got = _drain(listener, time.monotonic() + 120,
                     stop=lambda g: sum("WATCHDOG=1" in m for m in g) >= 3 or proc.poll() is not None)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        got += _drain(listener, time.monotonic() + 2, stop=lambda g: any("STOPPING=1" in m for m in g))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
        player.stop()
        listener.close()
        sock_path.unlink(missing_ok=True)
    err = (tmp_path / "serve.log").read_text(errors="replace")[-2000:]
    ready = [i for i, m in enumerate(got) if "READY=1" in m.split("\n")]
    assert len(ready) == 1, (got, err)
    assert f"STATUS=serving {player.name}" in got[ready[0]]
    assert sum("WATCHDOG=1" in m for m in got[ready[0]:]) >= 3, (got, err)
    assert not any("WATCHDOG=1" in m for m in got[:ready[0]]), "watchdog fed before READY"
    assert "STOPPING=1" in got[-1], (got, err)
    assert code == 0, err


# ------------------------------------------------------------------------------------ example configs
def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


@pytest.mark.parametrize("name", EXAMPLE_CONFIGS)
def test_example_configs_name_no_machine_specific_path(name):
    path = example_config(name)
    text = path.read_text()  # the packaged file (site-packages when installed from the wheel) ...
    assert text == (ROOT / "deploy" / "configs" / f"{name}.example.toml").read_text()  # ... is the documented one
    absolute = [s for s in _strings(tomllib.loads(text)) if s.startswith(("/", "~")) or re.match(r"^[A-Z]:\\", s)]
    assert not absolute, f"{path.name}: absolute paths {absolute}"
    assert not re.search(r"/(work|home|root|Users)/", text), f"{path.name} names a machine-specific folder"


@pytest.mark.torch
def test_train_example_config_loads():
    from neurospeech.models.train import TrainConfig

    cfg = TrainConfig.from_toml(example_config("train"))
    assert cfg.data and not Path(cfg.data).is_absolute()
    assert cfg.preset == "efficient" and cfg.loss == "clip" and cfg.features == "whisper"
    assert cfg.score_dim == 64 and cfg.time_pool == 7 and cfg.batch_size == 256
    # the file's keys are exactly fields of the config (a misspelt key would be refused)
    keys = set(tomllib.loads(example_config("train").read_text())["train"])
    assert keys <= set(cfg.to_dict())
