"""End to end on loopback: a real LSL outlet -> serve (in-process) -> a real ZeroMQ subscriber; decode-file.

The bank holds the encoder outputs of the *offline* windows at the planted word onsets, so every word-locked
decision must rank its own segment first -- which only happens when the live path cuts the same windows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from _service_fixtures import Player, build_artifacts, serve_settings, word_markers
from neurospeech.service.client import Subscriber
from neurospeech.service.messages import validate_header
from neurospeech.service.server import Server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    return build_artifacts(tmp_path_factory.mktemp("art"), duration=9.0, word_every=0.6)


def collect(sub, until, timeout):
    msgs = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = sub.recv(0.1)
        if m is not None:
            msgs.append(m)
        if until(msgs):
            break
    return msgs


def test_replay_serve_subscribe_end_to_end(art):
    # stamped at push time (pylsl's SendData does so): a push that a loaded machine delays by 0.3 s once looked
    # like a clock jump (stamps "jumped by +0.338 s" failed this test under load); the clock model absorbs it now
    player = Player(art.data, art.sfreq, art.names, markers=word_markers(art)).start()
    server = Server(serve_settings(art, player, hop=0.25))
    server.start()
    sub = Subscriber(server.publisher.endpoint)
    sub2 = Subscriber(server.publisher.endpoint, topics=["status"])
    try:
        msgs = collect(sub, lambda ms: player.done, timeout=9.0 + 60.0)  # a deadline, not a pace check
        st2 = collect(sub2, lambda ms: len(ms) >= 2, timeout=10.0)
        sub_stats = sub.stats()
        skipped = server.stats()["skipped_decisions"]
    finally:
        sub.close()
        sub2.close()
        server.stop()
        server.join()
        player.stop()
    assert player.error is None
    dec = [m for m in msgs if m.kind == "decode"]
    status = [m for m in msgs if m.kind == "status"]
    assert len(status) >= 3 and len(st2) >= 2  # a heartbeat on both subscribers (its rate: the benchmark)
    for m in dec[:5] + status[:3]:
        validate_header(m.kind, m.header)
    words = [m for m in dec if m["kind"] == "word"]
    # markers for words whose window ends before the recording does (9 s - 2.5 s, filter delay)
    expect = [i for i, a in zip(art.ids, art.anchors) if a + 2.5 + 0.2 < 9.0 - 0.1]
    got = {m["truth"]["segment_id"]: m["topk"][0]["id"] for m in words}
    assert set(expect) <= set(got), (len(expect), len(got))
    assert all(got[k] == k for k in got), "a word-locked decision did not rank its own segment first"
    sliding = [m for m in dec if m["kind"] == "sliding"]
    ends = np.array([m["t_window_end"] for m in sliding])
    # one decision per hop of data; a window skipped under load shows as a double step and is counted
    steps = np.round(np.diff(ends) / 0.25)
    assert len(sliding) >= 15 and steps.min() >= 1 and np.allclose(np.diff(ends), steps * 0.25, atol=0.02)
    assert (steps - 1).sum() <= skipped
    seqs = [m.seq for m in dec]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and sub_stats["missed"]["decode"] == 0
    lat = np.array([m.latency for m in dec])
    assert np.all(lat > 0)  # never future-dated; the latency itself is measured by the benchmark
    assert status[-1]["state"] in ("running", "lost") and status[-1]["samples_received"] > 0


def test_decode_file_over_a_fif_with_bids_style_events(art, tmp_path):
    import mne

    from neurospeech.data import events_from_rows, write_events_tsv

    info = mne.create_info(art.names, art.sfreq, "eeg")
    raw = mne.io.RawArray(art.data, info, verbose="error")
    fif = tmp_path / "sub-01_task-listen_eeg.fif"
    raw.save(fif, verbose="error")
    rows = [
        {
            "onset": float(a),
            "duration": 0.3,
            "kind": "word",
            "word": w,
            "sound": s,
            "sound_time": t,
            "sentence": "s",
        }
        for a, w, s, t in zip(art.anchors, art.words, art.sounds, art.sound_times)
    ]
    write_events_tsv(tmp_path / "sub-01_task-listen_events.tsv", events_from_rows(rows))
    out = tmp_path / "decisions.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "neurospeech",
            "decode-file",
            str(fif),
            "--model",
            str(art.model),
            "--bank",
            str(art.bank),
            "--out",
            str(out),
            "--hop",
            "0.25",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    words = [h for h in lines if h["kind"] == "word"]
    assert summary["decisions"]["word"] == len(words) == len(art.anchors)
    assert summary["segment_top1"] == 1.0 and summary["word_locked"] == len(words)
    n_expected = (int(9.0 * 120) - 24 - 361) // 30 + 1  # resampler delay keeps ~0.2 s of outputs back
    assert abs(summary["decisions"]["sliding"] - n_expected) <= 2
    validate_header("decode", {**words[0], "t_sent": 0.0, "encoding": "json"})


def test_decode_file_float32_input_keeps_the_float64_decisions(art, tmp_path):
    """decode-file holds the recording as float32 around each channel's first sample: with 50 mV DC offsets (EEG)
    its decisions are those of the pipeline fed the data without the offsets (the windows are baseline-corrected,
    so in exact arithmetic offsets change nothing; float32 around zero would have rounded them into the signal)."""
    import mne
    from neurospeech.service.config import ServeSettings
    from neurospeech.service.filesource import decode_file, decode_raw

    offsets = np.linspace(-0.05, 0.05, len(art.names))[:, None]
    data = art.data + offsets
    fif = tmp_path / "offsets_raw.fif"
    mne.io.RawArray(data, mne.create_info(art.names, art.sfreq, "eeg"), verbose="error").save(
        fif, verbose="error", fmt="double"
    )
    settings = ServeSettings(model=art.model, bank=art.bank, hop=0.25)
    out = tmp_path / "d.jsonl"
    summary = decode_file(fif, out, settings, workers=2)
    got = [json.loads(x) for x in out.read_text().splitlines()]
    ref = list(decode_raw(art.data, art.sfreq, list(art.names), settings, types=["eeg"] * len(art.names)))
    assert summary["decisions"]["sliding"] == len(got) == len(ref) > 20
    for g, r in zip(got, ref, strict=True):
        assert g["t_window_end"] == pytest.approx(r["t_window_end"]) and g["flags"] == r["flags"]
        assert [c["id"] for c in g["topk"]] == [c["id"] for c in r["topk"]]
        np.testing.assert_allclose([c["prob"] for c in g["topk"]], [c["prob"] for c in r["topk"]], atol=1e-5)
