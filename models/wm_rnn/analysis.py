"""Geometry of trained RNNs: pre-cue location planes vs post-cue cued planes (numpy only, no torch).

Reads the ``states.npz`` written by :func:`neurospeech.models.wm_rnn.train.export_states` and runs
:mod:`neurospeech.geometry` with the paper's two labellings:

- *location*: each trial twice, the colour at location 1 in context 0 and the colour at location 2 in
  context 1 (the pre-cue planes, read at the last pre-cue delay step);
- *cued*: the cued colour, context = cued location (the post-cue planes, read at the last step).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from neurospeech.errors import DataFormatError
from neurospeech.geometry import (
    GeometrySettings,
    analyze,
    bin_feature,
    cross_temporal_decoding,
    group_stats,
    jsonable,
    time_resolved,
)

__all__ = ["analyze_seed", "dump", "labelling", "load_states", "summarize", "write_geometry_inputs"]

log = logging.getLogger(__name__)

_KEYS = ("hidden", "colour1", "colour2", "cued", "probed", "cue_step", "pre_cue_step", "post_cue_step")


def load_states(path: str | Path) -> dict[str, np.ndarray]:
    """Load an exported ``states.npz`` (pickle-free) and check its keys."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise DataFormatError(
            f"cannot read states file {path}: {exc}; run `neurospeech wm-rnn export-states`"
        ) from exc
    missing = [k for k in _KEYS if k not in d]
    if missing:
        raise DataFormatError(f"{path} lacks {missing}; it is not a wm-rnn states export")
    return d


def labelling(states: dict[str, np.ndarray], kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Data, feature and context arrays for the ``'location'`` or ``'cued'`` labelling (see module doc)."""
    h = states["hidden"]
    if kind == "location":
        n = len(h)
        return (
            np.concatenate([h, h]),
            np.concatenate([states["colour1"], states["colour2"]]),
            np.repeat(np.array([0, 1]), n),
        )
    if kind == "cued":
        cued = states["cued"].astype(np.int64)
        feat = np.where(cued == 0, states["colour1"], states["colour2"])
        return h, feat, cued
    raise DataFormatError(f"labelling must be 'location' or 'cued', got {kind!r}")


def write_geometry_inputs(states: dict[str, np.ndarray], out_dir: str | Path) -> list[Path]:
    """Write ``geometry_location.npz`` and ``geometry_cued.npz`` for ``neurospeech analyze geometry``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in ("location", "cued"):
        x, f, c = labelling(states, kind)
        p = out_dir / f"geometry_{kind}.npz"
        np.savez_compressed(
            p, data=x.astype(np.float32), feature=f, context=c, time_axis=np.arange(x.shape[1], dtype=float)
        )
        paths.append(p)
    return paths


def analyze_seed(
    states_path: str | Path, settings: GeometrySettings | None = None, plots_dir: Path | None = None
) -> dict:
    """Geometry of one network: pre-cue (location labelling) and post-cue (cued labelling).

    Returns a JSON-ready dict with ``pre`` and ``post`` (theta, psi, AI d=2/3, principal angles, decoding),
    ``time_resolved`` for both labellings, ``cross_temporal_cued`` (decoding the cued colour bin across
    steps) and the step indices.
    """
    settings = settings or GeometrySettings()
    st = load_states(states_path)
    pre_t, post_t = int(st["pre_cue_step"]), int(st["post_cue_step"])
    no_ct = GeometrySettings(
        n_bins=settings.n_bins,
        cv=settings.cv,
        decoding=settings.decoding,
        cross_temporal=False,
        seed=settings.seed,
    )
    xl, fl, cl = labelling(st, "location")
    xc, fc, cc = labelling(st, "cued")
    pre = analyze(xl[:, pre_t], fl, cl, None, no_ct)["at"]["t"]
    post = analyze(xc[:, post_t], fc, cc, None, no_ct)["at"]["t"]
    out: dict = {
        "states": str(states_path),
        "steps": {"cue": int(st["cue_step"]), "pre": pre_t, "post": post_t},
        "pre": pre,
        "post": post,
        "time_resolved": {
            "location": time_resolved(xl, fl, cl, settings.n_bins),
            "cued": time_resolved(xc, fc, cc, settings.n_bins),
        },
    }
    if settings.decoding and settings.cross_temporal:
        out["cross_temporal_cued"] = cross_temporal_decoding(
            xc, bin_feature(fc, settings.n_bins), settings.cv, settings.seed
        ).tolist()
    if "report" in st:
        target = np.where(st["probed"] == 0, st["colour1"], st["colour2"])
        err = np.degrees(np.abs((st["report"] - target + np.pi) % (2 * np.pi) - np.pi))
        out["export_mean_abs_error_deg"] = float(err.mean())
    if plots_dir is not None:
        from neurospeech.geometry._plot import plot_planes, plot_time_resolved

        plots_dir.mkdir(parents=True, exist_ok=True)
        plot_planes(
            {f"pre-cue (step {pre_t})": pre, f"post-cue (step {post_t})": post},
            plots_dir / "planes.png",
            ("location 1 / cued 1", "location 2 / cued 2"),
        )
        plot_time_resolved(
            out["time_resolved"], plots_dir / "time_resolved.png", {"cue": float(st["cue_step"])}
        )
    return jsonable(out)  # type: ignore[return-value]


def summarize(per_seed: list[dict]) -> dict:
    """Group figures over networks: medians, per-seed criteria, circular statistics of theta and psi."""

    def col(part: str, key: str) -> np.ndarray:
        return np.array([np.nan if s[part][key] is None else s[part][key] for s in per_seed], dtype=float)

    th_pre, th_post = col("pre", "theta"), col("post", "theta")
    ai_pre, ai_post = col("pre", "ai_d2"), col("post", "ai_d2")
    out = {
        "n": len(per_seed),
        "median_theta_pre": float(np.nanmedian(th_pre)),
        "median_theta_post": float(np.nanmedian(th_post)),
        "median_ai_d2_pre": float(np.nanmedian(ai_pre)),
        "median_ai_d2_post": float(np.nanmedian(ai_post)),
        "median_ai_d3_pre": float(np.nanmedian(col("pre", "ai_d3"))),
        "median_ai_d3_post": float(np.nanmedian(col("post", "ai_d3"))),
        "pre": group_stats(col("pre", "theta_signed"), col("pre", "psi")),
        "post": group_stats(col("post", "theta_signed"), col("post", "psi")),
    }
    return jsonable(out)  # type: ignore[return-value]


def dump(obj: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(obj), indent=2, allow_nan=False))
    return path
