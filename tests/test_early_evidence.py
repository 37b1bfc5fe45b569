"""The evidence-limited reference of the accuracy-vs-delay curve (neurospeech.early, issue 18)."""

from __future__ import annotations

import numpy as np
import pytest

from neurospeech.early import (
    curve_markdown,
    delay_curve,
    n_seen,
    seen_share,
    separation_for_topk,
    topk_at_separation,
)
from neurospeech.errors import ConfigError
from neurospeech.preprocessing import WindowSpec


@pytest.mark.parametrize("d_prime", [0.5, 1.6, 2.5])
def test_topk_at_separation_matches_gaussian_scores(d_prime):
    """Monte Carlo of the model itself: wrong scores N(0, 1), the true one N(d', 1)."""
    rng = np.random.default_rng(1)
    n, q = 500, 4000
    wrong = rng.standard_normal((q, n - 1))
    true = d_prime + rng.standard_normal(q)
    hits = (wrong > true[:, None]).sum(axis=1) < 10
    p = topk_at_separation(d_prime, n)
    se = np.sqrt(p * (1 - p) / q)
    assert abs(hits.mean() - p) < 4 * se + 1e-3
    assert separation_for_topk(p, n) == pytest.approx(d_prime, abs=1e-4)


def test_separation_edges_and_errors():
    n = 1000
    assert topk_at_separation(0.0, n) == pytest.approx(10 / n, rel=1e-6)  # chance
    assert separation_for_topk(0.001, n) == 0.0  # below chance: no separation
    assert np.isnan(separation_for_topk(1.0, n))  # cannot invert a perfect score
    assert topk_at_separation(1.0, 5) == 1.0  # k >= n: always in the top k
    # where the reference cannot be given (every query a top-10 hit among 12 candidates) the rows hold None, so two
    # identical curves compare equal (NaN would not) and stay JSON-safe
    rows = delay_curve({1.0: np.zeros(12), 2.5: np.zeros(12)}, np.arange(12), 12, n_boot=50, window=WindowSpec())
    assert rows == delay_curve({1.0: np.zeros(12), 2.5: np.zeros(12)}, np.arange(12), 12, n_boot=50,
                               window=WindowSpec())
    assert rows[0]["implied_evidence_share"] is None and rows[0]["seen_share"] == seen_share(WindowSpec(), 1.0)
    assert "n/a" in "\n".join(curve_markdown({"m": rows}))
    with pytest.raises(ConfigError, match="must be in"):
        separation_for_topk(1.5, n)
    with pytest.raises(ConfigError, match="n_candidates"):
        topk_at_separation(1.0, 0)


def _ranks_by_prefix(z, y, true, window, delays):
    """Rank of the true candidate when only the first n_seen samples of z and y are scored."""
    out = {}
    for d in (*delays, window.tmax):
        k = n_seen(window, d)
        yk = y[:, :k] / np.linalg.norm(y[:, :k], axis=1, keepdims=True)
        s = z[:, :k] @ yk.T
        out[d] = (s > s[np.arange(len(s)), true][:, None]).sum(axis=1)
    return out


def _simulate(front_loaded: bool):
    window = WindowSpec(sfreq=40.0)
    rng = np.random.default_rng(7)
    n_cand, n_q, t = 300, 3000, window.n_times
    y = rng.standard_normal((n_cand, t))
    true = np.arange(n_q) % n_cand
    gain = np.full(t, 0.2)
    if front_loaded:  # all the evidence in the first half of the window
        gain[: t // 2] = 0.2 * np.sqrt(2.0)
        gain[t // 2:] = 0.0
    z = gain * y[true] + rng.standard_normal((n_q, t))
    delays = (0.5, 1.0, 1.5, 2.0)
    return window, delay_curve(_ranks_by_prefix(z, y, true, window, delays), true, n_cand, n_boot=200,
                               window=window)


def test_uniform_evidence_reference_predicts_uniform_accrual():
    """Evidence spread evenly over the window: the reference predicts the measured curve, no free parameter."""
    window, rows = _simulate(front_loaded=False)
    assert rows[-1]["seen_share"] == 1.0 and rows[-1]["implied_evidence_share"] == pytest.approx(1.0)
    assert 0.2 < rows[-1]["top10"] < 0.8  # the regime where the curve is informative
    for r in rows[:-1]:
        assert r["seen_share"] == pytest.approx(seen_share(window, r["delay_s"]))
        assert abs(r["of_full_top10"] - r["uniform_evidence_of_full"]) < 0.08, r
        assert abs(r["implied_evidence_share"] - r["seen_share"]) < 0.1, r


def test_reference_exposes_a_decoder_whose_evidence_comes_early():
    """Evidence only in the window's first half: at +1.0 s (48 % seen) the implied share is ~1 or more (the full
    window's second half adds only noise), far above the seen share and the uniform reference."""
    _, rows = _simulate(front_loaded=True)
    mid = next(r for r in rows if r["delay_s"] == 1.0)
    assert mid["seen_share"] < 0.5 and mid["implied_evidence_share"] > 0.9
    assert mid["of_full_top10"] > mid["uniform_evidence_of_full"] + 0.25
    table = "\n".join(curve_markdown({"m": rows}))
    assert "| m: uniform-evidence reference, % of full-window top-10 |" in table
    assert "| share of the window seen % |" in table
