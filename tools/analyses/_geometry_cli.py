"""``neurospeech analyze geometry``: representational geometry of a feature in two contexts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click
import numpy as np

from neurospeech.errors import ConfigError, DataFormatError

__all__ = ["geometry", "load_geometry_npz", "parse_times"]

log = logging.getLogger(__name__)


def load_geometry_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read the geometry input file (no pickles).

    Keys: ``data`` (n_trials, n_times, n_features) or (n_trials, n_features); ``feature`` (n_trials,) radians;
    ``context`` (n_trials,) 0/1; optional ``time_axis`` (n_times,).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError as exc:
        raise DataFormatError(
            f"geometry input {path} does not exist; pass an .npz with data/feature/context"
        ) from exc
    except (ValueError, OSError) as exc:
        raise DataFormatError(f"cannot read {path} as a (pickle-free) .npz: {exc}") from exc
    missing = [k for k in ("data", "feature", "context") if k not in arrays]
    if missing:
        raise DataFormatError(
            f"{path} lacks arrays {missing}; it has {sorted(arrays)}. Needed: data, feature, "
            "context (see `neurospeech analyze geometry --help`)"
        )
    return arrays


def parse_times(items: tuple[str, ...]) -> dict[str, int]:
    """``("pre=7", "post=15")`` -> ``{"pre": 7, "post": 15}``."""
    out: dict[str, int] = {}
    for it in items:
        name, sep, val = it.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name] = int(val)
        except ValueError:
            raise ConfigError(f"--time must look like NAME=INDEX (e.g. post=15), got {it!r}") from None
    return out


@click.command("geometry")
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="npz with data (n_trials[, n_times], n_features), feature (radians), context (0/1).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (geometry.json, planes.png, time_resolved.png).",
)
@click.option("--time", "times", multiple=True, help="NAME=INDEX time with a full report (repeatable).")
@click.option("--n-bins", default=4, show_default=True, help="Feature bins per context.")
@click.option("--cv", default=5, show_default=True, help="Cross-validation folds of the LDA decoders.")
@click.option("--decoding/--no-decoding", default=True, show_default=True, help="Run the LDA decoders.")
@click.option(
    "--cross-temporal/--no-cross-temporal",
    default=True,
    show_default=True,
    help="Cross-temporal generalisation matrix (n_times^2 decoders per fold).",
)
@click.option("--context-names", default="context 0,context 1", show_default=True, help="Plot legend names.")
def geometry(
    input_path: Path,
    out_dir: Path,
    times: tuple[str, ...],
    n_bins: int,
    cv: int,
    decoding: bool,
    cross_temporal: bool,
    context_names: str,
) -> None:
    """Plane angle theta, phase alignment psi, alignment index, principal angles and LDA decoding of a
    circular feature binned in two contexts (Piwek et al. 2023).

    Works on RNN hidden states, M/EEG epochs or encoder latents. Example:

        neurospeech analyze geometry --input run/seed_0/geometry_cued.npz --out geo --time post=15
    """
    from ...geometry import GeometrySettings, analyze, jsonable
    from ...geometry._plot import plot_planes, plot_time_resolved

    arrays = load_geometry_npz(input_path)
    settings = GeometrySettings(n_bins=n_bins, cv=cv, decoding=decoding, cross_temporal=cross_temporal)
    names = tuple(s.strip() for s in context_names.split(","))
    if len(names) != 2:
        raise ConfigError(f"--context-names needs two comma-separated names, got {context_names!r}")
    res = analyze(
        arrays["data"],
        arrays["feature"],
        arrays["context"],
        parse_times(times) or None,
        settings,
        arrays.get("time_axis"),
    )
    res["input"] = str(input_path)
    res = jsonable(res)  # type: ignore[assignment]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "geometry.json").write_text(json.dumps(res, indent=2, allow_nan=False))
    plot_planes(res["at"], out_dir / "planes.png", names)  # type: ignore[arg-type]
    if "time_resolved" in res:
        plot_time_resolved(
            {"data": res["time_resolved"]},
            out_dir / "time_resolved.png",
            {k: float(v) for k, v in res["times"].items()},
        )
    for name, g in res["at"].items():
        click.echo(
            f"{name}: theta={_fmt(g['theta'])} deg psi={_fmt(g['psi'])} deg AI(d=2)={g['ai_d2']:.3f} "
            f"AI(d=3)={g['ai_d3']:.3f} var3={_fmt(g['var_explained_3pc'], 3)}"
        )
    click.echo(f"wrote {out_dir / 'geometry.json'}")


def _fmt(v: float | None, nd: int = 1) -> str:
    return "nan" if v is None else f"{v:.{nd}f}"
