"""CLI: ``neurospeech adapt`` (calibrate a new participant) and ``neurospeech adapt-curve`` (its LOSO curve)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from ._cli import _parse_set

__all__ = ["adapt", "adapt_curve"]

log = logging.getLogger(__name__)


@click.command("adapt")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--data", required=True, type=click.Path(file_okay=False),
              help="BIDS dataset with the new subject's calibration recording(s).")
@click.option("--subject", required=True, help="The new subject's BIDS label (not in RUN; not 'mean').")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="New run directory.")
@click.option("--minutes", type=float, default=None,
              help="Use only the first M minutes of recording time (default: all of it).")
@click.option("--task", "tasks", multiple=True, help="Use only this task (repeatable).")
@click.option("--epochs", "max_epochs", type=int, default=None, help="Maximum passes over the calibration.")
@click.option("--lr", type=float, default=None, help="Learning rate of the subject row.")
@click.option("--shared-lr", type=float, default=None,
              help="Learning rate of the shared weights (0: frozen; default: AdaptConfig.shared_lr).")
@click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]), default=None,
              help="Both rates constant, or decaying to 0 along a half cosine over the epochs "
                   "(default: AdaptConfig.lr_schedule).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any AdaptConfig field.")
def adapt(run: str, data: str, subject: str, out: str, minutes: float | None, tasks: tuple[str, ...],
          max_epochs: int | None, lr: float | None, shared_lr: float | None, lr_schedule: str | None,
          sets: tuple[str, ...]) -> None:
    """Calibrate a new participant on RUN: fit a new subject-layer row (from the mean of the trained ones)
    and the subject's robust scaler on a calibration recording, the shared weights fine-tuned at
    --shared-lr (1e-5; 0 freezes them); write a complete run OUT.

    `neurospeech export OUT --subject NEW` then works as for a training subject. Exit codes: 2 bad settings
    (subject already in RUN, unknown subject in DATA), 3 bad data (missing model channels, too little
    calibration), 4 RUN is not a finished training run.
    """
    from .adapt import AdaptConfig
    from .adapt import adapt as run_adapt

    opts: dict[str, Any] = {"run": run, "data": data, "subject": subject, "out": out, "minutes": minutes,
                            "tasks": list(tasks) or None}
    if max_epochs is not None:
        opts["max_epochs"] = max_epochs
    if lr is not None:
        opts["lr"] = lr
    if shared_lr is not None:
        opts["shared_lr"] = shared_lr
    if lr_schedule is not None:
        opts["lr_schedule"] = lr_schedule
    opts.update(_parse_set(sets))
    try:
        cfg = AdaptConfig(**opts)
    except TypeError as exc:
        from ..errors import ConfigError

        raise ConfigError(f"unknown adapt setting ({exc}); see `neurospeech adapt --help`") from exc
    run2 = run_adapt(cfg)
    a = json.loads((Path(run2) / "meta.json").read_text())["adaptation"]
    click.echo(f"run {run2}: subject {subject} adapted on {a['minutes_used']:.2f} min "
               f"({a['n_windows']['train']} train windows), {len(a['history'])} epochs, "
               f"{a['cpu_seconds']:.1f} s CPU ({a['wall_seconds']:.1f} s wall)")


@click.command("adapt-curve")
@click.argument("data", type=click.Path(exists=True, file_okay=False))
@click.option("--held-out", required=True, help="Subject left out of the base training.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--minutes", default="0,2,5,all", show_default=True,
              help="Calibration lengths, comma-separated (0: zero calibration; all: every recording).")
@click.option("--train-set", "train_sets", multiple=True, metavar="KEY=VALUE",
              help="TrainConfig fields of the base and within-subject trainings.")
@click.option("--adapt-set", "adapt_sets", multiple=True, metavar="KEY=VALUE", help="AdaptConfig fields.")
@click.option("--base-run", type=click.Path(file_okay=False), default=None,
              help="Finished run trained without the held-out subject, used as the base instead of training one.")
@click.option("--within-run", type=click.Path(file_okay=False), default=None,
              help="Finished run trained with the held-out subject, the within-subject reference (no training).")
@click.option("--n-boot", type=int, default=2000, show_default=True, help="Bootstrap resamples.")
def adapt_curve(data: str, held_out: str, out: str, minutes: str, train_sets: tuple[str, ...],
                adapt_sets: tuple[str, ...], base_run: str | None, within_run: str | None, n_boot: int) -> None:
    """Leave-one-subject-out: held-out subject's test top-10 vs minutes of calibration, beside the
    within-subject model (curve.json, curve.md, curve.png in OUT). Runs given with --base-run /
    --within-run are reused instead of trained (--train-set then applies to none or one training)."""
    from .adapt_curve import CurveConfig, adaptation_curve

    cfg = CurveConfig(data=data, held_out=held_out, out=out,
                      minutes=[m.strip() for m in minutes.split(",") if m.strip()],
                      train=_parse_set(train_sets), adapt=_parse_set(adapt_sets), base_run=base_run,
                      within_run=within_run, n_boot=n_boot)
    adaptation_curve(cfg)
    click.echo((Path(out) / "curve.md").read_text())
