"""Online pipeline: parity with the offline trainer path, contract checks, clock model, window quality."""

from __future__ import annotations

import numpy as np
import pytest
from _service_fixtures import SUBJECT, make_contract, make_recording, offline_windows, push_time_chunks
from neurospeech.service.pipeline import OnlinePipeline
from neurospeech.service.quality import QualitySettings, assess_window
from neurospeech.service.streamcheck import check_stream

from neurospeech.errors import ContractMismatchError
from neurospeech.preprocessing import (
    PreprocessingSpec,
    RobustScaler,
    WindowSpec,
    extract_windows,
    preprocess_continuous,
    preprocess_window,
)


def _contract(data, sfreq, names, spec=None):
    window = WindowSpec()
    spec = spec or PreprocessingSpec()
    cont, times = preprocess_continuous(data, sfreq, window, spec)
    raw_w, _ = extract_windows(cont, times, np.arange(1.0, data.shape[1] / sfreq - 3, 0.5), window)
    return make_contract(names, sfreq, RobustScaler.fit(preprocess_window(raw_w, window)), 4, window, spec)


def _stream(pipe, x_stream, sfreq, t0, rng, max_chunk=200):
    """Feed (n, C) samples in random chunk sizes with exact stamps."""
    i = 0
    n = len(x_stream)
    while i < n:
        k = int(rng.integers(1, max_chunk))
        pipe.process_chunk(x_stream[i : i + k], t0 + np.arange(i, min(i + k, n)) / sfreq)
        i += k


@pytest.mark.parametrize(
    ("sfreq", "spec"),
    [
        (600.0, PreprocessingSpec()),
        (1000.0, PreprocessingSpec(highpass=0.5, resample_half_len=8)),
        (1200.0, PreprocessingSpec(resample_phase="minimum")),
    ],
)
def test_online_windows_equal_offline_windows(sfreq, spec):
    data, names = make_recording(10, sfreq, 14.0, seed=2)
    data = data.astype(np.float32)
    contract = _contract(data, sfreq, names, spec)
    t0 = 4321.125
    anchors = np.arange(0.8, 10.5, 0.37)
    x_off, valid = offline_windows(data, sfreq, contract, anchors, first_time=t0)
    cmap = check_stream(contract, names, sfreq)
    pipe = OnlinePipeline(contract, cmap, sfreq, SUBJECT, ring_seconds=30)
    _stream(pipe, data.T, sfreq, t0, np.random.default_rng(7))
    got = []
    for a in anchors[valid]:
        status, start = pipe.locate_anchor(a + t0)
        assert status == "ready", (a, status, start)
        job = pipe.make_job(start, "word")
        assert job.flags == []
        got.append(job.x)
    diff = np.abs(np.stack(got) - x_off).max()
    assert diff <= 1e-5, diff
    assert len(got) > 20


def test_reordered_microvolt_stream_gives_the_same_windows():
    sfreq = 600.0
    data, names = make_recording(8, sfreq, 8.0, seed=3)
    contract = _contract(data, sfreq, names)
    x_off, _valid = offline_windows(data.astype(np.float32), sfreq, contract, [2.0, 3.3, 4.1])
    order = [3, 0, 7, 1, 6, 2, 5, 4]
    stream = (data[order] * 1e6).astype(np.float32)  # microvolts, shuffled, plus an extra channel
    stream = np.vstack([stream, np.zeros((1, stream.shape[1]), np.float32)])
    snames = [names[i] for i in order] + ["STI014"]
    units = ["uV"] * 8 + ["V"]
    types = ["EEG"] * 8 + ["stim"]
    cmap = check_stream(contract, snames, sfreq, units=units, types=["EEG"] * 8 + ["eeg"])
    assert cmap.extra == ["STI014"]
    np.testing.assert_allclose(cmap.scale, 1e-6)
    pipe = OnlinePipeline(contract, cmap, sfreq, SUBJECT)
    _stream(pipe, stream.T, sfreq, 0.0, np.random.default_rng(1))
    for x_ref, a in zip(x_off, [2.0, 3.3, 4.1]):
        status, start = pipe.locate_anchor(a)
        assert status == "ready"
        np.testing.assert_allclose(pipe.make_job(start, "word").x, x_ref, atol=1e-5)
    with pytest.raises(ContractMismatchError, match="type 'stim'"):
        check_stream(
            contract, [*snames[:8], names[order[0]] + "x"], sfreq, types=[*types[:8], "stim"], units=units
        )  # fine: the extra channel is ignored ...
        check_stream(contract, snames, sfreq, types=["stim", *types[1:]])  # ... a wrong type is not


