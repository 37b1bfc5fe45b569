"""The live service publishes early word decisions: a real LSL outlet -> serve (in-process) -> real ZeroMQ
subscribers. word_early messages with delay_s 0.5 .. 2.0 arrive before the word's final decision and equal
the offline decisions on the masked windows; a subscriber of the old topics sees no word_early message."""

from __future__ import annotations

import time

import numpy as np
import pytest
from _early_fixtures import build_early_artifacts, early_latent
from _service_fixtures import Player, offline_windows, serve_settings, word_markers
from neurospeech.service.client import ALL_TOPICS, Subscriber
from neurospeech.service.messages import validate_header
from neurospeech.service.server import Server

from neurospeech.early import DEFAULT_DELAYS, mask_unseen, n_seen
from neurospeech.scoring import CandidateBank

pytestmark = pytest.mark.integration


def test_serve_publishes_word_early_before_the_final_word(tmp_path):
    ea = build_early_artifacts(tmp_path, duration=9.0, word_every=0.6)
    art = ea.art
    player = Player(art.data, art.sfreq, art.names, markers=word_markers(art), stamp_on_schedule=True).start()
    server = Server(serve_settings(art, player, hop=0.25, topk=10, send_latent=True))
    server.start()
    every = Subscriber(server.publisher.endpoint, topics=ALL_TOPICS)
    old = Subscriber(server.publisher.endpoint)  # default topics: decode + status
    msgs, old_msgs = [], []
    try:
        deadline = time.monotonic() + 9.0 + 60.0  # a deadline, not a pace check
        while time.monotonic() < deadline and not player.done:
            for sub, got in ((every, msgs), (old, old_msgs)):
                m = sub.recv(0.05)
                if m is not None:
                    got.append(m)
        drain_end = time.monotonic() + 3.0  # the last decisions still in flight (status heartbeats never stop)
        while time.monotonic() < drain_end:
            for sub, got in ((every, msgs), (old, old_msgs)):
                m = sub.recv(0.05)
                if m is not None:
                    got.append(m)
        stats = server.stats()
    finally:
        every.close()
        old.close()
        server.stop()
        server.join()
        player.stop()
    assert player.error is None
    early = [m for m in msgs if m.kind == "word_early"]
    words = {m["truth"]["segment_id"]: k for k, m in enumerate(msgs) if m.kind == "decode" and m["kind"] == "word"}
    expect = [i for i, a in zip(art.ids, art.anchors) if a + 2.5 + 0.2 < 9.0 - 0.1]
    assert set(expect) <= set(words)
    x, _ = offline_windows(art.data, art.sfreq, art.contract, art.anchors)
    bank = CandidateBank.load(art.bank)
    offline = {d: [str(bank.ids[b]) for b in np.argmax(bank.scores(
        early_latent(mask_unseen(x, art.contract.window, d), ea.weight, ea.unseen)), axis=1)] for d in DEFAULT_DELAYS}
    for n, i in enumerate(art.ids):
        if i not in expect:
            continue
        mine = [(k, m) for k, m in enumerate(msgs) if m.kind == "word_early" and m["truth"]["segment_id"] == i]
        assert [m.delay_s for _, m in mine] == list(DEFAULT_DELAYS), i
        assert all(k < words[i] for k, _ in mine), "an early decision came after the final one"
        for _, m in mine:
            validate_header("word_early", m.header)
            assert m.provisional
            # the live latent: the learned unseen vector exactly where onset + delay has not been seen yet
            z = m.arrays["latent"]
            k = n_seen(art.contract.window, m.delay_s)
            assert np.array_equal(z[:, k:], np.repeat(ea.unseen.astype(np.float32)[:, None], z.shape[1] - k, 1))
            assert not np.isclose(z[:, :k], ea.unseen.astype(np.float32)[:, None]).all(axis=0).any()
            # the offline decision on the masked offline window is among the live top 5 (neighbouring words'
            # windows overlap, so a one-sample difference in the live clock can swap the first places)
            assert offline[m.delay_s][n] in [c["id"] for c in m["topk"][:5]]
            # made from the data up to onset + delay: its newest sample is not much later than that
            assert m["t_newest_sample"] < m["t_onset"] + m.delay_s + 1.0
    seqs = [m.seq for m in early]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert not any(m.kind == "word_early" for m in old_msgs)
    dec = [m.seq for m in old_msgs if m.kind == "decode"]
    assert dec == list(range(dec[0], dec[0] + len(dec))) and old.stats()["missed"]["decode"] == 0
    assert stats["decisions"]["word_early"] == len(early)
