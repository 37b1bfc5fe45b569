"""Benchmark of the paper's effects on trained RNNs (``neurospeech wm-rnn bench``).

Trains ``seeds`` networks on the standard task (pre- and post-cue delays 7) and on the experiment-2 variant
without a post-cue delay (pre-cue delay 14, post-cue delay 0), analyses their geometry and checks:

1. per seed: theta_post < theta_pre - 30 deg and AI_post > AI_pre + 0.3 (d = 2), in >= 4 of 5 seeds;
   also the across-seed medians;
2. test error: mean |error| < 10 deg (valid trials, hidden noise on);
3. the median post-cue AI without a post-cue delay is below that of the standard task.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from neurospeech.geometry import GeometrySettings, jsonable

from .analysis import analyze_seed, summarize
from .task import TaskConfig
from .train import TrainConfig, train_jobs

__all__ = ["run_bench"]

log = logging.getLogger(__name__)


def run_bench(
    train_dict: dict,
    seeds: list[int],
    out_dir: str | Path,
    n_jobs: int = 2,
    progress: bool = False,
    cv: int = 5,
) -> dict:
    """Train, analyse, check (see the module doc); write ``out_dir/bench.json`` and return the report."""
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    std = TrainConfig.from_dict(train_dict)
    task_nodelay = TaskConfig.experiment2(
        0,
        total_delay=std.task.pre_cue_delay + std.task.post_cue_delay,
        **{k: v for k, v in std.task.to_dict().items() if k not in ("pre_cue_delay", "post_cue_delay")},
    )
    nodelay = TrainConfig.from_dict({**std.to_dict(), "task": task_nodelay.to_dict()})
    variants = {"standard": std, "no_post_delay": nodelay}
    jobs = [(cfg, s, out_dir / name) for name, cfg in variants.items() for s in seeds]
    results = train_jobs(jobs, n_jobs, resume=True, progress=progress)
    train_s = time.perf_counter() - t0
    settings = GeometrySettings(cv=cv, cross_temporal=True)
    report: dict = {"config": std.to_dict(), "seeds": seeds, "train_wall_s": train_s, "variants": {}}
    for name in variants:
        per_seed = []
        for s in seeds:
            sd = out_dir / name / f"seed_{s}"
            res = analyze_seed(sd / "states.npz", settings, sd)
            res["training"] = next(
                r for r, (_, js, jo) in zip(results, jobs, strict=True) if js == s and Path(jo).name == name
            )
            per_seed.append(res)
        report["variants"][name] = {"per_seed": per_seed, "summary": summarize(per_seed)}
    report["checks"] = _checks(report)
    report["wall_s"] = time.perf_counter() - t0
    report["table"] = _table(report)
    (out_dir / "bench.json").write_text(json.dumps(jsonable(report), indent=2, allow_nan=False))
    return report


def _val(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def _checks(report: dict) -> dict:
    std = report["variants"]["standard"]
    nod = report["variants"]["no_post_delay"]
    rows = []
    for r in std["per_seed"]:
        tp, tq = _val(r["pre"]["theta"]), _val(r["post"]["theta"])
        ap, aq = _val(r["pre"]["ai_d2"]), _val(r["post"]["ai_d2"])
        rows.append({"theta_ok": bool(tq < tp - 30), "ai_ok": bool(aq > ap + 0.3)})
    n_both = sum(r["theta_ok"] and r["ai_ok"] for r in rows)
    errs = [r["training"]["test_mean_abs_error_deg"] for r in std["per_seed"]]
    s = std["summary"]
    checks = {
        "per_seed": rows,
        "n_seeds_theta_and_ai_ok": int(n_both),
        "need": max(len(rows) - 1, 1),
        "geometry_ok": bool(n_both >= max(len(rows) - 1, 1)),
        "median_theta_ok": bool(s["median_theta_post"] < s["median_theta_pre"] - 30),
        "median_ai_ok": bool(s["median_ai_d2_post"] > s["median_ai_d2_pre"] + 0.3),
        "mean_abs_error_deg": float(np.mean(errs)),
        "error_ok": bool(np.mean(errs) < 10.0),
        "post_ai_standard": s["median_ai_d2_post"],
        "post_ai_no_post_delay": nod["summary"]["median_ai_d2_post"],
        "no_delay_ai_lower_ok": bool(nod["summary"]["median_ai_d2_post"] < s["median_ai_d2_post"]),
        "all_converged": bool(
            all(r["training"]["converged"] for v in report["variants"].values() for r in v["per_seed"])
        ),
    }
    return checks


def _table(report: dict) -> str:
    lines = [
        f"{'variant':<14} {'seed':>4} {'conv':>5} {'epochs':>6} {'train_s':>7} {'err_deg':>7} "
        f"{'th_pre':>6} {'th_post':>7} {'psi_post':>8} {'AI_pre':>6} {'AI_post':>7} {'AI3_pre':>7} "
        f"{'AI3_post':>8}"
    ]
    for name, v in report["variants"].items():
        for r in v["per_seed"]:
            t = r["training"]

            def f(x: float | None, w: int, nd: int = 1) -> str:
                return f"{'nan':>{w}}" if x is None else f"{x:>{w}.{nd}f}"

            lines.append(
                f"{name:<14} {t['seed']:>4} {t['converged']!s:>5} {t['epochs']:>6} {t['train_time_s']:>7.0f} "
                f"{t['test_mean_abs_error_deg']:>7.2f} {f(r['pre']['theta'], 6)} {f(r['post']['theta'], 7)} "
                f"{f(r['post']['psi'], 8)} {f(r['pre']['ai_d2'], 6, 3)} {f(r['post']['ai_d2'], 7, 3)} "
                f"{f(r['pre']['ai_d3'], 7, 3)} {f(r['post']['ai_d3'], 8, 3)}"
            )
        s = v["summary"]
        lines.append(
            f"{name:<14} median theta pre/post {s['median_theta_pre']:.1f}/{s['median_theta_post']:.1f} deg,"
            f" AI(d=2) pre/post {s['median_ai_d2_pre']:.3f}/{s['median_ai_d2_post']:.3f}"
        )
    c = report["checks"]
    lines.append(
        f"checks: seeds with theta&AI effect {c['n_seeds_theta_and_ai_ok']}/{len(c['per_seed'])} "
        f"(need {c['need']}) -> {c['geometry_ok']}; mean |error| {c['mean_abs_error_deg']:.2f} deg -> "
        f"{c['error_ok']}; post-cue AI no-delay {c['post_ai_no_post_delay']:.3f} < standard "
        f"{c['post_ai_standard']:.3f} -> {c['no_delay_ai_lower_ok']}; all converged {c['all_converged']}"
    )
    return "\n".join(lines)
