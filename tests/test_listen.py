"""`neurospeech listen`: running accuracy from truth in the messages; several listeners at once (real
subprocesses on a real publisher)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from _transport import decode_header_fields, make_publisher, status_header_fields
from neurospeech.tools.listen import Accuracy


def _header(seq: int) -> dict:
    """Truth at rank 1 when seq % 3 == 0, rank 5 when 1, absent from the top 10 when 2."""
    truth = f"seg{seq % 7}"
    others = [f"other{k}" for k in range(12)]
    if seq % 3 == 0:
        ids = [truth, *others[:9]]
    elif seq % 3 == 1:
        ids = [*others[:4], truth, *others[4:9]]
    else:
        ids = others[:10]
    topk = [{"rank": r + 1, "id": i, "word": "w-" + i, "sound": "s.wav", "sound_time": 0.0,
             "score": 1.0 - r / 10, "prob": 0.1} for r, i in enumerate(ids)]
    return decode_header_fields(seq, kind="word", topk=topk,
                                truth={"segment_id": truth, "word": "w-" + truth})


def _expected(seq: int) -> dict:
    return {"top1": seq % 3 == 0, "top10": seq % 3 != 2, "word1": seq % 3 == 0}


def test_accuracy_counts_only_messages_with_truth():
    acc = Accuracy()
    assert acc.update(decode_header_fields(truth=None)) is None
    for s in range(6):
        assert acc.update(_header(s)) == _expected(s)
    summ = acc.summary()["word"]
    assert summ["n"] == 6 and summ["top1"] == pytest.approx(2 / 6) and summ["top10"] == pytest.approx(4 / 6)
    assert "top1 2/6 (33%)" in acc.line()


def test_three_listeners_at_once_report_running_accuracy():
    n = 25
    with make_publisher(state_endpoint="tcp://127.0.0.1:*") as pub:
        pub.publish("status", status_header_fields())
        base = [sys.executable, "-m", "neurospeech", "listen", "--pub", pub.endpoint, "--count", str(n)]
        procs = [subprocess.Popen([*base, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
        procs.append(subprocess.Popen([*base, "--state", pub.state_endpoint, "--status"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        deadline = time.monotonic() + 60
        seq = 0
        try:
            while any(p.poll() is None for p in procs):  # publish until every listener has its n decodes
                assert time.monotonic() < deadline, "listeners did not finish"
                pub.publish("decode", _header(seq))
                seq += 1
                if seq % 10 == 0:
                    pub.publish("status", status_header_fields())
                time.sleep(0.005)  # pacing a publisher (a live service sends a few messages per second)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        outs = [p.communicate(timeout=10) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    for out, _ in outs[:2]:
        lines = [json.loads(x) for x in out.splitlines()]
        dec = [x for x in lines if x["type"] == "decode"]
        assert len(dec) == n
        for x in dec:
            assert x["hit"] == _expected(x["seq"])
        summary = lines[-1]
        assert summary["type"] == "summary" and summary["decode_messages"] == n
        exp = [_expected(x["seq"]) for x in dec]
        acc = summary["accuracy"]["word"]
        assert acc["n"] == n
        assert acc["top1"] == pytest.approx(sum(e["top1"] for e in exp) / n)
        assert acc["top10"] == pytest.approx(sum(e["top10"] for e in exp) / n)
        assert summary["subscriber"]["missed"]["decode"] == 0
        assert summary["latency_ms"]["n"] == n
    text = outs[2][0]
    assert text.splitlines()[0].startswith("service: model test-model")
    assert "truth 'w-seg" in text and "top1 " in text and "top10 " in text and "status #" in text
    assert f"summary: {n} decode messages" in text


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_listen_stops_on_a_signal_even_when_started_with_sigint_ignored(sig):
    """A script that starts `listen` in the background hands it SIGINT ignored (POSIX shells do); it must still
    stop on SIGINT/SIGTERM and print its summary."""
    with make_publisher() as pub:
        cmd = [sys.executable, "-m", "neurospeech", "listen", "--pub", pub.endpoint, "--json"]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        try:
            seq, deadline = 0, time.monotonic() + 60
            while pub.stats()["subscribers"] < 1:  # wait until it is subscribed
                assert time.monotonic() < deadline and p.poll() is None, "listener did not subscribe"
                pub.publish("decode", _header(seq))
                seq += 1
                time.sleep(0.02)
            p.send_signal(sig)
            out, err = p.communicate(timeout=10)
        finally:
            if p.poll() is None:
                p.kill()
    assert p.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["type"] == "summary"


@pytest.mark.integration
def test_replay_serve_listen_end_to_end(tmp_path):
    """Replayer (LSL outlet + word markers) -> Server -> listen: word-locked decisions carry the marker's
    segment id as truth, and (the bank holds the offline windows) rank it first."""
    import io
    import uuid

    import numpy as np
    from _service_fixtures import build_artifacts
    from neurospeech.service.config import ServeSettings
    from neurospeech.service.server import Server
    from neurospeech.tools.listen import ListenSettings, listen
    from neurospeech.tools.replay import Replayer, ReplaySettings, ReplaySource, WordMarker

    art = build_artifacts(tmp_path, duration=6.0, word_every=0.6)
    markers = [WordMarker(sample=round(a * art.sfreq), payload={"segment_id": i, "word": w, "sound": s,
                                                                  "sound_time": t, "sentence": "s"})
               for a, i, w, s, t in zip(art.anchors, art.ids, art.words, art.sounds, art.sound_times,
                                        strict=True)]
    src = ReplaySource(data=np.ascontiguousarray(art.data.T, dtype=np.float32), sfreq=art.sfreq,
                       labels=art.names, types=["eeg"] * len(art.names), units=["V"] * len(art.names),
                       markers=markers)
    rep = Replayer(src, ReplaySettings(name=f"e2e-{uuid.uuid4().hex[:8]}", chunk_s=0.02))
    server = Server(ServeSettings(model=art.model, bank=art.bank, stream_name=rep.name, resolve_timeout=5.0,
                                  hop=0.25, topk=5, status_interval=0.25,
                                  publish={"endpoint": "tcp://127.0.0.1:*"}))
    server.start()
    out = io.StringIO()
    try:
        rep.start()
        t_done = []

        def should_stop():  # every word decided, or 5 s after the replay ended
            if out.getvalue().count('"kind": "word"') >= len(markers):
                return True
            if rep.done and not t_done:
                t_done.append(time.monotonic())
            return bool(t_done) and time.monotonic() - t_done[0] > 5.0

        summary = listen(ListenSettings(endpoint=server.publisher.endpoint, as_json=True, duration=30.0),
                         out=out, should_stop=should_stop)
    finally:
        server.stop()
        server.join()
        rep.close()
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    words = [x for x in lines if x["type"] == "decode" and x["kind"] == "word"]
    assert len(words) == len(markers), (len(words), len(markers))
    acc = summary["accuracy"]["word"]
    assert acc["n"] == len(markers) and acc["top1"] == 1.0
    assert summary["subscriber"]["missed"]["decode"] == 0
    assert "sliding" in {x["kind"] for x in lines if x["type"] == "decode"}
