"""Replay into real LSL outlets, read back with real inlets: data, honest monotonic stamps, pace, metadata,
word markers; BIDS (mne-bids), FIF, EDF (mne) and XDF (pyxdf) sources."""

from __future__ import annotations

import json
import uuid

import mne
import numpy as np
import pylsl
import pytest
from _xdf import write_xdf
from click.testing import CliRunner
from neurospeech.tools._rt_cli import replay as replay_cmd
from neurospeech.tools.replay import Replayer, ReplaySettings, load_source

from neurospeech.data import events_from_rows, segment_id, write_events_tsv, write_run
from neurospeech.errors import ConfigError, DataFormatError

WORDS = [  # onset (s), word, sound, sound_time
    (0.40, "alpha", "stimuli/s0001.wav", 0.10),
    (1.05, "bravo", "stimuli/s0001.wav", 0.75),
    (1.90, "charlie", "stimuli/s0002.wav", 0.25),
]


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _raw(sfreq: float = 250.0, seconds: float = 2.4, n_ch: int = 5) -> mne.io.RawArray:
    rng = np.random.default_rng(0)
    n = round(sfreq * seconds)
    # volts, plus a ramp that makes the order of samples visible
    data = rng.standard_normal((n_ch, n)) * 1e-5 + np.arange(n)[None, :] * 1e-9
    info = mne.create_info([f"EEG{k:02d}" for k in range(n_ch)], sfreq, "eeg")
    return mne.io.RawArray(data, info, verbose="error")


def _events():
    rows = [{"onset": 0.3, "duration": 2.0, "kind": "sound", "sound": "stimuli/s0001.wav", "sound_time": 0.0}]
    rows += [{"onset": o, "duration": 0.3, "kind": "word", "word": w, "sound": s, "sound_time": st,
              "sentence": "sent1"} for o, w, s, st in WORDS]
    return events_from_rows(rows)


class _Reader:
    """Inlets on the data and marker streams of a replayer, opened before data flow."""

    def __init__(self, name: str, markers: bool = True) -> None:
        infos = pylsl.resolve_byprop("name", name, 1, 10.0)
        assert infos, f"stream {name} not found"
        self.inlet = pylsl.StreamInlet(infos[0], max_buflen=30, processing_flags=0)
        self.info = self.inlet.info(5.0)
        self.inlet.open_stream(5.0)
        self.marker = None
        if markers:
            m = pylsl.resolve_byprop("name", name + "-markers", 1, 10.0)
            assert m, "marker stream not found"
            self.marker = pylsl.StreamInlet(m[0], processing_flags=0)
            self.marker.open_stream(5.0)
        self.data: list[np.ndarray] = []
        self.stamps: list[np.ndarray] = []
        self.receipt: list[np.ndarray] = []
        self.markers: list[tuple[float, dict]] = []

    def collect(self, n_samples: int, timeout: float = 20.0, n_markers: int = 0) -> None:
        deadline = pylsl.local_clock() + timeout
        while (sum(len(d) for d in self.data) < n_samples or len(self.markers) < n_markers):
            assert pylsl.local_clock() < deadline, "replay did not deliver in time"
            x, ts = self.inlet.pull_chunk(timeout=0.05)
            if ts:
                now = pylsl.local_clock()
                self.data.append(np.asarray(x, dtype=np.float32))
                self.stamps.append(np.asarray(ts))
                self.receipt.append(np.full(len(ts), now))
            if self.marker is not None:
                s, t = self.marker.pull_chunk(timeout=0.0)
                self.markers += [(tt, json.loads(v[0])) for v, tt in zip(s, t, strict=True)]

    def arrays(self):
        return np.concatenate(self.data), np.concatenate(self.stamps), np.concatenate(self.receipt)

    def labels(self):
        ch = self.info.desc().child("channels").child("channel")
        out = []
        while not ch.empty():
            out.append((ch.child_value("label"), ch.child_value("type"), ch.child_value("unit")))
            ch = ch.next_sibling()
        return out


def _check_stamps(stamps, receipt):
    assert np.all(np.diff(stamps) > 0), "timestamps must increase strictly"
    assert np.all(stamps <= receipt + 1e-9), "a sample was stamped in the future"


