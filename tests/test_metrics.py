"""neurospeech.metrics: top-k retrieval accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from neurospeech.errors import DataFormatError
from neurospeech.metrics import rank_of_true, segment_topk, word_topk


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
    assert r["top1"] == 1.0 and r["n_words"] == 3 and r["chance_top10"] == 1.0
    r = word_topk(s, words, np.array(["b"]), k=10)
    assert r["top1"] == 0.0 and r["top10"] == 1.0


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
