"""`bench latency --bank-rank`: the compressed benchmark bank and the option's validation (no service run)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from neurospeech.tools.bench._artifacts import bank_entries, compressed_bank
from neurospeech.tools.bench.latency import config_label, format_table

from neurospeech.cli import cli
from neurospeech.scoring import CandidateBank, normalise_candidates


def _exact_bank(path, n=300, d=96, seed=0):
    rng = np.random.default_rng(seed)
    ent = bank_entries(n)
    # speech-like structure: a rank-24 signal plus a little noise
    feats = rng.standard_normal((n, 24)) @ rng.standard_normal((24, d)) + 0.05 * rng.standard_normal((n, d))
    bank = CandidateBank(
        features=normalise_candidates(feats.astype(np.float32)),
        ids=np.array([f"id{k}" for k in range(n)]),
        words=np.array([w for _, _, w in ent]),
        sounds=np.array([s for s, _, _ in ent]),
        sentences=np.array([f"s{k // 8}" for k in range(n)]),
        sound_times=np.array([t for _, t, _ in ent], dtype=np.float64),
        header={"model_sha256": "x" * 64, "output_shape": [8, 12]},
    )
    bank.save(path)
    return bank


def test_compressed_bank_written_cached_and_scores_like_exact(tmp_path):
    exact = _exact_bank(tmp_path / "bank.npz")
    art = {"bank": str(tmp_path / "bank.npz")}
    info = compressed_bank(art, 32)
    assert info["bank"] == str(tmp_path / "bank-r32.npz")
    assert info["bank_rank"] == 32
    assert 0.99 < info["bank_energy_kept"] <= 1.0
    assert info["bank_macs_per_decision"] == 300 * 32 + 32 * 96 < exact.macs_per_decision()
    loaded = CandidateBank.load(info["bank"])
    assert loaded.basis is not None and loaded.basis.shape == (32, 96)
    z = np.random.default_rng(1).standard_normal((8, 12)).astype(np.float32)
    assert np.argmax(loaded.scores(z)) == np.argmax(exact.scores(z))
    mtime = (tmp_path / "bank-r32.npz").stat().st_mtime_ns
    assert compressed_bank(art, 32) == info  # cached: not rewritten
    assert (tmp_path / "bank-r32.npz").stat().st_mtime_ns == mtime
    # a changed exact bank invalidates the cache
    _exact_bank(tmp_path / "bank.npz", seed=5)
    compressed_bank(art, 32)
    assert (tmp_path / "bank-r32.npz").stat().st_mtime_ns != mtime


def test_prefilter_variant_keeps_the_exact_bank_and_ranks_like_it(tmp_path):
    exact = _exact_bank(tmp_path / "bank.npz")
    art = {"bank": str(tmp_path / "bank.npz")}
    info = compressed_bank(art, "p16")
    assert info["bank"].endswith("bank-p16.npz") and info["bank_rank"] == "p16"
    loaded = CandidateBank.load(info["bank"])
    assert loaded.basis is None and loaded.prefilter_basis is not None and loaded.shortlist == 200
    np.testing.assert_array_equal(loaded.features, exact.features)
    z = np.random.default_rng(1).standard_normal((8, 12)).astype(np.float32)
    assert np.array_equal(loaded.topk(z, 5)[0], exact.topk(z, 5)[0])  # 300 candidates: the shortlist of 200
    assert compressed_bank(art, "p16") == info  # cached
    assert config_label("efficient", "p16", early=True) == "efficient@p16+early"
    assert config_label("efficient", 16) == "efficient@r16"


@pytest.mark.parametrize("bad", ["-1", "abc", ",", "0,x", "p", "p-3", "q12"])
def test_bank_rank_option_rejects_bad_values(tmp_path, bad):
    res = CliRunner().invoke(cli, ["bench", "latency", "--workdir", str(tmp_path), "--bank-rank", bad])
    assert res.exit_code != 0
    assert "--bank-rank" in res.output or "--bank-rank" in str(res.exception)
    assert not any(tmp_path.iterdir())  # refused before building anything


def test_table_labels_ranked_rows_and_says_cost_only():
    m = {
        "latency_ms": {"p50": 10.0, "p99": 20.0},
        "skipped_decisions": 0,
        "processing_ms": {"p50": 5.0},
        "cpu_percent_one_core": 30.0,
        "rss_mb": 300.0,
    }
    r = {
        "settings": {"latency_hop": 0.1, "cpu_hop": 0.25, "chunk_s": 0.01, "n_candidates": 10, "bank_ranks": [0, 4]},
        "presets": {config_label("efficient", k): {"latency_hop": m, "cpu_hop": m} for k in (0, 4)},
        "bank_note": "random candidates: COST only; accuracy of compression measured separately",
        "machine": {"cpus": 2, "load_avg_start": [1.0, 1.0, 1.0]},
    }
    table = format_table(r)
    firsts = [line.split()[0] for line in table.splitlines() if line.strip()]
    assert "efficient" in firsts and "efficient@r4" in firsts
    assert "COST only" in table
