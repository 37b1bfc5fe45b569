"""Stream loss: the outlet is destroyed (or stops pushing) mid-stream and comes back.

Asserts: status 'lost', then 'running' again after the return (bounds that catch a hang, not timing claims), no
decision while lost, no decoded window straddling the gap, the gap reported with its duration, sequence numbers
continuous.
"""

from __future__ import annotations

import threading
import time

import pytest
from _service_fixtures import Player, build_artifacts, serve_settings
from neurospeech.service.client import Subscriber
from neurospeech.service.server import Server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    # 11 s: after the outlet's return 7.7 s of data remain (the player stops at 3.3 s of data), so a full 3-s
    # window follows even when the re-resolve takes a few seconds (7 s left 3.7 s: under two busy loops the
    # killed case twice reconnected too late for any window, "no decisions after the stream came back")
    return build_artifacts(tmp_path_factory.mktemp("art"), duration=11.0, n_distractors=20)


def test_loss_and_resume_when_the_outlet_is_killed_or_falls_silent(art):
    # both cases run side by side (real time dominates the cost)
    results = {}

    def one(kill):
        try:
            check_loss_and_resume(art, kill)
            results[kill] = None
        except BaseException as exc:
            results[kill] = exc

    threads = [threading.Thread(target=one, args=(k,)) for k in (True, False)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for kill in (True, False):
        if results.get(kill, "missing") is not None:
            raise AssertionError(f"kill={kill}") from results.get(kill)


#: outage length: longer than loss_timeout (1 s) by more than the inlet buffer (max_buflen 2 s) the service may
#: still be draining when the player stops. At 1.2 s a service lagging > 0.2 s saw less than 1 s of silence and,
#: rightly, no loss: the silent case failed so once, with busy loops and a second test run beside it (session 11)
OUTAGE_S = 3.5


def check_loss_and_resume(art, kill):
    player = Player(art.data, art.sfreq, art.names, stop_at=3.3, restart_after=OUTAGE_S, kill=kill).start()
    server = Server(serve_settings(art, player, loss_timeout=1.0, markers=False))
    server.start()
    sub = Subscriber(server.publisher.endpoint)
    msgs = []
    try:
        deadline = time.monotonic() + 40.0
        while time.monotonic() < deadline and not player.done:
            m = sub.recv(0.1)
            if m is not None:
                msgs.append(m)
        # a little more so that the last decisions arrive
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            m = sub.recv(0.1)
            if m is not None:
                msgs.append(m)
        stats = sub.stats()
    finally:
        sub.close()
        server.stop()
        server.join()
        player.stop()
    assert player.error is None and player.stopped_at is not None and player.restarted_at is not None
    status = [m for m in msgs if m.kind == "status"]
    dec = [m for m in msgs if m.kind == "decode"]
    lost = [m for m in status if m["state"] == "lost"]
    assert lost, [m["state"] for m in status]
    t_lost = lost[0]["t_sent"]
    # "lost within 2 s" counts from the last sample reaching the service: on a loaded machine the service may
    # still be draining its inlet buffer (up to max_buflen = 2 s) when the player stops; the last running
    # statuses say by how much it lagged (lag_s = receipt - stamp of the newest sample)
    before = [m for m in status if m["state"] == "running" and m["t_sent"] < t_lost]
    lag = max([0.0] + [m["lag_s"] or 0.0 for m in before[-4:]])
    # The bounds below say "detected / resumed, not stuck", not how fast: on a 2-core machine at load 14 this test
    # once failed with the 2-s bounds it used to have (liblsl's re-resolve and the status tick both wait for the
    # scheduler). loss_timeout is 1 s here; the order of events is checked exactly below.
    assert 0 < t_lost - player.stopped_at <= 1.0 + 5.0 + lag, (t_lost - player.stopped_at, lag)
    resumed = [m for m in status if m["state"] == "running" and m["t_sent"] > t_lost]
    assert resumed and resumed[0]["t_sent"] - player.restarted_at <= 8.0, (
        resumed[0]["t_sent"] - player.restarted_at if resumed else None)
    t_back = resumed[0]["t_sent"]
    # nothing decided while lost; nothing decided from a window straddling the gap
    assert not [m for m in dec if t_lost < m["t_sent"] < t_back]
    # the first model-rate sample of a segment stands 83 ms (the anti-aliasing filter's delay at 600 Hz)
    # before the first raw sample, as in the offline path at a recording's start
    tol = 0.083 + 0.03
    for m in dec:
        assert (
            m["t_window_end"] <= player.stopped_at + 0.01 or m["t_window_start"] >= player.restarted_at - tol
        )
    after = [m for m in dec if m["t_window_start"] >= player.restarted_at - tol]
    assert after, "no decisions after the stream came back"
    # the gap runs from the newest stamp before the loss to the first stamp after the return (the player stamps at
    # push time): it starts at the latest when the player stopped, ends no earlier than its return and no later
    # than the service's first 'running' status after it (that sample was stamped before it was received). Bounds
    # from the events themselves, not a constant that a loaded machine overruns (3.53 s vs 3.5 s once)
    gaps = status[-1]["gaps"]
    assert gaps, "no gap reported"
    start, duration = gaps[-1]["start"], gaps[-1]["duration"]
    assert start <= player.stopped_at + 0.05, (start, player.stopped_at)
    assert player.restarted_at - 0.1 <= start + duration <= t_back + 0.1, (
        start + duration - player.restarted_at, t_back - player.restarted_at)
    assert duration >= OUTAGE_S - 0.1  # restart_after
    assert status[-1]["dropped_samples"] > 0
    for kind in ("decode", "status"):
        seqs = [m.seq for m in msgs if m.kind == kind]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert stats["missed"]["decode"] == 0 and stats["missed"]["status"] == 0


def test_end_of_a_replay_is_one_line_of_ours_not_liblsl_errors(art, tmp_path):
    """`neurospeech replay` of a file into `neurospeech serve`, both real processes: when the replay ends, the
    service log says so in one line of its own; liblsl's "Stream transmission broke off" ERROR lines (one per
    inlet, printed by liblsl itself) are not there; the replay exits 0 (it once crashed at the end of a pass)."""
    import signal
    import subprocess
    import sys
    import uuid

    import mne

    fif = tmp_path / "rec_raw.fif"
    mne.io.RawArray(art.data, mne.create_info(art.names, art.sfreq, "eeg"), verbose="error").save(
        fif, verbose="error")
    name = f"nstest-end-{uuid.uuid4().hex[:8]}"
    serve = subprocess.Popen(
        [sys.executable, "-m", "neurospeech", "serve", "--model", str(art.model), "--bank", str(art.bank),
         "--stream-name", name, "--resolve-timeout", "120", "--pub", "tcp://127.0.0.1:*"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(serve.stderr.readline, "")), daemon=True)
    reader.start()

    def wait_for(text, timeout=60.0):
        deadline = time.monotonic() + timeout
        while not any(text in x for x in lines):
            assert serve.poll() is None and time.monotonic() < deadline, "".join(lines)[-2000:]
            time.sleep(0.05)

    try:
        wait_for("waiting up to")
        replay = subprocess.run(
            [sys.executable, "-m", "neurospeech", "replay", str(fif), "--name", name],
            capture_output=True, text=True, timeout=120)
        wait_for(f"stream {name} lost")
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=30)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        reader.join(10)
        serve.stderr.close()
    err = "".join(lines)
    assert replay.returncode == 0, replay.stderr[-2000:]
    assert "LSL outlet closed" in replay.stderr
    assert serve.returncode == 0, err[-2000:]
    assert "-> running" in err, err[-2000:]
    assert "Stream transmission broke off" not in err and " ERR| " not in err, err[-2000:]
    assert err.count(f"stream {name} lost") == 1, err[-2000:]
