"""CLI: ``neurospeech analyze noise-limits`` and ``neurospeech simulate-place-cells``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import click
from pydantic import Field, field_validator

from neurospeech._settings import Settings, read_toml
from neurospeech.errors import ConfigError

__all__ = ["NoiseLimitsFile", "NoiseLimitsTable", "noise_limits", "simulate_place_cells"]

log = logging.getLogger(__name__)

_EXAMPLE = "deploy/configs/noise-limits.example.toml"


def _parse_sizes(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError as exc:
        raise ConfigError(
            f"--sizes {text!r} is not a comma-separated list of integers, e.g. 5,10,50,100"
        ) from exc


class NoiseLimitsTable(Settings):
    """``[noise_limits]``: the keys of :class:`neurospeech.tools.analyses.noise_limits.NoiseLimitSettings`.

    The keys and defaults are that dataclass's (tests/test_settings.py checks that they agree); the bounds
    are declared here, so a bad file or option is refused with its key before any work starts.
    """

    _what: ClassVar[str] = "noise-limits settings"

    sizes: Annotated[list[Annotated[int, Field(ge=1)]], Field(strict=False, min_length=2)] | None = Field(
        None, description="explicit ensemble sizes N (default: n_sizes log-spaced sizes)")
    n_sizes: int = Field(10, ge=2, le=1000, description="number of log-spaced sizes when sizes is not given")
    min_size: int = Field(1, ge=1, description="smallest N of the default grid")
    n_subsets: int = Field(10, ge=1, description="random feature subsets R per size")
    decoder: str = Field("svm", pattern=r"^(svm|lda|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$",
                         description="svm, lda or package.module:Class (a scikit-learn classifier)")
    svm_c: float = Field(1.0, gt=0, description="C of the linear SVM")
    group_decoding: Literal["separate", "joint"] = Field(
        "separate", description="one decoder per nuisance group, or one over class x group")
    both_folds: bool = Field(True, description="test on both halves of the 2-fold split")
    bin_width: float = Field(1.0, gt=0, description="width of one label bin in physical units "
                             "(default: --bin-width, else the input's)")
    unit: str = Field("bins", min_length=1, description="name of that unit, e.g. cm (default: the input's)")
    whiten: bool = Field(False, description="Ledoit-Wolf whitening of the features")
    min_trials_per_class: int = Field(4, ge=4, description="smallest class (x group) cell; 2 per half")
    n_boot: int = Field(200, ge=10, description="bootstrap resamples of the subsets")
    ci: float = Field(0.95, gt=0, lt=1, description="confidence level of the intervals")
    n_star_max_factor: float = Field(1000.0, gt=1, description="upper bound of N* as a multiple of the largest N")
    fit_space: Literal["linear", "log"] = Field("linear", description="least squares on IMSE or on log IMSE")
    geometry: bool = Field(True, description="noise geometry and bias-corrected Fisher information")
    n_jobs: int = Field(1, ge=-1, description="joblib workers over subsets (-1: all cores; not 0)")
    seed: int = Field(0, ge=0, description="seed of subsets, splits, shuffles and bootstrap")
    progress: bool = Field(True, description="tqdm progress bar")

    @field_validator("n_jobs")
    @classmethod
    def _workers(cls, v: int) -> int:
        if v == 0:
            raise ValueError("0 workers; use a positive number of workers or -1 for all cores")
        return v


class NoiseLimitsFile(Settings):
    """A ``noise-limits`` config file: one ``[noise_limits]`` table (its JSON Schema)."""

    _what: ClassVar[str] = "noise-limits settings"

    noise_limits: NoiseLimitsTable = Field(default_factory=NoiseLimitsTable)


def _read_config(path: Path | None) -> dict[str, Any]:
    """The checked ``[noise_limits]`` table of a TOML file (or its top level): only the keys it sets."""
    if path is None:
        return {}
    doc = read_toml(path, what="noise-limits config", example=_EXAMPLE)
    if "noise_limits" in doc:
        NoiseLimitsFile.from_dict(doc, source=path)
        table = dict(doc["noise_limits"])
    else:
        table = dict(doc)
    NoiseLimitsTable.from_dict(table, source=path)
    return table


@click.command("noise-limits")
@click.argument(
    "input_path",
    metavar="[INPUT]",
    required=False,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option(
    "--bids",
    "bids_root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Use word epochs of this BIDS dataset instead of INPUT (features = sensors).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (JSON, PNG, TXT).",
)
@click.option("--stem", default="noise_limits", show_default=True, help="Output file name stem.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="TOML file with a [noise_limits] table of settings (options override it).",
)
@click.option(
    "--onnx",
    "onnx_model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="With --bids: features = latents of this exported encoder (its contract preprocesses the windows).",
)
@click.option("--label-column", default="y", show_default=True, help="CSV: label column.")
@click.option("--group-column", default=None, help="CSV: nuisance group column.")
@click.option(
    "--label",
    type=click.Choice(["word", "duration", "loudness"]),
    default="word",
    show_default=True,
    help="BIDS: word identity, or word duration / loudness (binned).",
)
@click.option("--subjects", default=None, help="BIDS: comma-separated subjects (default: all).")
@click.option(
    "--tmin", type=float, default=0.1, show_default=True, help="BIDS: window start after onset (s)."
)
@click.option("--tmax", type=float, default=0.5, show_default=True, help="BIDS: window end (s).")
@click.option(
    "--n-time-bins",
    type=int,
    default=1,
    show_default=True,
    help="BIDS: time bins per sensor (features = sensors x bins).",
)
@click.option("--min-repeats", type=int, default=4, show_default=True, help="BIDS: repetitions per word.")
@click.option("--n-bins", type=int, default=None, help="Bin continuous labels into this many bins.")
@click.option("--quantile-bins", is_flag=True, help="Equal-count bins (errors in bins).")
@click.option(
    "--bin-width",
    type=float,
    default=None,
    help="Physical width of a bin / label step (default: from the input, else 1).",
)
@click.option("--unit", default=None, help="Unit name of the labels, e.g. cm.")
@click.option("--categorical", is_flag=True, help="Numeric labels are categories (0/1 error).")
@click.option("--sizes", default=None, help="Ensemble sizes, e.g. 5,10,25,50,100,250,500.")
@click.option("--n-sizes", type=int, default=None, help="Number of log-spaced sizes (default 10).")
@click.option("--subsets", "n_subsets", type=int, default=None, help="Random subsets per size (default 10).")
@click.option("--decoder", default=None, help="svm (default), lda, or package.module:ClassifierClass.")
@click.option("--svm-c", type=float, default=None, help="C of the linear SVM (default 1).")
@click.option(
    "--group-decoding",
    type=click.Choice(["separate", "joint"]),
    default=None,
    help="One decoder per group (default) or one over class x group.",
)
@click.option("--one-fold", is_flag=True, help="Train on half A, test on B only (half the time).")
@click.option("--whiten", is_flag=True, help="Ledoit-Wolf whitening (baseline reference for --bids).")
@click.option("--n-boot", type=int, default=None, help="Bootstrap resamples (default 200).")
@click.option("--no-geometry", is_flag=True, help="Skip noise geometry and Fisher information.")
@click.option("--jobs", "n_jobs", type=int, default=None, help="Parallel workers over subsets (default 1).")
@click.option("--seed", type=int, default=None, help="Random seed (default 0).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def noise_limits(
    input_path: Path | None,
    bids_root: Path | None,
    out_dir: Path,
    stem: str,
    config_path: Path | None,
    onnx_model: Path | None,
    label_column: str,
    group_column: str | None,
    label: str,
    subjects: str | None,
    tmin: float,
    tmax: float,
    n_time_bins: int,
    min_repeats: int,
    n_bins: int | None,
    quantile_bins: bool,
    bin_width: float | None,
    unit: str | None,
    categorical: bool,
    sizes: str | None,
    n_sizes: int | None,
    n_subsets: int | None,
    decoder: str | None,
    svm_c: float | None,
    group_decoding: str | None,
    one_fold: bool,
    whiten: bool,
    n_boot: int | None,
    no_geometry: bool,
    n_jobs: int | None,
    seed: int | None,
    no_progress: bool,
) -> None:
    """Decoding error vs ensemble size, real vs trial-shuffled (Hazon et al. 2022).

    INPUT is an .npz (arrays X: trials x features, y; optional group, bin_width, unit, X_ref) or a .csv
    (one row per trial); or use --bids ROOT for word epochs of a dataset (sensors as features). Writes
    <stem>.json, <stem>.png and <stem>.txt into --out and prints the summary.

    \b
    Examples:
      neurospeech simulate-place-cells cells.npz --s-d 4
      neurospeech analyze noise-limits cells.npz --out out/ --sizes 5,10,25,50,100,250,500 --jobs 2
      neurospeech analyze noise-limits --bids data/ci --label word --out out/ci --whiten
      neurospeech analyze noise-limits --bids data/ci --onnx model.onnx --out out/latents
    """
    from dataclasses import replace

    cfg = _read_config(config_path)  # a bad file is refused before any data is read
    from ._noise_io import epochs_features, read_table
    from .noise_limits import NoiseLimitSettings, prepare_labels, run_noise_limits, write_outputs

    if onnx_model is not None and bids_root is None:
        raise ConfigError("--onnx needs --bids ROOT (the dataset whose word windows go through the encoder)")
    if (input_path is None) == (bids_root is None):
        raise ConfigError("give exactly one input: a file INPUT (.npz/.csv) or --bids ROOT")
    if onnx_model is not None and bids_root is not None:
        from ._noise_onnx import onnx_latents

        table = onnx_latents(
            onnx_model,
            bids_root,
            label=label,
            subjects=subjects.split(",") if subjects else None,
            n_time_bins=n_time_bins,
            min_repeats=min_repeats,
        )
        if label != "word" and n_bins is None:
            n_bins, quantile_bins = 5, True
    elif bids_root is not None:
        table = epochs_features(
            bids_root,
            label=label,
            subjects=subjects.split(",") if subjects else None,
            tmin=tmin,
            tmax=tmax,
            n_time_bins=n_time_bins,
            min_repeats=min_repeats,
        )
        if label != "word" and n_bins is None:
            n_bins, quantile_bins = 5, True
    else:
        table = read_table(Path(str(input_path)), label_column, group_column)
    overrides = {
        "sizes": _parse_sizes(sizes),
        "n_sizes": n_sizes,
        "n_subsets": n_subsets,
        "decoder": decoder,
        "svm_c": svm_c,
        "group_decoding": group_decoding,
        "n_boot": n_boot,
        "n_jobs": n_jobs,
        "seed": seed,
    }
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    for flag, key, value in (
        (one_fold, "both_folds", False),
        (whiten, "whiten", True),
        (no_geometry, "geometry", False),
        (no_progress, "progress", False),
    ):
        if flag:
            cfg[key] = value
    checked = NoiseLimitsTable.from_dict(cfg)  # the options' values too, with their keys
    cfg = {k: getattr(checked, k) for k in cfg}
    if cfg.get("sizes") is not None:
        cfg["sizes"] = tuple(cfg["sizes"])
    # bin width and unit: the option, else the config file, else the input's own
    width = bin_width if bin_width is not None else cfg.pop("bin_width", table.bin_width)
    unit = unit or cfg.pop("unit", None)
    labels = prepare_labels(
        table.y, n_bins=n_bins, bin_width=width, categorical=categorical, quantiles=quantile_bins
    )
    settings = NoiseLimitSettings(**cfg)
    settings = replace(
        settings,
        bin_width=labels.bin_width,
        unit=unit or table.unit or ("bins" if labels.ordinal else "class"),
    )
    result = run_noise_limits(table.X, labels, table.group, settings, X_ref=table.X_ref)
    result.info["input"] = table.meta
    paths = write_outputs(result, out_dir, stem)
    click.echo(result.summary())
    click.echo(f"wrote {paths['json']}, {paths['png']}, {paths['txt']}")


@click.command("simulate-place-cells")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--s-d",
    "s_d",
    type=float,
    default=4.0,
    show_default=True,
    help="SD (cm) of the shared jitter of encoded position; 0 = independent noise only (control).",
)
@click.option("--units", "n_units", type=int, default=500, show_default=True, help="Number of units.")
@click.option(
    "--trials-per-bin",
    type=int,
    default=100,
    show_default=True,
    help="Trials per position bin and direction.",
)
@click.option("--bins", "n_bins", type=int, default=20, show_default=True, help="Position bins.")
@click.option("--directions", "n_directions", type=click.IntRange(1, 2), default=2, show_default=True)
@click.option("--noise-sd", type=float, default=0.3, show_default=True, help="Independent noise SD.")
@click.option("--seed", type=int, default=0, show_default=True)
def simulate_place_cells(
    out: Path,
    s_d: float,
    n_units: int,
    trials_per_bin: int,
    n_bins: int,
    n_directions: int,
    noise_sd: float,
    seed: int,
) -> None:
    """Simulate place cells on a 120 cm track into OUT (.npz: X, y, group, bin_width, ...)."""
    from .place_cells import PlaceCellSettings, save_place_cells
    from .place_cells import simulate_place_cells as simulate

    if out.suffix != ".npz":
        raise ConfigError(f"output {out.name!r} must end in .npz")
    s = PlaceCellSettings(
        n_units=n_units,
        trials_per_bin=trials_per_bin,
        n_bins=n_bins,
        n_directions=n_directions,
        s_d=s_d,
        noise_sd=noise_sd,
        seed=seed,
    )
    data = simulate(s)
    save_place_cells(data, out)
    shuf, real = data.linear_fisher_per_cm2(0)
    click.echo(
        f"wrote {out}: {data.X.shape[0]} trials x {data.X.shape[1]} units, {n_bins} bins of "
        f"{s.bin_width:g} cm, s_d={s_d:g} cm; linearised Fisher information (all units, direction 0): "
        f"shuffled {shuf:.3g} /cm^2, real {real:.3g} /cm^2 (ceiling 1/s_d^2 = "
        f"{(1 / s_d**2 if s_d > 0 else float('inf')):.3g})"
    )
