"""word_early messages: schema, real ZeroMQ publisher and subscribers, and a subscriber that only knows the old
schema (it must see exactly what it saw before early decisions existed)."""

from __future__ import annotations

import json
import time

import pytest
import zmq
from _transport import decode_header_fields, make_publisher, status_header_fields, wait_subscribed
from neurospeech.service.client import ALL_TOPICS, Subscriber
from neurospeech.service.messages import DEFAULT_TOPICS, load_schema, validate_header

from neurospeech.errors import DataFormatError


def early_header_fields(delay: float, **over):
    h = decode_header_fields(0, kind="word_early", delay_s=delay, t_onset=100.35)
    h.update(over)
    return h


def test_word_early_schema_is_additive():
    pub_fields = {"schema": "neurospeech.v1.word_early", "seq": 0, "t_sent": 1.0, "model_id": "m",
                  "model_sha256": "0" * 64}
    validate_header("word_early", {**early_header_fields(0.5), **pub_fields})
    with pytest.raises(DataFormatError, match="delay_s"):
        h = {**early_header_fields(0.5), **pub_fields}
        del h["delay_s"]
        validate_header("word_early", h)
    with pytest.raises(DataFormatError, match="delay_s"):
        validate_header("word_early", {**early_header_fields(0.0), **pub_fields})
    # the decode schema did not change: its kinds are still exactly the old two
    assert load_schema("decode")["properties"]["kind"]["enum"] == ["sliding", "word"]
    assert DEFAULT_TOPICS == ("decode", "status") and "word_early" in ALL_TOPICS


def _old_subscriber(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    """A subscriber written against the old schema: the decode and status topics, plain JSON parsing."""
    s = ctx.socket(zmq.SUB)
    s.linger = 0
    for t in (b"neurospeech.v1.decode", b"neurospeech.v1.status"):
        s.setsockopt(zmq.SUBSCRIBE, t)
    s.connect(endpoint)
    return s


def _drain(sock: zmq.Socket, wait_ms: int = 50) -> list[list[bytes]]:
    out = []
    while sock.poll(wait_ms):
        out.append(sock.recv_multipart())
    return out


def test_publish_word_early_old_subscriber_sees_no_change():
    ctx = zmq.Context()
    try:
        with make_publisher() as pub, Subscriber(pub.endpoint) as default, \
                Subscriber(pub.endpoint, topics=ALL_TOPICS) as every:
            old = _old_subscriber(ctx, pub.endpoint)
            wait_subscribed(pub, [default, every])
            deadline = time.monotonic() + 10
            while not old.poll(20):  # the old subscriber's slow-joiner handshake
                assert time.monotonic() < deadline, "old subscriber never connected"
                pub.publish("status", status_header_fields(state="connecting"))
            _drain(old)
            # one word: four early decisions, then the final one; a sliding decision around it
            pub.publish("decode", decode_header_fields(0))
            for d in (0.5, 1.0, 1.5, 2.0):
                pub.publish("word_early", early_header_fields(d))
            pub.publish("decode", decode_header_fields(1, kind="word"))
            got_every, got_default = [], []
            deadline = time.monotonic() + 10
            while (len(got_every) < 6 or len(got_default) < 2) and time.monotonic() < deadline:
                for sub, got in ((every, got_every), (default, got_default)):
                    m = sub.recv(timeout=0.05)
                    if m is not None and m.kind != "status":
                        got.append(m)
            old_frames = []
            deadline = time.monotonic() + 10
            while len([f for f in old_frames if f[0].endswith(b"decode")]) < 2 and time.monotonic() < deadline:
                old_frames += _drain(old, 50)
            old.close(linger=0)
    finally:
        ctx.term()
    # the new client, asked for every topic: the early decisions in order, marked provisional, valid
    early = [m for m in got_every if m.kind == "word_early"]
    assert [m.delay_s for m in early] == [0.5, 1.0, 1.5, 2.0]
    assert [m.seq for m in early] == [0, 1, 2, 3] and all(m.provisional and m.missed == 0 for m in early)
    for m in early:
        validate_header("word_early", m.header)
        assert m["kind"] == "word_early" and m["schema"] == "neurospeech.v1.word_early"
    kinds = [(m.kind, m["kind"]) for m in got_every]
    assert kinds.index(("decode", "word")) > max(i for i, k in enumerate(kinds) if k[0] == "word_early")
    # default topics: only the decode messages, consecutive sequence numbers, nothing missed
    assert [m.kind for m in got_default] == ["decode", "decode"]
    assert [m.seq for m in got_default] == [0, 1] and all(m.missed == 0 and not m.provisional for m in got_default)
    assert default.stats()["missed"] == {"decode": 0, "status": 0}
    # the old subscriber: only decode/status topics, every decode header valid under the old schema
    topics = {f[0] for f in old_frames}
    assert topics <= {b"neurospeech.v1.decode", b"neurospeech.v1.status"}
    decodes = [json.loads(f[1]) for f in old_frames if f[0] == b"neurospeech.v1.decode"]
    assert [h["seq"] for h in decodes] == [0, 1] and [h["kind"] for h in decodes] == ["sliding", "word"]
    for h in decodes:
        validate_header("decode", h)


def test_delay_curve_intervals_chance_and_share_of_full():
    import numpy as np

    from neurospeech.early import curve_markdown, delay_curve

    rng = np.random.default_rng(0)
    n = 400
    groups = np.arange(n) // 2  # two queries per segment
    full = rng.integers(0, 30, n)
    early = np.where(rng.random(n) < 0.5, full, 100)  # half the full-window hits lost
    rows = delay_curve({0.5: np.full(n, 100), 1.0: early, 2.5: full}, groups, n_candidates=200, n_boot=300)
    assert [r["delay_s"] for r in rows] == [0.5, 1.0, 2.5]
    assert rows[0]["top10"] == 0.0 and rows[-1]["of_full_top10"] == 1.0
    assert rows[-1]["top10"] == np.mean(full < 10) and rows[-1]["top1"] == np.mean(full < 1)
    r = rows[1]
    assert r["top10_ci"][0] <= r["top10"] <= r["top10_ci"][1]
    assert r["of_full_top10_ci"][0] < r["of_full_top10"] < r["of_full_top10_ci"][1]
    assert 0.35 < r["of_full_top10"] < 0.65 and r["chance_top10"] == 10 / 200
    table = "\n".join(curve_markdown({"m": rows}))
    assert "onset + 2.5 s (full)" in table and "| chance top-10 % | 5.0 | 5.0 | 5.0 |" in table
