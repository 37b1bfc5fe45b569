"""Readers of the public corpora (neurospeech.data.formats) on fixtures in each corpus's own layout, the KIT and
CTF readers also on real system recordings (tests/data/real-formats), and `neurospeech train` one epoch on each.
"""

from __future__ import annotations

import json
from pathlib import Path

import mne
import numpy as np
import pytest
from _reader_fixtures import (
    CTF_DS,
    KIT_DIR,
    make_brennan,
    make_broderick,
    make_libribrain,
    make_meg_masc,
    make_mous,
    write_textgrid,
)

from neurospeech.cli import main
from neurospeech.data import load_dataset, read_wav, segment_id
from neurospeech.data.formats import FORMAT_NAMES, detect_format, read_corpus
from neurospeech.errors import ConfigError, DataFormatError

TINY = '{"n_virtual": 16, "hidden": 32, "head_hidden": 32, "fourier_harmonics": 4}'


def _exit_code(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return int(exc.value.code or 0)


def _train_one_epoch(data: Path, fmt: str, out: Path) -> dict:
    code = _exit_code(["-q", "train", "--data", str(data), "--format", fmt, "--out", str(out), "--epochs", "1",
                       "--batch-size", "8", "--set", f"encoder={TINY}", "--set", "progress=false",
                       "--set", "threads=2", "--set", "batches_per_epoch=2", "--set", "score_dim=8",
                       "--set", f"feature_cache={out.parent / 'features'}"])
    assert code == 0, f"train --format {fmt} exited with {code}"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["training"]["epochs_run"] == 1 and len(meta["history"]) == 1
    assert np.isfinite(meta["history"][0]["train_loss"])
    assert meta["config"]["data_format"] == fmt
    return meta


# ------------------------------------------------------------------------------------------ registry
def test_unknown_folder_names_the_known_layouts(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(DataFormatError) as err:
        detect_format(tmp_path)
    msg = str(err.value)
    for name in FORMAT_NAMES:
        assert f"  {name}:" in msg
    assert "_meg.con" in msg  # says what it looked for


@pytest.mark.torch  # the train command needs the train extra; the detection above does not
def test_train_exit_codes_for_an_unknown_folder_and_format_name(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    assert _exit_code(["-q", "train", "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 3
    (tmp_path / "sub-01").mkdir()
    assert _exit_code(["-q", "train", "--data", str(tmp_path), "--format", "masc", "--out", str(tmp_path / "r")]) == 2


def test_named_format_that_does_not_fit_and_unknown_name(tmp_path):
    (tmp_path / "sub-01").mkdir()
    with pytest.raises(DataFormatError, match="not a MEG-MASC"):
        read_corpus(tmp_path, "meg-masc")
    with pytest.raises(ConfigError, match="unknown dataset format 'masc'"):
        read_corpus(tmp_path, "masc")
    assert read_corpus(tmp_path, "bids") is None


# ------------------------------------------------------------------------------------------ MEG-MASC
@pytest.fixture(scope="module")
def meg_masc(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("masc") / "bids_anonym"
    return root, make_meg_masc(root)


def test_meg_masc_layout_is_detected_and_read(meg_masc):
    root, info = meg_masc
    assert detect_format(root) == "meg-masc"
    recs = load_dataset(root)
    assert [(r.subject, r.session, r.task, r.run) for r in recs] == [("01", "0", "0", None)]
    rec = recs[0]
    assert rec.name == "sub-01_ses-0_task-0" and rec.events_path.name == "sub-01_ses-0_task-0_events.tsv"
    raw = rec.load_raw()
    assert set(raw.get_channel_types()) == {"mag"} and raw.info["sfreq"] == 1000.0
    assert raw.info["bads"] == [info["bad"]]  # from _channels.tsv
    assert abs(raw.times[-1] + 1 / 1000 - info["seconds"]) < 1e-6
    # tesla: noise of a few hundred ADC counts times the KIT calibration (~1e-12 T)
    assert 1e-14 < float(np.median(raw.get_data().std(axis=1))) < 1e-10


def test_meg_masc_fastscan_pos_gives_the_head_position_of_the_original_digitisation(meg_masc):
    root, _ = meg_masc
    raw = load_dataset(root)[0].load_raw()
    ref = mne.io.read_raw_kit(KIT_DIR / "MQKIT_125_2sec.con", mrk=KIT_DIR / "MQKIT_125.mrk",
                              elp=KIT_DIR / "MQKIT_125.elp", hsp=KIT_DIR / "MQKIT_125.hsp", verbose="error")
    np.testing.assert_allclose(raw.info["dev_head_t"]["trans"], ref.info["dev_head_t"]["trans"], atol=1e-6)
    assert not np.allclose(raw.info["dev_head_t"]["trans"], np.eye(4))
    n_hsp = sum(1 for d in raw.info["dig"] if d["kind"] == mne.io.constants.FIFF.FIFFV_POINT_EXTRA)
    assert n_hsp > 1000  # the head shape went in (points in mm converted to m, or coreg would fail)


def test_meg_masc_events_parse_the_dict_like_trial_type(meg_masc):
    root, info = meg_masc
    ev = load_dataset(root)[0].load_events()
    words, sounds = ev.words(), ev.sounds()
    assert len(words) == info["n_words"] and "phoneme" in set(ev.kind.tolist())
    assert sorted(set(sounds.sound.tolist())) == info["sounds"]
    for s in sounds.sound:
        wav, sr = read_wav(root / s)
        assert abs(float(sounds.duration[sounds.sound == s][0]) - len(wav) / sr) < 1e-3
    # a word's onset minus its time in the wav is the onset of that wav's sound row
    for k in range(len(words)):
        t0 = float(sounds.onset[sounds.sound == words.sound[k]][0])
        assert abs(words.onset[k] - words.sound_time[k] - t0) < 2e-3
    assert words.word[0] in {"alice", "was", "beginning", "to", "get", "very", "tired", "of", "sitting", "by",
                             "her", "sister", "on", "the", "bank", "and", "having", "nothing", "do"}


def test_meg_masc_sound_paths_are_matched_case_insensitively(tmp_path):
    root = tmp_path / "masc"
    make_meg_masc(root, n_sounds=3)
    ev_path = next(root.glob("sub-01/ses-0/meg/*_events.tsv"))
    ev_path.write_text(ev_path.read_text().replace("'stimuli/audio/", "'Stimuli/Audio/"))
    ev = load_dataset(root)[0].load_events()
    assert all(s.startswith("stimuli/audio/lw1_") for s in ev.sound.tolist() if s)


def test_kit_real_recording_without_sidecars_is_read_in_the_device_frame(tmp_path):
    meg = tmp_path / "sub-02" / "ses-1" / "meg"
    meg.mkdir(parents=True)
    (meg / "sub-02_ses-1_task-3_meg.con").write_bytes((KIT_DIR / "test_as-raw.con").read_bytes())
    (meg / "sub-02_ses-1_task-3_events.tsv").write_text("onset\tduration\ttrial_type\n")
    rec = load_dataset(tmp_path, fmt="meg-masc")[0]
    raw = rec.load_raw()
    ref = mne.io.read_raw_kit(KIT_DIR / "test_as-raw.con", verbose="error")
    picks = mne.pick_types(ref.info, meg=True, ref_meg=False, exclude=[])
    assert raw.ch_names == [ref.ch_names[i] for i in picks]
    np.testing.assert_array_equal(raw.get_data(), ref.get_data(picks=picks))
    lazy = rec.load_raw(preload=False)  # what the cache reads block by block
    assert not lazy.preload and lazy.ch_names == raw.ch_names
    np.testing.assert_array_equal(lazy.get_data(start=100, stop=900), raw.get_data(start=100, stop=900))
    assert len(rec.load_events()) == 0


def test_meg_masc_bad_digitisation_is_a_clear_error(tmp_path):
    root = tmp_path / "masc"
    make_meg_masc(root, n_sounds=3)
    pos = next(root.glob("sub-01/ses-0/meg/*_acq-ELP_headshape.pos"))
    pos.write_text("% Polhemus FastSCAN\n1.0 2.0 3.0\n")
    with pytest.raises(DataFormatError, match="has 1 points; a KIT ELP file holds 8"):
        load_dataset(root)[0].load_raw()
    pos.write_text("% Polhemus FastSCAN\n1.0 two 3.0\n")
    with pytest.raises(DataFormatError, match="is not 'x y z'"):
        load_dataset(root)[0].load_raw()


@pytest.mark.torch
def test_train_one_epoch_on_meg_masc(meg_masc, tmp_path):
    root, _ = meg_masc
    meta = _train_one_epoch(root, "meg-masc", tmp_path / "run")
    assert meta["subjects"] == ["01"] and len(meta["channels"]) == 125


# ------------------------------------------------------------------------------------------------ MOUS
@pytest.fixture(scope="module")
def mous(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("mous") / "DSC_3011020.09_236_v1"
    return root, make_mous(root)


def test_mous_layout_is_detected_and_read(mous):
    root, info = mous
    assert detect_format(root) == "mous"
    recs = load_dataset(root)  # the auditory task only: the visual subject has no audio
    assert [(r.subject, r.task, r.session, r.run) for r in recs] == [("A2002", "auditory", None, None)]
    raw = recs[0].load_raw()
    assert set(raw.get_channel_types()) == {"mag"} and raw.info["sfreq"] == info["sfreq"]
    assert info["bad"] in raw.info["bads"]  # from _channels.tsv (the .ds BadChannels file adds its own)
    assert raw.times[-1] >= info["seconds"] - 1 / info["sfreq"]
    assert 1e-14 < float(np.median(raw.get_data().std(axis=1))) < 1e-11


def test_mous_events_sounds_from_start_file_rows_and_words_from_textgrids(mous):
    root, info = mous
    ev = load_dataset(root)[0].load_events()
    sounds, words = ev.sounds(), ev.words()
    assert sounds.sound.tolist() == info["sounds"]
    assert sounds.sentence.tolist() == [str(i) for i in info["ids"]]
    np.testing.assert_allclose(sounds.duration, 3.0, atol=1e-3)  # the wav's length, not the End-of-file row
    assert len(words) == info["n_words"] and "" not in words.word.tolist() and "sil" not in words.word.tolist()
    for k in range(len(words)):
        t0 = float(sounds.onset[sounds.sound == words.sound[k]][0])
        assert abs(words.onset[k] - t0 - words.sound_time[k]) < 1e-6
    text = (root / "stimuli" / "stimuli.txt").read_text().splitlines()[0].split()[1:]
    assert words.word[words.sound == info["sounds"][0]].tolist() == text


def test_mous_without_alignment_trains_on_sounds_only(tmp_path):
    root = tmp_path / "mous"
    info = make_mous(root, n_sounds=3)
    for tg in (root / "derivatives" / "phonemes").iterdir():
        tg.unlink()
    ev = load_dataset(root)[0].load_events()
    assert len(ev.words()) == 0 and len(ev.sounds()) == len(info["ids"])


def test_ctf_real_dataset_in_the_mous_layout(tmp_path):
    meg = tmp_path / "sub-A2011" / "meg"
    ds = meg / "sub-A2011_task-auditory_meg.ds"
    ds.mkdir(parents=True)
    for f in CTF_DS.iterdir():
        (ds / f.name.replace("somMDYO-18av", "sub-A2011_task-auditory_meg")).write_bytes(f.read_bytes())
    (meg / "sub-A2011_task-auditory_events.tsv").write_text(
        "onset\tduration\tsample\ttype\tvalue\n0.1\tn/a\t125\tUPPT001\t5\n")
    rec = load_dataset(tmp_path, fmt="mous")[0]
    raw = rec.load_raw()
    ref = mne.io.read_raw_ctf(CTF_DS, verbose="error")
    picks = mne.pick_types(ref.info, meg=True, ref_meg=False, exclude=[])
    assert raw.ch_names == [ref.ch_names[i] for i in picks]
    np.testing.assert_array_equal(raw.get_data(), ref.get_data(picks=picks))
    assert set(ref.info["bads"]) <= set(raw.info["bads"])
    lazy = rec.load_raw(preload=False)  # what the cache reads block by block
    assert not lazy.preload and lazy.ch_names == raw.ch_names and lazy.info["bads"] == raw.info["bads"]
    np.testing.assert_array_equal(lazy.get_data(start=100, stop=900), raw.get_data(start=100, stop=900))
    assert len(rec.load_events()) == 0  # trigger rows are not speech


@pytest.mark.torch
def test_train_one_epoch_on_mous(mous, tmp_path):
    root, _ = mous
    meta = _train_one_epoch(root, "mous", tmp_path / "run")
    assert meta["subjects"] == ["A2002"] and len(meta["channels"]) == 151


# ------------------------------------------------------------------------------------------- Broderick
@pytest.fixture(scope="module")
def broderick(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("broderick") / "Natural Speech"
    return root, make_broderick(root, n_subjects=2)


def test_broderick_layout_is_detected_and_read(broderick):
    from scipy.io import loadmat

    root, info = broderick
    assert detect_format(root) == "broderick"
    recs = load_dataset(root)
    assert [(r.subject, r.run) for r in recs] == [(s, f"{r:02d}") for s in ("01", "02") for r in info["runs"]]
    assert load_dataset(root, subjects=["02"])[0].subject == "02"
    rec = recs[0]
    raw = rec.load_raw()
    assert raw.ch_names[:2] == ["A1", "A2"] and len(raw.ch_names) == 128 and raw.info["sfreq"] == 128
    m = loadmat(rec.source)
    expect = (m["eegData"] - m["mastoids"].mean(axis=1, keepdims=True)).T * 1e-6  # uV, mastoid reference
    np.testing.assert_allclose(raw.get_data(), expect, rtol=1e-12, atol=1e-15)
    assert raw.info["chs"][0]["loc"][:3].any()  # BioSemi 128 positions


def test_broderick_words_and_the_run_audio(broderick):
    root, info = broderick
    rec = load_dataset(root)[0]
    ev = rec.load_events()
    run = info["runs"][0]
    words = info["words"][run]
    assert ev.words().word.tolist() == [w for _, _, w in words]
    np.testing.assert_allclose(ev.words().onset, [a for a, _, _ in words])
    np.testing.assert_allclose(ev.words().sound_time, ev.words().onset)  # the run starts with its audio
    assert ev.sounds().sound.tolist() == [f"Stimuli/Audio/audio{run}.wav"]
    np.testing.assert_allclose(ev.sounds().duration, 3.0, atol=1e-3)


def test_broderick_bad_mat_is_a_clear_error(tmp_path):
    from scipy.io import savemat

    root = tmp_path / "ns"
    make_broderick(root, n_runs=3)
    mat = next(root.glob("EEG/Subject1/*.mat"))
    savemat(mat, {"eegData": np.zeros((100, 64)), "mastoids": np.zeros((100, 2)), "fs": 128})
    with pytest.raises(DataFormatError, match=r"eegData has shape \(100, 64\); expected \(samples, 128\)"):
        next(r for r in load_dataset(root) if r.source == mat).load_raw()
    savemat(mat, {"eeg": np.zeros((100, 128))})
    with pytest.raises(DataFormatError, match="no variable 'eegData'"):
        next(r for r in load_dataset(root) if r.source == mat).load_raw()


# --------------------------------------------------------------------------------------------- Brennan
@pytest.fixture(scope="module")
def brennan(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("brennan") / "alice"
    return root, make_brennan(root)


def test_brennan_layout_is_detected_and_read(brennan):
    root, info = brennan
    assert detect_format(root) == "brennan"
    recs = load_dataset(root)
    assert [(r.subject, r.task) for r in recs] == [("S01", "alice")]
    raw = recs[0].load_raw()
    assert len(raw.ch_names) == 61 and set(raw.get_channel_types()) == {"eeg"}  # VEOG, Aux5 dropped
    assert raw.info["sfreq"] == info["fs"] and sorted(raw.info["bads"]) == info["bads"]
    assert raw.info["chs"][0]["loc"][:3].any()  # easycap-M10 positions


def test_brennan_word_onsets_from_trl_line_up_with_the_csv(brennan):
    root, info = brennan
    ev = load_dataset(root)[0].load_events()
    words, sounds = ev.words(), ev.sounds()
    assert len(words) == info["n_words"]
    for seg, start in info["starts"].items():
        row = sounds.sound == f"audio/DownTheRabbitHoleFinal_SoundFile{seg}.wav"
        assert abs(float(sounds.onset[row][0]) - start) < 1.5 / info["fs"]
    np.testing.assert_allclose(sounds.duration, 3.0, atol=1e-3)


def test_brennan_mismatched_trl_is_refused(tmp_path):
    from scipy.io import loadmat, savemat

    root = tmp_path / "alice"
    make_brennan(root, segments=(1, 2))
    p = root / "timelock-preprocessing" / "S01.mat"
    proc = loadmat(p, simplify_cells=True)["proc"]
    proc["trl"] = proc["trl"][:-1]
    savemat(p, {"proc": proc})
    with pytest.raises(DataFormatError, match=r"trl has .* rows but AliceChapterOne-EEG\.csv has"):
        load_dataset(root)[0].load_events()
    trl = loadmat(p, simplify_cells=True)["proc"]["trl"]
    proc["trl"] = np.vstack([trl, trl[-1:]])
    proc["trl"][3, 0] += 200  # one word moved by 0.4 s: the words of a wav no longer share one start
    savemat(p, {"proc": proc})
    with pytest.raises(DataFormatError, match="do not line up"):
        load_dataset(root)[0].load_events()
    p.unlink()
    with pytest.raises(DataFormatError, match=r"timelock-preprocessing/S01\.mat or proc/S01\.mat"):
        load_dataset(root)[0].load_events()


def test_brennan_v1_fieldtrip_mat(tmp_path):
    from scipy.io import savemat

    root = tmp_path / "alice"
    make_brennan(root, segments=(1, 2))
    raw = mne.io.read_raw_brainvision(root / "S01.vhdr", eog=["VEOG"], misc=["Aux5"], preload=True,
                                      verbose="error")
    for f in root.glob("S01.*"):
        f.unlink()
    savemat(root / "S01.mat", {"raw": {"trial": [raw.get_data() * 1e6], "label": np.array(raw.ch_names, dtype=object),
                                       "fsample": raw.info["sfreq"], "time": [raw.times]}})
    rec = load_dataset(root)[0]
    back = rec.load_raw()
    assert len(back.ch_names) == 61
    np.testing.assert_allclose(back.get_data(), raw.get_data(picks="eeg"), atol=1e-12)
    assert len(rec.load_events().words()) > 0


# ------------------------------------------------------------------------------------------ LibriBrain
@pytest.fixture(scope="module")
def libribrain(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("libribrain") / "data"
    return root, make_libribrain(root)


def test_libribrain_layout_is_detected_and_read(libribrain):
    import h5py

    root, info = libribrain
    assert detect_format(root) == "libribrain"
    recs = load_dataset(root)
    assert [(r.subject, r.session, r.task, r.run) for r in recs] == [
        ("0", str(s), "Sherlock1", "1") for s in sorted(info["sessions"], key=str)]
    rec = recs[0]
    raw = rec.load_raw()
    assert raw.ch_names == info["names"] and raw.get_channel_types() == info["types"]
    with h5py.File(rec.source, "r") as f:
        np.testing.assert_array_equal(raw.get_data(), np.asarray(f["data"], dtype=np.float64))


def test_libribrain_words_on_the_raw_clock_and_in_the_wav(libribrain):
    root, info = libribrain
    rec = load_dataset(root)[0]
    ev = rec.load_events()
    words, sounds = ev.words(), ev.sounds()
    assert len(sounds) == 1 and abs(float(sounds.onset[0]) - info["t_audio"]) < 1e-4
    assert len(words) > 3 and set(ev.kind.tolist()) == {"word", "sound"}  # phonemes/silences are not words
    np.testing.assert_allclose(words.onset - words.sound_time, info["t_audio"], atol=1e-4)


def test_libribrain_without_audio_table_says_what_to_provide(tmp_path):
    root = tmp_path / "lb"
    make_libribrain(root, n_runs=3, audio_table=False)
    with pytest.raises(DataFormatError, match=r"LibriBrain ships no audio.*task, session, run, sound, meg_time"):
        load_dataset(root)[0].load_events()


# ------------------------------------------------------------------------------------ training, one epoch
@pytest.mark.torch
def test_train_one_epoch_on_broderick(broderick, tmp_path):
    meta = _train_one_epoch(broderick[0], "broderick", tmp_path / "run")
    assert meta["subjects"] == ["01", "02"] and len(meta["channels"]) == 128
    split = meta["data"]["split"]  # the runs split in exact proportions (tests/test_corpus_split_cli.py)
    assert split["source"].startswith("broderick") and sorted(meta["data"]["train_sounds"]) == sorted(
        s for s, v in split["assigned"].items() if v == "train")


@pytest.mark.torch
def test_train_evaluate_export_bank_on_brennan(brennan, tmp_path):
    from neurospeech.scoring import CandidateBank

    root, _ = brennan
    run = tmp_path / "run"
    meta = _train_one_epoch(root, "brennan", run)
    assert meta["subjects"] == ["S01"] and len(meta["channels"]) == 61
    assert _exit_code(["-q", "evaluate", str(run), "--out", str(tmp_path / "eval"), "--no-ridge",
                       "--data", str(root), "--format", "brennan",
                       "--feature-cache", str(tmp_path / "features")]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["test_sounds"] == ["audio/DownTheRabbitHoleFinal_SoundFile4.wav"]  # the test-split wav
    onnx_path = tmp_path / "model.onnx"
    assert _exit_code(["-q", "export", str(run), "--out", str(onnx_path)]) == 0
    bank = tmp_path / "bank.npz"
    assert _exit_code(["-q", "bank", "--model", str(onnx_path), "--data", str(root), "--format", "brennan",
                       "--out", str(bank), "--feature-cache", str(tmp_path / "features")]) == 0
    b = CandidateBank.load(bank)
    ev = load_dataset(root)[0].load_events().words()
    in_test = ev.sound == "audio/DownTheRabbitHoleFinal_SoundFile4.wav"
    assert sorted(b.words.tolist()) == sorted(ev.word[in_test].tolist())

    # bank --audio: the same wav and word times given as a TSV, then as a TextGrid, give the same candidates
    wav = "DownTheRabbitHoleFinal_SoundFile4.wav"
    words = [(float(t), str(w)) for t, w in zip(ev.sound_time[in_test], ev.word[in_test], strict=True)]
    tsv = tmp_path / "words.tsv"
    tsv.write_text("wav\tonset\tword\n" + "".join(f"{wav}\t{t}\t{w}\n" for t, w in words))
    grids = tmp_path / "grids"
    write_textgrid(grids / "DownTheRabbitHoleFinal_SoundFile4.TextGrid",
                   [(t, round(t + 0.3, 3), w) for t, w in words], 3.0)
    for i, spec in enumerate((tsv, grids)):
        out = tmp_path / f"audio-bank-{i}.npz"
        assert _exit_code(["-q", "bank", "--model", str(onnx_path), "--audio", str(root / "audio"),
                           "--words", str(spec), "--out", str(out),
                           "--feature-cache", str(tmp_path / "features")]) == 0
        a = CandidateBank.load(out)
        assert a.words.tolist() == b.words.tolist() and set(a.sounds.tolist()) == {wav}
        assert a.ids.tolist() == [segment_id(wav, t) for t in a.sound_times]
        np.testing.assert_allclose(a.features, b.features, atol=1e-6)
        assert a.model_sha256 == b.model_sha256
    assert _exit_code(["-q", "bank", "--model", str(onnx_path), "--audio", str(root / "audio"),
                       "--out", str(tmp_path / "x.npz")]) == 2  # --audio without --words


def test_replay_reads_a_corpus_run_with_its_word_markers(meg_masc):
    from neurospeech.tools.replay import load_bids_run

    root, info = meg_masc
    src = load_bids_run(root, subject="01", task="0", session="0")
    assert src.sfreq == 1000.0 and len(src.labels) == 125
    assert len(src.markers) == info["n_words"]


@pytest.mark.torch
def test_train_one_epoch_on_libribrain(libribrain, tmp_path):
    meta = _train_one_epoch(libribrain[0], "libribrain", tmp_path / "run")
    assert meta["subjects"] == ["0"] and len(meta["channels"]) == 30


# --------------------------------------------------------------------------------- word timings, TextGrid
def test_textgrid_short_format_utf16_and_point_tiers(tmp_path):
    from neurospeech.data.formats._textgrid import read_textgrid, word_intervals

    short = ('File type = "ooTextFile"\nObject class = "TextGrid"\n\n0\n2.5\n<exists>\n2\n'
             '"IntervalTier"\n"ORT"\n0\n2.5\n3\n0\n0.4\n""\n0.4\n1.1\n"say ""hi"""\n1.1\n2.5\n"sil"\n'
             '"TextTier"\n"beats"\n0\n2.5\n1\n0.7\n"b"\n')
    p = tmp_path / "a.TextGrid"
    p.write_bytes(short.encode("utf-16"))
    tiers = read_textgrid(p)
    assert [(t.name, t.kind, len(t.intervals)) for t in tiers] == [("ORT", "IntervalTier", 3), ("beats", "TextTier", 1)]
    assert [(iv.xmin, iv.xmax, iv.text) for iv in word_intervals(p)] == [(0.4, 1.1, 'say "hi"')]
    p.write_text(short.replace("\n3\n0\n0.4", "\n4\n0\n0.4"))  # says 4 intervals, holds 3
    with pytest.raises(DataFormatError, match=r"expected a number|truncated"):
        read_textgrid(p)
    p.write_text("hello")
    with pytest.raises(DataFormatError, match="not a Praat TextGrid"):
        read_textgrid(p)


def test_audio_word_table_errors(tmp_path):
    from neurospeech.data import write_wav
    from neurospeech.data.formats import audio_word_candidates

    write_wav(tmp_path / "story" / "a.wav", np.zeros(16000), 16000)
    t = tmp_path / "w.tsv"
    t.write_text("wav\tonset\tword\na.wav\t0.5\thello\na.wav\t0.5\thello\na.wav\t0.2\tso\n")
    c = audio_word_candidates(tmp_path / "story", t)
    assert c["words"].tolist() == ["so", "hello"] and c["sound_times"].tolist() == [0.2, 0.5]  # sorted, deduped
    t.write_text("file\ttime\ttext\na.wav\t0.5\thello\n")  # aliases
    assert audio_word_candidates(tmp_path / "story", t)["words"].tolist() == ["hello"]
    for body, msg in (("wav\tword\na.wav\thi\n", "columns wav, onset, word"),
                      ("wav\tonset\tword\nb.wav\t0.1\thi\n", "'b.wav' is not a readable wav"),
                      ("wav\tonset\tword\na.wav\t1.5\thi\n", "outside the wav"),
                      ("wav\tonset\tword\na.wav\tsoon\thi\n", "is not a number")):
        t.write_text(body)
        with pytest.raises(DataFormatError, match=msg):
            audio_word_candidates(tmp_path / "story", t)
    write_textgrid(tmp_path / "grids" / "b.TextGrid", [(0.1, 0.3, "x")], 1.0)
    with pytest.raises(DataFormatError, match="names no wav"):
        audio_word_candidates(tmp_path / "story", tmp_path / "grids")
