"""Broderick et al. 2018: its runs split train/val/test by the same per-stimulus rule as the other readers (in
exact proportions: the plain hash put none of its 20 runs in validation), ``--split-file`` honoured; and
``data-check`` / ``calibrate`` take ``--format`` like train/evaluate/bank (same detection, same exit codes)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from _reader_fixtures import make_broderick

from neurospeech.cli import main
from neurospeech.data import Splits, split_of
from neurospeech.data.formats import balanced_split, corpus_split
from neurospeech.errors import DataFormatError

TINY = '{"n_virtual": 16, "hidden": 32, "head_hidden": 32, "fourier_harmonics": 4}'


def _exit_code(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return int(exc.value.code or 0)


@pytest.fixture(scope="module")
def broderick(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("brod-split") / "Natural Speech"
    return root, make_broderick(root, n_runs=5, n_subjects=2)


def test_the_20_broderick_runs_get_a_validation_split():
    sounds = [f"Stimuli/Audio/audio{r}.wav" for r in range(1, 21)]
    assert "val" not in {split_of(s) for s in sounds}  # why: the plain per-sound hash gives 17/0/3
    got = balanced_split(sounds)
    assert Counter(got.values()) == {"train": 14, "val": 2, "test": 4}
    assert sorted(s for s, v in got.items() if v == "val") == ["Stimuli/Audio/audio13.wav", "Stimuli/Audio/audio19.wav"]
    # the same hash order: the sounds the plain hash puts in test stay out of training
    assert all(got[s] != "train" for s in sounds if split_of(s) == "test")
    assert Counter(balanced_split(sounds, (0.6, 0.2, 0.2)).values()) == {"train": 12, "val": 4, "test": 4}
    with pytest.raises(DataFormatError, match="cannot be split"):
        balanced_split(sounds[:2])


def test_broderick_default_split_is_by_run_for_every_subject(broderick):
    root, info = broderick
    sp = Splits.for_dataset(root)
    sounds = {f"Stimuli/Audio/audio{r}.wav" for r in info["runs"]}
    assert set(sp.assigned) == sounds and sp.source.startswith("broderick")
    assert Counter(sp.assigned.values()) == {"train": 3, "val": 1, "test": 1}
    assert corpus_split(root / "EEG") is None  # not a corpus root: no default, the hash split
    # a split file wins over the corpus default
    f = root.parent / "split.json"
    order = sorted(sounds)
    f.write_text(json.dumps({"train": order[:2], "val": order[2:3], "test": order[3:]}))
    sp2 = Splits.for_dataset(root, f)
    assert sp2.source == str(f) and sp2(order[0]) == "train" and sp2(order[4]) == "test"


@pytest.mark.torch
def test_train_on_broderick_honours_a_split_file(broderick, tmp_path):
    root, info = broderick
    order = sorted(f"Stimuli/Audio/audio{r}.wav" for r in info["runs"])
    f = tmp_path / "split.json"
    f.write_text(json.dumps({"train": order[1:4], "val": order[4:], "test": order[:1]}))
    common = ["--epochs", "1", "--batch-size", "8", "--set", f"encoder={TINY}", "--set", "progress=false",
              "--set", "threads=2", "--set", "batches_per_epoch=1", "--set", "score_dim=8",
              "--set", f"feature_cache={tmp_path / 'features'}"]
    # (the default split in a run: tests/test_readers.py trains on this layout without a split file)
    assert _exit_code(["-q", "train", "--data", str(root), "--format", "broderick", "--split-file", str(f),
                       "--out", str(tmp_path / "b"), *common]) == 0
    meta = json.loads((tmp_path / "b" / "meta.json").read_text())
    assert meta["data"]["split"]["source"] == str(f)
    assert sorted(meta["data"]["train_sounds"]) == order[1:4]


def test_data_check_takes_format_and_detects(broderick, tmp_path):
    root, _ = broderick
    assert _exit_code(["-q", "data-check", str(root), str(tmp_path / "auto"), "--max-runs", "1"]) == 0
    assert _exit_code(["-q", "data-check", str(root), str(tmp_path / "named"), "--format", "broderick",
                       "--subject", "02", "--max-runs", "1"]) == 0
    assert (tmp_path / "named" / "psd.png").stat().st_size > 1000
    # a layout that does not fit: bad data (3), nothing written; an unknown name: bad settings (2)
    assert _exit_code(["-q", "data-check", str(root), str(tmp_path / "x"), "--format", "meg-masc"]) == 3
    assert not (tmp_path / "x").exists()
    assert _exit_code(["-q", "data-check", str(root), str(tmp_path / "y"), "--format", "masc"]) == 2


def test_calibrate_takes_format_and_split_file(broderick, tmp_path):
    root, info = broderick
    out = tmp_path / "cal.json"
    assert _exit_code(["-q", "calibrate", str(root), "--format", "broderick", "--out", str(out),
                       "--max-train", "200", "--feature-cache", str(tmp_path / "features")]) == 0
    res = json.loads(out.read_text())
    test_sound = next(s for s, v in Splits.for_dataset(root).assigned.items() if v == "test")
    assert res["n_candidates"] > 0 and res["dataset"] == str(root) and res["split"]["source"].startswith("broderick")
    order = sorted(f"Stimuli/Audio/audio{r}.wav" for r in info["runs"])
    other_test = next(s for s in order if s != test_sound)
    f = tmp_path / "split.json"
    f.write_text(json.dumps({"train": [s for s in order if s != other_test][:3],
                             "val": [s for s in order if s != other_test][3:], "test": [other_test]}))
    out2 = tmp_path / "cal2.json"
    assert _exit_code(["-q", "calibrate", str(root), "--split-file", str(f), "--out", str(out2),
                       "--max-train", "200", "--feature-cache", str(tmp_path / "features")]) == 0
    res2 = json.loads(out2.read_text())
    assert res2["n_candidates"] > 0 and res2["split"]["source"] == str(f)
    assert _exit_code(["-q", "calibrate", str(root), "--format", "mous", "--out", str(tmp_path / "z.json")]) == 3
    assert _exit_code(["-q", "calibrate", str(root), "--format", "masc", "--out", str(tmp_path / "z.json")]) == 2
    assert not (tmp_path / "z.json").exists()
