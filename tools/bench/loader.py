"""``neurospeech bench loader``: windows/s of the streamed training loader alone vs the training step.

The loader cuts windows from the memory-mapped preprocessed cache (models/_stream.py); the training step is the
encoder's forward + CLIP loss + backward + Adam step on batches already in memory. If the loader delivers more
windows per second than the step consumes, it is not the bottleneck (with ``loader_workers > 0`` it also runs
beside the step instead of before it).
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LoaderBenchSettings", "format_loader", "run_loader_bench"]

log = logging.getLogger(__name__)


@dataclass
class LoaderBenchSettings:
    """Settings of the loader benchmark (see ``neurospeech bench loader --help``)."""

    workdir: Path
    data: Path | None = None
    data_format: str | None = None
    batch_size: int = 256
    batches: int = 10
    workers: int = 0
    preset: str = "efficient"
    device: str = "cpu"
    threads: int | None = None
    sensors: str = "ctf275"
    minutes: float = 2.0


def _vm_hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _dataset(s: LoaderBenchSettings) -> Path:
    if s.data is not None:
        return s.data
    from ..simulate._build import settings_for, simulate_dataset

    root = s.workdir / f"loader-data-{s.sensors}-{s.minutes:g}min"
    if not (root / "simulation.json").is_file():
        log.info("simulating %s (%s, %g min) for the loader benchmark", root, s.sensors, s.minutes)
        simulate_dataset(root, settings_for("ci", sensors=s.sensors, minutes=s.minutes), overwrite=True)
    return root


def run_loader_bench(s: LoaderBenchSettings) -> dict[str, Any]:
    """Measure; returns a JSON-able dict (settings, sizes, windows/s of loader and step, peak memory)."""
    import torch

    from ...data import Splits
    from ...models import _data
    from ...models._stream import stream_segments
    from ...models.encoder import BrainEncoder, preset_config
    from ...models.loss import make_loss
    from ...models.train import _positions
    from ...preprocessing import PreprocessingSpec, WindowSpec

    if s.threads:
        torch.set_num_threads(s.threads)
    root = _dataset(s)
    cache = s.workdir / "cache"
    recs = _data.find_recordings(root, None, None, s.data_format)
    subjects = sorted({r.subject for r in recs})
    splits = Splits.for_dataset(root)
    window, spec = WindowSpec(), PreprocessingSpec()
    t0 = time.perf_counter()
    targets = _data.make_speech_targets(root, recs, "mel", {}, 64, 7, cache / "features", progress=False,
                                        splits=splits)
    train_set, _, info = stream_segments(recs, targets, "train", "regular", subjects, window, spec,
                                         cache / "features" / "recordings", progress=False, splits=splits)
    prep_s = time.perf_counter() - t0
    bs = min(s.batch_size, len(train_set))
    rng = np.random.default_rng(0)
    order = [rng.choice(len(train_set), bs, replace=False) for _ in range(s.batches + 1)]
    # loader alone: first batch warms the memory maps' page cache and the workers, not timed
    it = train_set.torch_batches(order, s.workers, pin=False)
    next(it)
    t = time.perf_counter()
    held: list[tuple[Any, Any, Any]] = []
    n_loaded = 0
    for b in it:
        n_loaded += 1
        if len(held) < 2:  # the step is timed on these (the others are dropped: memory stays one batch)
            held.append(b)
    loader_s = time.perf_counter() - t
    rss_loader = _vm_hwm()  # the peak so far: caching, targets, index, loader (no model yet)
    # training step alone, on batches in memory
    device = torch.device(s.device)
    model = BrainEncoder(preset_config(s.preset), _positions(info.channels), len(subjects),
                         targets.representation.out_dim, targets.representation.time_pool).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    loss_fn = make_loss("clip", gather=False)
    model.train()

    def step(b: tuple[Any, Any, Any]) -> None:
        x, y, sb = (v.to(device) for v in b)
        loss = loss_fn(model(x, sb), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(held[0])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for k in range(n_loaded):
        step(held[k % len(held)])
    if device.type == "cuda":
        torch.cuda.synchronize()
    step_s = time.perf_counter() - t
    n = bs * n_loaded
    c = train_set.cached[0].n_channels
    cache_bytes = sum(ci.n_channels * ci.n_samples * 4 for ci in train_set.cached)
    return {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(s).items()},
        "dataset": str(root), "n_recordings": len(recs), "n_channels": c, "n_train_windows": len(train_set),
        "cache_bytes": cache_bytes, "in_memory_train_windows_bytes": len(train_set) * c * window.n_times * 4,
        "prepare_seconds": prep_s, "batch_size": bs, "batches_timed": n_loaded,
        "loader_windows_per_s": n / loader_s, "step_windows_per_s": n / step_s,
        "loader_over_step": (n / loader_s) / (n / step_s),
        "loader_is_bottleneck": bool(n / loader_s < n / step_s),
        "peak_rss_before_model_bytes": rss_loader, "peak_rss_bytes": _vm_hwm(),
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "device": str(device), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
    }


def format_loader(r: dict[str, Any]) -> str:
    return (f"{r['n_recordings']} runs, {r['n_channels']} channels, {r['n_train_windows']} train windows "
            f"(cache {r['cache_bytes'] / 1e6:.0f} MB; in memory they would take "
            f"{r['in_memory_train_windows_bytes'] / 1e6:.0f} MB)\n"
            f"loader alone ({r['settings']['workers']} workers): {r['loader_windows_per_s']:.0f} windows/s\n"
            f"training step ({r['settings']['preset']}, {r['device']}, {r['torch_threads']} threads): "
            f"{r['step_windows_per_s']:.0f} windows/s\n"
            f"loader / step = {r['loader_over_step']:.1f}x -> the loader "
            f"{'IS' if r['loader_is_bottleneck'] else 'is not'} the bottleneck\n"
            f"peak RSS {r['peak_rss_before_model_bytes'] / 1e6:.0f} MB up to the loader, "
            f"{r['peak_rss_bytes'] / 1e6:.0f} MB with the training step")
