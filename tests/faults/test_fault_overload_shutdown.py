"""Overload (an encoder slower than the hop), a crashing acquisition thread, SIGTERM during decoding."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import zmq
from _service_fixtures import Player, build_artifacts, serve_settings, word_markers
from neurospeech.service.client import Subscriber
from neurospeech.service.scheduler import MAX_WORD_QUEUE
from neurospeech.service.server import Server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    return build_artifacts(tmp_path_factory.mktemp("art"), duration=7.0, n_distractors=50, word_every=0.3)


def test_slow_encoder_skips_decisions_and_keeps_the_heartbeat(art):
    player = Player(art.data, art.sfreq, art.names, markers=word_markers(art)).start()
    server = Server(serve_settings(art, player, hop=0.1, status_interval=0.5))
    encode = server.decoder.model.encode
    peak = {"queue": 0, "calls": 0}

    def slow_encode(x, subject_index=0):  # 0.35 s per window: 3.5x the hop
        peak["queue"] = max(peak["queue"], len(server.scheduler.word_queue))
        peak["calls"] += 1
        time.sleep(0.35)
        return encode(x, subject_index)

    server.decoder.model.encode = slow_encode
    server.start()
    sub = Subscriber(server.publisher.endpoint, topics=["status"])
    status = []
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not player.done:
            m = sub.recv(0.1)
            if m is not None:
                status.append(m)
        stats = server.stats()
    finally:
        sub.close()
        server.stop()
        server.join()
        player.stop()
    running = [m for m in status if m["state"] == "running"]
    t = [m["t_sent"] for m in running]
    # the heartbeat never waits for the model: a heartbeat that did would come once per queue of 0.35 s encodes
    # (64 word windows: > 20 s); the bound is loose for a loaded machine
    assert len(t) >= 6 and max(b - a for a, b in itertools.pairwise(t)) < 3.0
    assert stats["skipped_decisions"] >= 10
    decided = stats["decisions"]["sliding"] + stats["decisions"]["word"]
    assert decided == peak["calls"] or decided == peak["calls"] - 1
    assert peak["queue"] <= MAX_WORD_QUEUE
    # every due sliding window was either decided or counted as skipped (nothing queued without bound)
    n_windows = stats["decisions"]["sliding"] + stats["skipped_decisions"]
    assert n_windows >= 0.8 * (7.0 - 3.2) / 0.1


def test_crash_in_the_acquisition_thread_stops_the_service_with_an_error(art, caplog):
    player = Player(art.data, art.sfreq, art.names).start()
    server = Server(serve_settings(art, player, markers=False))
    server.start()
    calls = {"n": 0}
    process = server.pipeline.process_chunk

    def boom(raw, stamps, *rest):
        calls["n"] += 1
        if calls["n"] == 40:
            raise RuntimeError("injected acquisition failure")
        return process(raw, stamps, *rest)

    server.pipeline.process_chunk = boom
    sub = Subscriber(server.publisher.endpoint)
    msgs = []
    try:
        with caplog.at_level(logging.CRITICAL, logger="neurospeech.service.server"):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and server.error is None:
                m = sub.recv(0.05)
                if m is not None:
                    msgs.append(m)
            assert isinstance(server.error, RuntimeError)
            server.join(10.0)  # a deadline; every thread must be gone after it (asserted below)
            while (m := sub.recv(0.3)) is not None:
                msgs.append(m)
    finally:
        sub.close()
        server.stop()
        server.join()
        player.stop()
    assert server.exit_code == 1
    assert "injected acquisition failure" in caplog.text and "Traceback" in caplog.text
    assert msgs[-1].kind == "status" and msgs[-1]["state"] == "stopped"
    assert not any(t.is_alive() for t in server._threads)


def test_sigterm_during_decoding_exits_cleanly_within_a_second(art, tmp_path):
    ctx = zmq.Context()
    probe = ctx.socket(zmq.PUB)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(0)
    ctx.term()
    endpoint = f"tcp://127.0.0.1:{port}"
    # push-time stamps that a loaded machine makes step back and forth: absorbed by the clock model (issue 14)
    player = Player(art.data, art.sfreq, art.names, loop=True).start()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "neurospeech",
            "serve",
            "--model",
            str(art.model),
            "--bank",
            str(art.bank),
            "--stream-name",
            player.name,
            "--pub",
            endpoint,
            "--no-markers",
            "--resolve-timeout",
            "10",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    sub = Subscriber(endpoint)
    try:
        first = None
        deadline = time.monotonic() + 120  # start-up of a second Python process on a loaded machine
        while time.monotonic() < deadline and first is None and proc.poll() is None:
            m = sub.recv(0.1)
            if m is not None and m.kind == "decode":
                first = m
        assert first is not None or proc.poll() is not None, "no decision within 120 s"
        assert first is not None, f"serve exited with {proc.poll()} before deciding"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)  # a deadline for a loaded machine; the stop itself takes ~20 ms
        last = []
        while (m := sub.recv(0.2)) is not None:
            last.append(m)
    finally:
        sub.close()
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
        player.stop()
    assert code == 0, err[-2000:]
    assert any(m.kind == "status" and m["state"] == "stopped" for m in last), err[-1000:]
