"""neurospeech.data: ids, splits, events tables (ours and MEG-MASC's), BIDS round trip, bad input."""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

import mne
import mne_bids
import numpy as np
import pytest

from neurospeech.data import (
    SPLITS_FILE,
    Splits,
    events_from_rows,
    load_dataset,
    read_events_tsv,
    read_wav,
    segment_id,
    split_of,
    write_events_tsv,
    write_run,
    write_wav,
)
from neurospeech.errors import ConfigError, DataFormatError


def test_segment_id_is_the_documented_sha256():
    sid = segment_id("stimuli/s0012.wav", 1.2345)
    assert sid == hashlib.sha256(b"stimuli/s0012.wav@1234").hexdigest()[:16]
    assert segment_id("stimuli/s0012.wav", 1.2341) == sid  # ms resolution
    assert segment_id("stimuli/s0012.wav", 1.236) != sid
    assert segment_id("stimuli/s0013.wav", 1.2345) != sid


def test_split_of_is_stable_and_follows_fractions():
    sounds = [f"stimuli/s{i:04d}.wav" for i in range(3000)]
    splits = [split_of(s) for s in sounds]
    assert splits == [split_of(s) for s in sounds]
    frac = {k: splits.count(k) / len(splits) for k in ("train", "val", "test")}
    assert abs(frac["train"] - 0.7) < 0.04
    assert abs(frac["val"] - 0.1) < 0.03 and abs(frac["test"] - 0.2) < 0.03
    assert {split_of(s, salt="other") for s in sounds[:50]} != {"train"}
    assert [split_of(s, salt="other") for s in sounds[:200]] != splits[:200]
    assert all(split_of(s, (0.0, 0.0, 1.0)) == "test" for s in sounds[:20])
    for bad in [(0.5, 0.5), (0.7, 0.2, 0.2), (-0.1, 0.6, 0.5)]:
        with pytest.raises(ConfigError):
            split_of("x.wav", bad)


def test_splits_honour_a_split_file_and_settable_fractions(tmp_path):
    sounds = [f"stimuli/s{i:04d}.wav" for i in range(400)]
    default = Splits.for_dataset(tmp_path)
    assert [default(s) for s in sounds] == [split_of(s) for s in sounds] and default.source == "hash"
    wide = Splits.for_dataset(tmp_path, fractions=(0.5, 0.3, 0.2))
    frac_val = np.mean([wide(s) == "val" for s in sounds])
    assert 0.22 < frac_val < 0.38
    with pytest.raises(ConfigError, match="fractions"):
        Splits.for_dataset(tmp_path, fractions=(0.5, 0.6, 0.2))
    # a dataset's own splits.json wins for the sounds it lists; the others keep the hash split
    (tmp_path / SPLITS_FILE).write_text(json.dumps({"train": sounds[:2], "test": sounds[2:4], "val": []}))
    own = Splits.for_dataset(tmp_path)
    assert own.source.endswith(SPLITS_FILE)
    assert [own(s) for s in sounds[:4]] == ["train", "train", "test", "test"]
    assert own(sounds[10]) == split_of(sounds[10])
    assert Splits.from_dict(own.to_dict()) == own
    # an explicit --split-file beats the dataset's
    other = tmp_path / "mine.json"
    other.write_text(json.dumps({"val": sounds[:4]}))
    assert {Splits.for_dataset(tmp_path, other)(s) for s in sounds[:4]} == {"val"}
    for bad, msg in (({"train": "x.wav"}, "lists"), ({"dev": []}, "lists"),
                     ({"train": ["a.wav"], "test": ["a.wav"]}, "two splits")):
        other.write_text(json.dumps(bad))
        with pytest.raises(DataFormatError, match=msg):
            Splits.for_dataset(tmp_path, other)
    other.write_text("{not json")
    with pytest.raises(DataFormatError, match="cannot read"):
        Splits.for_dataset(tmp_path, other)


