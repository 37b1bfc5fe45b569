"""`serve --lsl-outlet NAME`: every decision as an LSL string marker (the ZeroMQ header as JSON) stamped with the
LSL time of the newest sample it used, the status as NAME-status; an XDF written by a small recorder holds the
data and the decisions aligned; `replay` of that XDF ignores the decisions stream or re-plays it by choice.
Real LSL outlets/inlets and ZeroMQ sockets on loopback."""

from __future__ import annotations

import json
import threading
import time
import uuid

import numpy as np
import pytest
from _service_fixtures import build_artifacts
from _xdf import write_xdf
from neurospeech.service.config import ServeSettings, load_settings
from neurospeech.service.lsl_outlet import LslOutlet, check_outlet_name

from neurospeech.errors import ConfigError

pytestmark = pytest.mark.integration


def _source(art):
    from neurospeech.tools.replay import ReplaySource, WordMarker

    markers = [WordMarker(sample=round(a * art.sfreq), payload={"segment_id": i, "word": w, "sound": s,
                                                                  "sound_time": t, "sentence": "s"})
               for a, i, w, s, t in zip(art.anchors, art.ids, art.words, art.sounds, art.sound_times, strict=True)]
    return ReplaySource(data=np.ascontiguousarray(art.data.T, dtype=np.float32), sfreq=art.sfreq, labels=art.names,
                        types=["eeg"] * len(art.names), units=["V"] * len(art.names), markers=markers)


def _inlet(name: str, **kw):
    import pylsl

    found = pylsl.resolve_byprop("name", name, 1, 10.0)
    assert found, f"LSL stream {name!r} not found"
    inlet = pylsl.StreamInlet(found[0], max_buflen=360, **kw)
    inlet.open_stream(10.0)
    return inlet


def _pull_all(inlet, until, quiet: float = 1.0):
    """Pull (sample, stamp) until ``until()`` holds and nothing came for ``quiet`` s (bounded at 120 s)."""
    out, last, deadline = [], time.monotonic(), time.monotonic() + 120
    while time.monotonic() < deadline:
        samples, stamps = inlet.pull_chunk(timeout=0.1)
        if stamps:
            out += list(zip(samples, stamps, strict=True))
            last = time.monotonic()
        elif until() and time.monotonic() - last > quiet:
            return out
    raise AssertionError("recording did not settle within 120 s")


def test_outlet_name_and_config_key_are_checked(tmp_path):
    for bad in ("", "  ", "a'b", 'a"b', 3):
        with pytest.raises(ConfigError, match="lsl_outlet"):
            check_outlet_name(bad)
    with pytest.raises(ConfigError, match="lsl_outlet"):
        ServeSettings(lsl_outlet="it's")
    cfg = tmp_path / "serve.toml"
    cfg.write_text('[decode]\nlsl_outlet = "ns-decisions"\n')
    assert load_settings(cfg).lsl_outlet == "ns-decisions"


def test_status_stream_is_low_rate_but_sends_every_state_change():
    out = LslOutlet(f"nsout-{uuid.uuid4().hex[:8]}", {"model_id": "m", "model_sha256": "0" * 64},
                    status_min_interval=60.0)
    try:
        assert out.push_status({"state": "running", "t_sent": 1.0}) == 1.0
        assert out.push_status({"state": "running", "t_sent": 2.0}) is None  # within the interval
        assert out.push_status({"state": "lost", "t_sent": 3.0}) == 3.0      # a change goes at once
        assert out.sent["status"] == 2
    finally:
        out.close()


