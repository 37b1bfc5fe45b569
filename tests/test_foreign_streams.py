"""Streams nobody on this project wrote: trailing aux channels, mne-lsl's unit exponents, units of the wrong
dimension, streams without unit metadata, future-dated stamps, a declared rate that is not the real one.

Pipeline-level checks (no LSL); the same cases on real LSL outlets are in tests/faults/test_fault_foreign_streams.py.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
from _service_fixtures import SUBJECT, make_contract, make_recording, offline_windows
from neurospeech.service.pipeline import OnlinePipeline
from neurospeech.service.streamcheck import check_stream

from neurospeech.contract import ChannelSpec, parse_unit, parse_unit_override
from neurospeech.errors import ContractMismatchError
from neurospeech.preprocessing import (
    RobustScaler,
    WindowSpec,
    extract_windows,
    preprocess_continuous,
    preprocess_window,
)

SFREQ = 600.0


@pytest.fixture(scope="module")
def rec():
    data, names = make_recording(8, SFREQ, 9.0, seed=4)
    window = WindowSpec()
    cont, times = preprocess_continuous(data, SFREQ, window)
    raw_w, _ = extract_windows(cont, times, np.arange(1.0, 6.0, 0.5), window)
    contract = make_contract(names, SFREQ, RobustScaler.fit(preprocess_window(raw_w, window)), 4, window)
    return data, names, contract


def _meg(contract, ch_type="mag", unit="T"):
    return dataclasses.replace(
        contract, channels=[ChannelSpec(c.name, ch_type, unit, c.pos) for c in contract.channels]
    )


def _feed(pipe, x, sfreq, t0=0.0, chunk=37):
    for i in range(0, len(x), chunk):
        pipe.process_chunk(x[i : i + chunk], t0 + np.arange(i, min(i + chunk, len(x))) / sfreq)


def _windows(pipe, anchors):
    out = []
    for a in anchors:
        status, start = pipe.locate_anchor(a)
        assert status == "ready", (a, status, start)
        job = pipe.make_job(start, "word")
        assert job.flags == [], job.flags
        out.append(job.x)
    return np.stack(out)


ANCHORS = [2.0, 3.3, 4.6]


def test_trailing_extra_channel_is_left_out_on_the_identity_path(rec):
    # defect 1: the model's channels first, in order, in SI, then an EOG channel: the fast path must not feed
    # 9 channels to an 8-channel resampler (DataFormatError "resampler expects (8, n_times), got (9, 37)")
    data, names, contract = rec
    x_off, _ = offline_windows(data.astype(np.float32), SFREQ, contract, ANCHORS)
    eog = np.random.default_rng(0).standard_normal((1, data.shape[1])) * 1e-4
    stream = np.vstack([data, eog]).astype(np.float32)
    cmap = check_stream(contract, [*names, "EOG061"], SFREQ, units=["V"] * 9, types=["EEG"] * 8 + ["EOG"])
    assert cmap.extra == ["EOG061"]
    pipe = OnlinePipeline(contract, cmap, SFREQ, SUBJECT)
    _feed(pipe, stream.T, SFREQ)
    np.testing.assert_allclose(_windows(pipe, ANCHORS), x_off, atol=1e-5)
    # and a stream with fewer channels than the map needs is refused with a clear error, not a numpy crash
    from neurospeech.errors import DataFormatError

    with pytest.raises(DataFormatError, match=">= 8"):
        pipe.process_chunk(stream.T[:5, :6], np.arange(5) / SFREQ + 100.0)


@pytest.mark.parametrize(
    ("unit", "ch_type", "dim", "factor"),
    [
        ("0", "eeg", "V", 1.0),
        ("-6", "eeg", "V", 1e-6),
        ("-15", "mag", "T", 1e-15),
        ("-13", None, None, None),  # not an FIFF multiplier: refused
        ("-6.0", "eeg", "V", 1e-6),  # mne-lsl reads exponents with Decimal: "-6.0" is -6
        ("1.5", "eeg", None, None),
        ("uV", "mag", "V", 1e-6),  # a name carries its own dimension (checked against the type elsewhere)
        ("fT/cm", "grad", "T/m", 1e-13),
        ("microvolts", "eeg", "V", 1e-6),
        ("furlong", "eeg", None, None),
    ],
)
def test_units_are_names_or_mne_lsl_exponents(unit, ch_type, dim, factor):
    if factor is None:
        with pytest.raises(ContractMismatchError, match=r"unknown channel unit .*exponent mne-lsl writes"):
            parse_unit(unit, ch_type)
        return
    got_dim, got = parse_unit(unit, ch_type)
    assert got_dim == dim and got == pytest.approx(factor, rel=1e-12)


def test_mne_lsl_exponent_units_give_the_same_windows(rec):
    # defect 2: mne-lsl's PlayerLSL writes "0" for SI data; after set_channel_units('microvolts') "-6"
    data, names, contract = rec
    x_off, _ = offline_windows(data.astype(np.float32), SFREQ, contract, ANCHORS)
    for unit, mult in (("0", 1.0), ("-6", 1e6)):
        cmap = check_stream(contract, names, SFREQ, units=[unit] * 8, types=["eeg"] * 8)
        pipe = OnlinePipeline(contract, cmap, SFREQ, SUBJECT)
        _feed(pipe, (data * mult).astype(np.float32).T, SFREQ)
        np.testing.assert_allclose(_windows(pipe, ANCHORS), x_off, atol=1e-5)


@pytest.mark.parametrize(
    ("model_type", "unit", "ok"),
    [
        ("mag", "V", False),
        ("mag", "mV", False),
        ("mag", "uV", False),
        ("mag", "fT", True),
        ("mag", "-15", True),
        ("grad", "fT", False),
        ("grad", "fT/cm", True),
        ("eeg", "fT", False),
        ("eeg", "uV", True),
    ],
)
def test_unit_of_the_wrong_dimension_is_refused_with_the_fix(rec, model_type, unit, ok):
    # defect 4: V / mV / uV on magnetometers decoded silently (or 1000x attenuated, or flagged flat)
    _, names, contract = rec
    c = contract if model_type == "eeg" else _meg(contract, model_type, "T" if model_type == "mag" else "T/m")
    types = ["MEG" if model_type != "eeg" else "EEG"] * 8
    if ok:
        cmap = check_stream(c, names, SFREQ, units=[unit] * 8, types=types)
        assert cmap.scale[0] == pytest.approx(parse_unit(unit, model_type)[1])
        return
    with pytest.raises(ContractMismatchError) as err:
        check_stream(c, names, SFREQ, units=[unit] * 8, types=types)
    msg = str(err.value)
    assert f"unit {unit!r} is a" in msg and f"type {model_type!r}" in msg and "--units" in msg


def test_missing_units_warn_loudly_and_the_override_applies(rec, caplog):
    # defect 4: no unit metadata was assumed SI without a word
    _, names, contract = rec
    with caplog.at_level(logging.WARNING, logger="neurospeech.service.streamcheck"):
        cmap = check_stream(contract, names, SFREQ, units=[""] * 8)
    assert cmap.assumed_units == names and np.all(cmap.scale == 1)
    assert any("UNITS UNKNOWN" in r.getMessage() and "--units" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="neurospeech.service.streamcheck"):
        cmap = check_stream(contract, names, SFREQ, units=[""] * 8, unit_override="uV")
        assert not any("UNITS UNKNOWN" in r.getMessage() for r in caplog.records)
    assert cmap.assumed_units == [] and cmap.overridden_units == names
    np.testing.assert_allclose(cmap.scale, 1e-6)
    # per type; a file read by MNE (units=None) is SI and is not warned about
    meg = _meg(contract)
    cmap = check_stream(meg, names, SFREQ, units=[""] * 8, unit_override="mag=fT,grad=fT/cm")
    np.testing.assert_allclose(cmap.scale, 1e-15)
    with pytest.raises(ContractMismatchError, match="is a voltage"):
        check_stream(meg, names, SFREQ, units=[""] * 8, unit_override="uV")
    assert check_stream(contract, names, SFREQ).assumed_units == []
    assert parse_unit_override(" mag=fT , grad=fT/cm ") == {"mag": "fT", "grad": "fT/cm"}
    for bad in ("", "mag=", "=fT", "mag=furlong"):
        with pytest.raises(ContractMismatchError):
            parse_unit_override(bad)


def _rate_run(contract, names, data, declared, true_rate, lag=None, chunk=12):
    """Feed ``data`` (C, n) declared at ``declared`` Hz, stamped as a producer at ``true_rate`` (plus an optional
    extra lag(t) in s) would stamp it: push time of each chunk's last sample. Returns the pipeline and windows."""
    cmap = check_stream(contract, names, declared, units=["V"] * len(names))
    pipe = OnlinePipeline(contract, cmap, declared, SUBJECT)
    x = data.astype(np.float32).T
    t0 = 1000.0
    jobs, last = [], None
    for i in range(0, len(x), chunk):
        j = min(i + chunk, len(x))
        t_last = t0 + (j - 1) / true_rate + (lag(j / true_rate) if lag else 0.0)
        stamps = t_last - (np.arange(j - i)[::-1]) / declared  # liblsl deduces the others at the declared rate
        pipe.process_chunk(x[i:j], stamps, t_received=t_last + 0.002)
        for key, start in pipe.due_sliding(last):
            last = key
            jobs.append(pipe.make_job(start, "sliding"))
    return pipe, jobs