def test_bids_run_real_time_with_metadata_and_markers(tmp_path):
    raw = _raw()
    write_run(tmp_path, raw, _events(), subject="01", task="listen", run="01")
    src = load_source(tmp_path, subject="01", task="listen")
    assert [m.payload["word"] for m in src.markers] == ["alpha", "bravo", "charlie"]
    name = _unique("replay-bids")
    rep = Replayer(src, ReplaySettings(name=name, chunk_s=0.02))
    try:
        rd = _Reader(name)
        assert rd.info.source_id() == f"neurospeech-replay-{name}" and rd.info.type() == "EEG"
        assert rd.labels() == [(f"EEG{k:02d}", "eeg", "V") for k in range(5)]
        t0 = pylsl.local_clock()
        rep.start()
        rd.collect(src.data.shape[0], n_markers=3)
        wall = pylsl.local_clock() - t0
        stats = rep.join(5)
    finally:
        rep.close()
    x, stamps, receipt = rd.arrays()
    np.testing.assert_array_equal(x, src.data)  # every sample, in order, unchanged
    np.testing.assert_allclose(x.T, raw.get_data(), rtol=1e-6, atol=1e-12)
    _check_stamps(stamps, receipt)
    dur = src.data.shape[0] / 250.0
    # real-time pace: never faster than the data (a loaded machine may only make it slower; the pace itself is
    # a benchmark matter)
    assert stamps[-1] - stamps[0] + 1 / 250 > 0.85 * dur and wall > 0.85 * dur
    assert np.median(np.diff(stamps)) == pytest.approx(1 / 250, rel=0.05)
    # markers: ids from the shared segment_id, stamp = the stamp of the word-onset sample
    assert [m[1]["segment_id"] for m in rd.markers] == [segment_id(s, st) for _, _, s, st in WORDS]
    assert [m[1]["word"] for m in rd.markers] == ["alpha", "bravo", "charlie"]
    assert rd.markers[0][1] == {"segment_id": segment_id(*WORDS[0][2:]), "word": "alpha",
                                "sound": "stimuli/s0001.wav", "sound_time": 0.1, "sentence": "sent1"}
    for (t_mark, _), (onset, *_rest) in zip(rd.markers, WORDS, strict=True):
        assert t_mark == pytest.approx(stamps[round(onset * 250)], abs=1e-9)
    assert stats.markers_pushed == 3 and stats.samples_pushed == src.data.shape[0]


def test_fif_faster_than_real_time_display_units_and_events_sibling(tmp_path):
    raw = _raw(sfreq=500.0, seconds=4.0, n_ch=3)
    fif = tmp_path / "sub-02_task-listen_run-01_eeg.fif"
    raw.save(fif, verbose="error")
    write_events_tsv(tmp_path / "sub-02_task-listen_run-01_events.tsv", _events())
    src = load_source(fif)
    assert len(src.markers) == 3 and src.name == "sub-02_task-listen_run-01_eeg"
    name = _unique("replay-fif")
    rep = Replayer(src, ReplaySettings(name=name, speed=4.0, units="display", source_id="my-source"))
    try:
        rd = _Reader(name)
        assert rd.info.source_id() == "my-source"
        assert {u for _, _, u in rd.labels()} == {"uV"}
        t0 = pylsl.local_clock()
        rep.start()
        rd.collect(src.data.shape[0], n_markers=3)
        wall = pylsl.local_clock() - t0
    finally:
        rep.close()
    assert wall > 0.8  # 4 s of data at speed 4: not faster
    x, stamps, receipt = rd.arrays()
    np.testing.assert_allclose(x, src.data * 1e6, rtol=1e-6)
    _check_stamps(stamps, receipt)
    assert stamps[-1] - stamps[0] > 0.8  # 4 s of data in no less than ~1 s at speed 4
    for t_mark, payload in rd.markers:
        k = {w: o for o, w, _, _ in WORDS}[payload["word"]]
        assert t_mark == pytest.approx(stamps[round(k * 500)], abs=1e-9)


