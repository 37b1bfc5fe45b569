"""Ring buffer: in-place writes with wraparound, span reads, a concurrent reader never seeing a torn span."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from neurospeech.service.ringbuffer import RingBuffer


def _block(g0, n, c=3):
    g = np.arange(g0, g0 + n, dtype=np.float64)
    return np.repeat(g[:, None], c, axis=1).astype(np.float32), g * 0.01


def test_wraparound_keeps_the_newest_samples_in_order():
    ring = RingBuffer(10, 3)
    g = 0
    for n in (4, 3, 5, 7, 1, 9):
        data, times = _block(g, n)
        ring.write(data, times, seg=g // 10)
        g += n
    assert ring.count == g == 29
    assert ring.oldest == 19 and ring.fill == 1.0
    span = ring.read(19, 10)
    np.testing.assert_array_equal(span.data[:, 0], np.arange(19, 29))
    np.testing.assert_allclose(span.times, np.arange(19, 29) * 0.01)
    assert ring.newest()[0] == 28
    with pytest.raises(IndexError):
        ring.read(18, 3)  # overwritten
    with pytest.raises(IndexError):
        ring.read(25, 5)  # not written yet


def test_write_larger_than_capacity_and_segments_and_bad_masks():
    ring = RingBuffer(8, 2)
    data, times = _block(0, 20, 2)
    bad = np.zeros((20, 2), dtype=bool)
    bad[15, 1] = True
    ring.write(data, times, seg=0, bad=bad, newest=123.0)
    span = ring.read(12, 8)
    np.testing.assert_array_equal(span.data[:, 0], np.arange(12, 20))
    assert span.bad[3, 1] and span.bad.sum() == 1 and span.any_bad and not span.any_stuck
    assert span.continuous and np.all(span.newest == 123.0)
    # a span without bad samples reads as an all-False (read-only) mask; one across the wrap as a copy
    clean = ring.read(16, 4)
    assert not clean.any_bad and clean.bad.shape == (4, 2) and not clean.bad.any()
    assert not clean.bad.flags.writeable and clean.stuck.shape == (4, 2) and not clean.stuck.any()
    assert ring.read(12, 8).bad.flags.writeable
    d2, t2 = _block(20, 2, 2)
    ring.write(d2, t2, seg=1)
    assert not ring.read(14, 8).continuous
    assert ring.read(20, 2).continuous


def test_concurrent_reader_never_sees_a_torn_span():
    ring = RingBuffer(64, 16)
    stop = threading.Event()
    errors = []
    checked = [0]

    def reader():
        rng = np.random.default_rng(0)
        while not stop.is_set():
            count = ring.count
            if count < 40:
                continue
            n = int(rng.integers(1, 40))
            start = count - n - int(rng.integers(0, 20))
            try:
                span = ring.read(start, n)
            except IndexError:
                continue  # overwritten meanwhile: refused, never torn
            expect = np.arange(start, start + n, dtype=np.float32)
            if not (np.all(span.data == expect[:, None]) and np.allclose(span.times, expect * 0.01)):
                errors.append((start, n))
            checked[0] += 1

    t = threading.Thread(target=reader)
    t.start()
    g = 0
    rng = np.random.default_rng(1)
    # write for 1 s, longer (up to 20 s) until the reader has checked enough spans on a busy machine
    t0 = time.monotonic()
    while (now := time.monotonic()) < t0 + 1.0 or (checked[0] <= 100 and now < t0 + 20.0):
        n = int(rng.integers(1, 30))
        data, times = _block(g, n, 16)
        ring.write(data, times, seg=0)
        g += n
    stop.set()
    t.join(5)
    assert not errors, errors[:5]
    assert checked[0] > 100 and ring.count == g
