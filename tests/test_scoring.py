"""Candidate bank: CLIP scores, top-k, file round trip, hash refusal, low-rank compression."""

from __future__ import annotations

import numpy as np
import pytest

from neurospeech.errors import ArtifactError, ConfigError
from neurospeech.scoring import CandidateBank, normalise_candidates, softmax, topk


def _bank(n=300, f=8, t=12, rank=None, seed=0):
    rng = np.random.default_rng(seed)
    if rank is None:
        y = rng.standard_normal((n, f, t))
    else:  # candidates living in a rank-`rank` subspace
        y = (rng.standard_normal((n, rank)) @ rng.standard_normal((rank, f * t))).reshape(n, f, t)
    ids = np.array([f"s{i:04d}" for i in range(n)])
    return y, CandidateBank(
        features=normalise_candidates(y), ids=ids, words=ids, sounds=np.array(["a.wav"] * n),
        sentences=ids, sound_times=np.arange(n, dtype=float), header={"model_sha256": "ab" * 32,
                                                                       "output_shape": [f, t]},
    )


def test_scores_match_the_paper_formula_and_topk():
    y, bank = _bank()
    z = np.random.default_rng(1).standard_normal(y.shape[1:])
    expected = np.array([np.sum(z * yi) / np.linalg.norm(yi) for yi in y])
    s = bank.scores(z)
    assert np.allclose(s, expected, rtol=1e-4, atol=1e-4)
    best = topk(s, 5)
    assert best[0] == int(np.argmax(expected)) and np.all(np.diff(s[best]) <= 0)
    p = softmax(s)
    assert np.isclose(p.sum(), 1.0)


def test_round_trip_and_model_check(tmp_path):
    _, bank = _bank()
    bank.save(tmp_path / "b.npz")
    back = CandidateBank.load(tmp_path / "b.npz")
    assert np.array_equal(back.features, bank.features) and list(back.ids) == list(bank.ids)
    back.check_model("ab" * 32)
    with pytest.raises(ArtifactError, match="rebuild the bank"):
        back.check_model("cd" * 32)
    (tmp_path / "bad.npz").write_bytes(b"not a bank")
    with pytest.raises(ArtifactError, match="corrupted"):
        CandidateBank.load(tmp_path / "bad.npz")


def test_compression_is_exact_inside_the_candidate_subspace_and_cheaper(tmp_path):
    y, bank = _bank(n=400, f=16, t=20, rank=40)
    small = bank.compressed(40)
    assert small.header["compression"]["energy"] > 0.999999
    assert small.macs_per_decision() < bank.macs_per_decision() / 4
    z = np.random.default_rng(2).standard_normal(y.shape[1:])
    assert np.allclose(small.scores(z), bank.scores(z), atol=1e-4)
    small.save(tmp_path / "c.npz")
    back = CandidateBank.load(tmp_path / "c.npz")
    assert np.allclose(back.scores(z), bank.scores(z), atol=1e-4)
    zb = np.stack([z, 2 * z])
    assert back.scores(zb).shape == (2, 400)
    assert back.scores(zb[:1]).shape == (1, 400)  # a batch of one stays a batch
    with pytest.raises(ConfigError, match="rank"):
        bank.compressed(0)
    with pytest.raises(ConfigError, match="already compressed"):
        small.compressed(10)


def test_compression_of_a_full_rank_bank_loses_energy():
    _, bank = _bank(n=200, f=8, t=12)
    small = bank.compressed(10)
    assert small.header["compression"]["energy"] < 0.5


def test_topk_softmax_matches_softmax_and_topk_row_by_row():
    from neurospeech.scoring import softmax, topk, topk_softmax

    rng = np.random.default_rng(7)
    s = (3 * rng.standard_normal((5, 2000))).astype(np.float32)
    s[2, [10, 20, 30]] = s[2].max() + 1.0  # a three-way tie at the top: lower index first
    idx, best, probs = topk_softmax(s, 10)
    assert idx.shape == best.shape == probs.shape == (5, 10)
    for b in range(5):
        ref_idx = topk(s[b], 10)
        assert set(idx[b].tolist()) == set(ref_idx.tolist())
        assert np.all(np.diff(best[b]) <= 0) and np.array_equal(best[b], s[b, idx[b]])
        np.testing.assert_allclose(probs[b], softmax(s[b])[idx[b]], rtol=1e-5)
    assert idx[2, :3].tolist() == [10, 20, 30]
    one = topk_softmax(s[0], 3)  # a single row works too
    assert one[0].shape == (1, 3) and one[0][0].tolist() == idx[0, :3].tolist()
    # a tie across the k-th place: 12 candidates share the 10th best score; the 10 lowest indices win
    t = s.copy()
    order = np.argsort(-t[1], kind="stable")
    t[1, order[9:21]] = t[1, order[9]]
    idx_t, best_t, _ = topk_softmax(t, 10)
    assert idx_t[1, :9].tolist() == order[:9].tolist()
    assert idx_t[1, 9] == int(np.sort(order[9:21])[0]) and best_t[1, 9] == t[1, order[9]]
    assert idx_t[0].tolist() == idx[0].tolist()