@pytest.mark.parametrize(("declared", "stops"), [(720.0, True), (618.0, False), (612.0, None)])
def test_declared_rate_mismatch_stops_or_flags_and_is_never_a_drop(declared, stops):
    # defect 5: 720 vs 600 (-17 %) stops decoding before the first window; 618 vs 600 (-2.9 %) is followed by the
    # clock model, so decoding goes on with every decision flagged once it is seen (within 10 s); 612 (-2 %) is
    # within tolerance
    data, names = make_recording(8, 600.0, 16.0, seed=4)
    window = WindowSpec()
    cont, times = preprocess_continuous(data, 600.0, window)
    raw_w, _ = extract_windows(cont, times, np.arange(1.0, 12.0, 0.5), window)
    contract = make_contract(names, 600.0, RobustScaler.fit(preprocess_window(raw_w, window)), 4, window)
    pipe, jobs = _rate_run(contract, names, data, declared, 600.0)
    ti = pipe.timestamp_issues
    assert ti["clock_jumps"] == 0 and pipe.dropped_samples == 0 and pipe.n_gaps == 0
    mm = ti["rate_mismatch"]
    if stops is None:
        assert mm is None and jobs and not any(f.startswith("rate_mismatch") for j in jobs for f in j.flags)
        return
    assert mm["declared"] == declared and mm["decoding_stopped"] is stops
    assert mm["measured"] == pytest.approx(600.0, rel=2e-3) and mm["detected_after_s"] <= 10.0
    if stops:
        assert jobs == []  # detected before the first window was complete: nothing decoded from stretched data
    else:
        flagged = [any(f.startswith("rate_mismatch:-2.9%") for f in j.flags) for j in jobs]
        assert flagged == sorted(flagged) and flagged[-1] and not flagged[0]  # every decision from detection on


