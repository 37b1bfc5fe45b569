"""Subscriber client: sequence-gap and restart detection, malformed messages skipped, iteration, settings."""

from __future__ import annotations

import threading
import time

import pytest
import zmq
from _transport import decode_header_fields, status_header_fields
from neurospeech.service.client import Subscriber
from neurospeech.service.messages import encode_message

from neurospeech.errors import ConfigError


def _raw_publisher():
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    return ctx, pub, f"tcp://127.0.0.1:{port}"


def _send(pub, kind, seq, header):
    pub.send_multipart(encode_message(kind, {**header, "seq": seq, "schema": f"neurospeech.v1.{kind}"}))


def test_gaps_restarts_and_malformed_messages_are_counted():
    ctx, pub, ep = _raw_publisher()
    try:
        with Subscriber(ep) as sub:
            deadline = time.monotonic() + 10
            while sub.recv(timeout=0.02) is None:  # handshake; these status messages set the first seq
                assert time.monotonic() < deadline
                _send(pub, "status", 100, status_header_fields())
            while sub.recv(timeout=0.05) is not None:
                pass
            for s in (0, 1, 2, 6, 7):
                _send(pub, "decode", s, decode_header_fields(s))
            pub.send_multipart([b"neurospeech.v1.decode", b"{broken"])
            pub.send_multipart([b"neurospeech.v1.decode", b"{}", b"extra frame"])
            _send(pub, "decode", 0, decode_header_fields(0))  # the service restarted
            _send(pub, "decode", 2, decode_header_fields(2))
            got = list(sub.messages(1.0))
            assert [m.seq for m in got] == [0, 1, 2, 6, 7, 0, 2]
            assert [m.missed for m in got] == [0, 0, 0, 3, 0, 0, 1]
            st = sub.stats()
            assert st["missed"]["decode"] == 4 and st["restarts"]["decode"] == 1
            assert st["malformed"] == 2 and st["received"]["decode"] == 7
            assert st["first_seq"]["decode"] == 0 and st["restarts"]["status"] == 0
    finally:
        pub.close(0)
        ctx.term()


def test_iteration_and_recv_timeout():
    ctx, pub, ep = _raw_publisher()
    stop = threading.Event()

    def publish_forever():  # the PUB socket is used by this thread only
        seq = 0
        while not stop.is_set():
            _send(pub, "decode", seq, decode_header_fields(seq))
            seq += 1
            stop.wait(0.01)

    sub = Subscriber(ep, topics="decode")
    th = threading.Thread(target=publish_forever, daemon=True)
    try:
        t0 = time.monotonic()
        assert sub.recv(timeout=0.2) is None
        assert 0.15 < time.monotonic() - t0 < 10.0  # waited and returned: a bound for a hang, not timing
        th.start()
        seen = []
        for m in sub:  # blocks until messages arrive; the publisher thread guarantees they do
            seen.append(m)
            if len(seen) == 5:
                break
        assert all(m.kind == "decode" for m in seen)
        assert [m.seq for m in seen] == list(range(seen[0].seq, seen[0].seq + 5))
        assert sum(m.missed for m in seen) == 0
        sub.close()
        assert list(iter(sub)) == []  # a closed subscriber yields nothing
    finally:
        stop.set()
        if th.is_alive():
            th.join(2)
        sub.close()
        pub.close(0)
        ctx.term()


def test_bad_arguments():
    with pytest.raises(ConfigError, match="endpoint"):
        Subscriber("localhost:5556")
    with pytest.raises(ConfigError, match="topic"):
        Subscriber("tcp://127.0.0.1:1", topics=["decodes"])
    with pytest.raises(ConfigError, match="CURVE needs both"):
        Subscriber("tcp://127.0.0.1:1", curve_secret_key="a.key_secret")
    with Subscriber("tcp://127.0.0.1:1") as s, pytest.raises(ConfigError, match="state_endpoint"):
        s.state()
