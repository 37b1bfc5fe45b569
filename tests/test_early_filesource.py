"""decode-file with an early-decision model: word_early decisions from the live pipeline, equal to the offline
masked windows, before each final word decision; the final decisions unchanged; the curve in the summary."""

from __future__ import annotations

import numpy as np
import pytest
from _early_fixtures import build_early_artifacts, early_latent
from _service_fixtures import build_artifacts, offline_windows
from neurospeech.service.config import ServeSettings
from neurospeech.service.filesource import FileMarker, decode_raw, early_summary
from neurospeech.service.messages import validate_header

from neurospeech.early import DEFAULT_DELAYS, mask_unseen, n_seen
from neurospeech.errors import ConfigError
from neurospeech.scoring import CandidateBank


def _markers(art):
    return [FileMarker(float(a), {"segment_id": i, "word": w, "sound": s, "sound_time": t})
            for a, i, w, s, t in zip(art.anchors, art.ids, art.words, art.sounds, art.sound_times)]


@pytest.fixture(scope="module")
def early_art(tmp_path_factory):
    return build_early_artifacts(tmp_path_factory.mktemp("early"), duration=20.0)


def test_decode_file_early_decisions_match_offline_masked_windows(early_art):
    art = early_art.art
    settings = ServeSettings(model=str(art.model), bank=str(art.bank), hop=0.5, topk=10)
    heads = list(decode_raw(art.data, art.sfreq, art.names, settings, _markers(art), workers=2))
    words = [h for h in heads if h["kind"] == "word"]
    early = [h for h in heads if h["kind"] == "word_early"]
    assert len(words) == len(art.anchors) and len(early) == len(DEFAULT_DELAYS) * len(words)
    # each word: its four early decisions (in delay order) right before its final decision
    for k, h in enumerate(heads):
        if h["kind"] == "word":
            before = heads[k - len(DEFAULT_DELAYS):k]
            assert [b["delay_s"] for b in before] == list(DEFAULT_DELAYS)
            assert all(b["truth"] == h["truth"] and b["kind"] == "word_early" for b in before)
            assert all(b["t_onset"] == pytest.approx(h["t_window_start"] + 0.5) for b in before)
            assert all(b["t_newest_sample"] <= b["t_onset"] + b["delay_s"] + 1e-9 for b in before)
    for h in early:
        validate_header("word_early", {**h, "schema": "neurospeech.v1.word_early", "seq": 0, "t_sent": 0.0,
                                       "model_id": "m", "model_sha256": None})
    # the live early decision equals the offline one on the masked offline window
    x, _ = offline_windows(art.data, art.sfreq, art.contract, art.anchors)
    bank = CandidateBank.load(art.bank)
    by_truth = {(h["truth"]["segment_id"], h["delay_s"]): h for h in early}
    for d in DEFAULT_DELAYS:
        z = early_latent(mask_unseen(x, art.contract.window, d), early_art.weight, early_art.unseen)
        best = np.argmax(bank.scores(z), axis=1)
        live = [by_truth[(i, d)]["topk"][0]["id"] for i in art.ids]
        assert live == [str(bank.ids[b]) for b in best]
    # the final decisions do not depend on early decisions being made
    plain = [h for h in decode_raw(art.data, art.sfreq, art.names, settings, _markers(art), workers=0, early=False)]
    assert [h["kind"] for h in plain if h["kind"] == "word_early"] == []
    rest = [h for h in heads if h["kind"] != "word_early"]

    def key(h):
        return (h["kind"], h["t_window_start"], h["t_newest_sample"], h["truth"], [c["id"] for c in h["topk"]])

    assert [key(h) for h in plain] == [key(h) for h in rest]
    np.testing.assert_allclose([c["score"] for h in plain for c in h["topk"]],
                               [c["score"] for h in rest for c in h["topk"]], rtol=1e-5, atol=1e-5)


def test_decode_file_summary_curve(early_art, tmp_path):
    import mne
    from neurospeech.service.filesource import decode_file

    art = early_art.art
    info = mne.create_info(art.names, art.sfreq, "eeg")
    fif = tmp_path / "rec_raw.fif"
    mne.io.RawArray(art.data, info, verbose="error").save(fif, verbose="error")
    events = tmp_path / "events.tsv"
    rows = ["onset\tduration\ttrial_type\tword\tsound\tsound_time\tsentence"]
    rows += [f"{a}\t0.3\tword\t{w}\t{s}\t{t}\ts" for a, w, s, t in zip(art.anchors, art.words, art.sounds,
                                                                       art.sound_times)]
    events.write_text("\n".join(rows) + "\n")
    settings = ServeSettings(model=str(art.model), bank=str(art.bank), hop=0.5, topk=10)
    summary = decode_file(fif, tmp_path / "out.jsonl", settings, events=events, workers=0)
    e = summary["early_decisions"]
    assert summary["decisions"]["word_early"] == len(DEFAULT_DELAYS) * summary["word_locked"]
    assert [r["delay_s"] for r in e["curve"]] == [*DEFAULT_DELAYS, 2.5]
    full = e["curve"][-1]
    assert full["top10"] == pytest.approx(summary["segment_top10"]) and full["of_full_top10"] == pytest.approx(1.0)
    for r in e["curve"]:
        lo, hi = r["top10_ci"]
        assert lo <= r["top10"] <= hi and r["chance_top10"] == pytest.approx(10 / summary["n_candidates"])
        # the evidence-limited reference travels with the curve (None where the top-10 cannot be inverted)
        w = art.contract.window
        assert r["seen_share"] == pytest.approx(n_seen(w, r["delay_s"]) / w.n_times if r is not full else 1.0)
        assert "uniform_evidence_of_full" in r and "implied_evidence_share" in r
    assert "onset + 1 s" in e["table"] and "chance" in e["table"] and "share of the window seen" in e["table"]


