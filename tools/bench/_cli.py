"""``neurospeech bench``: benchmarks (printed tables + JSON), never timed unit tests."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import click

__all__ = ["bench"]

#: artifacts (two ONNX encoders, 2 x 128 MB banks), a 60 s FIF and logs: kept out of the checkout
DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "neurospeech-bench"


def _report(r: dict, out: Path | None, default: Path, table: str) -> None:
    """Write the results as JSON to ``out`` (else ``default``), then print the table and where the JSON went."""
    path = out or default
    path.write_text(json.dumps(r, indent=1, default=str))
    click.echo(table)
    click.echo(f"results: {path}")


def _io_options(workdir_help: str, name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """``--workdir`` (default :data:`DEFAULT_WORKDIR`) and ``--out`` (default ``<workdir>/<name>.json``)."""
    def deco(f: Callable[..., None]) -> Callable[..., None]:
        f = click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
                         help=f"JSON results [<workdir>/{name}.json].")(f)
        return click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_WORKDIR,
                            show_default=True, help=workdir_help)(f)
    return deco


@click.group("bench")
def bench() -> None:
    """Benchmarks of the live service (latency, CPU, memory, throughput, soak) and the training loader."""


@bench.command("latency")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_WORKDIR,
    show_default=True,
    help="Artifacts (cached), logs and the synthetic FIF go here.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the results as JSON here [<workdir>/latency.json].",
)
@click.option("--presets", default="efficient,paper", show_default=True, help="Encoder presets to compare.")
@click.option(
    "--measure",
    "measure_s",
    type=float,
    default=20.0,
    show_default=True,
    help="Seconds measured per preset and hop.",
)
@click.option("--warmup", "warmup_s", type=float, default=5.0, show_default=True)
@click.option("--latency-hop", type=float, default=0.1, show_default=True)
@click.option("--cpu-hop", type=float, default=0.25, show_default=True)
@click.option(
    "--chunk",
    "chunk_s",
    type=float,
    default=0.01,
    show_default=True,
    help="Seconds per chunk of the synthetic stream.",
)
@click.option("--candidates", "n_candidates", type=int, default=10000, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="onnxruntime threads of the service.")
@click.option("--no-decode-file", "skip_decode_file", is_flag=True, help="Skip the decode-file measurement.")
@click.option("--no-live", "skip_live", is_flag=True, help="Skip the live (replay | serve) measurements.")
@click.option(
    "--decode-file-seconds",
    type=click.FloatRange(min=10.0),
    default=60.0,
    show_default=True,
    help="Length of the synthetic recording decode-file runs over.",
)
@click.option(
    "--decode-file-repeats",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="decode-file runs per configuration, round robin over the configurations (the table shows the median).",
)
@click.option(
    "--bank-rank",
    "bank_rank",
    default="0",
    show_default=True,
    help="Bank variants: 0 = exact bank, N = low-rank bank of rank N, pN = the exact bank with a rank-N prefilter "
    "(200 candidates scored exactly per decision); a comma list (e.g. 0,512,p512) measures each side by side. "
    "The benchmark bank is random, so this measures cost only.",
)
@click.option(
    "--int8/--no-int8",
    "int8",
    default=False,
    show_default=True,
    help="Also measure each configuration with its encoder quantized to int8 (`neurospeech quantize`, "
    "calibrated on the benchmark recording).",
)
@click.option(
    "--early-presets",
    default="efficient",
    show_default=True,
    help="Presets also measured with early decisions (row <preset>+early: the encoder exported with early "
    "decisions, word markers every 0.7 s, four provisional decisions per word); '' for none.",
)
def latency(workdir: Path, out: Path | None, presets: str, bank_rank: str, early_presets: str, **opts) -> None:
    """End-to-end latency (p50/p99 at a 0.1 s hop), service CPU/RSS (0.25 s hop) and decode-file speed.

    A 275-channel 1200 Hz synthetic MEG stream (replay subprocess) feeds `neurospeech serve` (subprocess);
    a subscriber here measures receipt - LSL stamp of the newest sample used. Encoders are the trainer's
    presets, exported untrained (cost does not depend on weights), with a bank of random candidates.

    Example: neurospeech bench latency --workdir /tmp/nsbench
    """
    from ...errors import ConfigError
    from ._artifacts import bank_variant
    from .latency import LatencySettings, format_table, run_latency

    ranks: tuple[int | str, ...]
    try:
        ranks = tuple(dict.fromkeys(bank_variant(x) for x in bank_rank.split(",") if x.strip()))
    except ValueError:
        ranks = ()
    if not ranks:
        raise ConfigError(f"--bank-rank must be 0, positive integers (ranks) or pN (prefilters) separated by "
                          f"commas, got {bank_rank!r}")
    s = LatencySettings(
        workdir=workdir,
        presets=tuple(p.strip() for p in presets.split(",") if p.strip()),
        bank_ranks=ranks,
        early_presets=tuple(p.strip() for p in early_presets.split(",") if p.strip()),
        **opts,
    )
    r = run_latency(s)
    _report(r, out, workdir / "latency.json", format_table(r))


@bench.command("soak")
@click.option("--minutes", type=float, default=5.0, show_default=True)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_WORKDIR,
    show_default=True,
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON results [<workdir>/soak.json].",
)
@click.option("--preset", default="efficient", show_default=True)
@click.option("--hop", type=float, default=0.25, show_default=True)
@click.option("--subscribers", "n_subscribers", type=int, default=3, show_default=True)
@click.option("--candidates", "n_candidates", type=int, default=10000, show_default=True)
@click.option("--nice", type=int, default=0, show_default=True, help="Run the processes at this niceness.")
def soak(minutes: float, workdir: Path, out: Path | None, **opts) -> None:
    """Replay + serve + N subscribers for MINUTES: published vs received, gaps, latency per minute, RSS, CPU.

    Example: neurospeech bench soak --minutes 30 --workdir /tmp/nsbench
    """
    from .soak import SoakSettings, format_soak, run_soak

    r = run_soak(SoakSettings(minutes=minutes, workdir=workdir, **opts))
    _report(r, out, workdir / "soak.json", format_soak(r))


@bench.command("dashboard")
@click.option("--minutes", type=float, default=10.0, show_default=True, help="Measured minutes (after the warm-up).")
@click.option("--rate", type=float, default=10.0, show_default=True, help="Word decisions per second.")
@click.option("--warmup", "warmup_s", type=float, default=150.0, show_default=True,
              help="Seconds before the heap baseline (the page's buffers fill in ~120 s at 10/s).")
@click.option("--chromium", default="/usr/bin/chromium", show_default=True, help="Chromium executable.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_WORKDIR,
              show_default=True)
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON results [<workdir>/dashboard.json].")
def dashboard(workdir: Path, out: Path | None, **opts) -> None:
    """The dashboard in headless Chromium under a steady load: page ready, JS heap growth, server CPU.

    Example: neurospeech bench dashboard --minutes 10 --rate 10
    """
    from .dashboard import DashboardBenchSettings, format_dashboard, run_dashboard_bench

    r = run_dashboard_bench(DashboardBenchSettings(workdir=workdir, **opts))
    _report(r, out, workdir / "dashboard.json", format_dashboard(r))


@bench.command("loader")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Dataset or corpus root [a simulated CTF-275 dataset in <workdir>].")
@click.option("--format", "data_format", default=None, help="Layout of --data (default: detected).")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--batches", type=int, default=10, show_default=True, help="Batches timed (after one warm-up).")
@click.option("--workers", type=int, default=0, show_default=True, help="Loader processes (loader_workers).")
@click.option("--preset", type=click.Choice(["efficient", "paper"]), default="efficient", show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N.")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
@click.option("--sensors", default="ctf275", show_default=True, help="Sensors of the simulated dataset.")
@click.option("--minutes", type=float, default=2.0, show_default=True, help="Minutes of the simulated dataset.")
@_io_options("Simulated data and the caches go here.", "loader")
def loader(workdir: Path, out: Path | None, **opts) -> None:
    """Windows/s of the streamed training loader alone vs the training step (is the loader the bottleneck?).

    Example: neurospeech bench loader --batches 10 --workers 0
    """
    from .loader import LoaderBenchSettings, format_loader, run_loader_bench

    workdir.mkdir(parents=True, exist_ok=True)
    r = run_loader_bench(LoaderBenchSettings(workdir=workdir, **opts))
    _report(r, out, workdir / "loader.json", format_loader(r))


@bench.command("cache")
@click.option("--minutes", type=float, default=10.0, show_default=True, help="Length of the run.")
@click.option("--channels", type=int, default=275, show_default=True, help="MEG channels of the run.")
@click.option("--sfreq", type=float, default=1200.0, show_default=True, help="Its sampling rate in Hz.")
@click.option("--format", "format", type=click.Choice(["fif", "libribrain"]), default="fif", show_default=True,
              help="The run's file: BIDS FIF (mne-bids) or LibriBrain's pnpl .h5.")
@_io_options("The run and the caches go here.", "cache")
def cache(workdir: Path, out: Path | None, **opts) -> None:
    """Peak memory of caching one long run: block by block (today) vs read whole (before), in fresh processes.

    Example: neurospeech bench cache --minutes 10 --channels 275 --sfreq 1200
    (LibriBrain's rate and channels: --format libribrain --channels 306 --sfreq 250 --minutes 30)
    """
    from .cache import CacheBenchSettings, format_cache, run_cache_bench

    workdir.mkdir(parents=True, exist_ok=True)
    r = run_cache_bench(CacheBenchSettings(workdir=workdir, **opts))
    _report(r, out, workdir / "cache.json", format_cache(r))
