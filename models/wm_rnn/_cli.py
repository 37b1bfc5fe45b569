"""``neurospeech wm-rnn``: train the retro-cue RNNs, export their hidden states, analyse their geometry."""

from __future__ import annotations

import json
import logging
import tomllib
from pathlib import Path

import click

from neurospeech.errors import ConfigError

__all__ = ["load_config", "wm_rnn"]

log = logging.getLogger(__name__)


def load_config(path: Path | None) -> dict:
    """Read a TOML config: ``[train]`` (TrainConfig keys), ``[task]`` (TaskConfig keys), ``[run]``.

    ``[run]`` holds ``seeds`` (list of int) and ``n_jobs``.
    """
    if path is None:
        return {}
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(
            f"config file {path} does not exist; see deploy/configs/wm-rnn.example.toml"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    bad = sorted(set(raw) - {"train", "task", "run"})
    if bad:
        raise ConfigError(f"unknown sections {bad} in {path}; allowed: [train], [task], [run]")
    return raw


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
    from .train import TrainConfig, train_many

    raw = load_config(config_path)
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
    tr["task"] = task
    cfg = TrainConfig.from_dict(tr)
    seed_list = _seeds(seeds) if seeds is not None else [int(s) for s in run.get("seeds", [0])]
    jobs = n_jobs if n_jobs is not None else int(run.get("n_jobs", 2))
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
    from .bench import run_bench

    raw = load_config(config_path)
    tr = dict(raw.get("train", {}))
    tr["task"] = dict(raw.get("task", {}))
    report = run_bench(tr, _seeds(seeds), out_dir, n_jobs, progress)
    click.echo(report["table"])
    click.echo(f"wrote {out_dir / 'bench.json'}")


def _f(v: float | None, w: int = 7, nd: int = 1) -> str:
    return f"{'nan':>{w}}" if v is None else f"{v:>{w}.{nd}f}"
