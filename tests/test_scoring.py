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


def test_prefilter_gives_the_exact_topk_at_a_fraction_of_the_cost(tmp_path):
    # candidates mostly inside a rank-40 subspace plus a little full-rank noise (as speech candidates: 99 % of the
    # energy in the top ranks); the prefilter of rank 40 then shortlists the exact top-k
    rng = np.random.default_rng(3)
    n, f, t = 3000, 16, 20
    y = (rng.standard_normal((n, 40)) @ rng.standard_normal((40, f * t))).reshape(n, f, t)
    y += 0.05 * np.linalg.norm(y) / np.sqrt(y.size) * rng.standard_normal(y.shape)
    ids = np.array([f"s{i:04d}" for i in range(n)])
    bank = CandidateBank(features=normalise_candidates(y), ids=ids, words=ids, sounds=np.array(["a.wav"] * n),
                         sentences=ids, sound_times=np.zeros(n), header={"output_shape": [f, t]})
    pre = bank.with_prefilter(40, shortlist=100)
    assert 0.99 < pre.header["prefilter"]["energy"] < 1 and pre.shortlist == 100
    assert pre.macs_per_decision() < bank.macs_per_decision() / 3
    pre.save(tmp_path / "p.npz")
    back = CandidateBank.load(tmp_path / "p.npz")
    assert back.header["prefilter"] == pre.header["prefilter"] and back.features.flags.c_contiguous
    np.testing.assert_array_equal(back.features, bank.features)  # the exact bank is kept whole
    z = rng.standard_normal((32, f, t)).astype(np.float32)
    i_ex, s_ex, p_ex = bank.topk(z, 10)
    i_pf, s_pf, p_pf = back.topk(z, 10)
    np.testing.assert_array_equal(i_pf, i_ex)
    np.testing.assert_allclose(s_pf, s_ex, rtol=1e-5, atol=1e-5)  # exact scores for the reported candidates
    # probabilities: the denominator takes rank-40 scores outside the shortlist (close, not equal)
    np.testing.assert_allclose(p_pf, p_ex, rtol=0.05)
    one = back.topk(z[0], 10)
    np.testing.assert_array_equal(one[0], i_ex[:1])
    # a shortlist of k or less ranks only what the prefilter picked: the approximation shows
    tiny = bank.with_prefilter(2, shortlist=10)
    assert not np.array_equal(tiny.topk(z, 10)[0], i_ex)
    with pytest.raises(ConfigError, match="exact bank"):
        back.with_prefilter(10)
    with pytest.raises(ConfigError, match="exact bank"):
        bank.compressed(10).with_prefilter(5)
    with pytest.raises(ConfigError, match="shortlist"):
        bank.with_prefilter(10, shortlist=0)
    from neurospeech.errors import DataFormatError

    with pytest.raises(DataFormatError, match="prefilter"):
        CandidateBank(features=bank.features, ids=ids, words=ids, sounds=bank.sounds, sentences=ids,
                      sound_times=np.zeros(n), prefilter_basis=pre.prefilter_basis)


def test_auto_prefilter_only_where_it_pays_and_keeps_the_energy():
    """`neurospeech bank`'s default: a prefilter for thousands of candidates whose energy sits in few ranks (as
    speech candidates'), the exact bank for a small bank or for candidates spread over every dimension."""
    rng = np.random.default_rng(5)

    def bank_of(y):
        n = len(y)
        ids = np.array([f"s{i:04d}" for i in range(n)])
        return CandidateBank(features=normalise_candidates(y), ids=ids, words=ids, sounds=np.array(["a.wav"] * n),
                             sentences=ids, sound_times=np.zeros(n), header={"output_shape": list(y.shape[1:])})

    n, f, t = 1500, 16, 32  # D = 512: a rank-64 prefilter costs 64 n + 264 D MACs against n D
    low = (rng.standard_normal((n, 40)) @ rng.standard_normal((40, f * t))).reshape(n, f, t)
    low += 0.03 * np.linalg.norm(low) / np.sqrt(low.size) * rng.standard_normal(low.shape)
    pre, why = bank_of(low).with_auto_prefilter(rank=64, shortlist=200)
    assert pre.header["prefilter"]["rank"] == 64 and pre.header["prefilter"]["energy"] >= 0.99, why
    assert "prefilter of rank 64" in why
    z = rng.standard_normal((16, f, t)).astype(np.float32)
    exact = bank_of(low)
    np.testing.assert_array_equal(pre.topk(z, 10)[0], exact.topk(z, 10)[0])
    # random candidates: rank 64 of 512 holds ~1/8 of their energy -> exact
    flat = bank_of(rng.standard_normal((n, f, t)))
    same, why = flat.with_auto_prefilter(rank=64)
    assert same is flat and same.prefilter_basis is None and "energy" in why
    # a few hundred candidates: the prefilter would not pay -> exact, without an SVD
    small = bank_of(low[:300])
    same, why = small.with_auto_prefilter(rank=64)
    assert same is small and "cost" in why
    same, why = bank_of(low[:50]).with_auto_prefilter(rank=64)  # fewer candidates than the rank
    assert same.prefilter_basis is None and "too few" in why
    with pytest.raises(ConfigError, match="exact bank"):
        pre.with_auto_prefilter(rank=64)
