"""CLI: ``neurospeech train``, ``neurospeech evaluate``, ``neurospeech export``, ``neurospeech bank``."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError

__all__ = ["bank", "evaluate", "export", "train"]

log = logging.getLogger(__name__)


def _parse_set(values: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` pairs; values parsed as JSON when they can be (numbers, lists, null, true)."""
    out: dict[str, Any] = {}
    for item in values:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


@click.command("train")
@click.argument("config", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data", type=click.Path(exists=True, file_okay=False), help="BIDS dataset root.")
@click.option("--format", "data_format", help="Layout of --data: bids, meg-masc, mous, broderick, brennan, "
              "libribrain (default: detected; docs/datasets.md).")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory.")
@click.option("--preset", type=click.Choice(["paper", "efficient"]), help="Encoder architecture.")
@click.option("--loss", type=click.Choice(["clip", "mse"]), help="clip (contrastive) or mse "
    "(regression base).")
@click.option("--features", type=click.Choice(["mel", "whisper", "wav2vec2"]), help="Speech representation.")
@click.option("--epochs", "max_epochs", type=int, help="Maximum epochs.")
@click.option("--batch-size", type=int, help="Global batch size.")
@click.option("--device", help="auto, cpu, cuda, cuda:N.")
@click.option("--seed", type=int, help="Random seed.")
@click.option("--subject", "subjects", multiple=True, help="Use only this subject (repeatable).")
@click.option("--resume/--no-resume", default=None, help="Continue from OUT/checkpoint.pt if present.")
@click.option("--split-file", type=click.Path(exists=True, dir_okay=False),
              help='Split file {"train": [wav, ...], "val": [...], "test": [...]} (default: DATA/splits.json if '
                   "present, else a hash of each wav path; fractions via --set split_fractions=[0.6,0.2,0.2]).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Any TrainConfig field, e.g. --set score_dim=32 --set 'encoder={\"hidden\": 128}'.")
def train(config: Path | None, sets: tuple[str, ...], subjects: tuple[str, ...], **opts: Any) -> None:
    """Train a brain encoder (CONFIG: optional TOML, see deploy/configs/train.example.toml).

    Runs on CPU or CUDA, and multi-process under `torchrun --nproc_per_node=N -m neurospeech train ...`.
    """
    from .train import TrainConfig
    from .train import train as run_train

    overrides = {k: v for k, v in opts.items() if v is not None}
    if subjects:
        overrides["subjects"] = list(subjects)
    overrides.update(_parse_set(sets))
    cfg = TrainConfig.from_toml(config, **overrides) if config else TrainConfig.from_dict(overrides)
    run_dir = run_train(cfg)
    meta_path = Path(run_dir) / "meta.json"
    if meta_path.is_file() and os.environ.get("RANK", "0") == "0":  # torchrun: one summary, from rank 0
        meta = json.loads(meta_path.read_text())
        t = meta["training"]
        click.echo(f"run {run_dir}: {t['epochs_run']} epochs, best val loss {t['best_val_loss']:.4f} "
                   f"(epoch {t['best_epoch']}), val top-10 {100 * t['best_val_top10']:.1f} %, "
                   f"{t['data_seconds'] + t['fit_seconds']:.1f} s, model sha256 {t['model_sha256']}")


@click.command("evaluate")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Report directory.")
@click.option("--data", type=click.Path(exists=True, file_okay=False), help="Dataset (default: the run's).")
@click.option("--format", "data_format", default=None, help="Layout of --data (default: the run's, or detected).")
@click.option("--ridge/--no-ridge", default=True, show_default=True, help="Ridge baseline.")
@click.option("--random/--no-random", default=True, show_default=True, help="Random baseline.")
@click.option("--max-ridge-windows", type=int, default=4000, show_default=True,
              help="Training windows per subject of the ridge baseline.")
@click.option("--ridge-components", type=click.IntRange(min=1), default=64, show_default=True,
              help="Channel PCA components of the ridge baseline.")
@click.option("--feature-cache", type=click.Path(file_okay=False), default=None,
              help="Feature cache (default: $NEUROSPEECH_CACHE or ~/.cache/neurospeech/features).")
@click.option("--data-cache", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Cut windows from the memory-mapped preprocessed-recording cache (on: memory bounded by "
                   "batches, any corpus size), all in memory (off), or on for a public corpus only (auto).")
@click.option("--early-curve/--no-early-curve", default=True, show_default=True,
              help="Accuracy vs decision delay (onset + 0.5 .. 2.0 s) for every run; off saves one scoring pass "
                   "per delay.")
@click.option("--centred/--no-centred", "centered", default=True, show_default=True,
              help="Also score each run with hub-centred candidate scores.")
def evaluate(runs: tuple[str, ...], out: str, data: str | None, ridge: bool, random: bool,
             max_ridge_windows: int, ridge_components: int, feature_cache: str | None,
             data_format: str | None, data_cache: str, early_curve: bool, centered: bool) -> None:
    """Evaluate RUNS (and baselines) on the test split: JSON + markdown report + plots in OUT.

    Give the contrastive run first; a run trained with --loss mse is the paper's regression "Base". The
    report holds the tuned ridge, random and frequency-only baselines, chance levels and 95 % intervals.
    """
    from .evaluate import EvalConfig
    from .evaluate import evaluate as run_eval

    cfg = EvalConfig(runs=list(runs), out=out, data=data, ridge=ridge, random=random,
                     max_ridge_windows=max_ridge_windows, ridge_components=ridge_components,
                     feature_cache=feature_cache, data_format=data_format, data_cache=data_cache, centered=centered)
    if not early_curve:
        cfg.early_delays = []
    rep = run_eval(cfg)
    click.echo((Path(out) / "report.md").read_text())
    del rep


@click.command("export")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.")
@click.option("--subject", default=None,
              help="Fold a single subject (no subject input); 'mean': zero-calibration model for a new person "
                   "(mean subject layer, pooled scaler).")
@click.option("--metrics", type=click.Path(exists=True, dir_okay=False), default=None,
              help="report.json from `neurospeech evaluate` to embed this model's metrics.")
def export(run: str, out: str, subject: str | None, metrics: str | None) -> None:
    """Export RUN's best weights to ONNX with the model contract (metadata + sidecar JSON)."""
    from .export import export_run

    info = export_run(run, out, subject=subject, metrics=metrics)
    click.echo(json.dumps(info, indent=1))


@click.command("bank")
@click.option("--model", required=True, type=click.Path(exists=True, dir_okay=False), help="Exported .onnx.")
@click.option("--data", type=click.Path(exists=True, file_okay=False), help="Dataset root.")
@click.option("--format", "data_format", default=None, help="Layout of --data: bids, meg-masc, mous, broderick, "
              "brennan, libribrain (default: detected; docs/datasets.md).")
@click.option("--audio", type=click.Path(exists=True, file_okay=False), default=None,
              help="Instead of --data: a folder of stimulus wavs (with --words).")
@click.option("--words", type=click.Path(exists=True), default=None,
              help="With --audio: a TSV (wav, onset, word), a Praat TextGrid, or a folder of TextGrids.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output bank (.npz).")
@click.option("--split", type=click.Choice(["test", "val", "train", "all"]), default="test",
    show_default=True)
@click.option("--feature-cache", type=click.Path(file_okay=False), default=None)
@click.option("--data-cache", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Read each sound's targets memory-mapped from the target cache training streams from (on), "
                   "compute them in memory one sound at a time (off), or on for a public corpus only (auto).")
@click.option("--rank", type=click.IntRange(min=1), default=None,
              help="Compress the bank to this rank (low-rank basis; faster scoring). Default: exact bank.")
@click.option("--prefilter", default="auto", show_default=True, metavar="auto|off|RANK",
              help="Keep the exact bank and add a prefilter of this rank: each decision scores every candidate "
                   "at this rank, then the --shortlist best exactly (exact top-k at a fraction of the cost). "
                   "auto: rank 512 where it costs at most half of exact scoring (thousands of candidates) and "
                   "keeps >= 99 % of the candidates' energy, else the exact bank. off: the exact bank.")
@click.option("--shortlist", type=click.IntRange(min=1), default=200, show_default=True,
              help="With --prefilter: candidates scored exactly per decision.")
def bank(model: str, data: str | None, out: str, split: str, feature_cache: str | None, rank: int | None,
         data_format: str | None, audio: str | None, words: str | None, data_cache: str,
         prefilter: str, shortlist: int) -> None:
    """Build the candidate bank of MODEL from the stimuli and word events of DATA, or from the wavs of --audio
    and the word timings of --words (every word onset is a candidate)."""
    from .bank import build_bank

    pre_arg: int | str | None
    if prefilter.strip().lower() in ("auto", "off", "0"):
        pre_arg = {"auto": "auto", "off": None, "0": None}[prefilter.strip().lower()]
    elif prefilter.strip().isdigit():
        pre_arg = int(prefilter)
    else:
        raise click.BadParameter(f"{prefilter!r}: give auto, off or a rank (a positive integer), e.g. 512",
                                 param_hint="--prefilter")
    if not out.endswith(".npz"):
        raise ConfigError(f"bank output must end with .npz, got {out!r}")
    if data is not None and audio is None and words is None:
        root, cand = data, None
    elif data is None and audio is not None and words is not None:
        from ..data.formats import audio_word_candidates

        root, cand, split = audio, audio_word_candidates(audio, words), "all"
    else:
        raise ConfigError("give either --data ROOT, or --audio DIR with --words FILE")
    b = build_bank(model, root, out, split=split, feature_cache=feature_cache, rank=rank, fmt=data_format,
                   candidates=cand, data_cache=data_cache, prefilter=pre_arg, shortlist=shortlist)
    comp = b.header.get("compression")
    pre = b.header.get("prefilter")
    extra = (f", rank {comp['rank']} ({100 * comp['energy']:.2f}% energy kept)" if comp else "")
    if pre:
        extra = (f", prefilter rank {pre['rank']} ({100 * pre['energy']:.2f}% energy), {b.shortlist} scored "
                 "exactly per decision")
    click.echo(f"wrote {out}: {len(b)} candidates, features {b.features.shape}{extra}, "
               f"{b.macs_per_decision()} MACs per decision, model sha256 {b.model_sha256[:12]}...")
