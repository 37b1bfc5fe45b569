"""Test helpers for the ZeroMQ transport tests (publisher, client, CURVE, fault injection)."""

from __future__ import annotations

import time
from typing import Any

from neurospeech.service.client import Subscriber
from neurospeech.service.publisher import Publisher, PublisherSettings

MODEL_INFO = {"model_id": "test-model", "model_sha256": "0" * 64, "preset": "fixture"}


def decode_header_fields(i: int = 0, **over: Any) -> dict[str, Any]:
    """A decode header with every field the schema requires (the service fills these)."""
    h = {
        "kind": "sliding",
        "subject": "01",
        "t_window_start": 100.0 + i,
        "t_window_end": 103.0 + i,
        "t_newest_sample": 103.0 + i,
        "processing_ms": 2.5,
        "topk": [
            {"rank": 1, "id": "abc123", "word": "hello", "sound": "stimuli/s0001.wav", "sound_time": 0.5,
             "score": 1.5, "prob": 0.6},
            {"rank": 2, "id": "def456", "word": "world", "sound": "stimuli/s0002.wav", "sound_time": 1.0,
             "score": 0.9, "prob": 0.4},
        ],
        "truth": {"segment_id": "abc123", "word": "hello"},
        "flags": [],
    }
    h.update(over)
    return h


def status_header_fields(**over: Any) -> dict[str, Any]:
    h = {
        "state": "running",
        "stream": {"name": "x", "source_id": "y", "sfreq": 1200.0, "n_channels": 4},
        "buffer_fill": 0.5,
        "lag_s": 0.01,
        "samples_received": 1200,
        "dropped_samples": 0,
        "overruns": 0,
        "skipped_decisions": 0,
        "messages_sent": 3,
        "dropped_messages": 0,
        "gaps": [],
        "channel_quality": {"bad": []},
        "uptime_s": 1.0,
        "timestamp_issues": 0,
    }
    h.update(over)
    return h


def make_publisher(**settings: Any) -> Publisher:
    settings.setdefault("endpoint", "tcp://127.0.0.1:*")
    return Publisher(PublisherSettings(**settings), MODEL_INFO)


def wait_subscribed(pub: Publisher, subs: list[Subscriber], timeout: float = 10.0) -> None:
    """Publish status messages until every subscriber has received one (the ZeroMQ slow-joiner handshake)."""
    deadline = time.monotonic() + timeout
    pending = list(subs)
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} subscriber(s) never connected within {timeout} s")
        pub.publish("status", status_header_fields(state="connecting"))
        pending = [s for s in pending if s.recv(timeout=0.02) is None]
    # drain what else arrived during the handshake
    for s in subs:
        while s.recv(timeout=0.05) is not None:
            pass
