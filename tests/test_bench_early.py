"""`bench latency` with early decisions: the early-decision benchmark artifact (an encoder exported with early
decisions declared in its contract, accepting NaN-masked windows), the word events decode-file gets, and the
table row beside today's configuration (no service run here; `neurospeech bench latency` runs it)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from neurospeech.tools.bench._artifacts import build_artifacts
from neurospeech.tools.bench._synthetic import word_markers
from neurospeech.tools.bench.latency import _events_tsv, _over, config_label, config_plan, format_table

from neurospeech.contract import ModelContract
from neurospeech.data import read_events_tsv, segment_id
from neurospeech.early import DEFAULT_DELAYS, delays_of, mask_unseen


@pytest.mark.torch
def test_early_artifact_declares_early_decisions_and_masks_the_unseen_part(tmp_path):
    kw = {"n_candidates": 16, "n_channels": 12}
    early = build_artifacts(tmp_path, "efficient", early=True, **kw)
    plain = build_artifacts(tmp_path, "efficient", **kw)
    assert early["model"] != plain["model"] and early["early_delays_s"] == list(DEFAULT_DELAYS)
    assert "early_delays_s" not in plain
    sess = ort.InferenceSession(early["model"], providers=["CPUExecutionProvider"])
    contract = ModelContract.from_json(sess.get_modelmeta().custom_metadata_map["neurospeech.contract"])
    assert delays_of(contract) == DEFAULT_DELAYS
    plain_sess = ort.InferenceSession(plain["model"], providers=["CPUExecutionProvider"])
    plain_contract = ModelContract.from_json(plain_sess.get_modelmeta().custom_metadata_map["neurospeech.contract"])
    assert delays_of(plain_contract) == ()  # today's configuration is unchanged
    x = np.random.default_rng(0).standard_normal((1, 12, contract.window.n_times)).astype(np.float32)
    name = sess.get_inputs()[0].name
    full = sess.run(None, {name: x})[0]
    masked = sess.run(None, {name: mask_unseen(x, contract.window, 1.0)})[0]
    assert np.isfinite(masked).all() and not np.allclose(masked, full)  # NaN masked inside the graph
    assert build_artifacts(tmp_path, "efficient", early=True, **kw) == early  # cached


def test_decode_file_events_are_the_streams_markers(tmp_path):
    from neurospeech.service.filesource import events_path_for
    from neurospeech.tools.bench._artifacts import bank_entries

    p = _events_tsv(tmp_path, 20.0)
    # not the FIF's own BIDS events table, which decode-file would read for today's rows too
    assert events_path_for(tmp_path / "bench_meg_20s_raw.fif") is None
    ev = read_events_tsv(p).words()
    mk = word_markers(20.0, 1200.0, bank_entries(200))
    assert len(ev.onset) == len(mk) > 10
    onsets = np.array([m.sample / 1200.0 for m in mk])
    assert np.allclose(ev.onset, onsets)
    bank_ids = {segment_id(s, t) for s, t, _ in bank_entries(200)}
    assert {segment_id(s, float(t)) for s, t in zip(ev.sound, ev.sound_time, strict=True)} <= bank_ids
    assert list(ev.word) == [m.payload["word"] for m in mk]


def test_table_has_the_early_row_beside_todays_and_their_ratios():
    def m(p50, p99, cpu, rss, early=False):
        out = {"latency_ms": {"p50": p50, "p99": p99}, "skipped_decisions": 0, "processing_ms": {"p50": 5.0},
               "cpu_percent_one_core": cpu, "rss_mb": rss}
        if early:
            out.update(early_latency_ms={"p50": 30.0, "p99": 60.0, "n": 80}, word_latency_ms={"p50": 25.0,
                       "p99": 50.0, "n": 20}, rates_per_s={"sliding": 10.0, "word": 1.43, "word_early": 5.7})
        return out

    today = {"latency_hop": m(10.0, 20.0, 30.0, 300.0), "cpu_hop": m(10.0, 20.0, 30.0, 300.0),
             "decode_file": {"x_realtime": 100.0}}
    early = {"latency_hop": m(12.0, 30.0, 45.0, 310.0, True), "cpu_hop": m(12.0, 30.0, 45.0, 310.0, True),
             "decode_file": {"x_realtime": 40.0}}
    lab = config_label("efficient", 0, early=True)
    assert lab == "efficient+early"
    r = {
        "settings": {"latency_hop": 0.1, "cpu_hop": 0.25, "chunk_s": 0.01, "n_candidates": 10, "bank_ranks": [0]},
        "presets": {"efficient": today, lab: early},
        "machine": {"cpus": 2, "load_avg_start": [1.0, 1.0, 1.0]},
        "early_over_today": {lab: _over(early, today)},
    }
    assert r["early_over_today"][lab]["latency_p99"] == pytest.approx(1.5)
    assert r["early_over_today"][lab]["decode_file_x_realtime"] == pytest.approx(0.4)
    table = format_table(r)
    lines = table.splitlines()
    end = next(i for i, x in enumerate(lines) if "target" in x)
    rows = {x.split()[0]: x.split() for x in lines[:end] if x.strip()}
    assert rows["efficient"][1:3] == ["10.0", "20.0"] and rows[lab][1:3] == ["12.0", "30.0"]
    assert "efficient+early / efficient: latency_p50 1.20, latency_p99 1.50, cpu_percent 1.50" in table
    assert "word_early latency p50 30.0 / p99 60.0 ms (n=80)" in table and "5.70 word_early" in table


def test_early_rows_get_the_same_bank_ranks_and_int8_copies_as_todays():
    plan = config_plan(("efficient", "paper"), ("efficient",), (0, 512), True)
    labels = [row[0] for row in plan]
    assert labels == [
        "efficient", "efficient+int8", "efficient@r512", "efficient@r512+int8",
        "paper", "paper+int8", "paper@r512", "paper@r512+int8",
        "efficient+early", "efficient+int8+early", "efficient@r512+early", "efficient@r512+int8+early",
    ]
    assert plan[-1] == ("efficient@r512+int8+early", "efficient", 512, True, True)
    # each early row has today's row of the same bank and encoder to be compared with (early_over_today)
    for lab in labels:
        if lab.endswith("+early"):
            assert lab[: -len("+early")] in labels
    assert [r[0] for r in config_plan(("efficient",), (), (0,), False)] == ["efficient"]