def test_a_producer_that_falls_behind_and_catches_up_is_not_a_rate_mismatch():
    # push-time stamps of a producer starved for 4 s (lagging up to 0.2 s = 5 %), then catching up
    data, names = make_recording(8, 600.0, 16.0, seed=4)
    window = WindowSpec()
    contract = make_contract(names, 600.0, RobustScaler(np.zeros(8), np.ones(8) * 1e-5), 4, window)

    def lag(t):
        return 0.05 * min(max(t - 3.0, 0.0), 4.0) * (1.0 if t < 7.0 else max(0.0, 1 - (t - 7.0) / 0.5))

    pipe, jobs = _rate_run(contract, names, data, 600.0, 600.0, lag=lag)
    assert pipe.timestamp_issues["rate_mismatch"] is None and jobs


def test_units_setting_is_checked_and_offered_on_the_command_line():
    from click.testing import CliRunner
    from neurospeech.service._cli import serve
    from neurospeech.service.config import load_settings

    from neurospeech.errors import ConfigError

    assert load_settings(units="mag=fT,grad=fT/cm").units == "mag=fT,grad=fT/cm"
    for bad in ("furlong", "mag=", 6):
        with pytest.raises(ConfigError, match="units"):
            load_settings(units=bad)
    assert "--units" in CliRunner().invoke(serve, ["--help"]).output