def test_xdf_replay_with_markers(tmp_path):
    n, sf = 600, 200.0
    rng = np.random.default_rng(1)
    data = rng.standard_normal((n, 4)).astype(np.float32)
    ts = 5000.0 + np.arange(n) / sf
    payloads = [{"segment_id": segment_id(s, st), "word": w, "sound": s, "sound_time": st, "sentence": "x"}
                for _, w, s, st in WORDS]
    chans = [{"label": f"MEG{k}", "type": "mag", "unit": "fT"} for k in range(4)]
    path = tmp_path / "rec.xdf"
    write_xdf(path, [
        {"name": "amp", "type": "MEG", "srate": sf, "format": "float32", "source_id": "amp1",
         "channels": chans, "stamps": ts, "data": data},
        {"name": "amp-markers", "type": "Markers", "srate": 0, "format": "string", "source_id": "amp1-m",
         "stamps": [ts[round(o * sf)] for o, *_ in WORDS], "data": [json.dumps(p) for p in payloads]},
    ])
    src = load_source(path)
    assert src.labels == [f"MEG{k}" for k in range(4)] and src.units == ["fT"] * 4 and src.sfreq == sf
    assert [m.sample for m in src.markers] == [round(o * sf) for o, *_ in WORDS]
    name = _unique("replay-xdf")
    rep = Replayer(src, ReplaySettings(name=name, speed=6.0))
    try:
        rd = _Reader(name)
        assert rd.labels() == [(f"MEG{k}", "mag", "fT") for k in range(4)] and rd.info.type() == "MEG"
        rep.start()
        rd.collect(n, n_markers=3)
    finally:
        rep.close()
    x, stamps, receipt = rd.arrays()
    np.testing.assert_array_equal(x, data)
    _check_stamps(stamps, receipt)
    assert [m[1] for m in rd.markers] == payloads
    for (t_mark, _), (o, *_r) in zip(rd.markers, WORDS, strict=True):
        assert t_mark == pytest.approx(stamps[round(o * sf)], abs=1e-9)


def test_edf_loop_keeps_stamps_monotonic(tmp_path):
    raw = _raw(sfreq=256.0, seconds=1.0, n_ch=2)
    edf = tmp_path / "rec.edf"
    mne.export.export_raw(edf, raw, fmt="edf", verbose="error")
    src = load_source(edf)
    assert src.data.shape == (256, 2) and src.markers == []
    np.testing.assert_allclose(src.data.T, raw.get_data(), atol=2e-7)  # EDF stores 16-bit values
    name = _unique("replay-edf")
    rep = Replayer(src, ReplaySettings(name=name, speed=4.0, loop=True, markers=False))
    try:
        rd = _Reader(name, markers=False)
        rep.start()
        rd.collect(3 * 256)  # three passes over a 1 s file
        rep.stop()
        stats = rep.join(5)
    finally:
        rep.close()
    x, stamps, receipt = rd.arrays()
    _check_stamps(stamps, receipt)
    np.testing.assert_array_equal(x[256:512], src.data)
    assert stats.loops >= 2


def test_cli_replays_a_file_and_refuses_bad_values(tmp_path):
    raw = _raw(sfreq=200.0, seconds=1.0, n_ch=2)
    fif = tmp_path / "short_raw.fif"
    raw.save(fif, verbose="error")
    res = CliRunner().invoke(replay_cmd, [str(fif), "--name", _unique("replay-cli"), "--speed", "10"])
    assert res.exit_code == 0, res.output
    stats = json.loads(res.stdout.strip().splitlines()[-1])
    assert stats["samples_pushed"] == 200 and stats["markers_pushed"] == 0
    with pytest.raises(ConfigError, match="speed"):
        ReplaySettings(speed=0)
    with pytest.raises(ConfigError, match="beyond"):
        Replayer(load_source(fif), ReplaySettings(start_s=5.0, name=_unique("x")))
    bad = tmp_path / "data.txt"
    bad.write_text("x")
    with pytest.raises(DataFormatError, match="cannot replay"):
        load_source(bad)
    with pytest.raises(DataFormatError, match="no run"):
        write_run(tmp_path / "bids", _raw(), _events(), subject="01", task="listen")
        load_source(tmp_path / "bids", subject="01", task="listen", run="07")
