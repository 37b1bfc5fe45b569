"""``neurospeech wm-rnn``: train the retro-cue RNNs, export their hidden states, analyse their geometry."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Annotated, Any, ClassVar

import click
from pydantic import Field

from neurospeech._settings import Settings, read_toml
from neurospeech.errors import ConfigError

__all__ = ["RunSection", "TaskSection", "TrainSection", "WmRnnFile", "load_config", "wm_rnn"]

log = logging.getLogger(__name__)

_EXAMPLE = "deploy/configs/wm-rnn.example.toml"


# The file's model. The keys and defaults are those of the dataclasses that run the training
# (.task.TaskConfig, .train.TrainConfig; tests/test_settings.py checks that they agree); the bounds are
# declared here, so a bad file is refused with its key before torch is imported.
class TaskSection(Settings):
    """``[task]``: the retro-cue task (keys of :class:`neurospeech.models.wm_rnn.task.TaskConfig`)."""

    n_channels: int = Field(17, ge=3, le=1000, description="von Mises channels per location (paper: 17)")
    n_colours: int = Field(16, ge=4, le=1000, description="colours per location (paper: 16)")
    kappa: float = Field(5.0, gt=0, description="von Mises concentration of the input tuning curves")
    peak: float = Field(1.0, gt=0, description="peak height of the input tuning curves")
    pre_cue_delay: int = Field(7, ge=0, le=1000, description="steps between the colours and the cue")
    post_cue_delay: int = Field(7, ge=0, le=1000, description="steps between the cue and the output")
    cue_validity: float = Field(1.0, ge=0, le=1, description="probability that the probed location is cued")


class TrainSection(Settings):
    """``[train]``: one network's training (keys of :class:`neurospeech.models.wm_rnn.train.TrainConfig`)."""

    n_hidden: int = Field(200, ge=1, description="ReLU units")
    noise_sd: float = Field(0.07, ge=0, description="hidden noise SD at every step")
    rec_gain: float = Field(math.sqrt(2.0), gt=0, description="W_rec = rec_gain x a random orthogonal matrix")
    lr: float = Field(1e-4, gt=0, description="RMSprop learning rate (paper: 1e-4)")
    batch_size: int = Field(1, ge=1, description="trials per update")
    epoch_repeats: int = Field(1, ge=1, description="an epoch = every trial type this many times")
    max_epochs: int = Field(5000, ge=1, description="hard cap on epochs")
    conv_window: int = Field(15, ge=2, description="epochs of the stopping rule's slope fit")
    conv_slope_min: float = Field(-2e-5, le=0, description="stopping rule: slope in [conv_slope_min, 0]")
    conv_loss_max: float = Field(0.0036, gt=0, description="stopping rule: every loss of the window below")
    plateau_epochs: int = Field(30, ge=1, description="epochs before the plateau check")
    plateau_rel_tol: float = Field(0.02, gt=0, description="relative distance to the uniform-output loss")
    max_restarts: int = Field(3, ge=0, description="re-initialisations of a network stuck on the plateau")
    checkpoint_every: int = Field(25, ge=1, description="epochs between checkpoints")
    eval_repeats: int = Field(10, ge=1, description="test: repeats of the 512 trial types")
    export_repeats: int = Field(2, ge=1, description="exported hidden states: repeats of the 512 trial types")


class RunSection(Settings):
    """``[run]``: which seeds, and how many processes."""

    seeds: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] = Field(
        default_factory=lambda: [0], description="one network per seed")
    n_jobs: int = Field(2, ge=1, le=256, description="processes (one torch thread each)")


class WmRnnFile(Settings):
    """A ``wm-rnn`` config file: ``[task]``, ``[train]`` and ``[run]`` (each optional; its JSON Schema)."""

    _what: ClassVar[str] = "wm-rnn settings"

    task: TaskSection = Field(default_factory=TaskSection)
    train: TrainSection = Field(default_factory=TrainSection)
    run: RunSection = Field(default_factory=RunSection)


def _checked(raw: dict[str, Any], source: Path | None = None) -> dict[str, dict[str, Any]]:
    """Validate ``{section: table}`` and return the tables with only the keys that were given."""
    parsed = WmRnnFile.from_dict(raw, source=source)
    return {name: {k: getattr(getattr(parsed, name), k) for k in raw[name]} for name in raw}


