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
    # the same numbers whatever the chunking, up to float64 rounding (blocks of outputs go through one BLAS
    # matrix product, a chunk's last few through a smaller one)
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=0, atol=1e-12 * np.abs(whole).max())
    assert abs(len(whole) - len(x) * 120.0 / sfreq) <= 1


@pytest.mark.parametrize("sfreq", [1200.0, 1000.0, 600.0, 250.0])
def test_resampler_matches_scipy_upfirdn(sfreq):
    from scipy.signal import upfirdn

    x = np.random.default_rng(3).standard_normal((2500, 3))
    r = StreamingResampler(sfreq, 120.0, 3)
    ours = np.concatenate([r.process(x[i : i + 997]) for i in range(0, len(x), 997)])
    # the resampler's past is the first sample repeated: pad with a multiple of `down` samples of it
    pad = -(-(r.k_taps - 1) // r.down) * r.down
    xp = np.concatenate([np.repeat(x[:1], pad, axis=0), x])
    ref = upfirdn(r.taps, xp, r.up, r.down, axis=0)[pad * r.up // r.down :][: len(ours)]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sfreq", [1200.0, 1000.0, 250.0])
def test_float32_resampler_keeps_a_small_signal_on_a_large_offset(sfreq):
    """EEG-like: 50 mV DC offsets, 10 uV signals. float32 around zero would keep ~3 nV steps of a 50 mV value;
    around the first sample it keeps the signal to float32 precision (the service's and trainer's path)."""
    rng = np.random.default_rng(4)
    x = 1e-5 * rng.standard_normal((4000, 3)) + np.array([0.05, -0.03, 0.0])
    exact = StreamingResampler(sfreq, 120.0, 3).process(x)
    r32 = StreamingResampler(sfreq, 120.0, 3, dtype=np.float32)
    ours = np.concatenate([r32.process(x[i : i + 211]) for i in range(0, len(x), 211)])
    assert ours.dtype == np.float32 and ours.shape == exact.shape
    # the float32 result itself stores 50 mV with ~3.7 nV steps: compare to that, not to float64
    step = np.spacing(np.float32(0.05))
    assert np.max(np.abs(ours - exact)) <= 2 * step
    # and channel-major chunks give the same numbers
    rc = StreamingResampler(sfreq, 120.0, 3, dtype=np.float32)
    cm = np.concatenate([rc.process_channels(x[i : i + 211].T) for i in range(0, len(x), 211)], axis=1)
    np.testing.assert_array_equal(cm.T, ours)


@pytest.mark.parametrize("sfreq", [1200.0, 1000.0])
def test_float32_input_gives_the_float64_input_result_exactly(sfreq):
    """float32 chunks are staged with a float32 subtraction (no casting loop): the correctly rounded difference,
    so the same bits as staging the same values given as float64 (an offset recording, jittered chunks)."""
    rng = np.random.default_rng(5)
    x32 = (1e-5 * rng.standard_normal((3, 3000)) + np.array([[0.05], [-0.03], [1e-9]])).astype(np.float32)
    a = StreamingResampler(sfreq, 120.0, 3, dtype=np.float32)
    b = StreamingResampler(sfreq, 120.0, 3, dtype=np.float32)
    outs_a, outs_b, i = [], [], 0
    while i < x32.shape[1]:
        n = int(rng.integers(1, 700))
        outs_a.append(a.process_channels(x32[:, i : i + n]))
        outs_b.append(b.process_channels(x32[:, i : i + n].astype(np.float64)))
        i += n
    assert a._ref32 is not None  # the fast path was taken
    np.testing.assert_array_equal(np.concatenate(outs_a, axis=1), np.concatenate(outs_b, axis=1))
    # a float32 chunk after a float64 first chunk whose first sample float32 cannot hold: the exact path
    c = StreamingResampler(sfreq, 120.0, 1, dtype=np.float32)
    d = StreamingResampler(sfreq, 120.0, 1, dtype=np.float32)
    first = np.full((1, 50), 0.1)
    c.process_channels(first)
    d.process_channels(first)
    assert c._ref32 is None
    later = x32[:1, :500] - x32[0, 0] + np.float32(0.1)
    np.testing.assert_array_equal(c.process_channels(later), d.process_channels(later.astype(np.float64)))


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
    # float32 model-rate output: the same up to float32 rounding of the filtered signal
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=0, atol=1e-6 * np.abs(whole).max())
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


# ------------------------------------------------------------------ low-delay (minimum-phase) anti-aliasing
@pytest.mark.parametrize("sfreq", [1200.0, 1000.0, 600.0, 250.0, 150.0])
def test_minimum_phase_resampler_is_chunk_invariant_and_matches_upfirdn(sfreq):
    from scipy.signal import upfirdn

    rng = np.random.default_rng(11)
    x = rng.standard_normal((3000, 3))
    r = StreamingResampler(sfreq, 120.0, 3, phase="minimum")
    whole = r.process(x)
    r.reset()
    parts, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 80))
        parts.append(r.process(x[i : i + n]))
        i += n
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=0, atol=1e-12 * np.abs(whole).max())
    pad = -(-(r.k_taps - 1) // r.down) * r.down
    xp = np.concatenate([np.repeat(x[:1], pad, axis=0), x])
    ref = upfirdn(r.taps, xp, r.up, r.down, axis=0)[pad * r.up // r.down :][: len(whole)]
    np.testing.assert_allclose(whole, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sfreq", [1200.0, 1000.0, 600.0, 200.0, 150.0])
def test_minimum_phase_filter_meets_its_delay_and_band_targets(sfreq):
    from neurospeech.preprocessing import group_delay_table

    lin = group_delay_table(sfreq, 120.0, phase="linear")
    low = group_delay_table(sfreq, 120.0, phase="minimum")
    assert lin["delay_ms"] == pytest.approx(1000 * 10 / 120.0, rel=1e-9)  # half_len / min rate
    # the target: passband group delay <= 10 ms where the speech-tracking response lives (1-20 Hz)
    for f in ("1", "5", "10", "20"):
        assert low["group_delay_ms"][f] <= 10.0, (f, low)
    assert low["delay_ms"] <= 10.0
    assert low["passband_ripple"] < 0.02  # < 0.2 dB in 0-40 Hz
    assert low["stopband_db"] < -38.0  # >= 80 Hz: nothing aliases into 0-40 Hz after decimation to 120 Hz


@pytest.mark.parametrize("phase", ["linear", "minimum"])
def test_output_times_put_a_slow_sinusoid_where_it_was(phase):
    """Output times are corrected by the filter's delay: a 4-Hz sinusoid comes out at its input phase."""
    sfreq, f0 = 1200.0, 4.0
    t = np.arange(int(20 * sfreq)) / sfreq
    x = np.sin(2 * np.pi * f0 * t)[:, None]
    r = StreamingResampler(sfreq, 120.0, 1, phase=phase)
    y = r.process(x)[:, 0]
    ty = r.output_times(0.0, 0, len(y))
    keep = (ty > 2.0) & (ty < 19.0)  # away from the start-up transient
    err = np.abs(y[keep] - np.sin(2 * np.pi * f0 * ty[keep])).max()
    # a timing error dt gives an amplitude error of about 2 pi f0 dt: 1 ms -> 0.025
    assert err < 0.02, err


def test_preprocessing_spec_records_the_filter_and_refuses_unknown_settings():
    old = {"highpass": None, "highpass_order": 2, "resample_half_len": 10, "clamp": 20.0}  # a contract of 0.1
    assert PreprocessingSpec.from_dict(old).resample_phase == "linear"
    spec = PreprocessingSpec(resample_phase="minimum")
    assert PreprocessingSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="resample_phase"):
        PreprocessingSpec(resample_phase="zero")
    with pytest.raises(ConfigError, match="newer version"):
        PreprocessingSpec.from_dict({**old, "resample_filter_v9": 1})
    # the stream preprocessor builds the filter the spec names
    pre = StreamPreprocessor(1200.0, 2, WindowSpec(), spec)
    assert pre.resampler.phase == "minimum" and pre.delay_seconds < 0.010
