"""``neurospeech bench cache``: peak memory of caching one long run, block by block vs read whole.

A run of ``minutes`` x ``channels`` at ``sfreq`` is made once in the work directory, either a BIDS run (``fif``:
FIF written by ``write_run`` with mne-bids) or a LibriBrain run (``libribrain``: pnpl's serialised ``.h5``,
float32, with its events table; read by :mod:`neurospeech.data.formats._libribrain`); then two fresh
processes each turn it into the model-rate array:

- ``whole``: the path the cache took before it read runs block by block: ``load_raw()`` (preloaded, float64),
  ``get_data()`` and :func:`neurospeech.preprocessing.preprocess_continuous`;
- ``blocks``: :func:`neurospeech.data._cache.cache_recording` (lazy read, ``READ_BLOCK`` samples at a time,
  :func:`neurospeech.preprocessing.preprocess_blocks`), into a new cache directory.

Each reports its peak RSS (``VmHWM`` of ``/proc/self/status``: the high-water mark of that process's own
memory, imports included; ``ru_maxrss`` where there is no ``/proc``, which on Linux would also count the
parent's size at the fork) and wall time; the two outputs are compared (they agree to float32 rounding: the
filters' block boundaries differ).
"""

from __future__ import annotations

import datetime
import json
import logging
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError

__all__ = ["CacheBenchSettings", "format_cache", "run_cache_bench"]

log = logging.getLogger(__name__)


@dataclass
class CacheBenchSettings:
    """Settings of ``neurospeech bench cache`` (see its ``--help``)."""

    workdir: Path
    minutes: float = 10.0
    channels: int = 275
    sfreq: float = 1200.0
    format: str = "fif"

    def __post_init__(self) -> None:
        if self.format not in ("fif", "libribrain"):
            raise ConfigError(f"bench cache --format must be fif or libribrain, got {self.format!r}")
        if not self.minutes > 0 or self.channels < 1 or not self.sfreq > 0:
            raise ConfigError(f"bench cache needs minutes > 0, channels >= 1 and sfreq > 0, got {self.minutes}, "
                              f"{self.channels}, {self.sfreq}")


def _libribrain(s: CacheBenchSettings) -> Path:
    """A one-run LibriBrain folder in pnpl's layout (docs/datasets.md), made once per size."""
    import h5py

    root = Path(s.workdir) / f"cache-bench-libribrain-{s.channels}ch-{s.sfreq:g}Hz-{s.minutes:g}min"
    base = "sub-0_ses-1_task-Sherlock1_run-1"
    h5 = root / "Sherlock1" / "derivatives" / "serialised" / f"{base}_proc-bads+sss+bp+ds_meg.h5"
    events = root / "Sherlock1" / "derivatives" / "events" / f"{base}_events.tsv"
    if h5.is_file() and events.is_file():
        return root
    h5.parent.mkdir(parents=True, exist_ok=True)
    events.parent.mkdir(parents=True, exist_ok=True)
    n = round(s.minutes * 60 * s.sfreq)
    rng = np.random.default_rng(0)
    step = max(int(s.sfreq * 60), 1)
    tmp = h5.with_suffix(".part")
    with h5py.File(tmp, "w") as f:  # written a minute at a time: the benchmark's own memory stays small
        d = f.create_dataset("data", shape=(s.channels, n), dtype="float32")
        for i in range(0, n, step):
            d[:, i:i + step] = rng.standard_normal((s.channels, min(step, n - i)), dtype=np.float32) * 1e-12
        f.create_dataset("times", data=np.arange(n) / s.sfreq)
        f.attrs["sample_frequency"] = s.sfreq
        f.attrs["channel_names"] = ", ".join(f"MEG{k:04d}" for k in range(s.channels))
        f.attrs["channel_types"] = ", ".join(["mag"] * s.channels)
    tmp.replace(h5)
    events.write_text("kind\tsegment\ttimemeg\tsentenceidx\twordidx\nword\ta\t2.0\t1\t0\n")
    return root