def test_decisions_reach_lsl_with_their_stamp_and_an_xdf_holds_them_aligned(tmp_path):
    import pyxdf
    from neurospeech.service.client import Subscriber
    from neurospeech.service.server import Server
    from neurospeech.tools.replay import Replayer, ReplaySettings, load_source

    art = build_artifacts(tmp_path, duration=9.0, word_every=0.6)
    src = _source(art)
    rep = Replayer(src, ReplaySettings(name=f"lslo-{uuid.uuid4().hex[:8]}", chunk_s=0.02))
    out_name = f"{rep.name}-decisions"
    server = Server(ServeSettings(model=art.model, bank=art.bank, stream_name=rep.name, resolve_timeout=10.0,
                                  hop=0.25, topk=5, status_interval=0.25, lsl_outlet=out_name,
                                  publish={"endpoint": "tcp://127.0.0.1:*"}))
    server.start()
    zmq_headers: dict[int, dict] = {}
    stop = threading.Event()
    try:
        # a small recorder: inlets on the data, the word markers, the decisions and the status (raw stamps)
        data_in = _inlet(rep.name)
        marker_in = _inlet(f"{rep.name}-markers")
        dec_in = _inlet(out_name)
        status_in = _inlet(f"{out_name}-status")
        info = dec_in.info()
        assert info.type() == "Markers" and info.channel_format() == 3  # cf_string
        assert info.desc().child("neurospeech").child_value("schema") == "neurospeech.v1.decode"
        sub = Subscriber(server.publisher.endpoint, topics=["decode", "status"])

        def collect() -> None:
            with sub:
                while not stop.is_set():
                    m = sub.recv(timeout=0.1)
                    if m is not None and m.kind == "decode":
                        zmq_headers[m.seq] = m.header

        threading.Thread(target=collect, daemon=True).start()
        deadline = time.monotonic() + 30
        while sub.received.get("status", 0) == 0:  # the subscriber is connected before any decision
            assert time.monotonic() < deadline, "subscriber never connected"
            time.sleep(0.05)
        rep.start()
        streams = {}
        for key, inl in (("data", data_in), ("markers", marker_in), ("decisions", dec_in)):
            streams[key] = inl
        recorded: dict[str, list] = {k: [] for k in streams}
        threads = []
        for key, inl in streams.items():
            def run(key=key, inl=inl):
                recorded[key] = _pull_all(inl, lambda: rep.done)
            t = threading.Thread(target=run, daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join(150)
        status = _pull_all(status_in, lambda: True, quiet=0.3)
        n_sent = server.publisher.stats()["next_seq"]["decode"]
    finally:
        stop.set()
        server.stop()
        server.join()
        rep.close()
    decisions = [(json.loads(s[0]), t) for s, t in recorded["decisions"]]
    seqs = [d["seq"] for d, _ in decisions]
    assert len(decisions) > 10 and seqs == list(range(len(decisions)))  # every decision, in order
    assert n_sent == len(decisions)
    assert {d["kind"] for d, _ in decisions} == {"word", "sliding"}
    for d, stamp in decisions:
        assert stamp == d["t_newest_sample"]  # stamped with the LSL time of the newest sample used
        h = zmq_headers.get(d["seq"])
        if h is not None:  # the same header as on ZeroMQ (t_sent aside: stamped by each transport)
            assert {k: v for k, v in d.items() if k != "t_sent"} == {k: v for k, v in h.items() if k != "t_sent"}
    assert len(zmq_headers) >= len(decisions) - 2
    states = [json.loads(s[0])["state"] for s, _ in status]
    assert "running" in states and all(json.loads(s[0])["schema"] == "neurospeech.v1.status" for s, _ in status)

    # ---- the XDF: data, word markers and decisions on one clock
    data_stamps = np.array([t for _, t in recorded["data"]])
    xdf = tmp_path / "session.xdf"
    chans = [{"label": n, "type": "eeg", "unit": "V"} for n in art.names]
    write_xdf(xdf, [
        {"name": rep.name, "type": "EEG", "srate": art.sfreq, "format": "float32", "source_id": rep.source_id,
         "channels": chans, "stamps": data_stamps, "data": np.array([s for s, _ in recorded["data"]])},
        # the decisions stream comes before the word markers: replay must still pick the markers
        {"name": out_name, "type": "Markers", "srate": 0, "format": "string", "source_id": "dec",
         "stamps": [t for _, t in recorded["decisions"]], "data": [s[0] for s, _ in recorded["decisions"]]},
        {"name": f"{rep.name}-markers", "type": "Markers", "srate": 0, "format": "string", "source_id": "mk",
         "stamps": [t for _, t in recorded["markers"]], "data": [s[0] for s, _ in recorded["markers"]]},
    ])
    streams_x, _ = pyxdf.load_xdf(str(xdf), dejitter_timestamps=False)
    by = {s["info"]["name"][0]: s for s in streams_x}
    eeg_t = np.asarray(by[rep.name]["time_stamps"])
    dec_x = by[out_name]
    mk_t = {json.loads(p[0])["segment_id"]: t for p, t in zip(by[f"{rep.name}-markers"]["time_series"],
                                                                by[f"{rep.name}-markers"]["time_stamps"],
                                                                strict=True)}
    assert len(dec_x["time_stamps"]) == len(decisions)
    tmin = art.contract.window.tmin
    n_words = 0
    for payload, t in zip(dec_x["time_series"], dec_x["time_stamps"], strict=True):
        d = json.loads(payload[0])
        # each decision sits on a data sample of the recording (the newest one it used) ...
        assert np.min(np.abs(eeg_t - t)) < 0.25 / art.sfreq
        assert d["t_window_end"] <= t + 1e-6
        # ... and a word-locked decision's window starts tmin after its word's marker
        if d["kind"] == "word":
            n_words += 1
            anchor = mk_t[d["truth"]["segment_id"]]
            assert abs(d["t_window_start"] - (anchor + tmin)) < 1.5 / art.contract.window.sfreq
    assert n_words >= 5

    # ---- replay of that XDF: decisions ignored by default, re-played on request
    plain = load_source(xdf)
    assert plain.name == rep.name and len(plain.markers) == len(mk_t) and not plain.extra_streams
    again = load_source(xdf, replay_streams=[out_name])
    assert [s.name for s in again.extra_streams] == [out_name]
    assert [p for _, p in again.extra_streams[0].events] == [s[0] for s in dec_x["time_series"]]
    name2 = f"lslo2-{uuid.uuid4().hex[:8]}"
    rep2 = Replayer(again, ReplaySettings(name=name2, speed=4.0, chunk_s=0.02))
    try:
        assert rep2.extra_names == [f"{name2}-{out_name}"]
        d_in = _inlet(rep2.extra_names[0])
        data2 = _inlet(name2)
        rep2.start()
        replayed = _pull_all(d_in, lambda: rep2.done)
        data_back = _pull_all(data2, lambda: rep2.done, quiet=0.3)
    finally:
        rep2.close()
    assert [s[0] for s, _ in replayed] == [s[0] for s in dec_x["time_series"]]
    t2 = np.array([t for _, t in data_back])
    for (_, stamp), (k, _) in zip(replayed, again.extra_streams[0].events, strict=True):
        assert stamp == pytest.approx(t2[k], abs=1e-9)  # on the sample it was recorded with