def test_build_segments_follow_the_datasets_split_file(tmp_path):
    from _data_fixtures import make_tiny

    from neurospeech.data.segments import build_segments

    make_tiny(tmp_path, minutes=0.3)
    recs = load_dataset(tmp_path)
    sounds = sorted({str(s) for r in recs for s in r.load_events().words().sound})
    (tmp_path / SPLITS_FILE).write_text(json.dumps({"test": sounds[:1], "train": sounds[1:]}))
    feats = {}

    def features(sound):
        return feats.setdefault(sound, np.zeros((3, 2000), dtype=np.float32))

    test, _ = build_segments(recs, features, split="test", progress=False)
    assert set(test.sound) == {sounds[0]}
    val, _ = build_segments(recs, features, split="val", progress=False)
    assert len(val) == 0


def _rows():
    return [
        dict(onset=3.0, duration=0.3, kind="word", word="bo", sound="stimuli/a.wav", sound_time=1.0,
             sentence="a"),
        dict(onset=2.0, duration=2.0, kind="sound", word="", sound="stimuli/a.wav", sound_time=0.0,
             sentence="a"),
        dict(onset=2.5, duration=0.3, kind="word", word="ka", sound="stimuli/a.wav", sound_time=0.5,
             sentence="a"),
    ]


def test_events_sorted_words_and_tsv_round_trip(tmp_path):
    ev = events_from_rows(_rows())
    assert list(ev.onset) == [2.0, 2.5, 3.0]
    assert list(ev.words().word) == ["ka", "bo"]
    assert len(ev.words()) == 2 and len(ev) == 3
    p = tmp_path / "x_events.tsv"
    write_events_tsv(p, ev)
    back = read_events_tsv(p)
    for name in ("onset", "duration", "sound_time"):
        np.testing.assert_allclose(getattr(back, name), getattr(ev, name))
    for name in ("kind", "word", "sound", "sentence"):
        assert list(getattr(back, name)) == list(getattr(ev, name))


def test_events_bad_input(tmp_path):
    with pytest.raises(DataFormatError, match="does not exist"):
        read_events_tsv(tmp_path / "missing.tsv")
    p = tmp_path / "a.tsv"
    p.write_text("onset\tduration\n1.0\t0.5\n")
    with pytest.raises(DataFormatError, match="trial_type"):
        read_events_tsv(p)
    p.write_text("onset\tduration\ttrial_type\tsound\tsound_time\nabc\t0.5\tword\ts.wav\t0.1\n")
    with pytest.raises(DataFormatError, match="not a number"):
        read_events_tsv(p)
    p.write_text("onset\tduration\ttrial_type\tsound\tsound_time\n1\t0.5\tword\tn/a\t0.1\n")
    with pytest.raises(DataFormatError, match="no sound"):
        read_events_tsv(p)
    p.write_text("onset\tduration\ttrial_type\n1\t0.5\t{'kind': 'word', 'word': \n")
    with pytest.raises(DataFormatError, match="does not parse"):
        read_events_tsv(p)
    with pytest.raises(DataFormatError):
        events_from_rows(_rows()).__class__(
            onset=np.zeros(2), duration=np.zeros(1), kind=np.array(["a"]), word=np.array(["a"]),
            sound=np.array(["a"]), sound_time=np.zeros(1), sentence=np.array(["a"]))


def test_wav_round_trip_and_errors(tmp_path):
    x = (0.5 * np.sin(np.arange(1600) / 10)).astype(np.float32)
    write_wav(tmp_path / "s.wav", x, 16000)
    y, sr = read_wav(tmp_path / "s.wav")
    assert sr == 16000 and y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1e-4)
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    with pytest.raises(DataFormatError):
        read_wav(tmp_path / "bad.wav")
    with pytest.raises(DataFormatError):
        read_wav(tmp_path / "none.wav")


def _meg_raw(seconds: float = 6.0, sfreq: float = 100.0) -> mne.io.RawArray:
    info = mne.channels.read_meg_canonical_info("ctf151")
    info = mne.pick_info(info, mne.pick_types(info, meg=True, ref_meg=False)[:20])
    with info._unlock():
        info["sfreq"] = sfreq
        info["lowpass"] = sfreq / 2
        info["line_freq"] = 50.0
    rng = np.random.default_rng(0)
    raw = mne.io.RawArray(rng.standard_normal((20, int(seconds * sfreq))) * 1e-13, info, verbose="error")
    raw.set_meas_date(datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC))
    return raw


