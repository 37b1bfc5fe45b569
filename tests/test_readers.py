"""Readers of the public corpora (neurospeech.data.formats) on fixtures in each corpus's own layout, the KIT and
CTF readers also on real system recordings (tests/data/real-formats), and `neurospeech train` one epoch on each.
"""

from __future__ import annotations

import json
from pathlib import Path

import mne
import numpy as np
import pytest
from _reader_fixtures import CTF_DS, KIT_DIR, make_meg_masc, make_mous

from neurospeech.cli import main
from neurospeech.data import load_dataset, read_wav
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
    assert _exit_code(["-q", "train", "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 3


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
    assert len(rec.load_events()) == 0  # trigger rows are not speech


@pytest.mark.torch
def test_train_one_epoch_on_mous(mous, tmp_path):
    root, _ = mous
    meta = _train_one_epoch(root, "mous", tmp_path / "run")
    assert meta["subjects"] == ["A2002"] and len(meta["channels"]) == 151
