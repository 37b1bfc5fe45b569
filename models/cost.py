"""Decision cost in multiply-accumulates: encoder (one window) + scoring a candidate bank.

``python -m neurospeech.models.cost --channels 270 --features 384`` prints the table that compares the
``paper`` preset in the paper's full scoring representation (F x 343 at 120 Hz) with the ``efficient`` preset
in the reduced one (PCA F' x 49 at 17 Hz). Encoder MACs are counted with forward hooks
(:func:`neurospeech.models.encoder.count_macs`), folded front end as exported; scoring a bank of ``n``
candidates costs ``n * F' * T'`` MACs (one matrix-vector product, :meth:`CandidateBank.scores`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from .encoder import BrainEncoder, count_macs, normalise_positions, preset_config

__all__ = ["cost_table", "decision_macs", "format_table"]


def decision_macs(model: BrainEncoder, n_times: int = 343, n_candidates: int = 10_000) -> dict[str, Any]:
    """Encoder MACs (folded and as published) and scoring MACs of ``n_candidates`` for one decision."""
    folded = count_macs(model, n_times, folded=True)
    unfolded = count_macs(model, n_times, folded=False)
    t_out = model.output_frames(n_times)
    scoring = n_candidates * model.out_dim * t_out
    return {
        "encoder_folded": folded["total"],
        "encoder_unfolded": unfolded["total"],
        "parts_folded": folded,
        "scoring": scoring,
        "output_shape": [model.out_dim, t_out],
        "bank_mb_per_1000": 1000 * model.out_dim * t_out * 4 / 1e6,
        "total": folded["total"] + scoring,
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
    }


def cost_table(n_channels: int = 270, n_subjects: int = 4, feature_dim: int = 384, score_dim: int = 64,
               time_pool: int = 7, n_candidates: int = 10_000, n_times: int = 343) -> dict[str, Any]:
    """Paper preset (full representation) vs efficient preset (reduced representation)."""
    pos = normalise_positions(np.random.default_rng(0).random((n_channels, 2)))
    rows = {
        "paper (F x 343)": BrainEncoder(preset_config("paper"), pos, n_subjects, feature_dim, 1),
        f"paper ({score_dim} x {n_times // time_pool})": BrainEncoder(preset_config("paper"), pos, n_subjects,
                                                                      score_dim, time_pool),
        f"efficient ({score_dim} x {n_times // time_pool})": BrainEncoder(preset_config("efficient"), pos,
                                                                          n_subjects, score_dim, time_pool),
    }
    out = {name: decision_macs(m, n_times, n_candidates) for name, m in rows.items()}
    ref = out["paper (F x 343)"]["total"]
    for v in out.values():
        v["fraction_of_paper"] = v["total"] / ref
    return {"n_channels": n_channels, "n_subjects": n_subjects, "feature_dim": feature_dim,
            "n_candidates": n_candidates, "rows": out}


def format_table(t: dict[str, Any]) -> str:
    lines = [f"decision cost, {t['n_channels']} channels, F = {t['feature_dim']}, "
             f"{t['n_candidates']} candidates",
             f"{'model':<22}{'params M':>9}{'enc (pub.) G':>13}{'enc (fold) G':>13}{'scoring G':>10}"
             f"{'total G':>9}{'/ paper':>9}{'MB/1k cand':>11}"]
    for name, r in t["rows"].items():
        lines.append(f"{name:<22}{r['n_parameters'] / 1e6:>9.2f}{r['encoder_unfolded'] / 1e9:>13.3f}"
                     f"{r['encoder_folded'] / 1e9:>13.3f}{r['scoring'] / 1e9:>10.3f}{r['total'] / 1e9:>9.3f}"
                     f"{r['fraction_of_paper']:>9.3f}{r['bank_mb_per_1000']:>11.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", type=int, default=270)
    p.add_argument("--subjects", type=int, default=4)
    p.add_argument("--features", type=int, default=384,
                   help="speech feature dim (whisper tiny 384, w2v 1024)")
    p.add_argument("--score-dim", type=int, default=64)
    p.add_argument("--time-pool", type=int, default=7)
    p.add_argument("--candidates", type=int, default=10_000)
    p.add_argument("--json", default=None, help="also write the table as JSON here")
    a = p.parse_args(argv)
    t = cost_table(a.channels, a.subjects, a.features, a.score_dim, a.time_pool, a.candidates)
    print(format_table(t))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(t, f, indent=1)


if __name__ == "__main__":
    main()
