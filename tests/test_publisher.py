"""Publisher on real ZeroMQ sockets: frames, per-topic sequence numbers, encodings, state endpoint, log,
refusals."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pylsl
import pytest
import zmq
from _transport import MODEL_INFO, decode_header_fields, make_publisher, status_header_fields, wait_subscribed
from neurospeech.service.client import Subscriber, request_state
from neurospeech.service.messages import validate_header
from neurospeech.service.publisher import Publisher, PublisherSettings

from neurospeech.errors import ConfigError, TransportError


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_publish_receive_validate(encoding, tmp_path):
    log = tmp_path / "msgs.jsonl"
    with make_publisher(encoding=encoding, jsonl_log=log) as pub:
        with Subscriber(pub.endpoint) as sub:
            wait_subscribed(pub, [sub])
            n_status = pub.stats()["next_seq"]["status"]
            seqs = [pub.publish("decode", decode_header_fields(i), {"z": np.full((2, 3), i, np.float32)})
                    for i in range(5)]
            seq_s = pub.publish("status", status_header_fields())
            assert seqs == [0, 1, 2, 3, 4] and seq_s == n_status
            got = []
            deadline = time.monotonic() + 5
            while len(got) < 6 and time.monotonic() < deadline:
                m = sub.recv(timeout=0.5)
                if m is not None:
                    got.append(m)
    decodes = [m for m in got if m.kind == "decode"]
    assert [m.seq for m in decodes] == [0, 1, 2, 3, 4]
    for i, m in enumerate(decodes):
        assert m["encoding"] == encoding and m["model_id"] == MODEL_INFO["model_id"]
        assert m["model_sha256"] == MODEL_INFO["model_sha256"] and m["schema"] == "neurospeech.v1.decode"
        assert m["t_sent"] <= m.t_received <= pylsl.local_clock()
        np.testing.assert_array_equal(m.arrays["z"], np.full((2, 3), i, np.float32))
        validate_header("decode", m.header)
        assert m.latency == pytest.approx(m.t_received - (103.0 + i))
    st = [m for m in got if m.kind == "status"]
    assert len(st) == 1 and st[0].seq == n_status
    validate_header("status", st[0].header)
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == n_status + 6
    assert [x["header"]["seq"] for x in lines if x["topic"] == "neurospeech.v1.decode"] == [0, 1, 2, 3, 4]
    assert all(x["dropped"] is False for x in lines)


def test_topic_filter_and_stats():
    with make_publisher() as pub, Subscriber(pub.endpoint, topics=["decode"]) as only_dec, \
            Subscriber(pub.endpoint) as both:
        deadline = time.monotonic() + 10
        ok_dec = ok_both = False
        while not (ok_dec and ok_both):  # handshake with decode messages (the filter drops status)
            assert time.monotonic() < deadline
            pub.publish("decode", decode_header_fields())
            ok_dec = ok_dec or only_dec.recv(timeout=0.02) is not None
            ok_both = ok_both or both.recv(timeout=0.02) is not None
        for s in (only_dec, both):
            while s.recv(timeout=0.05):
                pass
        pub.publish("status", status_header_fields())
        pub.publish("decode", decode_header_fields())
        m = only_dec.recv(timeout=2)
        assert m is not None and m.kind == "decode"
        assert only_dec.recv(timeout=0.2) is None
        kinds = {both.recv(timeout=2).kind, both.recv(timeout=2).kind}
        assert kinds == {"decode", "status"}
        st = pub.stats()
        assert st["sent"]["status"] == 1 and st["sent"]["decode"] == st["next_seq"]["decode"]
        assert st["dropped_total"] == 0 and st["bytes_sent"] > 0


def test_state_endpoint_answers_late_joiner():
    with make_publisher(state_endpoint="tcp://127.0.0.1:*") as pub:
        before = request_state(pub.state_endpoint, timeout=5)
        assert before["status"] is None and before["model"] == MODEL_INFO
        pub.publish("status", status_header_fields(state="running", uptime_s=7.0))
        pub.publish("status", status_header_fields(state="lost", uptime_s=8.0))
        with Subscriber(pub.endpoint, state_endpoint=pub.state_endpoint) as late:
            st = late.state(timeout=5)
        validate_header("state", st)
        assert st["status"]["state"] == "lost" and st["status"]["uptime_s"] == 8.0
        assert st["status"]["seq"] == 1 and st["seq"]["status"] == 2
        assert pub.stats()["state_requests"] == 2


def test_state_request_timeout_is_a_transport_error():
    ctx = zmq.Context()
    port = ctx.socket(zmq.REP)
    p = port.bind_to_random_port("tcp://127.0.0.1")
    port.close(0)  # nobody answers on that port now
    ctx.term()
    with pytest.raises(TransportError, match="no reply"):
        request_state(f"tcp://127.0.0.1:{p}", timeout=0.3)


def test_address_in_use_is_refused_with_a_fix():
    with make_publisher() as pub:
        with pytest.raises(TransportError, match="already in use") as ei:
            Publisher(PublisherSettings(endpoint=pub.endpoint), MODEL_INFO)
        assert "choose a free port" in str(ei.value)
        ctx = zmq.Context()
        other = ctx.socket(zmq.PUB)
        other.linger = 0
        port = other.bind_to_random_port("tcp://127.0.0.1")
        try:
            with pytest.raises(TransportError, match="state endpoint"):
                Publisher(PublisherSettings(endpoint="tcp://127.0.0.1:*", state_endpoint=f"tcp://127.0.0.1:{port}"),
                          MODEL_INFO)
        finally:
            other.close(0)
            ctx.term()


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="encoding"):
        PublisherSettings(encoding="xml")
    with pytest.raises(ConfigError, match="endpoint"):
        PublisherSettings(endpoint="127.0.0.1:5556")
    with pytest.raises(ConfigError, match="sndhwm"):
        PublisherSettings(sndhwm=0)
    with pytest.raises(ConfigError, match="curve_secret_key"):
        PublisherSettings(curve_authorized_keys="keys/")
    with make_publisher() as pub:
        with pytest.raises(ConfigError, match="kind"):
            pub.publish("other", {})
    with pytest.raises(TransportError, match="after close"):
        pub.publish("status", {})
    pub.close()  # idempotent


def test_close_is_fast_with_connected_subscribers():
    pub = make_publisher(state_endpoint="tcp://127.0.0.1:*")
    subs = [Subscriber(pub.endpoint) for _ in range(3)]
    for i in range(200):
        pub.publish("decode", decode_header_fields(i), {"x": np.zeros(1000, np.float32)})
    # linger 0: close never waits for the unread messages (with the default linger it would block for ever);
    # a generous deadline, not a timing claim
    closer = threading.Thread(target=pub.close, daemon=True)
    closer.start()
    closer.join(30.0)
    assert not closer.is_alive(), "close() blocked on subscribers that do not read"
    for s in subs:
        s.close()


def test_strict_types_and_a_bad_message_log_are_settings_errors(tmp_path):
    with pytest.raises(ConfigError, match="nodrop"):
        PublisherSettings(nodrop="no")  # a non-empty string would read as true
    with pytest.raises(ConfigError, match="sndhwm"):
        PublisherSettings(sndhwm="lots")
    with pytest.raises(ConfigError, match="sndhwm"):
        PublisherSettings(sndhwm=2.5)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ConfigError, match="message log"):  # a path problem, not a ZeroMQ one (exit 2, not 7)
        make_publisher(jsonl_log=tmp_path / "a-file" / "log.jsonl")


def test_a_status_run_of_losses_is_counted_when_it_began_on_the_decode_topic():
    """A stuck subscriber of both topics: libzmq refuses only the first message of a run (a decode one here) and
    then skips the subscriber for every topic; the status losses must show in the status counter too."""
    with make_publisher(sndhwm=10) as pub:
        stuck = Subscriber(pub.endpoint, topics=["decode", "status"], rcvhwm=10)
        try:
            wait_subscribed(pub, [stuck])
            big = {"x": np.zeros(256 * 1024, np.float32)}  # 1 MB frames fill the socket buffers quickly
            deadline = time.monotonic() + 60
            while pub.stats()["slow_subscriber_events"]["decode"] == 0:
                assert time.monotonic() < deadline, "the subscriber's queue never filled"
                pub.publish("decode", decode_header_fields(0), big)
            for _ in range(5):
                pub.publish("status", status_header_fields())
            st = pub.stats()
        finally:
            stuck.close()
    assert st["slow_subscriber_events"]["decode"] >= 1
    assert st["slow_subscriber_events"]["status"] >= 1  # stayed 0 before: status losses went uncounted
    assert st["sent"]["status"] >= 5 and st["dropped"]["status"] == 0


_FULL_DISK_SCRIPT = r"""
import json, resource, signal, sys
sys.path.insert(0, sys.argv[2])
from _transport import decode_header_fields, make_publisher
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write beyond the limit fails with EFBIG, like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
with make_publisher(jsonl_log=sys.argv[1]) as pub:
    for i in range(200):
        pub.publish("decode", decode_header_fields(i))
    print(json.dumps({"log": pub.stats()["message_log"], "sent": pub.stats()["sent"]}))
"""


def test_message_log_on_a_full_disk_keeps_whole_lines_and_says_it_stopped(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    log_path = tmp_path / "messages.jsonl"
    proc = subprocess.run([sys.executable, "-c", _FULL_DISK_SCRIPT, str(log_path), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["sent"]["decode"] == 200  # publishing went on
    assert out["log"]["state"] == "stopped" and out["log"]["error"], out
    assert "logging stopped" in proc.stderr
    text = log_path.read_bytes()
    assert 0 < len(text) <= 20_000 and text.endswith(b"\n")  # no cut last line
    lines = [json.loads(x) for x in text.decode().splitlines()]
    assert [r["header"]["seq"] for r in lines] == list(range(len(lines)))