def test_write_run_round_trip_with_mne_bids(tmp_path):
    raw = _meg_raw()
    raw.info["bads"] = [raw.ch_names[3]]
    ev = events_from_rows(_rows())
    bp = write_run(tmp_path, raw, ev, subject="01", task="listen", run="01")
    back = mne_bids.read_raw_bids(bp, verbose="error")
    assert list(back.annotations.description) == ["sound", "word", "word"]
    np.testing.assert_allclose(back.annotations.onset, [2.0, 2.5, 3.0])
    recs = load_dataset(tmp_path)
    assert len(recs) == 1 and recs[0].datatype == "meg" and recs[0].subject == "01"
    got = recs[0].load_raw()
    assert got.info["bads"] == [raw.ch_names[3]]
    np.testing.assert_allclose(got.get_data(), raw.get_data(), rtol=1e-6, atol=1e-19)
    e2 = recs[0].load_events()
    assert list(e2.word) == ["", "ka", "bo"]
    np.testing.assert_allclose(e2.sound_time, [0.0, 0.5, 1.0])


def test_load_dataset_errors(tmp_path):
    with pytest.raises(DataFormatError, match="not a directory"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DataFormatError, match="no sub-"):
        load_dataset(tmp_path)
    (tmp_path / "sub-01" / "meg").mkdir(parents=True)
    with pytest.raises(DataFormatError, match="no MEG/EEG runs"):
        load_dataset(tmp_path)


def _masc_trial_type(d: dict) -> str:
    return repr(d)


def test_meg_masc_adapter_on_a_replica(tmp_path: Path):
    """A small replica of MEG-MASC: dict-like trial_type strings (kind, word, start, sound, story...)."""
    raw = _meg_raw(seconds=8.0)
    bp = write_run(tmp_path, raw, events_from_rows(_rows()), subject="A0001", session="0", task="0", run=None)
    ev_path = Path(bp.copy().update(suffix="events", extension=".tsv").fpath)
    rows = [
        (1.0, 3.0, {"story": "lw1", "story_uid": 0.0, "sound_id": 0.0, "kind": "sound", "start": 0.0,
                    "sound": "stimuli/audio/lw1_0.wav"}),
        (1.07, 0.3, {"story": "lw1", "story_uid": 0.0, "sound_id": 0.0, "kind": "word", "start": 0.07,
                     "word": "Tara", "sound": "stimuli/audio/lw1_0.wav", "sequence_id": 0.0,
                     "condition": "sentence", "word_index": 0.0, "pronounced": 1.0}),
        (1.07, 0.05, {"story": "lw1", "kind": "phoneme", "phoneme": "t_B", "start": 0.07,
                      "sound": "stimuli/audio/lw1_0.wav", "sequence_id": 0.0}),
        (1.52, 0.2, {"story": "lw1", "story_uid": 0.0, "sound_id": 0.0, "kind": "word", "start": 0.52,
                     "word": "stood", "sound": "./stimuli/audio/lw1_0.wav", "sequence_id": 0.0,
                     "condition": "sentence", "word_index": 1.0, "pronounced": 1.0}),
        (5.0, 0.2, {"story": "lw1", "kind": "word", "start": 4.0, "word": "nan_time",
                    "sound": "stimuli/audio/lw1_0.wav", "sequence_id": 1.0}),
    ]
    with open(ev_path, "w") as f:
        f.write("onset\tduration\ttrial_type\tvalue\tsample\n")
        for onset, dur, d in rows:
            f.write(f"{onset}\t{dur}\t{_masc_trial_type(d)}\t0\t{round(onset * 100)}\n")
    recs = load_dataset(tmp_path)
    assert [(r.subject, r.session, r.task) for r in recs] == [("A0001", "0", "0")]
    ev = recs[0].load_events()
    assert list(ev.kind) == ["sound", "word", "phoneme", "word", "word"]
    w = ev.words()
    assert list(w.word) == ["Tara", "stood", "nan_time"]
    np.testing.assert_allclose(w.sound_time, [0.07, 0.52, 4.0])
    np.testing.assert_allclose(w.onset, [1.07, 1.52, 5.0])
    assert set(w.sound) == {"stimuli/audio/lw1_0.wav"}
    assert list(w.sentence) == ["lw1:0", "lw1:0", "lw1:1"]
    # mne-bids itself still reads the run with these events as annotations
    back = mne_bids.read_raw_bids(recs[0].bids_path, verbose="error")
    assert len(back.annotations) == len(rows)
