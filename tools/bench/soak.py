"""``neurospeech bench soak``: replay (synthetic 275-ch MEG with word markers) + serve + 3 subscribers
(``neurospeech listen --json`` subprocesses) for N minutes. Reports per subscriber the decode messages
published vs received and the sequence gaps, latency p50/p99 per minute, and the service's RSS at start and
end and CPU per minute (psutil samples every ``sample_s``)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pylsl

from ._procs import ProcSampler, _env, _stop, service, stream, wait_running

__all__ = ["SoakSettings", "format_soak", "run_soak"]

log = logging.getLogger(__name__)


@dataclass
class SoakSettings:
    minutes: float = 5.0
    workdir: Path = Path(tempfile.gettempdir()) / "neurospeech-bench"
    preset: str = "efficient"
    hop: float = 0.25
    n_subscribers: int = 3
    n_candidates: int = 10000
    sample_s: float = 10.0
    chunk_s: float = 0.01
    nice: int = 0


def run_soak(s: SoakSettings) -> dict[str, Any]:
    from ...service.client import request_state
    from ._artifacts import build_artifacts

    s.workdir.mkdir(parents=True, exist_ok=True)
    art = build_artifacts(s.workdir, s.preset, n_candidates=s.n_candidates)
    duration = s.minutes * 60.0
    samples: list[dict[str, Any]] = []
    with (
        stream(s.workdir, chunk=s.chunk_s, markers=True, nice=s.nice) as st,
        service(
            s.workdir, art["model"], art["bank"], st["name"], s.hop, markers=True, tag="soak", nice=s.nice
        ) as svc,
    ):
        wait_running(svc)
        subs = []
        for k in range(s.n_subscribers):
            out = open(s.workdir / f"soak-listener{k}.jsonl", "w")
            cmd = [
                sys.executable,
                "-m",
                "neurospeech",
                "-q",
                "listen",
                "--pub",
                svc["pub"],
                "--json",
                "--duration",
                str(duration + 5),
            ]
            subs.append(
                (
                    subprocess.Popen(
                        cmd,
                        stdout=out,
                        stderr=subprocess.DEVNULL,
                        env=_env(),
                        preexec_fn=(lambda: os.nice(s.nice)) if s.nice else None,
                    ),
                    out,
                )
            )
        time.sleep(3.0)  # listeners start up (imports) before the measured period
        sampler = ProcSampler(svc["pid"])
        st0 = request_state(svc["state"], timeout=5)
        t0 = time.monotonic()
        t0_lsl = pylsl.local_clock()
        sampler.start()
        last_c, last_t = sampler._cpu(), t0
        while time.monotonic() - t0 < duration:
            time.sleep(min(s.sample_s, max(0.0, duration - (time.monotonic() - t0))))
            c, t = sampler._cpu(), time.monotonic()
            state = request_state(svc["state"], timeout=5)
            samples.append(
                {
                    "t": t - t0,
                    "rss_mb": sampler.rss_mb(),
                    "cpu_percent": 100 * (c - last_c) / (t - last_t),
                    "status": {
                        k: (state.get("status") or {}).get(k)
                        for k in ("state", "skipped_decisions", "dropped_samples", "overruns", "lag_s")
                    },
                }
            )
            last_c, last_t = c, t
            if svc["proc"].poll() is not None:
                break
        st1 = request_state(svc["state"], timeout=5)
        cpu_total = sampler.cpu_percent()
        peak = sampler.peak_rss_mb()
        for p, out in subs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                _stop(p)
            out.close()
    listeners = []
    for k in range(s.n_subscribers):
        lines = [json.loads(x) for x in (s.workdir / f"soak-listener{k}.jsonl").read_text().splitlines() if x]
        dec = [x for x in lines if x.get("type") == "decode"]
        summ: dict[str, Any] = next((x for x in lines if x.get("type") == "summary"), {})
        per_min: dict[int, list[float]] = {}
        for x in dec:
            if x.get("latency") is not None and x.get("t") is not None and x["t"] >= t0_lsl:
                per_min.setdefault(int((x["t"] - t0_lsl) // 60), []).append(1000 * x["latency"])
        seqs = [x["seq"] for x in dec]
        listeners.append(
            {
                "received": len(dec),
                "first_seq": seqs[0] if seqs else None,
                "last_seq": seqs[-1] if seqs else None,
                "expected_between_first_and_last": (seqs[-1] - seqs[0] + 1) if seqs else 0,
                "missed": (summ.get("subscriber") or {}).get("missed"),
                "accuracy": summ.get("accuracy"),
                "latency_ms_per_minute": {
                    m: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)), "n": len(v)}
                    for m, v in sorted(per_min.items())
                },
            }
        )
    rss = [x["rss_mb"] for x in samples]
    sent0 = (st0.get("stats") or {}).get("sent", {})
    sent1 = (st1.get("stats") or {}).get("sent", {})
    return {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items()},
        "published_decode_during_run": (sent1.get("decode", 0) - sent0.get("decode", 0)),
        "published_total": sent1,
        "dropped_at_publisher": (st1.get("stats") or {}).get("dropped"),
        "slow_subscriber_events": (st1.get("stats") or {}).get("slow_subscriber_events"),
        "subscribers_at_end": (st1.get("stats") or {}).get("subscribers"),
        "listeners": listeners,
        "rss_mb": {
            "start": rss[0] if rss else None,
            "end": rss[-1] if rss else None,
            "growth_percent": 100 * (rss[-1] - rss[0]) / rss[0] if len(rss) > 1 else None,
            "peak": peak,
        },
        "cpu_percent_one_core": {
            "mean": cpu_total,
            "per_sample": [round(x["cpu_percent"], 1) for x in samples],
        },
        "final_status": st1.get("status"),
        "samples": samples,
        "service_returncode": svc.get("returncode"),
        "load_avg_end": os.getloadavg(),
    }


def format_soak(r: dict[str, Any]) -> str:
    lines = [
        f"soak {r['settings']['minutes']} min, preset {r['settings']['preset']}, "
        f"hop {r['settings']['hop']} s: "
        f"{r['published_decode_during_run']} decode messages published in the measured interval, dropped at "
        "publisher "
        f"{r['dropped_at_publisher']}, slow-subscriber events {r.get('slow_subscriber_events')}, "
        f"subscriptions at the end {r.get('subscribers_at_end')}"
    ]
    for k, x in enumerate(r["listeners"]):
        lines.append(
            f"  listener {k}: received {x['received']} (seq {x['first_seq']}..{x['last_seq']}, "
            f"{x['expected_between_first_and_last']} in that span), missed {x['missed']}"
        )
        for m, v in x["latency_ms_per_minute"].items():
            lines.append(f"    minute {m}: latency p50 {v['p50']:.1f} ms p99 {v['p99']:.1f} ms (n={v['n']})")
    rr = r["rss_mb"]
    if rr["start"] is not None:
        lines.append(
            f"  service RSS start {rr['start']:.0f} MB end {rr['end']:.0f} MB "
            f"(growth {rr['growth_percent'] or 0:.1f} %), peak {rr['peak']} MB; CPU mean "
            f"{r['cpu_percent_one_core']['mean']:.1f} % of one core"
        )
    fs = r.get("final_status") or {}
    lines.append(
        f"  final status: state {fs.get('state')} skipped {fs.get('skipped_decisions')} dropped samples "
        f"{fs.get('dropped_samples')} overruns {fs.get('overruns')}"
    )
    return "\n".join(lines)