def _dataset(s: CacheBenchSettings) -> Path:
    """The benchmark's BIDS dataset or LibriBrain folder (made once per size)."""
    import mne

    from ...data import events_from_rows, write_run

    if s.format == "libribrain":
        return _libribrain(s)
    root = Path(s.workdir) / f"cache-bench-{s.channels}ch-{s.sfreq:g}Hz-{s.minutes:g}min"
    if (root / "dataset_description.json").is_file() and any(root.glob("sub-01/meg/*_meg.fif")):
        return root
    info = mne.create_info([f"MEG{k:03d}" for k in range(s.channels)], s.sfreq, "mag")
    n = round(s.minutes * 60 * s.sfreq)
    data = np.random.default_rng(0).standard_normal((s.channels, n)) * 1e-13
    raw = mne.io.RawArray(data, info, verbose="error")
    raw.set_meas_date(datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC))
    rows = [dict(onset=2.0, duration=2.0, kind="sound", word="", sound="stimuli/a.wav", sound_time=0.0,
                 sentence="a")]
    write_run(root, raw, events_from_rows(rows), subject="01", task="listen", run="01")
    return root


def _peak_mb() -> float:
    """This process's peak resident memory in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(mode: str, root: Path, cache_dir: Path, out_npy: Path, fmt: str = "fif") -> dict[str, Any]:
    """One mode in this process (run by :func:`run_cache_bench` in a fresh interpreter)."""
    from ...data import load_dataset
    from ...data._cache import cache_recording
    from ...data.formats import LAYOUTS
    from ...preprocessing import PreprocessingSpec, WindowSpec, preprocess_continuous

    rec = LAYOUTS[fmt].recordings(root, None, None)[0] if fmt == "libribrain" else load_dataset(root)[0]
    w, sp = WindowSpec(), PreprocessingSpec()
    t0 = time.perf_counter()
    if mode == "whole":
        raw = rec.load_raw()
        out, _ = preprocess_continuous(raw.get_data(), raw.info["sfreq"], w, sp)
        del raw
    else:
        out = np.asarray(cache_recording(rec, w, sp, cache_dir).data())
    wall = time.perf_counter() - t0
    np.save(out_npy, out, allow_pickle=False)
    return {"mode": mode, "wall_s": wall, "peak_rss_mb": _peak_mb(), "shape": list(out.shape)}


def run_cache_bench(s: CacheBenchSettings) -> dict[str, Any]:
    """Make the run, measure both modes in fresh processes, compare their outputs; returns the results dict."""
    root = _dataset(s)
    res: dict[str, Any] = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(s).items()},
                           "raw_float64_mb": s.channels * round(s.minutes * 60 * s.sfreq) * 8 / 1e6}
    outs = {}
    for mode in ("whole", "blocks"):
        out_npy = Path(s.workdir) / f"cache-bench-{mode}.npy"
        cache_dir = Path(s.workdir) / f"cache-bench-rc-{time.time_ns()}"
        code = ("import json, sys; from pathlib import Path; from neurospeech.tools.bench.cache import _measure; "
                "print(json.dumps(_measure(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), "
                "sys.argv[5])))")
        p = subprocess.run([sys.executable, "-c", code, mode, str(root), str(cache_dir), str(out_npy), s.format],
                           capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise RuntimeError(f"bench cache: the {mode!r} process failed ({p.returncode}): {p.stderr[-2000:]}")
        res[mode] = json.loads(p.stdout.strip().splitlines()[-1])
        outs[mode] = np.load(out_npy)
        out_npy.unlink()
    scale = float(np.abs(outs["whole"]).max()) or 1.0
    res["max_relative_difference"] = float(np.abs(outs["whole"] - outs["blocks"]).max()) / scale
    res["peak_ratio_whole_over_blocks"] = res["whole"]["peak_rss_mb"] / res["blocks"]["peak_rss_mb"]
    return res


def format_cache(r: dict[str, Any]) -> str:
    """The results as a markdown table."""
    st = r["settings"]
    lines = [f"caching one {st['minutes']:g}-min {st.get('format', 'fif')} run, {st['channels']} channels at "
             f"{st['sfreq']:g} Hz "
             f"({r['raw_float64_mb']:.0f} MB as float64):", "",
             "| path | peak RSS MB | wall s |", "|---|---|---|"]
    for mode, name in (("whole", "read whole (load_raw + get_data + preprocess_continuous)"),
                       ("blocks", "block by block (cache_recording)")):
        lines.append(f"| {name} | {r[mode]['peak_rss_mb']:.0f} | {r[mode]['wall_s']:.1f} |")
    lines += ["", f"peak ratio whole / blocks: {r['peak_ratio_whole_over_blocks']:.1f}x; outputs differ by at most "
              f"{r['max_relative_difference']:.1e} of their largest value (float32 rounding)"]
    return "\n".join(lines)