def load_config(path: Path | None) -> dict:
    """Read and check a TOML config: ``[train]`` (TrainConfig keys), ``[task]`` (TaskConfig keys), ``[run]``.

    ``[run]`` holds ``seeds`` (list of int) and ``n_jobs``. Returns ``{section: {key: value}}`` with the keys
    the file sets.

    Raises
    ------
    ConfigError
        Missing file, bad TOML, unknown section or key, a value of the wrong type or out of bounds.
    """
    if path is None:
        return {}
    return _checked(read_toml(path, what="config file", example=_EXAMPLE), Path(path))


def _seeds(text: str) -> list[int]:
    try:
        if "-" in text and "," not in text:
            a, b = text.split("-")
            return list(range(int(a), int(b) + 1))
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds must look like 0,1,2 or 0-4, got {text!r}") from None


@click.group("wm-rnn", context_settings={"help_option_names": ["-h", "--help"]})
def wm_rnn() -> None:
    """Retro-cue working-memory RNN (Piwek, Stokes & Summerfield 2023)."""


@wm_rnn.command("train")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML config (see deploy/configs/wm-rnn.example.toml); options below override it.",
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--seeds", default=None, help="Seeds, e.g. 0,1,2,3,4 or 0-4 (default from config or 0).")
@click.option("--n-jobs", type=int, default=None, help="Parallel processes (one torch thread each).")
@click.option("--lr", type=float, default=None, help="RMSprop learning rate (paper: 1e-4).")
@click.option("--batch-size", type=int, default=None, help="Trials per update.")
@click.option("--max-epochs", type=int, default=None)
@click.option("--rec-gain", type=float, default=None, help="Gain of the orthogonal W_rec init.")
@click.option("--pre-cue-delay", type=int, default=None)
@click.option("--post-cue-delay", type=int, default=None)
@click.option("--cue-validity", type=float, default=None)
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue from checkpoints.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def train(
    config_path: Path | None,
    out_dir: Path,
    seeds: str | None,
    n_jobs: int | None,
    lr: float | None,
    batch_size: int | None,
    max_epochs: int | None,
    rec_gain: float | None,
    pre_cue_delay: int | None,
    post_cue_delay: int | None,
    cue_validity: float | None,
    resume: bool,
    progress: bool,
) -> None:
    """Train networks (one per seed, in parallel) to the paper's stopping rule.

    Example: neurospeech wm-rnn train --out runs/wm --seeds 0-4 --n-jobs 2 --batch-size 32 --lr 1e-3
    """
    raw = load_config(config_path)  # a bad file is refused before torch is imported
    tr = dict(raw.get("train", {}))
    task = dict(raw.get("task", {}))
    run = dict(raw.get("run", {}))
    for key, val in (
        ("lr", lr),
        ("batch_size", batch_size),
        ("max_epochs", max_epochs),
        ("rec_gain", rec_gain),
    ):
        if val is not None:
            tr[key] = val
    for key, val in (
        ("pre_cue_delay", pre_cue_delay),
        ("post_cue_delay", post_cue_delay),
        ("cue_validity", cue_validity),
    ):
        if val is not None:
            task[key] = val
    if seeds is not None:
        run["seeds"] = _seeds(seeds)
    if n_jobs is not None:
        run["n_jobs"] = n_jobs
    checked = _checked({"train": tr, "task": task, "run": run})  # the options' values too
    from .train import TrainConfig, train_many

    cfg = TrainConfig.from_dict({**checked["train"], "task": checked["task"]})
    seed_list = list(checked["run"].get("seeds", [0]))
    jobs = int(checked["run"].get("n_jobs", 2))
    results = train_many(cfg, seed_list, out_dir, jobs, resume, progress)
    click.echo(
        f"{'seed':>5} {'conv':>5} {'epochs':>7} {'time_s':>8} {'loss':>8} {'err_deg':>8} {'restarts':>8}"
    )
    for r in results:
        click.echo(
            f"{r['seed']:>5} {r['converged']!s:>5} {r['epochs']:>7} {r['train_time_s']:>8.0f} "
            f"{r['final_loss']:>8.5f} {r['test_mean_abs_error_deg']:>8.2f} {len(r['restarts']):>8}"
        )
    click.echo(f"wrote {out_dir / 'summary.json'}")


