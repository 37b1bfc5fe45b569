"""`neurospeech demo` end to end: the live word-locked decisions beat chance, hubness stays low.

The whole product runs as a user runs it (simulate -> train -> evaluate -> export -> bank -> replay | serve |
listen on loopback -> decode-file), once per module, replay at real time (faster replays break the stream clock).
This is the longest test of the default suite (a few minutes on 2 cores).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neurospeech._demo import DemoSettings, hubness, run_demo, with_chance

pytestmark = [pytest.mark.integration, pytest.mark.torch, pytest.mark.timeout(1200)]  # the demo trains


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return run_demo(DemoSettings(out=out))


def test_live_word_locked_decisions_beat_chance(summary):
    live = summary["live"]
    assert live["word_locked"] >= 40
    top10 = live["top10_vs_chance"]
    assert top10["chance"] == pytest.approx(10 / summary["decode_file"]["n_candidates"])
    assert top10["p_value"] < 0.01 and top10["accuracy"] > 2 * top10["chance"]
    assert live["top1_vs_chance"]["p_value"] < 0.01


def test_decode_file_beats_chance_and_no_candidate_is_a_hub(summary):
    df = summary["decode_file"]
    assert df["word_locked"] >= 40
    assert df["segment_top1_vs_chance"]["p_value"] < 0.01
    assert df["segment_top10_vs_chance"]["p_value"] < 0.01
    assert df["hubness"]["max_share"] <= 0.2, df["hubness"]
    assert summary["live"]["hubness"]["max_share"] <= 0.2, summary["live"]["hubness"]


def test_validation_set_means_something_and_the_report_has_baselines(summary):
    run = json.loads(Path(summary["artifacts"]["run"], "meta.json").read_text())
    assert run["data"]["n_windows"]["val"] >= 50
    methods = summary["evaluation"]["methods"]
    assert {"random", "frequency", "ridge-mel"} <= set(methods)
    net = methods["efficient-clip-mel"]["overall"]
    assert net["top10_ci"][0] > net["chance_top10"]


def test_chance_helpers():
    assert hubness([]) == {"n": 0, "max_share": None, "candidate": None, "distinct": 0}
    h = hubness(["a", "b", "a", "a"])
    assert h["max_share"] == 0.75 and h["candidate"] == "a" and h["distinct"] == 2
    w = with_chance(0.8, 25, 25, 10)
    assert w["chance"] == 0.4 and w["p_value"] < 1e-3
    assert with_chance(None, 0, 25, 1)["p_value"] is None
