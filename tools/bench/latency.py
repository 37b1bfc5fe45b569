"""``neurospeech bench latency``: end-to-end latency, service CPU/RSS and ``decode-file`` speed, for the
``efficient`` and ``paper`` presets side by side in one run.

Set-up: a 275-channel 1200 Hz synthetic MEG stream (a replay subprocess, chunks of ``chunk`` s stamped at push
time) -> ``neurospeech serve`` (subprocess, 1 onnxruntime thread) -> a subscriber in this process.
Latency = receipt time at the subscriber - LSL stamp of the newest raw sample the decision used
(``t_newest_sample``), both on this machine's LSL clock. CPU is the service process's user+system time over
the measurement divided by wall time (100% = one core); RSS from psutil. ``decode-file`` runs the same
pipeline over a 60 s FIF of the same data as fast as it can (x real time from its own summary).

Early decisions (``early_presets``, default ``efficient``; row ``<preset>+early``): the same encoder exported
with early decisions declared in its contract (:func:`~neurospeech.tools.bench._artifacts.build_artifacts`
``early=True``), served with the word-marker stream (a marker every 0.7 s naming a bank candidate), so each word
gets a word-locked decision and four provisional ones (onset + 0.5, 1.0, 1.5, 2.0 s): five more encoder calls
per word on top of the sliding ones. Its latency columns are still those of the sliding decisions (the
decisions the budget is about, now queued behind the word and early jobs); the latency of the ``word_early``
and ``word`` messages (receipt - newest sample they used) and their rates are in the JSON
(``early_latency_ms``, ``word_latency_ms``, ``rates_per_s``) and in a line under the table. The other rows
are served with ``--no-markers``, as before. decode-file of an early row runs with ``--events`` (the same
markers as an events table), so its x real time includes the word and early decisions.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._procs import ProcSampler, service, stream, wait_running

__all__ = ["LatencySettings", "config_label", "config_plan", "format_table", "run_latency"]

log = logging.getLogger(__name__)


@dataclass
class LatencySettings:
    workdir: Path = Path(tempfile.gettempdir()) / "neurospeech-bench"
    presets: tuple[str, ...] = ("efficient", "paper")
    latency_hop: float = 0.1
    cpu_hop: float = 0.25
    warmup_s: float = 5.0
    measure_s: float = 20.0
    chunk_s: float = 0.01
    n_candidates: int = 10000
    threads: int = 1
    decode_file_seconds: float = 60.0
    decode_file_repeats: int = 5
    skip_decode_file: bool = False
    skip_live: bool = False
    bank_ranks: tuple[int | str, ...] = (0,)  # 0: exact; N: rank-N compressed bank; "pN": rank-N prefilter
    int8: bool = False
    early_presets: tuple[str, ...] = ("efficient",)
    extra: dict[str, Any] = field(default_factory=dict)


def _pct(x: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(x), q)) if x else None


def _lat(x: list[float]) -> dict[str, Any]:
    return {"p50": _pct(x, 50), "p90": _pct(x, 90), "p99": _pct(x, 99), "max": max(x) if x else None, "n": len(x)}


def measure_service(svc: dict[str, Any], warmup_s: float, measure_s: float, early: bool = False) -> dict[str, Any]:
    """Subscribe to a running service; latency of sliding decisions, CPU and RSS over ``measure_s``.

    ``early``: subscribe to the ``word_early`` topic too and report the latency of the provisional decisions
    (``early_latency_ms``, all delays, and ``early_latency_ms_by_delay``) and of the word-locked ones.
    """
    from ...service.client import ALL_TOPICS, DEFAULT_TOPICS, Subscriber, request_state

    wait_running(svc)
    lat: list[float] = []
    proc_ms: list[float] = []
    word_lat: list[float] = []
    early_lat: dict[float, list[float]] = {}
    early_proc: list[float] = []
    last_status: dict[str, Any] = {}
    with Subscriber(svc["pub"], topics=ALL_TOPICS if early else DEFAULT_TOPICS) as sub:
        end_warm = time.monotonic() + warmup_s
        while time.monotonic() < end_warm:
            sub.recv(timeout=0.2)
        status0 = request_state(svc["state"], timeout=5).get("status") or {}
        sampler = ProcSampler(svc["pid"])
        sampler.start()
        t_end = time.monotonic() + measure_s
        n_dec = 0
        while time.monotonic() < t_end:
            m = sub.recv(timeout=0.2)
            if m is None:
                continue
            if m.kind == "decode":
                n_dec += 1
                if m.latency is not None:
                    (lat if m.get("kind") == "sliding" else word_lat).append(m.latency * 1000)
                if isinstance(m.get("processing_ms"), (int, float)):
                    proc_ms.append(float(m["processing_ms"]))
            elif m.kind == "word_early":
                if m.latency is not None and m.delay_s is not None:
                    early_lat.setdefault(m.delay_s, []).append(m.latency * 1000)
                if isinstance(m.get("processing_ms"), (int, float)):
                    early_proc.append(float(m["processing_ms"]))
            elif m.kind == "status":
                last_status = m.header
        cpu = sampler.cpu_percent()
        rss = sampler.rss_mb()
        peak = sampler.peak_rss_mb()
        stats = sub.stats()
    skipped = None
    if last_status and status0:
        skipped = int(last_status.get("skipped_decisions", 0)) - int(status0.get("skipped_decisions", 0))
    all_early = [v for d in sorted(early_lat) for v in early_lat[d]]
    return {
        "decisions": n_dec,
        "sliding_with_latency": len(lat),
        "latency_ms": _lat(lat),
        "word_latency_ms": _lat(word_lat),
        **({"early_latency_ms": _lat(all_early),
            "early_latency_ms_by_delay": {f"{d:g}": _lat(early_lat[d]) for d in sorted(early_lat)},
            "early_processing_ms": {"p50": _pct(early_proc, 50), "p99": _pct(early_proc, 99)}} if early else {}),
        "rates_per_s": {"sliding": len(lat) / measure_s, "word": len(word_lat) / measure_s,
                        "word_early": len(all_early) / measure_s},
        "processing_ms": {"p50": _pct(proc_ms, 50), "p99": _pct(proc_ms, 99)},
        "cpu_percent_one_core": cpu,
        "rss_mb": rss,
        "peak_rss_mb": peak,
        "skipped_decisions": skipped,
        "missed_messages": sum(stats["missed"].values()),
        "last_status": {
            k: last_status.get(k)
            for k in (
                "state",
                "lag_s",
                "buffer_fill",
                "dropped_samples",
                "overruns",
                "skipped_decisions",
                "timestamp_issues",
            )
        },
        "measure_s": measure_s,
    }


def _fif(workdir: Path, seconds: float) -> Path:
    import mne

    from ._synthetic import synthetic_meg

    p = workdir / f"bench_meg_{int(seconds)}s_raw.fif"
    if not p.is_file():
        data, names, _ = synthetic_meg(seconds=seconds)
        raw = mne.io.RawArray(data, mne.create_info(names, 1200.0, "mag"), verbose="error")
        raw.save(p, verbose="error", overwrite=True)
    return p


def _events_tsv(workdir: Path, seconds: float) -> Path:
    """The synthetic stream's word markers (:func:`~neurospeech.tools.bench._synthetic.word_markers`) as an
    events table for ``decode-file --events``."""
    from ._artifacts import bank_entries
    from ._synthetic import word_markers

    # not named like the FIF's BIDS events table (bench_meg_60s_events.tsv), which decode-file would pick up by
    # itself for every configuration: only the early rows get it (--events)
    p = workdir / f"bench_words_{int(seconds)}s.tsv"
    if not p.is_file():
        rows = ["onset\tduration\ttrial_type\tsound\tsound_time\tword\tsentence"]
        for m in word_markers(seconds, 1200.0, bank_entries(200)):
            pl = m.payload
            rows.append(f"{m.sample / 1200.0:.6f}\t0.3\tword\t{pl['sound']}\t{pl['sound_time']}\t{pl['word']}\t"
                        f"{pl['sentence']}")
        p.write_text("\n".join(rows) + "\n")
    return p


def decode_file_run(workdir: Path, art: dict[str, Any], seconds: float, hop: float, threads: int) -> dict[str, Any]:
    """One ``neurospeech decode-file`` run on the synthetic FIF (a fresh process, the plain CLI): its real-time
    factor (decode loop), process wall time and summary; ``{"error": ...}`` when it fails. An early-decision
    artifact (``art["early"]``) runs with the word events of the synthetic markers (``--events``)."""
    fif = _fif(workdir, seconds)
    tag = ("-int8" if art.get("quantized") else "") + ("-early" if art.get("early") else "")
    from ._artifacts import bank_tag

    out = workdir / f"decisions-{art['preset']}-{bank_tag(art.get('bank_rank', 0)) or 'r0'}{tag}.jsonl"
    cmd = [
        sys.executable, "-m", "neurospeech", "-q", "decode-file", str(fif), "--model", art["model"],
        "--bank", art["bank"], "--out", str(out), "--hop", str(hop), "--threads", str(threads),
    ]
    if art.get("early"):
        cmd += ["--events", str(_events_tsv(workdir, seconds))]
    # the plain CLI as users run it: it limits numpy's BLAS threads itself (ServeSettings.blas_threads)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    t0 = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    if res.returncode != 0:
        return {"error": f"exit {res.returncode}: {res.stderr[-800:]}"}
    try:
        summary = json.loads(res.stdout)
    except json.JSONDecodeError:
        summary = {}
    return {"x_realtime": summary.get("realtime_factor"), "process_wall_s": wall, "summary": summary}


def summarise_decode_file(runs: list[dict[str, Any]], seconds: float, hop: float) -> dict[str, Any]:
    """Median real-time factor of :func:`decode_file_run` results, every run's, and the factor including
    process start-up (reading the file, loading the model)."""
    errors = [r["error"] for r in runs if "error" in r]
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": errors[0] if errors else "no run"}
    xs = [r["x_realtime"] for r in ok if r["x_realtime"] is not None]
    last = ok[-1]["summary"]
    return {
        "data_seconds": seconds,
        "hop": hop,
        "repeats": len(ok),
        "x_realtime": float(np.median(xs)) if xs else None,
        "x_realtime_runs": xs,
        "x_realtime_incl_startup": float(np.median([seconds / r["process_wall_s"] for r in ok])),
        "read_s_runs": [r["summary"].get("read_s") for r in ok],
        "summary": {
            k: last.get(k)
            for k in ("decisions", "markers", "word_locked", "read_s", "wall_s", "seconds")
            if k in last
        },
        **({"errors": errors} if errors else {}),
    }


def config_label(preset: str, rank: int | str, int8: bool = False, early: bool = False) -> str:
    """Row label of a preset with a bank of ``rank`` (0 = exact bank, label = preset name; ``@rN`` a rank-N
    compressed bank; ``@pN`` the exact bank with a rank-N prefilter, ``rank="pN"``), ``+int8`` when the encoder is
    quantized, ``+early`` with early decisions (and word markers)."""
    from ._artifacts import bank_tag

    tag = bank_tag(rank)
    return preset + (f"@{tag}" if tag else "") + ("+int8" if int8 else "") + ("+early" if early else "")


def config_plan(
    presets: tuple[str, ...], early_presets: tuple[str, ...], ranks: tuple[int | str, ...], int8: bool
) -> list[tuple[str, str, int | str, bool, bool]]:
    """The benchmark's rows, in table order: ``(label, preset, bank rank, int8, early)``.

    Every preset at every bank rank (and its int8 copy with ``int8``), then every early preset the same way
    (issue 18, part 3: early decisions beside today's configurations, with the same bank ranks and int8 copies).
    """
    rows = []
    for early, names in ((False, presets), (True, early_presets)):
        for p in names:
            for rank in ranks:
                for q in (False, True) if int8 else (False,):
                    rows.append((config_label(p, rank, q, early), p, rank, q, early))
    return rows


def run_latency(s: LatencySettings) -> dict[str, Any]:
    """Build artifacts, run every preset x bank rank at both hops against one synthetic stream, then
    decode-file."""
    import platform

    from ._artifacts import build_artifacts, compressed_bank, quantized_artifacts

    s.workdir.mkdir(parents=True, exist_ok=True)
    arts: dict[str, dict[str, Any]] = {}
    bases: dict[tuple[str, bool], dict[str, Any]] = {}
    banks: dict[tuple[str, bool, int | str], dict[str, Any]] = {}  # the float rows' artifacts, reused by int8 rows
    for label, preset, rank, int8, early in config_plan(s.presets, s.early_presets, s.bank_ranks, s.int8):
        if (preset, early) not in bases:
            bases[preset, early] = build_artifacts(s.workdir, preset, n_candidates=s.n_candidates, early=early)
        if (preset, early, rank) not in banks:
            base = bases[preset, early]
            banks[preset, early, rank] = {**base, **compressed_bank(base, rank)} if rank else {**base, "bank_rank": 0}
        a = banks[preset, early, rank]
        if int8:
            a = quantized_artifacts(a, _fif(s.workdir, s.decode_file_seconds))
        arts[label] = {**a, "early": True} if early else a
    any_early = any(a.get("early") for a in arts.values())
    result: dict[str, Any] = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items()},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_start": os.getloadavg(),
        },
        "artifacts": {
            p: {
                k: a[k]
                for k in (
                    "model_sha256", "macs", "model_mb", "bank_mb", "output_shape", "n_candidates",
                    "bank_rank", "bank_energy_kept", "bank_macs_per_decision", "bank_note", "quantized",
                    "early_delays_s",
                )
                if k in a
            }
            for p, a in arts.items()
        },
        "presets": {},
        "bank_note": (
            "benchmark bank candidates are random (full-rank), so a compressed bank here measures COST only "
            "(latency, CPU, memory); accuracy of compression measured separately (energy kept on real speech "
            "candidates: `neurospeech bank --rank`)"
            if any(s.bank_ranks)
            else "random candidates (benchmark of cost)"
        ),
    }
    for p in arts:
        result["presets"][p] = {}
    if not s.skip_live:
        # one stream for every row; with word markers when a row has early decisions (the other rows' services
        # ignore them: --no-markers, as before)
        with stream(s.workdir, chunk=s.chunk_s, markers=any_early) as st:
            result["stream"] = {"name": st["name"], "channels": 275, "sfreq": 1200.0, "chunk_s": s.chunk_s,
                                "word_markers_every_s": 0.7 if any_early else None}
            for p in arts:
                r: dict[str, Any] = {}
                early = bool(arts[p].get("early"))
                for label, hop in (("latency_hop", s.latency_hop), ("cpu_hop", s.cpu_hop)):
                    log.info("preset %s, hop %g s: measuring %g s", p, hop, s.measure_s)
                    with service(
                        s.workdir, arts[p]["model"], arts[p]["bank"], st["name"], hop, s.threads,
                        markers=early, tag=f"{p}-{hop}",
                    ) as svc:
                        m = measure_service(svc, s.warmup_s, s.measure_s, early=early)
                    m["hop"] = hop
                    r[label] = m
                result["presets"][p] = r
    if not s.skip_decode_file:
        # round robin over the configurations: a slow minute on this shared machine hits all of them alike
        runs: dict[str, list[dict[str, Any]]] = {p: [] for p in arts}
        n_rep = max(1, s.decode_file_repeats)
        for k in range(n_rep):
            for p in arts:
                log.info("decode-file %s (run %d of %d)", p, k + 1, n_rep)
                runs[p].append(decode_file_run(s.workdir, arts[p], s.decode_file_seconds, s.cpu_hop, s.threads))
        for p in arts:
            result["presets"][p]["decode_file"] = summarise_decode_file(runs[p], s.decode_file_seconds, s.cpu_hop)
    result["machine"]["load_avg_end"] = os.getloadavg()
    result["early_over_today"] = {
        lab: _over(result["presets"][lab], result["presets"].get(lab[: -len("+early")]) or {})
        for lab, a in arts.items() if a.get("early") and lab[: -len("+early")] in result["presets"]
    }
    if "efficient" in result["presets"] and "paper" in result["presets"] and not s.skip_live:
        e, pp = result["presets"]["efficient"], result["presets"]["paper"]

        def ratio(a: Any, b: Any) -> float | None:
            return (
                float(a) / float(b)
                if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b
                else None
            )

        result["paper_over_efficient"] = {
            "processing_ms_p50": ratio(
                pp["cpu_hop"]["processing_ms"]["p50"], e["cpu_hop"]["processing_ms"]["p50"]
            ),
            "cpu_percent": ratio(pp["cpu_hop"]["cpu_percent_one_core"], e["cpu_hop"]["cpu_percent_one_core"]),
            "latency_p50": ratio(
                pp["latency_hop"]["latency_ms"]["p50"], e["latency_hop"]["latency_ms"]["p50"]
            ),
            "decode_file_x_realtime": ratio(
                (pp.get("decode_file") or {}).get("x_realtime"),
                (e.get("decode_file") or {}).get("x_realtime"),
            ),
        }
    return result


def _ratio(a: Any, b: Any) -> float | None:
    return float(a) / float(b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def _over(e: dict[str, Any], t: dict[str, Any]) -> dict[str, float | None]:
    """Ratios early row / today's row of the same preset (same run)."""

    def get(r: dict[str, Any], *path: str) -> Any:
        for k in path:
            r = r.get(k) if isinstance(r, dict) else None  # type: ignore[assignment]
        return r

    return {
        "latency_p50": _ratio(get(e, "latency_hop", "latency_ms", "p50"), get(t, "latency_hop", "latency_ms", "p50")),
        "latency_p99": _ratio(get(e, "latency_hop", "latency_ms", "p99"), get(t, "latency_hop", "latency_ms", "p99")),
        "cpu_percent": _ratio(get(e, "cpu_hop", "cpu_percent_one_core"), get(t, "cpu_hop", "cpu_percent_one_core")),
        "rss_mb": _ratio(get(e, "cpu_hop", "rss_mb"), get(t, "cpu_hop", "rss_mb")),
        "decode_file_x_realtime": _ratio(get(e, "decode_file", "x_realtime"), get(t, "decode_file", "x_realtime")),
    }


def _f(v: Any, fmt: str = "{:.1f}") -> str:
    return fmt.format(v) if isinstance(v, (int, float)) else "-"


def format_table(r: dict[str, Any]) -> str:
    hop_l, hop_c = r["settings"]["latency_hop"], r["settings"]["cpu_hop"]
    rows = [
        (
            "preset",
            f"lat p50 ms @{hop_l}",
            f"lat p99 ms @{hop_l}",
            f"skipped @{hop_l}",
            f"lat p50 @{hop_c}",
            "proc ms p50",
            f"CPU % @{hop_c}",
            "RSS MB",
            "decode-file xRT",
        )
    ]
    for p, v in r["presets"].items():
        a, b = v.get("latency_hop"), v.get("cpu_hop")
        if a is None or b is None:  # --no-live
            a = b = {"latency_ms": {}, "processing_ms": {}}
        rows.append(
            (
                p,
                _f(a["latency_ms"].get("p50")),
                _f(a["latency_ms"].get("p99")),
                _f(a.get("skipped_decisions"), "{}"),
                _f(b["latency_ms"].get("p50")),
                _f(b["processing_ms"].get("p50")),
                _f(b.get("cpu_percent_one_core")),
                _f(b.get("rss_mb"), "{:.0f}"),
                _f((v.get("decode_file") or {}).get("x_realtime"), "{:.0f}"),
            )
        )
    targets = ("target (efficient)", "<= 15", "<= 40", "", "", "", "<= 60", "<= 400", ">= 100")
    rows.append(targets)
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    if "paper_over_efficient" in r:
        lines.append(
            "paper / efficient: "
            + ", ".join(f"{k} {_f(v, '{:.2f}')}" for k, v in r["paper_over_efficient"].items())
        )
    for lab, ratios in (r.get("early_over_today") or {}).items():
        lines.append(f"{lab} / {lab[: -len('+early')]}: " + ", ".join(f"{k} {_f(v, '{:.2f}')}"
                                                                    for k, v in ratios.items()))
    for p, v in r["presets"].items():
        a = v.get("latency_hop") or {}
        if "early_latency_ms" in a:
            el, wl, rt = a["early_latency_ms"], a["word_latency_ms"], a["rates_per_s"]
            lines.append(
                f"{p} @{hop_l}: word_early latency p50 {_f(el.get('p50'))} / p99 {_f(el.get('p99'))} ms "
                f"(n={el.get('n')}), word p50 {_f(wl.get('p50'))} / p99 {_f(wl.get('p99'))} ms (n={wl.get('n')}); "
                f"per s: {rt['sliding']:.1f} sliding, {rt['word']:.2f} word, {rt['word_early']:.2f} word_early"
            )
    if r.get("bank_note") and any(r["settings"].get("bank_ranks") or ()):
        lines.append("bank: " + r["bank_note"])
    m = r["machine"]
    lines.append(
        f"machine: {m['cpus']} CPUs, load avg start {m['load_avg_start'][0]:.2f} "
        f"end {m.get('load_avg_end', [float('nan')])[0]:.2f}; stream 275 ch @ 1200 Hz, "
        f"chunks {r['settings']['chunk_s']} s; bank {r['settings']['n_candidates']} candidates"
    )
    return "\n".join(lines)