def test_contract_refusals_name_the_problem():
    sfreq = 600.0
    data, names = make_recording(6, sfreq, 6.0)
    contract = _contract(data, sfreq, names)
    with pytest.raises(ContractMismatchError, match=r"lacks 2 .*EEG002.*EEG005"):
        check_stream(contract, [n for n in names if n not in ("EEG002", "EEG005")], sfreq)
    with pytest.raises(ContractMismatchError, match="irregular"):
        check_stream(contract, names, 0.0)
    with pytest.raises(ContractMismatchError, match="below the model rate"):
        check_stream(contract, names, 100.0)
    with pytest.raises(ContractMismatchError, match="strict_rate"):
        check_stream(contract, names, 1200.0, strict_rate=True)
    with pytest.raises(ContractMismatchError, match="unknown channel unit"):
        check_stream(contract, names, sfreq, units=["furlong"] * 6)
    with pytest.raises(ContractMismatchError, match="type 'MEG'"):
        check_stream(contract, names, sfreq, types=["MEG"] * 6)
    with pytest.raises(ContractMismatchError, match="strings"):
        check_stream(contract, names, sfreq, channel_format="string")
    check_stream(contract, names, 1200.0)  # another regular rate is fine (resampled)


def test_clock_jump_starts_a_new_segment_and_drift_is_followed():
    sfreq = 600.0
    data, names = make_recording(4, sfreq, 20.0, seed=4)
    contract = _contract(data, sfreq, names)
    cmap = check_stream(contract, names, sfreq)
    # 1 % fast stream with a +3 s clock jump at 12 s, a duplicated and a reversed stamp
    pipe = OnlinePipeline(contract, cmap, sfreq, SUBJECT, ring_seconds=40)
    true_rate = sfreq * 1.01
    stamps = 100.0 + np.arange(data.shape[1]) / true_rate
    stamps[int(12 * sfreq) :] += 3.0
    stamps[2000] = stamps[1999]
    stamps[4001], stamps[4002] = stamps[4002], stamps[4001]
    x = data.T.astype(np.float32)
    for i in range(0, len(x), 12):
        pipe.process_chunk(x[i : i + 12], stamps[i : i + 12])
    issues = pipe.timestamp_issues
    assert issues["clock_jumps"] == 1 and issues["duplicated"] >= 1 and issues["non_monotonic"] >= 1
    assert pipe.seg == 1 and len(pipe.gaps) == 1 and 2.9 < pipe.gaps[0]["duration"] < 3.1
    assert pipe.clock.rate_ratio == pytest.approx(1.01, abs=2e-3)
    # sliding windows never straddle the jump; their time spans follow the true rate
    due = pipe.due_sliding(None)
    assert due and all(k[0] == 1 for k, _ in due)
    job = pipe.make_job(due[-1][1], "sliding")
    span = job.t_window_end - job.t_window_start
    assert span == pytest.approx(360 / 120 / 1.01, rel=2e-3)
    # a word before the jump whose window crosses it is dropped, one well before it decodes
    assert pipe.locate_anchor(100.0 + 11.0 / 1.01)[0] == "drop"
    assert pipe.locate_anchor(100.0 + 5.0 / 1.01)[0] == "ready"


def test_quality_flags_and_policies():
    sfreq = 600.0
    data, names = make_recording(12, sfreq, 10.0, seed=5)
    contract = _contract(data, sfreq, names)
    cmap = check_stream(contract, names, sfreq)
    x = data.T.copy()
    x[int(4.0 * sfreq) : int(4.2 * sfreq), 2] = np.nan  # NaN burst
    x[:, 5] = 0.0  # dead channel
    x[:, 7] = np.clip(x[:, 7], -1e-6, 1e-6)  # saturated (clipped) channel
    x[int(6 * sfreq) : int(6.1 * sfreq), 9] += 5e-3  # huge artefact
    for policy in ("skip", "interpolate"):
        q = QualitySettings(policy=policy, max_bad_fraction=0.4)
        pipe = OnlinePipeline(contract, cmap, sfreq, SUBJECT, quality=q)
        for i in range(0, len(x), 30):
            pipe.process_chunk(x[i : i + 30].astype(np.float32), np.arange(i, min(i + 30, len(x))) / sfreq)
        _, start = pipe.locate_anchor(4.5)  # window -0.5 .. 2.5 s holds the NaN burst and the artefact
        job = pipe.make_job(start, "word")
        flags = " ".join(job.flags)
        for expect in ("nonfinite:EEG003", "flat:EEG006", "saturated:EEG008", "artefact:EEG010"):
            assert expect in flags, (expect, job.flags)
        if policy == "skip":
            assert job.x is None and "skipped" in job.flags
        else:
            assert job.x is not None and np.isfinite(job.x).all()
            assert any(f.startswith("interpolated:") for f in job.flags)
        assert set(pipe.channel_quality()["bad"]) == {"EEG003", "EEG006", "EEG008", "EEG010"}
        # a window far from the NaN burst: no nonfinite flag
        _status, start = pipe.locate_anchor(1.0)
        assert "nonfinite" not in " ".join(pipe.make_job(start, "word").flags)


def test_assess_window_refuses_too_many_bad_channels():
    w = np.random.default_rng(0).standard_normal((8, WindowSpec().n_window)).astype(np.float32)
    w[:4] = 0.0
    sc = RobustScaler(np.zeros(8), np.ones(8))
    x, flags, bad = assess_window(
        w, WindowSpec(), sc, 20.0, QualitySettings(policy="interpolate"), [f"c{i}" for i in range(8)]
    )
    assert x is None and "skipped" in flags and len(bad) == 4


