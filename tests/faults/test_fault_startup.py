"""Start-up refusals: clear message, non-zero exit, nothing left running."""

from __future__ import annotations

import subprocess
import sys

import pytest
import zmq
from _service_fixtures import Player, build_artifacts, serve_settings
from neurospeech.service.server import Server

from neurospeech.errors import (
    ArtifactError,
    ConfigError,
    ContractMismatchError,
    StreamNotFoundError,
    TransportError,
)
from neurospeech.scoring import CandidateBank

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    return build_artifacts(tmp_path_factory.mktemp("art"), duration=6.0, n_distractors=10)


def _cli(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "neurospeech", "serve", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cli_refuses_a_corrupted_model_and_a_wrong_channel_set(art, tmp_path):
    bad = tmp_path / "model.onnx"
    data = bytearray(art.model.read_bytes())
    data[100:200] = b"\x00" * 100
    bad.write_bytes(bytes(data))
    names = list(art.names)
    names[3] = "Cz"
    names[7] = "Pz"
    player = Player(art.data, art.sfreq, names, loop=True, wait_consumers=False).start()
    try:  # both at once
        corrupt = _cli(
            "--model", bad, "--bank", art.bank, "--stream-name", "nothing", "--resolve-timeout", "1"
        )
        wrong = _cli(
            "--model",
            art.model,
            "--bank",
            art.bank,
            "--stream-name",
            player.name,
            "--pub",
            "tcp://127.0.0.1:0",
            "--resolve-timeout",
            "10",
            "--no-markers",
        )
        _, err_corrupt = corrupt.communicate(timeout=60)
        _, err_wrong = wrong.communicate(timeout=60)
    finally:
        player.stop()
        for p in (corrupt, wrong):
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert corrupt.returncode == ArtifactError.exit_code, err_corrupt[-1500:]
    assert "rebuild the bank" in err_corrupt or "corrupted" in err_corrupt
    assert wrong.returncode == ContractMismatchError.exit_code, err_wrong[-1500:]
    assert "EEG004" in err_wrong and "EEG008" in err_wrong and "Fix" in err_wrong


def test_in_process_refusals(art, tmp_path):
    # bank built for another model
    bank = CandidateBank.load(art.bank)
    bank.header["model_sha256"] = "0" * 64
    other = tmp_path / "bank.npz"
    bank.save(other)
    player = Player(art.data, art.sfreq, art.names, loop=True, wait_consumers=False)
    with pytest.raises(ArtifactError, match="rebuild the bank"):
        Server(serve_settings(art, player, bank=other))
    with pytest.raises(ArtifactError, match="does not exist"):
        Server(serve_settings(art, player, model=tmp_path / "missing.onnx"))
    with pytest.raises(ConfigError, match="hop"):
        Server(serve_settings(art, player, hop=-1.0))
    # no such stream: the error lists what was found
    srv = Server(serve_settings(art, player, resolve_timeout=1.0))
    with pytest.raises(StreamNotFoundError, match="Streams found"):
        srv.start()
    # publisher port in use
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    try:
        srv = Server(serve_settings(art, player, publish={"endpoint": f"tcp://127.0.0.1:{port}"}))
        with pytest.raises(TransportError, match="already in use"):
            srv.start()
    finally:
        sock.close(0)
        ctx.term()
    # a stream at a rate the model cannot use
    slow = Player(art.data[:, ::6], 100.0, art.names, loop=True, wait_consumers=False).start()
    try:
        srv = Server(serve_settings(art, slow))
        with pytest.raises(ContractMismatchError, match="below the model rate"):
            srv.start()
    finally:
        slow.stop()


def test_a_stop_while_resolving_is_a_clean_stop_not_a_missing_stream(art):
    import threading
    import time

    player = Player(art.data, art.sfreq, art.names, name="nstest-never-started", wait_consumers=False)
    srv = Server(serve_settings(art, player, resolve_timeout=120.0))
    threading.Timer(0.5, srv.stop).start()
    t0 = time.monotonic()
    srv.start()  # returned, without StreamNotFoundError (before: a stream listing, then "no LSL stream matches")
    srv.join()
    assert time.monotonic() - t0 < 60  # a deadline only: the resolver is polled every 20 ms
    assert srv.exit_code == 0 and srv.error is None and srv.state == "stopped"
    assert srv.publisher is None  # closed
