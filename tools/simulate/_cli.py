"""CLI: ``neurospeech simulate``, ``neurospeech data-check``, ``neurospeech calibrate``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

__all__ = ["calibrate", "data_check", "simulate"]

log = logging.getLogger(__name__)


@click.command("simulate")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--preset", type=click.Choice(["ci", "meg-bench", "eeg-bench"]), default="ci",
              show_default=True, help="Settings preset.")
@click.option("--seed", type=int, default=None, help="Random seed (same seed, same data).")
@click.option("--snr-db", type=float, default=None, help="Signal-to-background ratio in dB.")
@click.option("--subjects", "n_subjects", type=int, default=None, help="Number of subjects.")
@click.option("--minutes", type=float, default=None, help="Minutes of distinct speech.")
@click.option("--sensors", type=str, default=None,
              help="ctf275, ctf151, neuromag306, biosemi32, biosemi64, biosemi128, easycap-M10.")
@click.option("--sfreq", type=float, default=None, help="Sampling rate of the recordings (Hz).")
@click.option("--speech", type=click.Choice(["numpy", "auto", "festival"]), default=None,
              help="Speech engine: numpy synthesiser (default) or festival TTS when installed.")
@click.option("--line-noise", type=float, default=None, help="50 Hz line noise relative to the background.")
@click.option("--overwrite", is_flag=True, help="Replace an existing simulated dataset at OUT.")
def simulate(out: Path, preset: str, seed: int | None, snr_db: float | None, n_subjects: int | None,
             minutes: float | None, sensors: str | None, sfreq: float | None, speech: str | None,
             line_noise: float | None, overwrite: bool) -> None:
    """Simulate a BIDS M/EEG speech-listening dataset into OUT."""
    from ._build import settings_for, simulate_dataset

    s = settings_for(preset, seed=seed, snr_db=snr_db, n_subjects=n_subjects, minutes=minutes,
                     sensors=sensors, sfreq=sfreq, speech=speech, line_noise=line_noise)
    summary = simulate_dataset(out, s, overwrite=overwrite)
    click.echo(
        f"wrote {out}: preset {s.preset}, {s.n_subjects} subjects, {s.sensors} @ {s.sfreq:g} Hz, "
        f"{summary['speech_seconds'] / 60:.1f} min speech in {summary['n_sounds']} sentences "
        f"(test split: {summary['sounds_per_split']['test']} sentences, "
        f"{summary['words_per_split']['test']} words), SNR {s.snr_db:g} dB; "
        f"built in {summary['build_seconds']:.1f} s, {summary['size_bytes'] / 1e6:.1f} MB"
    )


@click.command("data-check")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--subject", default=None, help="Subject to check (default: the first).")
@click.option("--max-runs", type=int, default=2, show_default=True, help="Runs used per check.")
@click.option("--format", "data_format", default=None, help="Layout of ROOT: bids, meg-masc, mous, broderick, "
              "brennan, libribrain (default: detected; docs/datasets.md).")
def data_check(root: Path, out: Path, subject: str | None, max_runs: int, data_format: str | None) -> None:
    """Plot spectra (1/f slope, alpha) and word-onset evoked responses of a dataset into OUT."""
    from ._checks import run_checks

    res = run_checks(root, out, subject=subject, max_runs=max_runs, fmt=data_format)
    click.echo(json.dumps(res, indent=1))


@click.command("calibrate")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_json", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("calibration.json"), show_default=True,
              help="JSON result file (never written into the dataset unless given so).")
@click.option("--subjects", default=None, help="Comma-separated subjects (default: all).")
@click.option("--max-train", type=int, default=4000, show_default=True,
              help="Training windows per subject (random subset; `evaluate --max-ridge-windows`).")
@click.option("--features", type=click.Choice(["mel", "whisper", "wav2vec2"]), default="mel", show_default=True)
@click.option("--feature-cache", type=click.Path(file_okay=False), default=None,
              help="Feature cache (default: $NEUROSPEECH_CACHE or ~/.cache/neurospeech/features).")
@click.option("--threads", type=int, default=1, show_default=True,
              help="BLAS threads (1 is fastest on a busy machine).")
@click.option("--format", "data_format", default=None, help="Layout of ROOT: bids, meg-masc, mous, broderick, "
              "brennan, libribrain (default: detected; docs/datasets.md).")
@click.option("--split-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help='Split file {"train": [wav, ...], "val": [...], "test": [...]} (default: ROOT/splits.json if '
                   "present, else the corpus's default split; as `train --split-file`).")
def calibrate(root: Path, out_json: Path, subjects: str | None, max_train: int, features: str,
              feature_cache: str | None, threads: int, data_format: str | None, split_file: str | None) -> None:
    """The tuned linear baseline on ROOT before any training (the ridge row of `neurospeech evaluate`).

    Backward ridge (brain lagged -0.2..0.8 s -> speech-feature PCs), alpha chosen on the validation split,
    scored by segment identification among the distinct test segments.
    """
    from neurospeech.models.calibrate import run_calibration
    from threadpoolctl import threadpool_limits

    subj = [s.strip() for s in subjects.split(",")] if subjects else None
    with threadpool_limits(threads):
        res = run_calibration(root, subjects=subj, max_train=max_train, features=features,
                              feature_cache=feature_cache, data_format=data_format, split_file=split_file)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(res, indent=1, default=float))
    ch = res["chance"]
    w10 = ch["word_identity_top10"]
    lo, hi = res["top10_ci"]
    click.echo(
        f"tuned ridge -> {features} PCs on {res['dataset']}: segment top-1 {res['top1'] * 100:.1f} %, "
        f"top-10 {res['top10'] * 100:.1f} % [{lo * 100:.1f}, {hi * 100:.1f}] among {res['n_candidates']} test "
        f"segments (chance top-10 {ch['segment_top10'] * 100:.2f} %); word identity top-10 "
        f"{res['word_identity_top10'] * 100:.1f} % (random-score chance {w10['mean'] * 100:.1f} % "
        f"[{w10['lo'] * 100:.1f}, {w10['hi'] * 100:.1f}], frequency-only "
        f"{res['frequency_baseline']['word_identity_top10'] * 100:.1f} %). Saved {out_json}"
    )
