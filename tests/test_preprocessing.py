"""Shared preprocessing: chunk invariance, timing of the resampler, windows, scaler."""

from __future__ import annotations

import numpy as np
import pytest

from neurospeech.errors import ConfigError, DataFormatError
from neurospeech.preprocessing import (
    PreprocessingSpec,
    RobustScaler,
    StreamingResampler,
    StreamPreprocessor,
    WindowSpec,
    extract_windows,
    preprocess_continuous,
    preprocess_window,
)


@pytest.mark.parametrize("sfreq", [1200.0, 1000.0, 500.0, 128.0, 120.0])
def test_resampler_is_chunk_invariant(sfreq):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3000, 4))
    r = StreamingResampler(sfreq, 120.0, 4)
    whole = r.process(x)
    r.reset()
    parts, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 80))  # jittered chunk sizes
        parts.append(r.process(x[i : i + n]))
        i += n
    assert np.array_equal(whole, np.concatenate(parts))
    assert abs(len(whole) - len(x) * 120.0 / sfreq) <= 1


@pytest.mark.parametrize("sfreq", [1200.0, 1000.0, 250.0])
def test_resampler_output_times_are_exact(sfreq):
    t = np.arange(int(sfreq * 20)) / sfreq
    x = np.sin(2 * np.pi * 5.0 * t)[:, None]
    r = StreamingResampler(sfreq, 120.0, 1)
    y = r.process(x)[:, 0]
    ty = r.output_times(0.0, 0, len(y))
    sl = slice(240, len(y) - 10)
    assert np.max(np.abs(y[sl] - np.sin(2 * np.pi * 5.0 * ty[sl]))) < 5e-3


def test_resampler_rejects_wrong_shape_and_odd_rates():
    r = StreamingResampler(1200, 120, 3)
    with pytest.raises(DataFormatError):
        r.process(np.zeros((10, 4)))
    with pytest.raises(ConfigError):
        StreamingResampler(-5, 120, 3)


def test_highpass_removes_offset_and_is_chunk_invariant():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6000, 2)) + 50.0
    spec = PreprocessingSpec(highpass=0.5)
    a = StreamPreprocessor(1200, 2, WindowSpec(), spec)
    whole = a.process(x)
    a.reset()
    parts = [a.process(x[i : i + 37]) for i in range(0, len(x), 37)]
    assert np.allclose(whole, np.concatenate(parts), atol=1e-9)
    assert abs(whole[-100:].mean()) < 1.0


def test_window_geometry_matches_paper():
    w = WindowSpec()
    assert (w.n_window, w.n_lag, w.n_times) == (361, 18, 343)
    assert w.baseline_slice == slice(0, 60)
    with pytest.raises(ConfigError):
        WindowSpec(tmin=1.0, tmax=0.0)


def test_extract_and_preprocess_windows():
    sf = 1200.0
    n = int(sf * 30)
    data = np.vstack([np.arange(n) / sf, np.ones(n)])  # ramp channel: value = time
    out, times = preprocess_continuous(data, sf, first_time=100.0)
    w = WindowSpec()
    anchors = np.array([105.0, 110.0, 129.5, 99.0])
    wins, valid = extract_windows(out, times, anchors, w)
    assert valid.tolist() == [True, True, False, False]
    # the ramp's value at the window start is (anchor - 0.5 - 100)
    assert np.allclose(wins[:, 0, 0], anchors[:2] - 0.5 - 100.0, atol=2e-3)
    x = preprocess_window(wins, w)
    assert x.shape == (2, 2, 343)
    assert np.allclose(x[:, 1], 0.0, atol=1e-6)  # constant channel after baseline
    sc = RobustScaler.fit(x)
    y = preprocess_window(wins, w, sc.center, sc.scale, clamp=20.0)
    assert np.all(np.abs(y) <= 20.0)
    rt = RobustScaler.from_dict(sc.to_dict())
    assert np.allclose(rt.center, sc.center)
