"""The simulator: BIDS output read back by mne-bids with events, units, determinism, splits, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import mne_bids
import numpy as np
import pytest
from _data_fixtures import make_tiny, tiny_settings
from neurospeech.tools.simulate._build import simulate_dataset

from neurospeech.cli import main
from neurospeech.data import load_dataset, split_of
from neurospeech.data.segments import build_segments
from neurospeech.errors import ConfigError
from neurospeech.speech import log_mel


@pytest.fixture(scope="module")
def meg_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("meg")
    make_tiny(root, n_subjects=2)
    return root


@pytest.fixture(scope="module")
def eeg_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eeg")
    make_tiny(root, sensors="biosemi32", minutes=0.3, line_noise=0.2)
    return root


def test_meg_dataset_reads_back_with_mne_bids_and_events(meg_root):
    recs = load_dataset(meg_root)
    assert sorted({r.subject for r in recs}) == ["01", "02"] and all(r.datatype == "meg" for r in recs)
    assert recs[0].bids_path.fpath.suffix == ".fif"
    raw = mne_bids.read_raw_bids(recs[0].bids_path, verbose="error")
    ev = recs[0].load_events()
    assert len(raw.annotations) == len(ev)
    assert set(raw.annotations.description) == {"sound", "word"}
    np.testing.assert_allclose(raw.annotations.onset, ev.onset, atol=0.5 / raw.info["sfreq"])
    words = ev.words()
    assert len(words) > 20
    # every word lies inside its sound, at its sound_time
    sounds = ev.sounds()
    for k in range(len(words)):
        s = np.flatnonzero(sounds.sound == words.sound[k])[0]
        assert abs(sounds.onset[s] + words.sound_time[k] - words.onset[k]) < 0.5 / raw.info["sfreq"] + 1e-9
        assert (meg_root / words.sound[k]).is_file()
    assert len(raw.info["bads"]) == 1


def test_meg_units_are_tesla(meg_root):
    raw = load_dataset(meg_root)[0].load_raw()
    assert set(raw.get_channel_types()) == {"mag"}
    good = [c for c in raw.ch_names if c not in raw.info["bads"]]
    std = raw.get_data(picks=good).std(axis=1)
    assert 1e-13 < np.median(std) < 1e-11
    assert np.max(std) < 1e-11


def test_eeg_dataset_is_brainvision_in_volts(eeg_root):
    rec = load_dataset(eeg_root)[0]
    assert rec.datatype == "eeg" and rec.bids_path.fpath.suffix == ".vhdr"
    raw = rec.load_raw()
    assert set(raw.get_channel_types()) == {"eeg"} and len(raw.ch_names) == 32
    good = [c for c in raw.ch_names if c not in raw.info["bads"]]
    std = raw.get_data(picks=good).std(axis=1)
    assert 1e-6 < np.median(std) < 1e-4
    assert raw.get_montage() is not None
    assert len(rec.load_events().words()) > 10


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    kw = dict(minutes=0.2, n_noise_dipoles=20)
    make_tiny(a, **kw)
    make_tiny(b, **kw)
    make_tiny(c, seed=8, **kw)
    ra, rb, rc = (load_dataset(p)[0] for p in (a, b, c))
    da, db = ra.load_raw().get_data(), rb.load_raw().get_data()
    assert da.tobytes() == db.tobytes()
    assert ra.events_path.read_bytes() == rb.events_path.read_bytes()
    for wav in sorted((a / "stimuli").glob("*.wav")):
        assert wav.read_bytes() == (b / "stimuli" / wav.name).read_bytes()
    dc = rc.load_raw().get_data()
    assert dc.shape != da.shape or not np.array_equal(dc, da)


def test_held_out_sentences_are_never_in_training(meg_root):
    rows = [ln.split("\t") for ln in (meg_root / "stimuli" / "stimuli.tsv").read_text().splitlines()[1:]]
    texts = [r[4] for r in rows]
    assert len(set(texts)) == len(texts)  # every sentence is a distinct wav
    for sound, _, split, _, _ in rows:
        assert split == split_of(sound)
    summary = json.loads((meg_root / "simulation.json").read_text())
    assert summary["n_sounds"] == len(rows)
    assert summary["speech_engine"] == "numpy"
    # every run holds the sounds of one split only: held-out runs share no sentence with training runs
    run_split = {(s["subject"], r["run"]): r["split"] for s in summary["subjects"] for r in s["runs"]}
    seen_splits = set()
    for rec in load_dataset(meg_root):
        splits = {split_of(x) for x in rec.load_events().sounds().sound}
        assert splits == {run_split[(rec.subject, rec.run)]}
        seen_splits |= splits
    assert {"train", "test"} <= seen_splits


def test_segments_from_the_simulated_dataset(meg_root):
    recs = load_dataset(meg_root)
    root = meg_root

    def feats(sound):
        from neurospeech.data import read_wav

        return log_mel(*read_wav(root / sound))

    seg, scalers = build_segments(recs, feats, progress=False)
    n = len(seg)
    assert seg.brain.shape == (n, 151, 343) and seg.brain.dtype == np.float32
    assert seg.speech.shape == (n, 120, 343) and seg.speech.dtype == np.float32
    assert set(scalers) == {"01", "02"} and np.abs(seg.brain).max() <= 20.0
    assert set(seg.subject) == {"01", "02"}
    assert len(seg.channels) == 151 and seg.channels[0].unit == "T"
    # speech windows are standardised and zero outside the wav
    assert abs(float(seg.speech[seg.speech != 0].mean())) < 0.5
    test, _ = build_segments(recs, feats, split="test", scalers=scalers, progress=False)
    assert all(split_of(s) == "test" for s in test.sound)
    assert set(test.segment_id) <= set(seg.segment_id)
    reg, _ = build_segments(recs[:1], feats, anchors="regular", step=0.5, scalers=scalers, progress=False)
    assert len(reg) > len(build_segments(recs[:1], feats, scalers=scalers, progress=False)[0]) * 0.5
    # same subject -> same scaler whatever the call
    with pytest.raises(Exception, match="no robust scaler"):
        build_segments(recs, feats, scalers={"01": scalers["01"]}, progress=False)


def test_settings_and_output_errors(tmp_path):
    with pytest.raises(ConfigError):
        tiny_settings(sensors="nope")
    with pytest.raises(ConfigError):
        tiny_settings(sfreq=10.0)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        simulate_dataset(tmp_path / "x", tiny_settings())
    with pytest.raises(ConfigError, match="refusing"):
        simulate_dataset(tmp_path / "x", tiny_settings(), overwrite=True)
    assert (tmp_path / "x" / "file.txt").read_text() == "keep me"


def _run_cli(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


def test_cli_simulate_and_exit_codes(tmp_path, capsys):
    out = tmp_path / "ds"
    assert _run_cli(["simulate", str(out), "--preset", "ci", "--minutes", "0.2", "--subjects", "1",
                     "--seed", "3"]) == 0
    assert "wrote" in capsys.readouterr().out and (out / "simulation.json").is_file()
    assert _run_cli(["simulate", str(out), "--preset", "ci"]) == 2  # not empty: ConfigError
    assert "not empty" in capsys.readouterr().err
    assert _run_cli(["simulate", str(tmp_path / "y"), "--sensors", "bogus"]) == 2
    assert _run_cli(["simulate", "--help"]) == 0


def test_calibration_and_data_check_run_on_a_small_dataset(meg_root, tmp_path):
    from neurospeech.models.calibrate import run_calibration
    from neurospeech.tools.simulate._checks import run_checks
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        res = run_calibration(meg_root, max_train=400, feature_cache=tmp_path / "cache", n_boot=100,
                              chance_draws=20, decoder={"n_components": 16})
    n_test_words = sum(len(r.load_events().words().select(
        np.array([split_of(s) == "test" for s in r.load_events().words().sound], dtype=bool)))
        for r in load_dataset(meg_root))
    assert res["n_queries"] == n_test_words and 0 < res["n_candidates"] <= n_test_words
    assert res["chance_top1"] == pytest.approx(1 / res["n_candidates"])
    assert res["top1"] > 2 * res["chance_top1"]  # SNR 0 dB: the brain carries the speech
    assert res["top1_ci"][0] <= res["top1"] <= res["top1_ci"][1]
    assert set(res["per_subject"]) == {"01", "02"}
    assert not any(meg_root.rglob("*.npy"))  # the feature cache stays out of the dataset
    chk = run_checks(meg_root, tmp_path / "plots")
    assert -2.5 < chk["psd_slope_2_40hz"] < -0.5
    assert 8.5 < chk["alpha_peak_hz"] < 12.5
    assert chk["evoked_peak_gfp_over_baseline"] > 2
    assert all(Path(p).is_file() and Path(p).stat().st_size > 1000 for p in chk["plots"])


def test_neuromag_units_per_channel_type(tmp_path):
    import mne

    make_tiny(tmp_path / "nm", sensors="neuromag306", minutes=0.15, n_noise_dipoles=20)
    raw = load_dataset(tmp_path / "nm")[0].load_raw()
    assert set(raw.get_channel_types()) == {"mag", "grad"}
    for kind, lo, hi in (("mag", 1e-13, 1e-11), ("grad", 1e-12, 1e-10)):  # T and T/m (10-1000 fT/cm)
        picks = mne.pick_types(raw.info, meg=kind, exclude="bads")
        assert lo < np.median(raw.get_data(picks=picks).std(axis=1)) < hi


def test_festival_phones_map_onto_the_articulatory_inventory():
    from neurospeech.tools.simulate._lexicon import PHONES
    from neurospeech.tools.simulate._tts import FESTIVAL_TO_PHONE

    assert set(FESTIVAL_TO_PHONE.values()) <= set(PHONES)
    assert len(FESTIVAL_TO_PHONE) >= 39  # the radio/CMU phone set without pauses
