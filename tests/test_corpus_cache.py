"""Corpora larger than memory: the preprocessed-recording cache (neurospeech/data/_cache.py) and the training
windows streamed from it (models/_stream.py).

The streamed windows, targets and scalers equal the in-memory ones exactly; a cache entry is made once, keyed by
its source and settings, outside the dataset; and a corpus larger than a data-memory limit trains one epoch
under that limit with the cache, while the same run without it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _big_corpus import make_big_libribrain
from _reader_fixtures import make_brennan, make_broderick, make_libribrain, make_meg_masc, make_mous
from neurospeech.models import _data
from neurospeech.models._stream import stream_segments

from neurospeech.data import Splits
from neurospeech.data._cache import cache_recording
from neurospeech.errors import ConfigError
from neurospeech.preprocessing import PreprocessingSpec, WindowSpec

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def broderick(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("brod")
    root = tmp / "Natural Speech"
    make_broderick(root, n_runs=4, n_subjects=2)
    return root, tmp


def _targets(root: Path, cache: Path | None):
    recs = _data.find_recordings(root, None, None, "broderick")
    splits = Splits.for_dataset(root)
    return recs, splits, _data.make_speech_targets(root, recs, "mel", {}, 8, 7, cache, progress=False,
                                                   splits=splits)


def test_speech_target_fit_from_the_disk_cache_equals_the_in_memory_fit(broderick):
    root, tmp = broderick
    _, _, lazy = _targets(root, tmp / "features")  # one sound in memory at a time
    _, _, eager = _targets(root, None)
    np.testing.assert_allclose(lazy.mean, eager.mean, rtol=1e-12)
    np.testing.assert_allclose(lazy.std, eager.std, rtol=1e-12)
    np.testing.assert_allclose(lazy.representation.projection, eager.representation.projection, atol=1e-6)


@pytest.mark.parametrize("max_windows", [None, 7])
def test_streamed_windows_equal_the_in_memory_windows(broderick, max_windows, monkeypatch):
    from neurospeech.data import _cache

    monkeypatch.setattr(_cache, "MAX_OPEN_MAPS", 2)  # 8 runs + 5 sounds through 2 open maps
    root, tmp = broderick
    recs, splits, targets = _targets(root, tmp / "features")
    subjects = sorted({r.subject for r in recs})
    w, sp = WindowSpec(), PreprocessingSpec()
    mem, sc_mem, info_mem = _data.segments(recs, targets, "train", "regular", subjects, w, sp,
                                           max_windows=max_windows, progress=False, splits=splits)
    st, sc_st, info_st = stream_segments(recs, targets, "train", "regular", subjects, w, sp, tmp / "rc",
                                         max_windows=max_windows, progress=False, splits=splits)
    assert len(st) == len(mem) > 0 and (max_windows is None or len(st) <= max_windows)
    np.testing.assert_array_equal(st.brain[:], mem.brain)  # bit-identical: same code, same float32 data
    np.testing.assert_array_equal(st.speech[:], mem.speech)
    for col in ("subject", "segment_id", "word", "subject_name"):
        np.testing.assert_array_equal(getattr(st, col), getattr(mem, col))
    idx = np.array([len(st) - 1, 0, 3])
    np.testing.assert_array_equal(st.brain[idx], mem.brain[idx])
    assert sc_st.keys() == sc_mem.keys() == {"01", "02"}
    for s in sc_mem:
        np.testing.assert_array_equal(sc_st[s].center, sc_mem[s].center)
        np.testing.assert_array_equal(sc_st[s].scale, sc_mem[s].scale)
    np.testing.assert_array_equal(info_st.sound, info_mem.sound)
    assert len(_cache._OPEN) <= 2
    # validation with the training scalers
    vm, _, _ = _data.segments(recs, targets, "val", "regular", subjects, w, sp, scalers=sc_mem, progress=False,
                              splits=splits)
    vs, _, _ = stream_segments(recs, targets, "val", "regular", subjects, w, sp, tmp / "rc", scalers=sc_mem,
                               progress=False, splits=splits)
    np.testing.assert_array_equal(vs.brain[:], vm.brain)
    np.testing.assert_array_equal(vs.speech[:], vm.speech)


def test_cache_entry_is_made_once_outside_the_dataset_and_keyed_by_its_source(broderick, tmp_path):
    root, _ = broderick
    rec = _data.find_recordings(root, ["01"], None, "broderick")[0]
    w, sp = WindowSpec(), PreprocessingSpec()
    before = sorted(p for p in root.rglob("*"))
    first = cache_recording(rec, w, sp, tmp_path / "rc")
    assert first.path.parent == tmp_path / "rc" and sorted(p for p in root.rglob("*")) == before
    side = json.loads(first.path.with_suffix(".json").read_text())
    assert side["n_channels"] == 128 == len(side["channels"]) and side["sfreq"] == 120.0
    assert side["inputs"]["window"] == w.to_dict() and side["inputs"]["recording"] == rec.name
    data = first.data()
    assert isinstance(data, np.memmap) and data.dtype == np.float32 and data.shape == (128, first.n_samples)
    raw = rec.load_raw()
    assert first.n_samples == pytest.approx(raw.n_times * 120.0 / raw.info["sfreq"], abs=2)
    mtime = first.path.stat().st_mtime_ns
    again = cache_recording(rec, w, sp, tmp_path / "rc")  # a hit: nothing rewritten
    assert again.path == first.path and first.path.stat().st_mtime_ns == mtime
    assert not list((tmp_path / "rc").glob("*.tmp"))
    other = cache_recording(rec, WindowSpec(lag=0.2), sp, tmp_path / "rc")  # other settings, other entry
    assert other.path != first.path
    st = rec.source.stat()
    os.utime(rec.source, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the source changed
    assert cache_recording(rec, w, sp, tmp_path / "rc").path not in (first.path, other.path)


def test_data_cache_setting_picks_the_window_source(broderick, tmp_path):
    root, _ = broderick
    fn, kw = _data.segment_source("auto", root, None, tmp_path / "feat")  # a public corpus: streamed
    assert fn is stream_segments and kw == {"cache_dir": tmp_path / "feat" / "recordings"}
    assert _data.segment_source("off", root, None, None) == (_data.segments, {})
    with pytest.raises(ConfigError, match="data_cache must be"):
        _data.segment_source("maybe", root, None, None)


@pytest.mark.torch
def test_training_streamed_or_in_memory_gives_the_same_model(broderick, tmp_path):
    from neurospeech.models.train import TrainConfig, train

    root, _ = broderick
    digests = []
    for mode in ("on", "off"):
        run = train(TrainConfig(
            data=str(root), out=str(tmp_path / mode), feature_cache=str(tmp_path / "feat"), data_cache=mode,
            max_epochs=1, batch_size=8, batches_per_epoch=3, score_dim=8, progress=False, threads=1,
            encoder={"n_virtual": 16, "hidden": 32, "head_hidden": 32, "fourier_harmonics": 4}))
        meta = json.loads((run / "meta.json").read_text())
        digests.append((meta["training"]["model_sha256"], meta["history"][0]["val_loss"], meta["scalers"]))
    assert digests[0] == digests[1]
    assert any((tmp_path / "feat" / "recordings").glob("*.npy"))


@pytest.mark.torch
def test_torchrun_two_processes_streaming_from_the_cache_train_the_in_memory_model(broderick, tmp_path):
    """`torchrun --nproc_per_node=2 -m neurospeech train` (gloo on CPU), windows streamed from the cache by both
    ranks vs held in memory: exit 0, world size 2 recorded, the same model (sha256), one summary line."""
    root, _ = broderick
    enc = '{"n_virtual": 16, "hidden": 32, "head_hidden": 32, "fourier_harmonics": 4}'
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    metas = {}
    for mode in ("on", "off"):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "neurospeech", "-q", "train", "--data", str(root), "--out", str(tmp_path / mode), "--epochs", "1",
               "--batch-size", "8", "--set", f"encoder={enc}", "--set", "batches_per_epoch=3", "--set",
               "score_dim=8", "--set", "progress=false", "--set", "threads=1", "--set", f"data_cache={mode}",
               "--set", f"feature_cache={tmp_path / 'feat'}"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
        assert p.returncode == 0, p.stderr[-3000:]
        assert p.stdout.count(f"run {tmp_path / mode}:") == 1, p.stdout  # rank 0 only
        metas[mode] = json.loads((tmp_path / mode / "meta.json").read_text())
    assert metas["on"]["training"]["world_size"] == metas["off"]["training"]["world_size"] == 2
    assert metas["on"]["training"]["model_sha256"] == metas["off"]["training"]["model_sha256"]
    assert metas["on"]["history"][0]["val_loss"] == metas["off"]["history"][0]["val_loss"]
    assert any((tmp_path / "feat" / "recordings").glob("*.npy"))


@pytest.mark.torch
def test_corpus_larger_than_the_memory_limit_trains_and_evaluates_only_with_the_cache(tmp_path):
    """48 runs x 40 s of 306-channel MEG (282 MB at the model rate) under a 220 MB data limit (RLIMIT_DATA,
    set in a child process above what its imported libraries already hold): one epoch trains with the
    streamed cache, and the trained run is evaluated on the test split with the test windows streamed batch
    by batch; the same runs with every window in memory die of MemoryError."""
    from neurospeech.data import split_of
    from neurospeech.speech import FeatureCache, get_extractor

    budget_mb = 220
    root = tmp_path / "LibriBrain"
    corpus_bytes = make_big_libribrain(root, n_runs=48)
    assert corpus_bytes > budget_mb * 2**20
    # the corpus's own split (read by training, recorded in the run, used by evaluate): one sound per split
    sounds = sorted(str(p.relative_to(root)) for p in (root / "stimuli").rglob("*.wav"))
    by_hash = {s: split_of(s) for s in sounds}
    train_s = [s for s in sounds if by_hash[s] == "train"]
    (root / "splits.json").write_text(json.dumps(
        {"train": train_s[:1], "test": train_s[1:], "val": [s for s in sounds if by_hash[s] == "val"]}))
    results = {}
    # one thread per pool and two malloc arenas: per-thread BLAS buffers and arenas would make the child's
    # private memory (what RLIMIT_DATA counts) depend on the machine's core count, not on the data path
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "MALLOC_ARENA_MAX": "2"}
    for mode in ("on", "off"):
        cache = tmp_path / f"cache-{mode}"
        ex = get_extractor("mel")  # speech features are not under test here: filled before the limit
        for wav in sorted((root / "stimuli").rglob("*.wav")):
            FeatureCache(cache).get(ex, wav)
        results[mode] = subprocess.run(
            [sys.executable, str(HERE / "_memlimit_train.py"), str(root), str(tmp_path / f"run-{mode}"), str(cache),
             str(budget_mb), mode], capture_output=True, text=True, timeout=300, env=env)
    on, off = results["on"], results["off"]
    assert on.returncode == 0, on.stderr[-3000:]
    info = json.loads(on.stdout.strip().splitlines()[-1])
    assert info["budget"] == budget_mb * 2**20
    meta = json.loads((tmp_path / "run-on" / "meta.json").read_text())
    assert meta["training"]["epochs_run"] == 1 and np.isfinite(meta["history"][0]["train_loss"])
    assert meta["data"]["n_recordings"] == 48
    assert off.returncode != 0 and "MemoryError" in off.stderr, off.stderr[-3000:]
    assert not (tmp_path / "run-off" / "meta.json").exists()
    assert meta["data"]["split"]["assigned"][train_s[1]] == "test"
    # glibc's dynamic mmap threshold: once a freed batch buffer raised it, later buffers come from the heap,
    # which kept 100 to 500 MB of freed batches run to run (measured with VmData: flat after one pass, so not
    # growing with the data, but not the data path's own memory either); a fixed threshold returns them
    env_eval = {**env, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    for mode in ("on", "off"):  # the run trained above, on its test split (16 runs' word onsets)
        results[mode] = subprocess.run(
            [sys.executable, str(HERE / "_memlimit_eval.py"), str(tmp_path / "run-on"), str(root),
             str(tmp_path / f"eval-{mode}"), str(tmp_path / "cache-on"), str(budget_mb), mode],
            capture_output=True, text=True, timeout=300, env=env_eval)
    on, off = results["on"], results["off"]
    assert on.returncode == 0, on.stderr[-3000:]
    info = json.loads(on.stdout.strip().splitlines()[-1])
    assert info["budget"] == budget_mb * 2**20
    report = json.loads((tmp_path / "eval-on" / "report.json").read_text())
    assert report["test_sounds"] == train_s[1:] and report["windows"].startswith("streamed")
    assert report["early"]["delays_s"] and "random" in report["methods"]
    window_bytes = 306 * WindowSpec.from_dict(meta["window"]).n_times * 4
    assert info["n_queries"] * window_bytes > budget_mb * 2**20  # the test windows alone exceed the limit
    assert off.returncode != 0 and "MemoryError" in off.stderr, off.stderr[-3000:]
    assert not (tmp_path / "eval-off" / "report.json").exists()


@pytest.fixture(scope="module")
def trained(broderick, tmp_path_factory):
    """A tiny run trained one epoch on the Broderick fixture (windows streamed) and its ONNX export."""
    from neurospeech.models.export import export_run
    from neurospeech.models.train import TrainConfig, train

    root, _ = broderick
    tmp = tmp_path_factory.mktemp("trained")
    run = train(TrainConfig(
        data=str(root), out=str(tmp / "run"), feature_cache=str(tmp / "feat"), data_cache="on", max_epochs=1,
        batch_size=8, batches_per_epoch=2, score_dim=8, progress=False, threads=1,
        encoder={"n_virtual": 16, "hidden": 32, "head_hidden": 32, "fourier_harmonics": 4}))
    export_run(run, tmp / "model.onnx")
    return Path(run), tmp / "model.onnx", tmp / "feat"


@pytest.mark.torch
def test_evaluate_streamed_from_the_cache_equals_the_in_memory_evaluation(trained, tmp_path):
    """Every score of the report (segment and word identity, per subject, early-decision curve, centring on
    validation windows, the ridge baseline scoring streamed test windows) is the same whether the test windows
    are held in memory or cut batch by batch from the cache; the batches are smaller than the test split."""
    from neurospeech.models.evaluate import EvalConfig, evaluate

    run, _, feat = trained
    reports = {}
    for mode in ("on", "off"):
        reports[mode] = evaluate(EvalConfig(
            runs=[str(run)], out=str(tmp_path / mode), feature_cache=str(feat), data_cache=mode, batch_size=5,
            n_boot=50, chance_draws=10, max_ridge_windows=60, ridge_components=8, progress=False))
    on, off = reports["on"], reports["off"]
    assert on["windows"].startswith("streamed from ") and off["windows"] == "in memory"
    assert set(on["methods"]) == set(off["methods"]) >= {"random", "frequency", "ridge-mel"}
    assert any(k.endswith("+centred") for k in on["methods"])
    n_queries = next(iter(on["methods"].values()))["overall"]["n_queries"]
    assert n_queries > 5  # several batches
    for name, m in off["methods"].items():
        for block in ("overall", "per_subject"):
            assert on["methods"][name][block] == m[block], (name, block)
    assert on["early"]["methods"] == off["early"]["methods"] and on["chance"] == off["chance"]
    assert on["test_sounds"] == off["test_sounds"] and on["ratios"] == off["ratios"]


@pytest.mark.torch
def test_bank_from_the_target_cache_equals_the_in_memory_bank(trained, broderick):
    from neurospeech.models.bank import build_bank

    root, _ = broderick
    _, model, feat = trained
    banks = {mode: build_bank(model, root, split="all", feature_cache=feat, progress=False, data_cache=mode,
                              batch_size=5) for mode in ("on", "off")}
    on, off = banks["on"], banks["off"]
    assert len(on) == len(off) > 5 * len(set(on.sounds.tolist()))  # several batches per sound
    np.testing.assert_array_equal(on.features, off.features)
    # and both equal the bank cut and pooled all at once (what `bank` did before streaming)
    from neurospeech.models.export import read_contract

    from neurospeech.data.segments import speech_window
    from neurospeech.scoring import normalise_candidates

    c = read_contract(model)
    targets = _data.SpeechTargets.from_spec(root, {"kind": c.speech.kind, "dim": c.speech.dim, "params":
                                                   c.speech.params, "mean": c.speech.mean, "std": c.speech.std},
                                            c.output["speech_to_output"], feat)
    whole = np.stack([speech_window(targets(str(s)), float(t), c.window) for s, t in zip(off.sounds,
                                                                                          off.sound_times)])
    np.testing.assert_array_equal(off.features, normalise_candidates(targets.representation.pool(whole)))
    for col in ("ids", "words", "sounds", "sound_times"):
        np.testing.assert_array_equal(getattr(on, col), getattr(off, col))
    assert any((feat / "recordings" / "targets").glob("*.npy"))  # read from the cache training streams from
    with pytest.raises(ConfigError, match="data_cache must be"):
        build_bank(model, root, feature_cache=feat, progress=False, data_cache="sometimes")


def test_a_lazily_read_run_is_cached_block_by_block_without_loading_it_whole(tmp_path, monkeypatch):
    """BIDS FIF (written by mne-bids) is read lazily: the cache entry equals the whole-run preprocessing (to float32
    rounding), and the traced peak memory while making it stays far below the run's size at its raw rate (the
    old path preloaded it: peak >= 1x that size)."""
    import datetime
    import tracemalloc

    import mne

    from neurospeech.data import _cache, events_from_rows, load_dataset, write_run
    from neurospeech.preprocessing import preprocess_continuous

    sfreq, seconds, n_ch = 1000.0, 240.0, 20
    info = mne.channels.read_meg_canonical_info("ctf151")
    info = mne.pick_info(info, mne.pick_types(info, meg=True, ref_meg=False)[:n_ch])
    with info._unlock():
        info["sfreq"], info["lowpass"], info["line_freq"] = sfreq, sfreq / 2, 50.0
    rng = np.random.default_rng(0)
    raw = mne.io.RawArray(rng.standard_normal((n_ch, int(seconds * sfreq))) * 1e-13, info, verbose="error")
    raw.set_meas_date(datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC))
    rows = [dict(onset=2.0, duration=2.0, kind="sound", word="", sound="stimuli/a.wav", sound_time=0.0,
                 sentence="a")]
    write_run(tmp_path / "ds", raw, events_from_rows(rows), subject="01", task="listen", run="01")
    raw_bytes = raw.get_data().nbytes  # float64 at the raw rate: what a preloaded read holds
    del raw
    rec = load_dataset(tmp_path / "ds")[0]
    w, sp = WindowSpec(), PreprocessingSpec()
    whole = rec.load_raw()
    expect, _ = preprocess_continuous(whole.get_data(), whole.info["sfreq"], w, sp)
    del whole
    monkeypatch.setattr(_cache, "READ_BLOCK", 4096)
    tracemalloc.start()
    try:
        entry = cache_recording(rec, w, sp, tmp_path / "rc")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    got = np.asarray(entry.data())
    assert got.shape == expect.shape == (n_ch, entry.n_samples)
    # another block size moves a sample by float32 rounding at most
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-5 * float(np.abs(expect).max()))
    assert peak < raw_bytes / 4, f"caching a {raw_bytes / 1e6:.0f} MB run peaked at {peak / 1e6:.1f} MB"


_MAKERS = {"meg-masc": make_meg_masc, "mous": make_mous, "libribrain": make_libribrain, "brennan": make_brennan}


@pytest.mark.parametrize("layout", sorted(_MAKERS))
def test_corpus_runs_are_read_lazily_and_cache_as_when_preloaded(tmp_path, layout):
    """MEG-MASC (KIT .con), MOUS (CTF .ds), LibriBrain (pnpl .h5) and Brennan v2 (BrainVision) runs leave their
    samples on disk until the cache reads them block by block; the lazy read gives the preloaded data exactly,
    a piece read alone equals that piece of the whole, and the entry equals the whole-run preprocessing."""
    from neurospeech.preprocessing import preprocess_continuous

    root = tmp_path / layout
    _MAKERS[layout](root)
    rec = _data.find_recordings(root, None, None, layout)[0]
    lazy, whole = rec.load_raw(preload=False), rec.load_raw()
    assert not lazy.preload and whole.preload
    assert lazy.ch_names == whole.ch_names and lazy.info["bads"] == whole.info["bads"]
    np.testing.assert_array_equal(lazy.get_data(), whole.get_data())
    n = whole.n_times
    a, b = n // 3, n // 3 + 777
    np.testing.assert_array_equal(lazy.get_data(start=a, stop=b), whole.get_data()[:, a:b])
    w, sp = WindowSpec(), PreprocessingSpec()
    expect, _ = preprocess_continuous(whole.get_data(), whole.info["sfreq"], w, sp)
    got = np.asarray(cache_recording(rec, w, sp, tmp_path / "rc").data())
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-5 * float(np.abs(expect).max()))
