"""The tuned linear baseline and the chance levels, on a small simulated dataset (real BIDS files).

- the tuned backward ridge (lags -0.2..0.8 s, alpha chosen on validation windows) beats a deliberately
  crippled one (lags 0..0.05 s: it misses most of the simulated response, which peaks at 0.05-0.6 s);
- the word identity score of random scores (an independent draw) lies inside the reported chance interval,
  and that interval is far above the naive 10 / vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from neurospeech.tools.simulate._build import settings_for, simulate_dataset
from threadpoolctl import threadpool_limits

from neurospeech.metrics import word_topk


@pytest.fixture(scope="module")
def hard_root(tmp_path_factory) -> Path:
    """1 subject, 2 min of speech at -15 dB: hard enough that the decoder's lags matter."""
    root = tmp_path_factory.mktemp("hard") / "data"
    simulate_dataset(root, settings_for("ci", n_subjects=1, minutes=2.0, snr_db=-15.0, seed=1))
    return root


@pytest.fixture(scope="module")
def calibrations(hard_root, tmp_path_factory) -> dict[str, dict]:
    from neurospeech.models.calibrate import run_calibration

    cache = tmp_path_factory.mktemp("cache")
    out = {}
    settings: dict[str, dict[str, Any]] = {
        "tuned": {},
        "crippled": {"tmin": 0.0, "tmax": 0.05, "decoder": {"lag_step": 1}},
    }
    with threadpool_limits(1):
        for name, kw in settings.items():
            kw.setdefault("decoder", {})["n_components"] = 24
            out[name] = run_calibration(hard_root, feature_cache=cache, n_boot=300, chance_draws=100, **kw)
    return out


def test_tuned_ridge_beats_a_crippled_one(calibrations):
    tuned, crippled = calibrations["tuned"], calibrations["crippled"]
    assert tuned["n_candidates"] == crippled["n_candidates"] >= 30
    assert tuned["top10"] > 3 * tuned["chance_top10"]
    # the crippled decoder's interval lies below the tuned decoder's score
    assert tuned["top1"] > crippled["top1"] + 0.15
    assert crippled["top10_ci"][1] < tuned["top10"]
    ridge = tuned["ridge"]
    assert ridge["response_window_s"] == [-0.2, 0.8]
    subj = ridge["fits"]["01"]
    assert subj["val_windows"] > 0 and not subj["alpha_at_edge"]
    assert ridge["decoder"]["lag_start"] == -42 and ridge["decoder"]["lags"] == 121


def test_random_word_identity_lies_inside_the_reported_chance_interval(calibrations, hard_root):
    from neurospeech.models import _data
    from neurospeech.models.baselines import random_scores

    res = calibrations["tuned"]
    chance = res["chance"]["word_identity_top10"]
    assert chance["lo"] <= chance["mean"] <= chance["hi"]
    # naive 10 / vocabulary underestimates chance: frequent words collect probability
    assert chance["lo"] > res["chance"]["word_identity_top10_naive"]
    # an independent draw of random scores on the same queries and candidates
    recs = _data.find_recordings(hard_root, None, None)
    words = np.concatenate([r.load_events().words().word for r in recs])
    sounds = np.concatenate([r.load_events().words().sound for r in recs])
    from neurospeech.data import segment_id, split_of

    test = np.array([split_of(str(s)) == "test" for s in sounds])
    times = np.concatenate([r.load_events().words().sound_time for r in recs])[test]
    ids = [segment_id(str(s), float(t)) for s, t in zip(sounds[test], times, strict=True)]
    _, first = np.unique(ids, return_index=True)
    cand_words = words[test][first]
    assert len(cand_words) == res["n_candidates"]
    hits = [word_topk(random_scores(len(ids), len(cand_words), seed), cand_words, words[test], k=10)["top10"]
            for seed in (11, 12, 13)]
    inside = [chance["lo"] <= h <= chance["hi"] for h in hits]
    assert sum(inside) >= 2, (hits, chance)
    # the frequency-only decoder also reaches the chance region; the tuned ridge is far above it
    assert res["word_identity_top10"] > chance["hi"]
