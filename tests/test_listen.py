"""`neurospeech listen`: running accuracy from truth in the messages; several listeners at once (real
subprocesses on a real publisher)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest
from _transport import decode_header_fields, make_publisher, status_header_fields
from neurospeech.service.messages import Message
from neurospeech.tools.listen import (
    Accuracy,
    ListenSettings,
    accuracy_stats,
    format_rate,
    format_status,
    human_seconds,
    listen,
)
from scipy.stats import binomtest


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
    assert "top1 2/6 (33%, 95% CI" in acc.line() and "chance ?" in acc.line()  # no bank size known
    acc.n_candidates = 250
    ci = binomtest(2, 6).proportion_ci(0.95, method="wilson")
    assert acc.summary()["word"]["top1_ci"] == pytest.approx([ci.low, ci.high])
    assert acc.summary()["word"]["chance_top10"] == pytest.approx(10 / 250)
    assert f"top1 2/6 (33%, 95% CI {100 * ci.low:.1f}-{100 * ci.high:.0f}%, chance 0.40%)" in acc.line()
    assert "top10 4/6 (67%, 95% CI" in acc.line() and "chance 4.0%)" in acc.line()


def test_accuracy_stats_chance_and_interval():
    st = accuracy_stats(7, 10, 10, 250)
    ci = binomtest(7, 10).proportion_ci(0.95, method="wilson")
    assert st["rate"] == 0.7 and st["ci"] == pytest.approx([ci.low, ci.high]) and st["chance"] == 10 / 250
    assert st["p_vs_chance"] == pytest.approx(binomtest(7, 10, 0.04, alternative="greater").pvalue)
    assert accuracy_stats(0, 0, 1, None) == {"k": 1, "hits": 0, "n": 0, "rate": None, "ci": None, "chance": None,
                                              "p_vs_chance": None, "confidence": 0.95}
    assert format_rate(accuracy_stats(0, 0, 1, 10)) == "top1 -"
    for n in (1, 2, 7, 40, 313):  # the closed form is scipy's Wilson interval, edges included
        for hits in sorted({0, 1, n // 3, n - 1, n}):
            ci = binomtest(hits, n).proportion_ci(0.95, method="wilson")
            assert accuracy_stats(hits, n, 1, 100)["ci"] == pytest.approx([ci.low, ci.high], abs=1e-12)


def test_status_in_human_units():
    assert [human_seconds(x) for x in (0.018061242500380104, 2.34, 42.4, 75, 7300, None)] == [
        "18 ms", "2.3 s", "42 s", "1 min 15 s", "2 h 01 min", "?"]
    msg = Message("status", {**status_header_fields(lag_s=0.018061242500380104, buffer_fill=0.5012, uptime_s=3725.2,
                                                    slow_subscriber_events={"decode": 2, "status": 1},
                                                    subscribers=3, processing_ms={"p50": 6.71, "p99": 20.0}),
                             "seq": 7})
    line = format_status(msg)
    assert line == ("status #7: running, stream 'x' 1200 Hz, lag 18 ms, buffer 50 %, dropped 0 samples, "
                    "skipped 0 decisions, processing 7 ms, 3 subscriptions, slow-subscriber events 3, up 1 h 02 min")
    assert "{" not in line  # no raw dicts


def test_words_only_silence_line_passes_and_latency_summary():
    """No service yet -> one 'no message' line; then words only, accuracy per pass of a looping replay, and the
    latency in the final summary (a real publisher, the listener in a thread)."""
    import io

    import pylsl

    with make_publisher() as pub:
        out = io.StringIO()
        stop = threading.Event()
        result: dict = {}
        settings = ListenSettings(endpoint=pub.endpoint, words_only=True, wait=0.5, loop=True, candidates=250,
                                  show_status=True)
        t = threading.Thread(target=lambda: result.update(listen(settings, out=out, should_stop=stop.is_set)))
        t.start()
        try:
            deadline = time.monotonic() + 60
            while "!! no message from" not in out.getvalue():
                assert time.monotonic() < deadline, out.getvalue()
                time.sleep(0.05)
            while "status #" not in out.getvalue():  # publish heartbeats until the listener is subscribed
                assert time.monotonic() < deadline, out.getvalue()
                pub.publish("status", status_header_fields())
                time.sleep(0.05)
            assert "service answering again after" in out.getvalue()
            seq = 0
            for p in range(2):  # two passes over the same 6 words: all hits, then all misses
                for w in range(6):
                    truth = f"seg{w}"
                    top = [truth, *[f"o{j}" for j in range(9)]] if p == 0 else [f"o{j}" for j in range(10)]
                    topk = [{"rank": r + 1, "id": i, "word": i, "prob": 0.1} for r, i in enumerate(top)]
                    now = pylsl.local_clock()
                    pub.publish("decode", decode_header_fields(seq, kind="sliding", t_newest_sample=now - 0.02,
                                                               truth=None))
                    pub.publish("decode", decode_header_fields(seq, kind="word", topk=topk, t_newest_sample=now - 0.02,
                                                               truth={"segment_id": truth, "word": truth}))
                    seq += 1
                    time.sleep(0.01)
            while out.getvalue().count("#") < 1 + 12 or "seg5" not in out.getvalue().splitlines()[-1]:
                assert time.monotonic() < deadline, out.getvalue()
                time.sleep(0.05)
        finally:
            stop.set()
            t.join(30)
    text = out.getvalue()
    decode_lines = [x for x in text.splitlines() if x.startswith("#")]
    assert len(decode_lines) == 12 and all(" word " in x for x in decode_lines)  # no sliding line printed
    assert "pass 1: word: top1 6/6 (100%, 95% CI" in text and "chance 0.40%" in text
    assert "pass 2: word: top1 0/6 (0%, 95% CI" in text and "(incomplete)" in text
    assert result["decode_messages"] == 24 and result["shown"] == 12
    assert [p["accuracy"]["word"]["top1"] for p in result["passes"]] == [1.0, 0.0]
    summary = text.splitlines()[-1]
    assert summary.startswith("summary: 24 decode messages, lost 0; word: top1 6/12 (50%") and "latency p50" in summary
    assert result["latency_ms"]["n"] == 24 and result["latency_ms"]["p50"] >= 20.0


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
    assert text.splitlines()[0].startswith("service: model test-model (000000000000), ? candidates, state running")
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
    # a 10-s inlet buffer: on a loaded machine (a loaded CI run) the replayer, starved, caught up with one 3.8-s
    # burst that overflowed the default 2-s buffer and a word window lost data; overflow has its own tests
    # (tests/faults/test_fault_foreign_streams.py), this one is about replay -> serve -> listen
    server = Server(ServeSettings(model=art.model, bank=art.bank, stream_name=rep.name, resolve_timeout=5.0,
                                  hop=0.25, topk=5, status_interval=0.25, max_buflen=10,
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


def _early_topk(ids: list[str]) -> list[dict]:
    return [{"rank": r + 1, "id": i, "word": "w-" + i, "prob": 0.5 / (r + 1)} for r, i in enumerate(ids)]


def _publish_words_with_early(pub, n_words: int = 3) -> None:
    """Per word: four provisional decisions (the truth reaches rank 1 at onset + 1.5 s), then the final one; the
    early and the final decision of a word share t_window_start (they cut the same window)."""
    import pylsl

    for w in range(n_words):
        truth = {"segment_id": f"seg{w}", "word": f"w-seg{w}"}
        start = 100.0 + 3 * w
        for d, ids in ((0.5, ["x", "y", f"seg{w}"]), (1.0, ["y", f"seg{w}", "x"]), (1.5, [f"seg{w}", "y", "x"]),
                       (2.0, [f"seg{w}", "x", "y"])):
            pub.publish("word_early", decode_header_fields(w, kind="word_early", delay_s=d, t_onset=start + 0.5,
                                                           t_window_start=start, topk=_early_topk(ids), truth=truth,
                                                           t_newest_sample=pylsl.local_clock() - 0.01))
        pub.publish("decode", decode_header_fields(w, kind="word", t_window_start=start, truth=truth,
                                                   topk=_early_topk([f"seg{w}", "x", "y"]),
                                                   t_newest_sample=pylsl.local_clock() - 0.01))
        time.sleep(0.01)


@pytest.mark.parametrize("early", [True, False])
def test_early_decisions_printed_distinctly_then_the_final_or_hidden(early):
    """A real publisher sends word_early (topic neurospeech.v1.word_early) and final decisions: listen prints
    each provisional decision as an indented '~ ... early +1s so far:' line, then the final line with the trail
    of top candidates, per-delay accuracy in the summary; --no-early receives and prints none of them."""
    import io

    with make_publisher() as pub:
        out = io.StringIO()
        stop = threading.Event()
        result: dict = {}
        settings = ListenSettings(endpoint=pub.endpoint, words_only=True, candidates=100, early=early, wait=30.0,
                                  show_status=True)
        t = threading.Thread(target=lambda: result.update(listen(settings, out=out, should_stop=stop.is_set)))
        t.start()
        try:
            deadline = time.monotonic() + 60
            while "status #" not in out.getvalue():  # heartbeats until the listener is subscribed
                assert time.monotonic() < deadline, out.getvalue()
                pub.publish("status", status_header_fields())
                time.sleep(0.05)
            _publish_words_with_early(pub)
            while out.getvalue().count(" word ") < 3:
                assert time.monotonic() < deadline, out.getvalue()
                time.sleep(0.05)
        finally:
            stop.set()
            t.join(30)
    lines = out.getvalue().splitlines()
    early_lines = [x for x in lines if x.startswith("  ~ ")]
    finals = [x for x in lines if x.startswith("#")]
    assert len(finals) == 3
    if not early:
        assert early_lines == [] and "early" not in out.getvalue() and "early" not in result
        assert result["subscriber"]["received"].get("word_early", 0) == 0
        return
    assert len(early_lines) == 12
    first = early_lines[:5]
    assert first[0].startswith("  ~ #0 early +0.5s  so far: w-x 50% | w-y 25% | w-seg0 17%")
    assert "[top10]" in first[0] and "+0.5s: top1 0/1" in first[0]
    assert "early +1s    so far: w-y" in first[1] and "early +1.5s  so far: w-seg0" in first[2]
    assert "[OK ]" in first[2]
    # the final line of word 0 follows its four provisional ones and shows how the top candidate firmed up
    i0 = lines.index(finals[0])
    assert lines[i0 - 4:i0] == early_lines[:4]
    assert finals[0].endswith("early +0.5s w-x > +1s w-y > +1.5s w-seg0 > +2s w-seg0 > final w-seg0") or \
        "early +0.5s w-x > +1s w-y > +1.5s w-seg0 > +2s w-seg0 > final w-seg0" in finals[0]
    ea = result["early"]
    assert ea["messages"] == 12 and ea["latency_ms"]["n"] == 12
    assert {k: v["top1"] for k, v in ea["accuracy"].items()} == {"+0.5s": 0.0, "+1s": 0.0, "+1.5s": 1.0, "+2s": 1.0}
    assert {k: v["top10"] for k, v in ea["accuracy"].items()} == {"+0.5s": 1.0, "+1s": 1.0, "+1.5s": 1.0, "+2s": 1.0}
    assert {k: v["same_top1_as_final"] for k, v in ea["agreement"].items()} == {
        "+0.5s": 0.0, "+1s": 0.0, "+1.5s": 1.0, "+2s": 1.0}
    assert result["accuracy"]["word"]["n"] == 3 and result["accuracy"]["word"]["top1"] == 1.0  # finals unchanged
    summary = lines[-1]
    assert summary.startswith("early: 12 provisional decisions; +0.5s: top1 0/3")
    assert summary.index("+0.5s:") < summary.index("+1s:") < summary.index("+1.5s:") < summary.index("+2s:")
    assert "top-1 already the final one: +0.5s 0%, +1s 0%, +1.5s 100%, +2s 100%" in summary