def test_early_refused_for_a_model_without_it(tmp_path):
    art = build_artifacts(tmp_path, duration=12.0)
    settings = ServeSettings(model=str(art.model), bank=str(art.bank), hop=0.5)
    with pytest.raises(ConfigError, match="early_decisions"):
        list(decode_raw(art.data, art.sfreq, art.names, settings, early=True))
    assert early_summary({}, [], 10) is None


def test_early_tracker_cuts_partial_windows_as_data_arrive(early_art):
    """The live path: chunks into the pipeline, the tracker's early jobs as soon as onset + delay has arrived;
    each equals the full window's model input with the unseen tail masked."""
    from neurospeech.service.early_decisions import EarlyTracker
    from neurospeech.service.filesource import _open_pipeline

    art = early_art.art
    settings = ServeSettings(model=str(art.model), bank=str(art.bank), hop=0.5)
    pipe = _open_pipeline(art.contract, art.names, art.sfreq, "sim01", settings, None, None, 0.25)
    tracker = EarlyTracker(DEFAULT_DELAYS)
    for a, i in zip(art.anchors, art.ids):
        tracker.add(float(a), {"segment_id": i})
    step = round(0.25 * art.sfreq)
    stamps = np.arange(art.data.shape[1]) / art.sfreq
    jobs, fulls = [], {}
    pending = list(zip(art.anchors, art.ids))
    for s in range(0, art.data.shape[1], step):
        pipe.process_chunk(art.data[:, s:s + step].T.astype(np.float32), stamps[s:s + step])
        t_data = stamps[min(s + step, art.data.shape[1]) - 1]
        for job in tracker.due(pipe):
            # decided no later than one chunk after its data arrived, never before
            assert job.t_onset + job.delay_s <= t_data + 1e-6
            assert t_data - (job.t_onset + job.delay_s) < 0.25 + 0.2  # + the resampler's delay
            jobs.append(job)
        while pending:
            status, where = pipe.locate_anchor(float(pending[0][0]))
            if status != "ready":
                break
            a, i = pending.pop(0)
            fulls[i] = pipe.make_job(int(where), "word", {"segment_id": i})
    assert tracker.pending == [] and tracker.dropped == 0
    assert len(jobs) == len(DEFAULT_DELAYS) * len(art.ids) == tracker.made
    w = art.contract.window
    for i in art.ids:
        mine = [j for j in jobs if j.truth["segment_id"] == i]
        assert [j.delay_s for j in mine] == list(DEFAULT_DELAYS)
        for j in mine:
            assert j.kind == "word_early" and j.x is not None
            np.testing.assert_allclose(j.x, mask_unseen(fulls[i].x, w, j.delay_s), rtol=1e-6, atol=1e-6)
            assert j.t_window_start == fulls[i].t_window_start


def test_early_tracker_drops_a_marker_whose_window_is_not_in_the_ring(early_art):
    from neurospeech.service.early_decisions import EarlyTracker
    from neurospeech.service.filesource import _open_pipeline

    art = early_art.art
    settings = ServeSettings(model=str(art.model), bank=str(art.bank), hop=0.5)
    pipe = _open_pipeline(art.contract, art.names, art.sfreq, "sim01", settings, None, None, 0.25)
    tracker = EarlyTracker(DEFAULT_DELAYS)
    assert tracker.due(pipe) == []  # nothing tracked, nothing in the ring
    tracker.add(0.1, {"segment_id": "too-early"})  # its window would start 0.4 s before the recording
    tracker.add(float(art.anchors[0]), {"segment_id": art.ids[0]})
    assert tracker.due(pipe) == [] and len(tracker.pending) == 2  # no data yet: both wait
    n = round(4.0 * art.sfreq)
    pipe.process_chunk(art.data[:, :n].T.astype(np.float32), np.arange(n) / art.sfreq)
    jobs = tracker.due(pipe)
    assert [j.truth["segment_id"] for j in jobs] == [art.ids[0]] * 4  # a burst: every delay decided
    assert tracker.dropped == 4 and tracker.pending == []
    assert EarlyTracker(()).due(pipe) == []
    empty = EarlyTracker(())
    empty.add(1.0, None)
    assert empty.pending == []  # a model without early decisions tracks nothing
