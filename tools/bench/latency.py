"""``neurospeech bench latency``: end-to-end latency, service CPU/RSS and ``decode-file`` speed, for the
``efficient`` and ``paper`` presets side by side in one run.

Set-up: a 275-channel 1200 Hz synthetic MEG stream (a replay subprocess, chunks of ``chunk`` s stamped at push
time) -> ``neurospeech serve`` (subprocess, 1 onnxruntime thread) -> a subscriber in this process.
Latency = receipt time at the subscriber - LSL stamp of the newest raw sample the decision used
(``t_newest_sample``), both on this machine's LSL clock. CPU is the service process's user+system time over
the measurement divided by wall time (100% = one core); RSS from psutil. ``decode-file`` runs the same
pipeline over a 60 s FIF of the same data as fast as it can (x real time from its own summary).
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

__all__ = ["LatencySettings", "config_label", "format_table", "run_latency"]

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
    bank_ranks: tuple[int, ...] = (0,)
    int8: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _pct(x: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(x), q)) if x else None


def measure_service(svc: dict[str, Any], warmup_s: float, measure_s: float) -> dict[str, Any]:
    """Subscribe to a running service; latency of sliding decisions, CPU and RSS over ``measure_s``."""
    from ...service.client import Subscriber, request_state

    wait_running(svc)
    lat: list[float] = []
    proc_ms: list[float] = []
    word_lat: list[float] = []
    last_status: dict[str, Any] = {}
    with Subscriber(svc["pub"]) as sub:
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
            elif m.kind == "status":
                last_status = m.header
        cpu = sampler.cpu_percent()
        rss = sampler.rss_mb()
        peak = sampler.peak_rss_mb()
        stats = sub.stats()
    skipped = None
    if last_status and status0:
        skipped = int(last_status.get("skipped_decisions", 0)) - int(status0.get("skipped_decisions", 0))
    return {
        "decisions": n_dec,
        "sliding_with_latency": len(lat),
        "latency_ms": {
            "p50": _pct(lat, 50),
            "p90": _pct(lat, 90),
            "p99": _pct(lat, 99),
            "max": max(lat) if lat else None,
            "n": len(lat),
        },
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


def decode_file_run(workdir: Path, art: dict[str, Any], seconds: float, hop: float, threads: int) -> dict[str, Any]:
    """One ``neurospeech decode-file`` run on the synthetic FIF (a fresh process, the plain CLI): its real-time
    factor (decode loop), process wall time and summary; ``{"error": ...}`` when it fails."""
    fif = _fif(workdir, seconds)
    tag = "-int8" if art.get("quantized") else ""
    out = workdir / f"decisions-{art['preset']}-r{art.get('bank_rank', 0)}{tag}.jsonl"
    cmd = [
        sys.executable, "-m", "neurospeech", "-q", "decode-file", str(fif), "--model", art["model"],
        "--bank", art["bank"], "--out", str(out), "--hop", str(hop), "--threads", str(threads),
    ]
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
            k: last.get(k) for k in ("decisions", "n_sliding", "n_word", "read_s", "wall_s", "seconds") if k in last
        },
        **({"errors": errors} if errors else {}),
    }


def config_label(preset: str, rank: int, int8: bool = False) -> str:
    """Row label of a preset with a bank of ``rank`` (0 = exact bank, label = preset name), ``+int8`` when
    the encoder is quantized."""
    return (preset if not rank else f"{preset}@r{rank}") + ("+int8" if int8 else "")


def run_latency(s: LatencySettings) -> dict[str, Any]:
    """Build artifacts, run every preset x bank rank at both hops against one synthetic stream, then
    decode-file."""
    import platform

    from ._artifacts import build_artifacts, compressed_bank, quantized_artifacts

    s.workdir.mkdir(parents=True, exist_ok=True)
    arts: dict[str, dict[str, Any]] = {}
    for p in s.presets:
        base = build_artifacts(s.workdir, p, n_candidates=s.n_candidates)
        for rank in s.bank_ranks:
            a = {**base, **compressed_bank(base, rank)} if rank else {**base, "bank_rank": 0}
            arts[config_label(p, rank)] = a
            if s.int8:
                arts[config_label(p, rank, True)] = quantized_artifacts(a, _fif(s.workdir, s.decode_file_seconds))
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
        with stream(s.workdir, chunk=s.chunk_s) as st:
            result["stream"] = {"name": st["name"], "channels": 275, "sfreq": 1200.0, "chunk_s": s.chunk_s}
            for p in arts:
                r: dict[str, Any] = {}
                for label, hop in (("latency_hop", s.latency_hop), ("cpu_hop", s.cpu_hop)):
                    log.info("preset %s, hop %g s: measuring %g s", p, hop, s.measure_s)
                    with service(
                        s.workdir, arts[p]["model"], arts[p]["bank"], st["name"], hop, s.threads, tag=f"{p}-{hop}"
                    ) as svc:
                        m = measure_service(svc, s.warmup_s, s.measure_s)
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
    if r.get("bank_note") and any(r["settings"].get("bank_ranks") or ()):
        lines.append("bank: " + r["bank_note"])
    m = r["machine"]
    lines.append(
        f"machine: {m['cpus']} CPUs, load avg start {m['load_avg_start'][0]:.2f} "
        f"end {m.get('load_avg_end', [float('nan')])[0]:.2f}; stream 275 ch @ 1200 Hz, "
        f"chunks {r['settings']['chunk_s']} s; bank {r['settings']['n_candidates']} candidates"
    )
    return "\n".join(lines)