@wm_rnn.command("export-states")
@click.option(
    "--seed-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="A trained seed folder (with model.pt and config.json).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (default: the seed folder).",
)
@click.option("--repeats", default=2, show_default=True, help="Repeats of the 512 trial types.")
@click.option("--seed", default=777, show_default=True, help="Noise seed of the test trials.")
def export_states_cmd(seed_dir: Path, out_dir: Path | None, repeats: int, seed: int) -> None:
    """Write hidden states (states.npz) and geometry inputs (geometry_location.npz, geometry_cued.npz)."""
    from .analysis import load_states, write_geometry_inputs
    from .train import export_states, load_model

    net, cfg = load_model(seed_dir)
    out_dir = out_dir or seed_dir
    path = export_states(net, cfg.task, out_dir / "states.npz", repeats, seed)
    extra = write_geometry_inputs(load_states(path), out_dir)
    st = cfg.task
    click.echo(f"wrote {path} and {', '.join(str(p) for p in extra)}")
    click.echo(
        f"steps: pre-cue={st.pre_cue_step} cue={st.cue_step} post-cue={st.post_cue_step}; e.g.\n"
        f"  neurospeech analyze geometry --input {extra[1]} --out {out_dir / 'geometry_cued'} "
        f"--time pre={st.pre_cue_step} --time post={st.post_cue_step}"
    )


@wm_rnn.command("analyze")
@click.option(
    "--run",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="A training folder (seed_* inside) or one seed folder.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON output (default: <run>/geometry.json).",
)
@click.option("--cv", default=5, show_default=True)
@click.option("--cross-temporal/--no-cross-temporal", default=True, show_default=True)
@click.option("--plots/--no-plots", default=True, show_default=True)
def analyze_cmd(run_dir: Path, out_path: Path | None, cv: int, cross_temporal: bool, plots: bool) -> None:
    """Pre-cue vs post-cue plane geometry of every trained seed, with group circular statistics."""
    from neurospeech.geometry import GeometrySettings

    from .analysis import analyze_seed, dump, summarize

    seed_dirs = sorted(p for p in run_dir.glob("seed_*") if (p / "states.npz").is_file())
    if not seed_dirs and (run_dir / "states.npz").is_file():
        seed_dirs = [run_dir]
    if not seed_dirs:
        raise ConfigError(f"no states.npz under {run_dir}; train (or export-states) first")
    settings = GeometrySettings(cv=cv, cross_temporal=cross_temporal)
    per_seed = []
    for sd in seed_dirs:
        res = analyze_seed(sd / "states.npz", settings, sd if plots else None)
        res["seed_dir"] = str(sd)
        if (sd / "result.json").is_file():
            res["training"] = json.loads((sd / "result.json").read_text())
        per_seed.append(res)
    summary = summarize(per_seed)
    out_path = out_path or run_dir / "geometry.json"
    dump({"seeds": per_seed, "summary": summary}, out_path)
    click.echo(f"{'seed':<12} {'th_pre':>7} {'th_post':>7} {'psi_post':>8} {'AI_pre':>7} {'AI_post':>7}")
    for r in per_seed:
        click.echo(
            f"{Path(r['seed_dir']).name:<12} {_f(r['pre']['theta'])} {_f(r['post']['theta'])} "
            f"{_f(r['post']['psi'], 8)} {_f(r['pre']['ai_d2'], 7, 3)} {_f(r['post']['ai_d2'], 7, 3)}"
        )
    click.echo(f"wrote {out_path}")


@wm_rnn.command("bench")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--seeds", default="0-4", show_default=True)
@click.option("--n-jobs", default=2, show_default=True)
@click.option("--progress/--no-progress", default=False, show_default=True)
def bench_cmd(out_dir: Path, config_path: Path | None, seeds: str, n_jobs: int, progress: bool) -> None:
    """Train the standard task and the no-post-cue-delay variant on several seeds, analyse, check the paper's
    effects, print a table and write bench.json."""
    raw = load_config(config_path)
    checked = _checked({"train": raw.get("train", {}), "task": raw.get("task", {}),
                        "run": {"seeds": _seeds(seeds), "n_jobs": n_jobs}})
    from .bench import run_bench

    tr = {**checked["train"], "task": checked["task"]}
    report = run_bench(tr, checked["run"]["seeds"], out_dir, checked["run"]["n_jobs"], progress)
    click.echo(report["table"])
    click.echo(f"wrote {out_dir / 'bench.json'}")


def _f(v: float | None, w: int = 7, nd: int = 1) -> str:
    return f"{'nan':>{w}}" if v is None else f"{v:>{w}.{nd}f}"