@pytest.mark.parametrize("excursion", [0.0, 50.0])
def test_assess_window_scales_and_clamps_like_preprocess_window(excursion):
    """The clamp pass is skipped when the scaled extremes stay within it; the result is preprocess_window's
    either way (a channel at 50 scaled units: clamped to 20, below the artefact threshold of 100)."""
    from neurospeech.preprocessing import preprocess_window

    win = WindowSpec()
    rng = np.random.default_rng(3)
    w = (1e-12 * rng.standard_normal((6, win.n_window)) + 1e-11).astype(np.float32)
    sc = RobustScaler(np.zeros(6), np.full(6, 1e-12))
    w[2, 200:210] += np.float32(excursion * 1e-12)
    x, flags, _ = assess_window(w, win, sc, 20.0, QualitySettings(), [f"c{i}" for i in range(6)])
    ref = preprocess_window(w, win, sc.center, sc.scale, clamp=20.0)
    assert not flags
    np.testing.assert_array_equal(x, ref)
    assert (np.abs(x).max() == 20.0) == (excursion > 20)


def _push_time_run(stalls, gap=None, jump=None, chunk=12, seconds=30.0):
    """A 600-Hz producer that stamps chunks at push time (pylsl's SendData), starved at ``stalls``; ``gap``:
    (data time, s) of samples that never arrive; ``jump``: (data time, s) a clock jump from then on."""
    sfreq = 600.0
    data, names = make_recording(4, sfreq, seconds, seed=4)
    contract = _contract(data, sfreq, names)
    pipe = OnlinePipeline(contract, check_stream(contract, names, sfreq), sfreq, SUBJECT, ring_seconds=40)
    x = data.T.astype(np.float32)
    windows, last = [], None
    for i, j, stamps, t_push in push_time_chunks(len(x), sfreq, chunk, stalls):
        if gap and gap[0] * sfreq <= i < (gap[0] + gap[1]) * sfreq:
            continue
        if jump and i >= jump[0] * sfreq:
            stamps, t_push = stamps + jump[1], t_push + jump[1]
        pipe.process_chunk(x[i:j], stamps, t_received=t_push + 0.001)
        for key, start in pipe.due_sliding(last):
            last = key
            windows.append(pipe.make_job(start, "sliding"))
    return pipe, windows


STALLS = {3.0: 0.4, 5.0: 0.9, 8.0: 0.3, 15.0: 0.5, 24.0: 0.6}


def test_late_pushes_of_a_starved_producer_are_absorbed_not_jumps():
    # issue 14: push-time stamps of a producer starved for 0.3-0.9 s (then catching up in a burst) made the
    # clock model see a jump (and lost data) at each stall and a backward jump after it: a new segment each time
    pipe, windows = _push_time_run(STALLS)
    ti = pipe.timestamp_issues
    assert ti["clock_jumps"] == 0 and pipe.seg == 0 and pipe.n_gaps == 0 and pipe.dropped_samples == 0
    assert ti["late_chunks"] >= len(STALLS) and ti["max_late_s"] == pytest.approx(0.9, abs=0.05)
    assert ti["rate_mismatch"] is None
    # every sliding window of the unbroken stream is decoded, placed on the sample count's line
    _, exact = _push_time_run({})
    assert len(windows) == len(exact) > 100
    starts = np.array([w.t_window_start for w in windows])
    exact_starts = np.array([w.t_window_start for w in exact])
    assert np.abs(starts - exact_starts).max() < 0.02
    assert all(w.x is not None and "gap" not in w.flags for w in windows)


@pytest.mark.parametrize(("gap", "jump"), [((11.0, 0.5), None), (None, (19.0, -0.8)), (None, (19.0, 1.0))])
def test_real_gaps_and_clock_jumps_are_still_found_among_late_pushes(gap, jump):
    pipe, windows = _push_time_run(STALLS, gap=gap, jump=jump)
    ti = pipe.timestamp_issues
    assert ti["clock_jumps"] == 1 and pipe.seg == 1 and ti["late_chunks"] >= len(STALLS)
    if gap:  # lost samples: a gap of their duration, counted as dropped
        assert len(pipe.gaps) == 1 and pipe.gaps[0]["duration"] == pytest.approx(0.5, abs=0.03)
        assert pipe.dropped_samples == pytest.approx(300, abs=20)
    elif jump[1] < 0:  # backward: never lost data
        assert pipe.n_gaps == 0 and pipe.dropped_samples == 0
    else:  # forward: indistinguishable from lost data by the stamps alone
        assert len(pipe.gaps) == 1 and pipe.gaps[0]["duration"] == pytest.approx(1.0, abs=0.03)
    # no window spans the discontinuity: each covers its 3 s of data
    spans = np.array([w.t_window_end - w.t_window_start for w in windows])
    assert np.allclose(spans, spans[0], atol=0.01)
    assert len({w.start >= pipe.seg_start for w in windows}) == 2
