"""Trained RNNs reproduce Piwek et al. (2023): the paper's effects on 5 seeds (slow: ~10-30 min on 2 cores).

Run with ``python -m pytest tests/test_wm_rnn_slow.py -m slow``; the same check as a benchmark with a printed
table is ``neurospeech wm-rnn bench --out runs/wm-bench --config deploy/configs/wm-rnn.example.toml``.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.torch, pytest.mark.timeout(3600)]


def test_trained_rnns_rotate_planes_into_alignment(tmp_path):
    from neurospeech.models.wm_rnn.bench import run_bench

    train = {"lr": 1e-3, "batch_size": 32, "max_epochs": 300, "plateau_epochs": 60, "task": {}}
    report = run_bench(train, [0, 1, 2, 3, 4], tmp_path, n_jobs=2, cv=3)
    print(report["table"])
    c = report["checks"]
    assert c["geometry_ok"], c  # theta_post < theta_pre - 30 and AI_post > AI_pre + 0.3 in >= 4 of 5 seeds
    assert c["error_ok"], c  # mean |error| < 10 deg
    assert c["no_delay_ai_lower_ok"], c  # no post-cue delay: lower post-cue AI than the standard task
