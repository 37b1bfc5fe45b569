"""`neurospeech bench cache` through the CLI on a small run: both paths run in fresh processes and agree."""

from __future__ import annotations

import json

import pytest

from neurospeech.cli import main


@pytest.mark.parametrize("fmt", ["fif", "libribrain"])
def test_bench_cache_measures_both_paths_and_their_outputs_agree(tmp_path, capsys, fmt):
    out = tmp_path / "cache.json"
    with pytest.raises(SystemExit) as exc:
        main(["bench", "cache", "--minutes", "0.25", "--channels", "8", "--sfreq", "1000", "--format", fmt,
              "--workdir", str(tmp_path / "w"), "--out", str(out)])
    assert (exc.value.code or 0) == 0
    r = json.loads(out.read_text())
    assert r["max_relative_difference"] < 1e-5  # float32 rounding at other block boundaries
    assert r["whole"]["shape"] == r["blocks"]["shape"] == [8, 1800]  # 15 s at the model's 120 Hz
    assert r["whole"]["peak_rss_mb"] > 0 and r["blocks"]["peak_rss_mb"] > 0
    assert r["settings"]["format"] == fmt
    assert "peak ratio whole / blocks" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        main(["bench", "cache", "--minutes", "0", "--workdir", str(tmp_path / "w")])
    assert bad.value.code == 2
