"""`neurospeech compare-decisions`: pairing of two decoders' word decisions, the paired figures, the errors;
and on real decode-file output (an exact and a low-rank bank of the same model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from neurospeech.tools.compare import FULL, compare_decisions, format_comparison, read_decisions

from neurospeech.cli import main
from neurospeech.errors import DataFormatError


def _run(capsys, *args):
    """The CLI as users run it (errors mapped to exit codes by main): (exit code, stdout + stderr)."""
    try:
        main(["compare-decisions", *map(str, args)])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _dec(start, truth, ranked, kind="word", delay=None):
    h = {"kind": kind, "t_window_start": start, "truth": {"segment_id": truth},
         "topk": [{"id": c} for c in ranked]}
    if delay is not None:
        h["delay_s"] = delay
    return h


def test_pairs_by_window_and_delay_and_gives_paired_differences(tmp_path):
    # 40 words; A has the truth at rank 1 for words 0-19, B for words 10-29 (B's provisional decisions miss all)
    a_rows, b_rows = [], []
    for w in range(40):
        t = f"s{w}"
        miss = [f"x{j}" for j in range(10)]
        a_rows.append(_dec(w * 3.0, t, [t, *miss[:9]] if w < 20 else miss))
        b_rows.append(_dec(w * 3.0, t, [t, *miss[:9]] if 10 <= w < 30 else miss))
        b_rows.append(_dec(w * 3.0, t, miss, kind="word_early", delay=1.0))
        a_rows.append(_dec(w * 3.0, t, miss, kind="word_early", delay=1.0))
    a_rows.append({"kind": "sliding", "t_window_start": 0.0, "truth": None, "topk": []})  # ignored
    a_rows.append(_dec(999.0, "lonely", ["lonely"]))  # no partner in B
    a = read_decisions(_write(tmp_path / "a.jsonl", a_rows))
    b = read_decisions(_write(tmp_path / "b.jsonl", b_rows))
    r = compare_decisions(a, b, n_candidates=200, n_boot=500)
    assert [row["delay"] for row in r["delays"]] == ["1", FULL]
    full = r["delays"][1]
    assert full["n"] == 40 and full["a"]["top1"] == 0.5 and full["b"]["top1"] == 0.5
    assert full["diff_top10"] == 0.0 and full["diff_top1"] == 0.0
    lo, hi = full["diff_top10_ci"]
    assert lo < 0 < hi  # half the words change hands both ways: the paired interval straddles 0
    # same top-1 for words 10-19 (both hit) and 30-39 (both miss with the same list); 0-9 and 20-29 differ
    assert full["top1_agreement"] == pytest.approx(20 / 40) and full["topk_identical"] == pytest.approx(20 / 40)
    early = r["delays"][0]
    assert early["a"]["top10"] == 0.0 and early["top1_agreement"] == 1.0
    assert r["chance_top10"] == pytest.approx(10 / 200) and r["unpaired"] == {"a": 1, "b": 0}
    table = format_comparison(r, "exact", "r512")
    assert "| full | 40 | 50.0 [" in table and "| +1 s | 40 |" in table and "5.00 %" in table
    almost = {**r, "delays": [{**full, "top1_agreement": 2373 / 2374}]}
    assert "| 99.9 |" in format_comparison(almost) and "| 100.0 |" not in format_comparison(almost)


def test_folders_pair_by_file_name_and_errors_name_the_fix(tmp_path, capsys):
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        _write(tmp_path / side / "run1.jsonl", [_dec(1.0, "s1", ["s1"])])
        _write(tmp_path / side / "run2.jsonl", [_dec(1.0, "s2", ["s2" if side == "a" else "q"])])
    r = compare_decisions(read_decisions(tmp_path / "a"), read_decisions(tmp_path / "b"), 10, n_boot=100)
    assert r["delays"][0]["n"] == 2 and r["delays"][0]["diff_top1"] == -0.5  # same start, told apart by file
    code, out = _run(capsys, tmp_path / "a", tmp_path / "b", "--candidates", 10, "--out", tmp_path / "c.json")
    assert code == 0, out
    assert "| full | 2 |" in out
    assert json.loads((tmp_path / "c.json").read_text())["delays"][0]["n"] == 2
    # nothing pairs: a clear error, exit 3 (bad data)
    _write(tmp_path / "other.jsonl", [_dec(5.0, "s9", ["s9"])])
    code, out = _run(capsys, tmp_path / "a", tmp_path / "other.jsonl", "--candidates", 10)
    assert code == 3 and "pairs with" in out
    # the same window with another truth: made from other events
    _write(tmp_path / "wrong.jsonl", [_dec(1.0, "zz", ["zz"])])
    with pytest.raises(DataFormatError, match="disagree on the true segment"):
        compare_decisions(read_decisions(tmp_path / "a" / "run1.jsonl"), read_decisions(tmp_path / "wrong.jsonl"), 10)
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    code, out = _run(capsys, tmp_path / "bad.jsonl", tmp_path / "wrong.jsonl", "--candidates", 10)
    assert code == 3 and "line 1 is not JSON" in out
    code, out = _run(capsys, tmp_path / "a", tmp_path / "b", "--candidates", 0)
    assert code == 2 and "--candidates" in out


def test_exact_and_low_rank_bank_on_real_decode_file_output(tmp_path):
    """decode-file runs of one recording with the exact bank, low-rank banks of it and the exact bank with a
    prefilter: every word pairs; with (nearly) full rank kept, or a prefilter, the decisions agree; with a tiny
    rank they differ and the comparison says so."""
    import mne
    from _service_fixtures import build_artifacts
    from neurospeech.service.config import ServeSettings
    from neurospeech.service.filesource import decode_file

    from neurospeech.scoring import CandidateBank

    (tmp_path / "art").mkdir()
    art = build_artifacts(tmp_path / "art", duration=16.0, n_distractors=30)
    fif = tmp_path / "rec_raw.fif"
    mne.io.RawArray(art.data, mne.create_info(art.names, art.sfreq, "eeg"), verbose="error").save(
        fif, verbose="error")
    events = tmp_path / "events.tsv"
    rows = ["onset\tduration\ttrial_type\tword\tsound\tsound_time\tsentence"]
    rows += [f"{a}\t0.3\tword\t{w}\t{s}\t{t}\ts" for a, w, s, t in zip(art.anchors, art.words, art.sounds,
                                                                       art.sound_times)]
    events.write_text("\n".join(rows) + "\n")
    bank = CandidateBank.load(art.bank)
    n, d = bank.features.shape
    outs = {}
    variants = {"exact": None, "near": bank.compressed(min(n, d) - 1), "tiny": bank.compressed(1),
                "pre": bank.with_prefilter(min(n, d) - 1, shortlist=15)}
    for label, b in variants.items():
        path = art.bank if b is None else tmp_path / f"bank_{label}.npz"
        if b is not None:
            b.save(path)
        (tmp_path / label).mkdir()
        s = ServeSettings(model=str(art.model), bank=str(path), hop=1.0, topk=10)
        decode_file(fif, tmp_path / label / "rec.jsonl", s, events=events, workers=0)
        outs[label] = read_decisions(tmp_path / label)
    near = compare_decisions(outs["exact"], outs["near"], n)["delays"][0]
    assert near["n"] == len(art.anchors) and near["top1_agreement"] == 1.0 and near["diff_top10"] == 0.0
    same = compare_decisions(outs["exact"], outs["exact"], n)["delays"][0]
    assert same["topk_identical"] == 1.0 and same["diff_top10_ci"] == [0.0, 0.0]
    assert near["a"]["top1"] == 1.0  # the planted anchors decode exactly with the exact bank
    # the exact bank with a prefilter, through decode-file: the same best candidate for every word, and every
    # candidate it reports carries its exact score (random distractors here: the shortlist of 15 may miss a
    # near-tie at the bottom of the top 10, which the module docstring allows)
    pre = compare_decisions(outs["exact"], outs["pre"], n)["delays"][0]
    assert pre["top1_agreement"] == 1.0 and pre["diff_top1"] == 0.0

    def scores(label):
        rows = [json.loads(x) for x in (tmp_path / label / "rec.jsonl").read_text().splitlines()]
        return [{c["id"]: c["score"] for c in h["topk"]} for h in rows if h["kind"] == "word"]

    n_checked = 0
    for ex, pf in zip(scores("exact"), scores("pre"), strict=True):
        for cid, sc in pf.items():
            if cid in ex:
                assert sc == pytest.approx(ex[cid], abs=1e-4)
                n_checked += 1
    assert n_checked >= 5 * len(art.anchors)
    tiny = compare_decisions(outs["exact"], outs["tiny"], n)["delays"][0]
    assert tiny["top1_agreement"] < 1.0 and tiny["diff_top1"] < 0
    assert np.isfinite(tiny["diff_top1_ci"]).all()
