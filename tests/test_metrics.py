"""neurospeech.metrics: top-k retrieval accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from neurospeech.errors import DataFormatError
from neurospeech.metrics import (
    binomial_p,
    bootstrap_ci,
    bootstrap_ratio_ci,
    empirical_chance,
    rank_of_true,
    segment_topk,
    word_topk,
)


def test_perfect_scores_give_one_and_chance_is_reported():
    s = np.eye(50) + 0.01 * np.random.default_rng(0).random((50, 50))
    r = segment_topk(s, np.arange(50))
    assert r["top1"] == 1.0 and r["top10"] == 1.0
    assert r["n_queries"] == 50 and r["n_candidates"] == 50
    assert r["chance_top1"] == pytest.approx(1 / 50) and r["chance_top10"] == pytest.approx(10 / 50)
    assert r["median_rank"] == 1.0


def test_reversed_scores_give_zero_and_random_scores_give_chance():
    s = -np.eye(30)
    assert segment_topk(s, np.arange(30))["top10"] == 0.0
    rng = np.random.default_rng(1)
    s = rng.standard_normal((4000, 200))
    r = segment_topk(s, rng.integers(0, 200, 4000), ks=(1, 10, 50))
    assert abs(r["top10"] - 0.05) < 0.015 and abs(r["top50"] - 0.25) < 0.03


def test_ties_count_against_the_query():
    s = np.zeros((5, 20))
    assert segment_topk(s, np.arange(5))["top10"] == 0.0
    assert list(rank_of_true(s, np.arange(5))) == [19] * 5


def test_word_topk_sums_probabilities_per_word():
    # candidates 0,1 are word 'a'; candidate 2 'b' has the single best score but 'a' has more mass
    s = np.array([[2.0, 2.0, 2.5, -5.0]])
    words = np.array(["a", "a", "b", "c"])
    r = word_topk(s, words, np.array(["a"]), k=10)
    assert r["top1"] == 1.0 and r["n_words"] == 3 and r["naive_chance_top10"] == 1.0
    r = word_topk(s, words, np.array(["b"]), k=10)
    assert r["top1"] == 0.0 and r["top10"] == 1.0


def test_word_identity_is_case_folded():
    s = np.array([[1.0, 0.9, 0.0]])
    r = word_topk(s, np.array(["The", "the", "cat"]), np.array(["THE"]), k=1)
    assert r["n_words"] == 2 and r["top1"] == 1.0


def test_random_word_identity_chance_is_far_above_k_over_vocabulary():
    # 200 candidates: 'the' 60 times, 'a' 40 times, 100 words once each; queries follow the same frequencies
    words = np.array(["the"] * 60 + ["a"] * 40 + [f"w{i}" for i in range(100)])
    true = words[np.random.default_rng(0).integers(0, 200, 300)]

    def metric(s):
        return word_topk(s, words, true, k=10)["top10"]

    ch = empirical_chance(metric, (300, 200), n_draws=60, seed=1)
    naive = word_topk(np.zeros((300, 200)), words, true, k=10)["naive_chance_top10"]
    assert naive == pytest.approx(10 / 102)
    assert ch["lo"] > 3 * naive  # 'the' and 'a' alone are half of the queries
    fresh = metric(np.random.default_rng(99).standard_normal((300, 200)))
    assert ch["lo"] <= fresh <= ch["hi"]


def test_bootstrap_intervals_cover_the_estimate_and_shrink_with_more_data():
    rng = np.random.default_rng(0)
    small, big = rng.random(50) < 0.3, rng.random(5000) < 0.3
    lo, hi = bootstrap_ci(small)
    assert lo <= small.mean() <= hi
    lo2, hi2 = bootstrap_ci(big)
    assert lo2 <= big.mean() <= hi2 and hi2 - lo2 < (hi - lo) / 4
    # groups: duplicated queries (the same segment from two subjects) do not shrink the interval
    dup = np.repeat(small, 2)
    lo3, hi3 = bootstrap_ci(dup, np.repeat(np.arange(50), 2))
    assert hi3 - lo3 > 0.7 * (hi - lo)
    a, b = rng.random(400) < 0.6, rng.random(400) < 0.3
    rlo, rhi = bootstrap_ratio_ci(a, b)
    assert rlo <= a.mean() / b.mean() <= rhi and rlo > 1.2
    with pytest.raises(DataFormatError):
        bootstrap_ci(np.array([]))


def test_binomial_p_value():
    assert binomial_p(20, 25, 0.4) < 1e-3
    assert binomial_p(10, 25, 0.4) > 0.4
    assert np.isnan(binomial_p(0, 0, 0.1))


def test_metric_input_errors():
    with pytest.raises(DataFormatError):
        segment_topk(np.zeros((3, 4)), np.arange(2))
    with pytest.raises(DataFormatError):
        segment_topk(np.zeros((3, 4)), np.array([0, 1, 4]))
    with pytest.raises(DataFormatError):
        segment_topk(np.full((2, 2), np.nan), np.arange(2))
    with pytest.raises(DataFormatError):
        segment_topk(np.zeros(4), np.arange(1))
    with pytest.raises(DataFormatError, match="not among"):
        word_topk(np.zeros((1, 2)), np.array(["a", "b"]), np.array(["z"]))


def _reference_ranks(s, true_index, cand_words, true_words):
    """The whole-matrix float64 ranking (what the metrics did before they worked in row blocks)."""
    from neurospeech.scoring import softmax

    s = np.asarray(s, dtype=np.float64)
    seg = (s >= s[np.arange(len(s)), true_index][:, None]).sum(axis=1) - 1
    cw = np.array([w.casefold() for w in cand_words])
    vocab, inv = np.unique(cw, return_inverse=True)
    p = softmax(s, axis=1)
    pw = np.zeros((len(s), len(vocab)))
    np.add.at(pw.T, inv, p.T)
    tp = pw[np.arange(len(s)), np.searchsorted(vocab, [w.casefold() for w in true_words])][:, None]
    return seg, (pw > tp).sum(axis=1) + (pw == tp).sum(axis=1) - 1


@pytest.mark.parametrize("block", [1, 7, 64, 100_000])
def test_ranks_in_row_blocks_equal_the_whole_matrix_ranks(monkeypatch, block):
    from neurospeech import metrics
    from neurospeech.metrics import word_ranks

    rng = np.random.default_rng(5)
    n_q, n_c = 150, 90
    cand_words = rng.choice(["the", "a", "Dog", "dog", "ran", "sat", "on"], n_c)
    true_index = rng.integers(0, n_c, n_q)
    true_words = cand_words[true_index]
    s = rng.standard_normal((n_q, n_c)).astype(np.float32)
    s[:, :5] = s[:, :1]  # ties count against the true candidate
    seg_ref, word_ref = _reference_ranks(s, true_index, list(cand_words), list(true_words))
    monkeypatch.setattr(metrics, "ROW_BLOCK", block)
    np.testing.assert_array_equal(rank_of_true(s, true_index), seg_ref)
    np.testing.assert_array_equal(word_ranks(s, cand_words, true_words)[0], word_ref)
    bad = s.copy()
    bad[n_q - 1, 3] = np.nan  # in the last block whatever the block size
    with pytest.raises(DataFormatError, match="NaN or infinite"):
        rank_of_true(bad, true_index)


def test_ranking_a_large_score_matrix_needs_far_less_than_its_float64_copies(monkeypatch):
    """tracemalloc peak of ranking a 2000 x 3000 float32 matrix (24 MB) beside the matrix itself: the whole-matrix
    path made float64 copies (48 MB each: scores, softmax, exponentials); the row blocks stay below one."""
    import tracemalloc

    from neurospeech import metrics
    from neurospeech.metrics import word_ranks

    rng = np.random.default_rng(6)
    n_q, n_c = 2000, 3000
    cand_words = np.array([f"w{k % 400}" for k in range(n_c)])
    true_index = rng.integers(0, n_c, n_q)
    s = rng.standard_normal((n_q, n_c)).astype(np.float32)
    monkeypatch.setattr(metrics, "ROW_BLOCK", 128)
    tracemalloc.start()
    try:
        rank_of_true(s, true_index)
        word_ranks(s, cand_words, cand_words[true_index])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < n_q * n_c * 8 / 2, f"ranking peaked at {peak / 1e6:.1f} MB"


def test_evaluate_score_methods_from_ranks_equal_the_metrics_on_each_subset():
    """models.evaluate.score_methods derives every block from the per-query ranks; each block must equal what
    segment_topk / word_topk give on that block's rows of the score matrix."""
    from neurospeech.models.evaluate import score_methods

    rng = np.random.default_rng(8)
    n_q, n_c = 120, 60
    cand_words = rng.choice(["the", "a", "dog", "ran", "sat"], n_c)
    true_index = rng.integers(0, n_c, n_q)
    s = rng.standard_normal((n_q, n_c)).astype(np.float32)
    s[np.arange(n_q), true_index] += 1.0
    subjects = np.array(["01", "02", "03"])[rng.integers(0, 3, n_q)]
    res = score_methods(s, true_index, cand_words, cand_words[true_index], subjects, n_boot=50)
    for name, sel in [("overall", np.ones(n_q, bool))] + [(k, subjects == k) for k in ("01", "02", "03")]:
        got = res["overall"] if name == "overall" else res["per_subject"][name]
        seg = segment_topk(s[sel], true_index[sel], ks=(1, 5, 10))
        word = word_topk(s[sel], cand_words, cand_words[true_index][sel], k=10)
        for key, value in seg.items():
            assert got[key] == value, (name, key)
        assert got["word_identity_top1"] == word["top1"] and got["word_identity_top10"] == word["top10"]
        assert got["n_words"] == word["n_words"]
