"""Training a brain encoder: contrastive (the paper) or regression (its "Base"), single- or multi-process.

``train(TrainConfig(...))`` runs the whole pipeline and writes a *run directory*:

- ``config.json``: the :class:`TrainConfig` used;
- ``meta.json``: everything export/evaluate/bank need: channels, window, preprocessing, per-subject scalers,
  subjects, speech spec + standardisation, scoring representation, encoder config, data summary, history,
  model hash;
- ``checkpoint.pt``: last epoch (model, optimiser, epoch, early-stopping state, RNG) for ``resume``;
- ``best.pt``: weights with the lowest validation loss (what export uses);
- ``curves.png``: training and validation loss per epoch.

Multi-process: launched under ``torchrun --nproc_per_node=N`` (``WORLD_SIZE`` > 1) the trainer initialises
``torch.distributed`` (gloo on CPU, nccl on CUDA), wraps the model in DistributedDataParallel and splits each
*global* batch of ``batch_size`` windows across processes; with ``gather_negatives`` (default) the CLIP loss
uses the whole global batch as negatives, so the loss does not depend on the number of processes.
Checkpoints are loaded with ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import Field, field_validator, model_validator
from torch import nn
from tqdm import tqdm

from .._settings import PathStr, Settings, read_toml
from ..errors import ArtifactError, ConfigError
from ..preprocessing import TRAIN_RESAMPLE_PHASE
from .encoder import BrainEncoder, EncoderConfig, normalise_positions, preset_config, truncate_batch
from .loss import make_loss

__all__ = [
    "RUN_FORMAT",
    "EarlyPlan",
    "TrainConfig",
    "TrainFile",
    "early_plan",
    "fit",
    "load_run",
    "model_sha256",
    "plot_curves",
    "train",
]

log = logging.getLogger(__name__)

RUN_FORMAT = 1


class TrainConfig(Settings):
    """Settings of ``neurospeech train`` (TOML keys have the same names; see
    deploy/configs/train.example.toml).

    Attributes
    ----------
    data : str
        BIDS dataset root (e.g. written by ``neurospeech simulate``), or a public corpus's root.
    data_format : str or None
        Layout of ``data`` (``bids``, ``meg-masc``, ``mous``, ``broderick``, ``brennan``, ``libribrain``;
        :mod:`neurospeech.data.formats`); None: detected from the folder.
    out : str
        Run directory (created; an existing checkpoint there is resumed when ``resume`` is true).
    subjects, tasks : list of str or None
        Restrict the recordings (None: all).
    preset : str
        Encoder architecture: ``paper`` (Défossez et al. 2022) or ``efficient`` (real-time cost).
    encoder : dict
        Overrides of the preset's :class:`EncoderConfig` fields (e.g. ``{"hidden": 128}``).
    loss : str
        ``clip`` (contrastive, the paper) or ``mse`` (regression, the paper's "Base" model).
    features : str
        Speech representation: ``mel``, ``whisper`` or ``wav2vec2``.
    feature_params : dict
        Extractor settings (e.g. ``{"layers": [1, 1]}`` for whisper, ``{"model_path": ...}`` for wav2vec2).
    feature_cache : str or None
        Directory of the on-disk feature cache (None: ``$NEUROSPEECH_CACHE`` or ``~/.cache/neurospeech/features``;
        never the dataset folder unless given).
    score_dim : int or None
        Scoring representation: PCA components of the standardised features (None or 0: all, as in the paper).
    time_pool : int
        Scoring representation: frames averaged together (1: 120 Hz as in the paper; 7: 343 -> 49 frames).
    lag : float
        Brain-to-speech lag in seconds (paper: 0.15).
    resample_phase : str
        Anti-aliasing filter of the resampler: ``minimum`` (the default since session 13, ~9 ms delay) or
        ``linear`` (83 ms; the default before, and what a contract without the key means); see ``neurospeech
        filters``. Recorded in the contract, so the service runs the filter the model saw. Accuracy was the same
        within the 95 % intervals (README "Decision delay: low-delay resampling").
    step : float
        Spacing of training anchors in seconds (paper: 0.5); test anchors are word onsets.
    split_file : str or None
        A split file ``{"train": [wav, ...], "val": [...], "test": [...]}`` (None: the dataset's own
        ``splits.json`` when present, else the sha256 hash of each wav path).
    split_fractions : list of 3 floats
        Train/validation/test fractions of the hash split (sounds no split file lists).
    batch_size : int
        Global batch (split across processes; must be divisible by their number). Paper: 256.
    lr : float or None
        Adam learning rate. None: per loss -- 3e-4 for ``clip`` (the paper); for ``mse`` the regression
        baseline gets its own rate, chosen from ``mse_lr_grid`` by a short search on the validation split
        (the paper's rate left the regression net far from converged: val top-10 <= 5.6 % at 1e-3).
    mse_lr_grid : list of float
        Learning rates tried for ``mse`` when ``lr`` is None.
    lr_search_epochs : int
        Epochs of each trial of the search (from the same initial weights; the best validation top-10 wins,
        ties broken by the lower validation loss).
    weight_decay : float
        Adam weight decay.
    max_epochs : int
        Upper bound on epochs (paper: 200).
    batches_per_epoch : int or None
        Cap on global batches per epoch (paper: 1200; None: one pass over the training windows).
    patience : int
        Early stopping: epochs without a lower validation loss (paper: 10).
    seed : int
        Seed of weights, batch order and spatial dropout.
    device : str
        ``auto`` (CUDA if available), ``cpu``, ``cuda`` or ``cuda:N``.
    gather_negatives : bool
        Multi-process: use every process's speech segments as negatives (results independent of N).
    max_train_windows : int or None
        Random subset of the training windows (None: all). For quick runs on CPU. Windows overlap (3 s every
        ``step`` = 0.5 s), so half of them still cover nearly all of the training recordings.
    train_sound_fraction : float
        Keep only the training windows of this fraction of the training sounds (a fixed random subset drawn
        with ``seed``; 1: all). Unlike ``max_train_windows`` this removes whole stretches of data, for a
        learning curve versus data size; validation and test splits are unchanged.
    threads : int or None
        torch CPU threads (None: torch default).
    resume : bool
        Continue from ``out/checkpoint.pt`` when present (its config must match).
    progress : bool
        tqdm progress bars.
    data_cache : str
        ``on``: preprocess each run once into the memory-mapped cache (``<feature cache>/recordings``) and
        stream the windows from it, so training memory does not grow with the corpus (models/_stream.py);
        ``off``: every window in memory (fine for small datasets); ``auto`` (default): ``on`` for the public
        corpora (``data_format`` other than ``bids``), ``off`` for the project's own BIDS layout.
    loader_workers : int
        Streaming: processes that prefetch batches (0: batches are cut in the training process).
    max_val_windows : int or None
        Validation windows kept (a fixed random subset). None: all, or 4096 when streaming (the validation
        top-10 compares every window with every segment, memory quadratic in their number).
    early_decisions : bool
        Train for early word decisions (:mod:`neurospeech.early`): the encoder gets a learned "unseen" vector
        and each training window is, with probability ``early_prob``, cut at ``onset + delay`` for a delay drawn
        uniformly from ``early_delays`` (the samples after it set to NaN, which the model masks). The export's
        contract then carries ``early_decisions`` and the service publishes ``word_early`` decisions.
    early_delays : list of float
        Decision delays in seconds after the anchor (each > 0 and < the window's ``tmax``).
    early_prob : float
        Probability that a training window is truncated (0 < p < 1; the rest stay whole).
    """

    _what: ClassVar[str] = "training settings"

    data: PathStr = Field("", description="dataset root (BIDS or a public corpus's folder)")
    data_format: str | None = Field(None, description="layout of data (bids, meg-masc, mous, broderick, "
                                    "brennan, libribrain); default: detected")
    out: PathStr = Field("runs/encoder", description="run directory")
    subjects: Annotated[list[str], Field(strict=False)] | None = Field(
        None, description="subjects to use (default: all)")
    tasks: Annotated[list[str], Field(strict=False)] | None = Field(
        None, description="tasks to use (default: all)")
    preset: str = Field("efficient", description="encoder architecture: paper or efficient")
    encoder: dict[str, Any] = Field(default_factory=dict, description="overrides of the preset's EncoderConfig")
    loss: Literal["clip", "mse"] = Field("clip", description="clip (contrastive) or mse (regression base)")
    features: str = Field("mel", description="speech representation: mel, whisper or wav2vec2")
    feature_params: dict[str, Any] = Field(default_factory=dict, description="feature extractor settings")
    feature_cache: PathStr | None = Field(None, description="feature cache folder")
    score_dim: Annotated[int, Field(ge=0)] | None = Field(
        64, description="PCA components of the scoring representation (0: all features)")
    time_pool: int = Field(7, ge=1, description="frames averaged in the scoring representation")
    lag: float = Field(0.15, ge=-2.0, le=2.0, description="brain-to-speech lag (s)")
    resample_phase: Literal["linear", "minimum"] = Field(TRAIN_RESAMPLE_PHASE, description="anti-aliasing filter phase")
    step: float = Field(0.5, gt=0, le=60, description="spacing of training anchors (s)")
    split_file: PathStr | None = Field(None, description="split file (default: splits.json or a hash)")
    split_fractions: Annotated[list[Annotated[float, Field(strict=True)]],
                               Field(strict=False, min_length=3, max_length=3)] = Field(
        default_factory=lambda: [0.7, 0.1, 0.2], description="train/val/test fractions of the hash split")
    batch_size: int = Field(256, ge=2, description="global batch (>= 2: the CLIP loss needs negatives)")
    lr: Annotated[float, Field(ge=0)] | None = Field(None, description="Adam learning rate (0 or unset: per loss)")
    mse_lr_grid: Annotated[list[Annotated[float, Field(strict=True, gt=0)]], Field(strict=False, min_length=1)] = Field(
        default_factory=lambda: [3e-4, 1e-3, 3e-3, 1e-2], description="learning rates tried for mse")
    lr_search_epochs: int = Field(2, ge=1, description="epochs of each learning-rate trial")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay")
    max_epochs: int = Field(200, ge=1, description="upper bound on epochs")
    batches_per_epoch: Annotated[int, Field(ge=1)] | None = Field(1200, description="cap on batches per epoch")
    patience: int = Field(10, ge=1, description="early stopping: epochs without a lower validation loss")
    seed: int = Field(0, ge=0, description="seed of weights, batch order and spatial dropout")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    gather_negatives: bool = Field(True, description="CLIP negatives from every process")
    max_train_windows: Annotated[int, Field(ge=1)] | None = Field(None, description="random subset of windows")
    train_sound_fraction: float = Field(1.0, gt=0, le=1, description="fraction of the training sounds kept")
    threads: Annotated[int, Field(ge=1)] | None = Field(None, description="torch CPU threads")
    resume: bool = Field(True, description="continue from out/checkpoint.pt")
    progress: bool = Field(True, description="tqdm progress bars")
    data_cache: Literal["auto", "on", "off"] = Field(
        "auto", description="memory-mapped cache of preprocessed runs: on, off or auto (on for public corpora)")
    loader_workers: int = Field(0, ge=0, description="streaming: processes that prefetch batches")
    max_val_windows: Annotated[int, Field(ge=2)] | None = Field(
        None, description="validation windows kept (None: all, or 4096 when streaming)")
    early_decisions: bool = Field(False, description="train for early word decisions (neurospeech.early)")
    early_delays: Annotated[list[Annotated[float, Field(strict=False, gt=0)]],
                            Field(strict=False, min_length=1)] = Field(
        default_factory=lambda: [0.5, 1.0, 1.5, 2.0], description="early decisions: delays after the onset (s)")
    early_prob: float = Field(0.5, gt=0, lt=1, description="early decisions: share of training windows cut")

    @field_validator("score_dim", "lr", mode="after")
    @classmethod
    def _zero_is_unset(cls, v: Any) -> Any:
        return None if v == 0 else v  # TOML has no null: 0 means "every feature" / "per loss"

    @field_validator("features", mode="after")
    @classmethod
    def _known_features(cls, v: str) -> str:
        from ..speech.extractors import EXTRACTORS

        if v not in EXTRACTORS:
            raise ConfigError(f"unknown speech feature kind {v!r} (features); allowed kinds: {sorted(EXTRACTORS)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        from ..data import split_of

        split_of("x", tuple(self.split_fractions))  # type: ignore[arg-type]  # validates: ConfigError
        try:
            preset_config(self.preset, **self.encoder)  # validates preset name and overrides
        except TypeError as exc:  # an override that is not an EncoderConfig field
            import dataclasses

            allowed = sorted(f.name for f in dataclasses.fields(EncoderConfig))
            unknown = sorted(set(self.encoder) - set(allowed))
            raise ConfigError(f"encoder: unknown EncoderConfig key(s) {unknown}; allowed: {allowed}") from exc
        return self

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a TOML file (keys as the attributes; a ``[train]`` table or top level) and apply overrides."""
        p = Path(path)
        doc = read_toml(p, what="training config", example="deploy/configs/train.example.toml")
        if "train" in doc:
            TrainFile.from_dict(doc, source=p)  # no other section, every key known and valid
            d = dict(doc["train"])
        else:
            cls.from_dict(doc, source=p)
            d = dict(doc)
        d.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(d)

    def identity(self) -> dict[str, Any]:
        """Settings that must not change on resume (everything but out/resume/progress/threads/device)."""
        d = self.to_dict()
        if d.get("train_sound_fraction") == 1.0:
            d.pop("train_sound_fraction")  # the default: checkpoints written before the setting existed resume
        for k in ("out", "resume", "progress", "threads", "device", "max_epochs", "patience", "data_format",
                  "data_cache", "loader_workers"):  # same windows streamed or in memory (tested)
            d.pop(k)
        return d


class TrainFile(Settings):
    """A ``train`` config file: one ``[train]`` table of :class:`TrainConfig` keys (its JSON Schema)."""

    _what: ClassVar[str] = "training settings"

    train: TrainConfig = Field(default_factory=TrainConfig)


# ------------------------------------------------------------------------------------------------ helpers
def model_sha256(model: nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers (sorted names, dtype, shape, bytes); stable across runs."""
    h = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
        if name == "cuda":
            name = f"cuda:{local_rank}"
    return torch.device(name)


def _dist_info() -> tuple[int, int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return 0, 1, 0


def init_distributed(device_name: str = "auto") -> tuple[int, int, int]:
    """Initialise torch.distributed from torchrun's environment (no-op for one process).

    Returns ``(rank, world_size, local_rank)``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
        log.info("distributed: rank %d/%d (%s)", dist.get_rank(), world, backend)
    return _dist_info()


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _safe_load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt/unsafe files
        raise ArtifactError(f"cannot load checkpoint {str(path)!r} ({exc}); delete it or retrain") from exc


@torch.no_grad()
def predict(model: nn.Module, brain: np.ndarray, subject: np.ndarray, device: torch.device,
            batch_size: int = 256) -> np.ndarray:
    """Latents ``(n, F', T')`` of windows ``brain (n, C, T)`` for subject indices ``(n,)`` in eval mode."""
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(brain), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(brain[i:i + batch_size])).to(device)
        s = torch.from_numpy(np.ascontiguousarray(subject[i:i + batch_size])).to(device)
        out.append(model(x, s).float().cpu().numpy())
    model.train(was)
    return np.concatenate(out) if out else np.zeros((0,), dtype=np.float32)


def retrieval_topk(z: np.ndarray, y: np.ndarray, seg_ids: np.ndarray, k: int = 10) -> float:
    """Top-k accuracy of retrieving each window's segment among the distinct segments (CLIP scores)."""
    from ..scoring import normalise_candidates

    uniq, first, inv = np.unique(seg_ids, return_index=True, return_inverse=True)
    cands = normalise_candidates(y[first])
    s = z.reshape(len(z), -1) @ cands.T
    true = s[np.arange(len(z)), inv]
    rank = (s > true[:, None]).sum(axis=1)
    return float(np.mean(rank < min(k, len(uniq))))


def _val_loss(model: nn.Module, kind: str, val: Any, batch_size: int, device: torch.device
              ) -> tuple[float, float]:
    """Validation loss (fixed batches in order, no gathering) and top-10 retrieval among val segments."""
    z = predict(model, val.brain, val.subject, device, batch_size)
    losses, weights = [], []
    loss_fn = make_loss(kind, gather=False)
    with torch.no_grad():
        for i in range(0, len(z), batch_size):
            zb = torch.from_numpy(z[i:i + batch_size])
            yb = torch.from_numpy(np.ascontiguousarray(val.speech[i:i + batch_size]))
            if len(zb) < 2:
                continue
            losses.append(float(loss_fn(zb, yb)))
            weights.append(len(zb))
    vl = float(np.average(losses, weights=weights)) if losses else float("nan")
    return vl, retrieval_topk(z, val.speech, val.segment_id, 10)


# ------------------------------------------------------------------------------------------------ fit
def fit(model: BrainEncoder, train_set: Any, val_set: Any | None, cfg: TrainConfig, run_dir: Path | None = None,
        device: torch.device | None = None, lr_by_param: dict[str, float] | None = None,
        cosine: bool = False) -> list[dict[str, float]]:
    """Optimise ``model`` on ``train_set`` with early stopping on ``val_set`` (both :class:`TensorSet`-like).

    ``lr_by_param``: parameter name -> learning rate for those parameters (the others: ``cfg.lr``; a rate of 0
    leaves a parameter out of the optimiser). ``cosine``: every rate decays to 0 along a half cosine over the
    ``cfg.max_epochs`` epochs' steps (``torch.optim.lr_scheduler.CosineAnnealingLR``; not with ``cfg.resume``).

    ``val_set=None``: no validation pass; ``cfg.max_epochs`` epochs run and the last is kept (``val_loss`` in the
    history is then the epoch's training loss, ``val_top10`` NaN).

    Runs in every process of a torch.distributed job (call :func:`init_distributed` first); rank 0 writes
    ``checkpoint.pt`` / ``best.pt`` into ``run_dir`` and resumes from it when ``cfg.resume``.

    Returns
    -------
    history : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``val_top10``, ``seconds``, ``lr`` (the largest
        learning rate of the optimiser's groups at the epoch's end).
    """
    rank, world, local_rank = _dist_info()
    device = device or _resolve_device(cfg.device, local_rank)
    if cfg.batch_size % world:
        raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by the {world} processes")
    local_bs = cfg.batch_size // world
    n = len(train_set)
    n_batches = n // cfg.batch_size
    if n_batches == 0:
        # small data: one global batch of every window (rounded down to a multiple of world)
        local_bs = n // world
        n_batches = 1
        if local_bs < 2:
            raise ConfigError(f"only {n} training windows for {world} processes; need >= 2 per process")
    if cfg.batches_per_epoch is not None:
        n_batches = min(n_batches, cfg.batches_per_epoch)
    global_bs = local_bs * world
    early = early_plan(cfg) if cfg.early_decisions else None
    if early is not None and getattr(model, "unseen", None) is None:
        raise ConfigError("early_decisions needs an encoder built with EncoderConfig(early_decisions=True); "
                          "train() builds it so")

    model.to(device)
    loss_fn = make_loss(cfg.loss, gather=cfg.gather_negatives and world > 1)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.lr is None:
        raise ConfigError("fit needs a learning rate; train() resolves lr=None per loss (see TrainConfig.lr)")
    rates = lr_by_param or {}
    groups: dict[float, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        groups.setdefault(float(rates.get(name, cfg.lr)), []).append(p)
    opt = torch.optim.Adam([{"params": ps, "lr": lr} for lr, ps in groups.items() if lr > 0],
                           lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cosine and cfg.resume:
        raise ConfigError("a cosine learning-rate decay cannot resume a run (its schedule is not checkpointed); "
                          "pass resume=False")
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.max_epochs * n_batches) if cosine else None

    history: list[dict[str, float]] = []
    start_epoch, best, bad = 0, math.inf, 0
    ckpt_path = run_dir / "checkpoint.pt" if run_dir is not None else None
    best_path = run_dir / "best.pt" if run_dir is not None else None
    if cfg.resume and ckpt_path is not None and ckpt_path.is_file():
        ck = _safe_load(ckpt_path)
        if ck.get("identity") != json.dumps(cfg.identity(), sort_keys=True):
            raise ConfigError(
                f"{ckpt_path} was written with other settings; use a new --out directory or --no-resume"
            )
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, best, bad = int(ck["epoch"]) + 1, float(ck["best"]), int(ck["bad_epochs"])
        history = [dict(h) for h in ck["history"]]
        torch.set_rng_state(ck["rng"][rank] if rank < len(ck["rng"]) else ck["rng"][0])
        log.info("resumed from %s at epoch %d (best val loss %.4f)", ckpt_path, start_epoch, best)
    elif cfg.resume is False and ckpt_path is not None and ckpt_path.is_file() and rank == 0:
        log.info("not resuming: starting over in %s", run_dir)
    if start_epoch == 0:
        torch.manual_seed(cfg.seed + 1000 + rank)  # spatial dropout etc.; weights were seeded before

    streamed = hasattr(train_set, "torch_batches")  # windows cut from the memory-mapped cache (_stream.py)
    if not streamed:
        brain_t = torch.from_numpy(np.ascontiguousarray(train_set.brain))
        speech_t = torch.from_numpy(np.ascontiguousarray(train_set.speech))
        subj_t = torch.from_numpy(np.ascontiguousarray(train_set.subject))
    for epoch in range(start_epoch, cfg.max_epochs):
        if bad >= cfg.patience:
            break
        t0 = time.perf_counter()
        perm = np.random.default_rng([cfg.seed, epoch]).permutation(n)
        cut_rng = np.random.default_rng([cfg.seed, epoch, 18])  # early decisions: which windows are cut where
        model.train()
        total, count = 0.0, 0
        idxs = [perm[b * global_bs + rank * local_bs: b * global_bs + (rank + 1) * local_bs]
                for b in range(n_batches)]
        batches = (train_set.torch_batches(idxs, cfg.loader_workers, device.type == "cuda") if streamed else
                   ((brain_t[i], speech_t[i], subj_t[i]) for i in map(torch.from_numpy, idxs)))
        bar = tqdm(batches, total=n_batches, desc=f"epoch {epoch}", unit="batch", leave=False,
                   disable=not cfg.progress or rank != 0)
        for xb, yb, sb in bar:
            x = xb.to(device, non_blocking=True)
            y = yb.to(device, non_blocking=True)
            s = sb.to(device, non_blocking=True)
            if early is not None:
                if x.shape[-1] != early.n_times:
                    raise ConfigError(f"early decisions: training windows have {x.shape[-1]} samples, the "
                                      f"window spec {early.n_times}; the trainer's window and data disagree")
                keep = early.draw(cut_rng, global_bs)[rank * local_bs:(rank + 1) * local_bs]
                x = truncate_batch(x, torch.from_numpy(keep[:len(x)]))
            loss = loss_fn(net(x, s), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += float(loss.detach())
            count += 1
            bar.set_postfix(loss=f"{total / count:.3f}")
        train_loss = total / max(count, 1)
        if world > 1:
            t = torch.tensor([train_loss], device=device)
            dist.all_reduce(t)
            train_loss = float(t) / world
            # BatchNorm running statistics: rank 0's everywhere, so every rank evaluates the same model
            for buf in model.buffers():
                dist.broadcast(buf, src=0)
        if val_set is None:  # no validation windows: a fixed budget of epochs, the last one kept
            val_loss, val_top10 = train_loss, float("nan")
        else:
            val_loss, val_top10 = _val_loss(model, cfg.loss, val_set, global_bs, device)
        rec = {"epoch": float(epoch), "train_loss": train_loss, "val_loss": val_loss,
               "val_top10": val_top10, "seconds": time.perf_counter() - t0,
               "lr": max(float(g["lr"]) for g in opt.param_groups)}
        history.append(rec)
        improved = val_set is None or val_loss < best - 1e-6
        if improved:
            best, bad = val_loss, 0
        else:
            bad += 1
        if rank == 0:
            log.info("epoch %d: train %.4f val %.4f val-top10 %.3f (%.1f s)%s", epoch, train_loss, val_loss,
                     val_top10, rec["seconds"], " *" if improved else "")
            if ckpt_path is not None and best_path is not None:  # both set exactly when run_dir is
                if improved:
                    _atomic_save({"model": model.state_dict(), "epoch": epoch, "val_loss": val_loss},
                                 best_path)
                rng = [torch.get_rng_state()]
                _atomic_save({
                    "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "best": best,
                    "bad_epochs": bad, "history": history, "rng": rng,
                    "identity": json.dumps(cfg.identity(), sort_keys=True),
                }, ckpt_path)
    if world > 1:
        dist.barrier()
    return history


class EarlyPlan:
    """How training windows are cut for early decisions (see ``TrainConfig.early_decisions``).

    Attributes
    ----------
    delays : tuple of float
        Decision delays (s after the anchor).
    keep : tuple of int
        Samples of the model input seen at each delay (:func:`neurospeech.early.n_seen`).
    n_times : int
        Samples of a whole window.
    prob : float
        Probability that a window is cut.
    """

    def __init__(self, delays: tuple[float, ...], keep: tuple[int, ...], n_times: int, prob: float) -> None:
        self.delays, self.keep, self.n_times, self.prob = delays, keep, n_times, prob

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Samples to keep for ``n`` windows, ``(n,)`` int64: ``n_times`` (whole) or one delay's count."""
        cut = rng.random(n) < self.prob
        which = rng.integers(0, len(self.keep), size=n)
        return np.where(cut, np.asarray(self.keep)[which], self.n_times).astype(np.int64)


def early_plan(cfg: TrainConfig, n_times: int | None = None) -> EarlyPlan:
    """The :class:`EarlyPlan` of ``cfg`` (``ConfigError`` if invalid; ``n_times``: the data's window length)."""
    from ..early import check_delays, n_seen
    from ..preprocessing import WindowSpec

    window = WindowSpec(lag=cfg.lag)
    if n_times is not None and window.n_times != n_times:
        raise ConfigError(f"early decisions: training windows have {n_times} samples, the window spec "
                          f"{window.n_times}; the trainer's window and data disagree")
    if not 0 < float(cfg.early_prob) < 1:
        raise ConfigError(f"early_prob must be in (0, 1) (share of training windows cut), got {cfg.early_prob!r}; "
                          "e.g. --set early_prob=0.5")
    if not cfg.early_delays:
        raise ConfigError("early_delays is empty; give the decision delays, e.g. --set early_delays=[0.5,1.0]")
    delays = check_delays(cfg.early_delays, window)
    return EarlyPlan(delays, tuple(n_seen(window, d) for d in delays), window.n_times, float(cfg.early_prob))


def resolve_lr(cfg: TrainConfig, model: BrainEncoder, train_set: Any, val_set: Any, run_dir: Path | None,
               device: torch.device | None = None) -> dict[str, Any]:
    """The learning rate of ``cfg.lr = None``: 3e-4 for CLIP; for MSE the best of ``cfg.mse_lr_grid``.

    Each MSE trial trains a copy of ``model`` (same initial weights) for ``cfg.lr_search_epochs`` epochs and is
    judged on the validation split (top-10 retrieval, ties by validation loss). The choice is stored in
    ``run_dir/lr_search.json`` so a resumed run does not search again.

    Returns
    -------
    dict
        ``lr`` and, for a search, ``trials`` (lr -> val_top10, val_loss).
    """
    import copy

    if cfg.loss != "mse":
        return {"lr": 3e-4, "trials": None, "rule": "paper default for clip"}
    memo = run_dir / "lr_search.json" if run_dir is not None else None
    if cfg.resume and memo is not None and memo.is_file():
        return dict(json.loads(memo.read_text()))
    trials: dict[str, dict[str, float]] = {}
    for lr in cfg.mse_lr_grid:
        trial = copy.deepcopy(model)
        tcfg = cfg.replace(lr=float(lr), max_epochs=cfg.lr_search_epochs, resume=False,
                           patience=cfg.lr_search_epochs + 1, progress=False)
        hist = fit(trial, train_set, val_set, tcfg, None, device)
        last = hist[-1]
        trials[f"{lr:g}"] = {"val_top10": float(last["val_top10"]), "val_loss": float(last["val_loss"])}
        log.info("lr search (mse): lr %g -> val top-10 %.3f, val loss %.4f", lr, last["val_top10"],
                 last["val_loss"])
    best = max(cfg.mse_lr_grid, key=lambda v: (trials[f"{v:g}"]["val_top10"], -trials[f"{v:g}"]["val_loss"]))
    out = {"lr": float(best), "trials": trials,
           "rule": f"best validation top-10 after {cfg.lr_search_epochs} epochs"}
    if memo is not None and _dist_info()[0] == 0:
        memo.write_text(json.dumps(out, indent=1))
    return out


def keep_train_sounds(train_set: Any, info: Any, fraction: float, seed: int = 0) -> tuple[Any, Any]:
    """The training windows of a fixed random ``fraction`` of the training sounds.

    Parameters
    ----------
    train_set : TensorSet or StreamedSet
        Training windows, n rows.
    info : SegmentInfo
        Their metadata; ``info.sound`` (shape (n,)) names each window's sound.
    fraction : float
        Share of the distinct sounds kept, in (0, 1]; at least one sound is kept.
    seed : int
        Seed of the choice (the same seed keeps the same sounds).

    Returns
    -------
    train_set, info
        The rows whose sound was kept (in their order), and their metadata.
    """
    from dataclasses import replace

    if not 0 < fraction <= 1:
        raise ConfigError(f"train_sound_fraction must be in (0, 1], got {fraction!r}; e.g. 0.5 keeps half")
    sounds = np.unique(np.asarray(info.sound))
    n_keep = max(1, round(fraction * len(sounds)))
    kept = np.random.default_rng([seed, 0x50D]).choice(sounds, n_keep, replace=False)
    rows = np.flatnonzero(np.isin(np.asarray(info.sound), kept))
    log.info("train_sound_fraction %g: %d of %d training sounds, %d of %d windows", fraction, n_keep,
             len(sounds), len(rows), len(train_set))
    return train_set.select(rows), replace(info, sound=info.sound[rows], sentence=info.sentence[rows],
                                           sound_time=info.sound_time[rows])


# ------------------------------------------------------------------------------------------------ pipeline
def train(cfg: TrainConfig) -> Path:
    """Full pipeline: data -> targets -> segments -> fit -> run directory (see the module docstring).

    Returns the run directory.
    """
    from ..preprocessing import PreprocessingSpec, WindowSpec
    from . import _data

    t_start = time.perf_counter()
    rank, world, local_rank = init_distributed(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _resolve_device(cfg.device, local_rank)
    if not cfg.data:
        raise ConfigError("no dataset given; pass --data <BIDS root> or set `data` in the config")
    root = Path(cfg.data)
    run_dir = Path(cfg.out)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1, sort_keys=True))
    recordings = _data.find_recordings(root, cfg.subjects, cfg.tasks, cfg.data_format)
    subjects = sorted({r.subject for r in recordings})
    from ..speech.cache import resolve_cache_dir

    cache = resolve_cache_dir(cfg.feature_cache)
    window = WindowSpec(lag=cfg.lag)
    spec = PreprocessingSpec(resample_phase=cfg.resample_phase)
    progress = cfg.progress and rank == 0

    # rank 0 fills the feature cache first; the others then read it
    if rank != 0:
        dist.barrier()
    from ..data import Splits

    splits = Splits.for_dataset(root, cfg.split_file, cfg.split_fractions)
    targets = _data.make_speech_targets(root, recordings, cfg.features, cfg.feature_params, cfg.score_dim,
                                        cfg.time_pool, cache, progress=progress, splits=splits)
    # data_cache: windows streamed from memory-mapped preprocessed runs (any corpus size), or all in memory
    seg_fn, seg_kw = _data.segment_source(cfg.data_cache, root, cfg.data_format, cfg.feature_cache)
    train_set, scalers, info_train = seg_fn(
        recordings, targets, "train", "regular", subjects, window, spec, step=cfg.step,
        max_windows=cfg.max_train_windows, seed=cfg.seed, progress=progress, splits=splits, **seg_kw)
    if cfg.train_sound_fraction < 1:
        train_set, info_train = keep_train_sounds(train_set, info_train, cfg.train_sound_fraction, cfg.seed)
    val_set, _, _ = seg_fn(recordings, targets, "val", "regular", subjects, window, spec,
                           step=cfg.step, scalers=scalers, progress=progress, splits=splits, **seg_kw)
    val_set = _data.cap_windows(val_set, cfg.max_val_windows if cfg.max_val_windows or not seg_kw else 4096,
                                cfg.seed)
    if rank == 0 and world > 1:
        dist.barrier()
    t_data = time.perf_counter() - t_start

    enc_cfg = preset_config(cfg.preset, **cfg.encoder)
    if cfg.early_decisions:
        from dataclasses import replace

        early_plan(cfg, window.n_times)  # a bad setting fails now
        enc_cfg = replace(enc_cfg, early_decisions=True)
    positions = _positions(info_train.channels)
    torch.manual_seed(cfg.seed)
    rep = targets.representation
    model = BrainEncoder(enc_cfg, positions, len(subjects), rep.out_dim, rep.time_pool)
    if rank == 0:
        log.info("%s encoder: %.2f M parameters; %d train / %d val windows, %d subjects, output %s",
                 cfg.preset, sum(p.numel() for p in model.parameters()) / 1e6, len(train_set), len(val_set),
                 len(subjects), (rep.out_dim, rep.out_frames(window.n_times)))
    t_fit = time.perf_counter()
    lr_search = resolve_lr(cfg, model, train_set, val_set, run_dir, device) if cfg.lr is None else None
    fit_cfg = cfg.replace(lr=lr_search["lr"] if lr_search else cfg.lr)
    history = fit(model, train_set, val_set, fit_cfg, run_dir, device)
    fit_s = time.perf_counter() - t_fit

    if rank == 0:
        best_path = run_dir / "best.pt"
        if best_path.is_file():
            model.load_state_dict(_safe_load(best_path)["model"])
        digest = model_sha256(model)
        best_epoch = int(np.nanargmin([h["val_loss"] for h in history])) if history else -1
        meta = {
            "format": RUN_FORMAT,
            "config": cfg.to_dict(),
            "encoder": enc_cfg.to_dict(),
            "channels": [c.to_dict() for c in info_train.channels],
            "sfreq_raw": _data.raw_sfreq(recordings[0]),
            "window": window.to_dict(),
            "preprocessing": spec.to_dict(),
            "scalers": {s: sc.to_dict() for s, sc in sorted(scalers.items())},
            "subjects": subjects,
            "speech": targets.speech_spec(),
            "representation": rep.to_dict(),
            "output_shape": [rep.out_dim, rep.out_frames(window.n_times)],
            "data": {
                "root": str(root.resolve()),
                "n_recordings": len(recordings),
                "recordings": [r.name for r in recordings],
                "n_windows": {"train": len(train_set), "val": len(val_set)},
                "n_train_sounds": len(set(info_train.sound)),
                "train_sounds": sorted(set(info_train.sound.tolist())),
                "split": splits.to_dict(),
                "anchors": {"train": f"regular every {cfg.step} s", "val": f"regular every {cfg.step} s",
                            "test": "word onsets"},
            },
            "training": {
                "loss": cfg.loss,
                "preset": cfg.preset,
                "lr": fit_cfg.lr,
                "lr_search": lr_search,
                "model_sha256": digest,
                "epochs_run": len(history),
                "best_epoch": best_epoch,
                "best_val_loss": float(min((h["val_loss"] for h in history), default=float("nan"))),
                "best_val_top10": float(history[best_epoch]["val_top10"]) if history else float("nan"),
                "data_seconds": t_data,
                "fit_seconds": fit_s,
                "device": str(device),
                "world_size": world,
                "torch": torch.__version__,
                "seed": cfg.seed,
                "n_parameters": int(sum(p.numel() for p in model.parameters())),
            },
            "history": history,
        }
        (run_dir / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        plot_curves({cfg.preset + "/" + cfg.loss: history}, run_dir / "curves.png")
        log.info("run %s: model sha256 %s, best epoch %d, %.1f s (data %.1f s, fit %.1f s)", run_dir, digest,
                 best_epoch, time.perf_counter() - t_start, t_data, fit_s)
    if world > 1:
        dist.barrier()
    return run_dir


def _positions(channels: list[Any]) -> np.ndarray:
    pos = np.array([c.pos if c.pos is not None else (np.nan, np.nan) for c in channels], dtype=np.float64)
    if not np.isfinite(pos).any():
        # no layout at all: spread sensors on a circle so the attention can still tell them apart
        log.warning("none of the %d channels has a sensor position: the spatial attention places them on an "
                    "arbitrary circle (no spatial prior); give the recordings a montage or sensor locations",
                    len(channels))
        ang = np.linspace(0, 2 * np.pi, len(channels), endpoint=False)
        pos = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    elif not np.isfinite(pos).all():
        lost = [c.name for c, p in zip(channels, pos, strict=True) if not np.all(np.isfinite(p))]
        log.warning("%d of %d channels have no sensor position and are left out of the spatial attention: %s",
                    len(lost), len(channels), ", ".join(lost[:8]) + (" ..." if len(lost) > 8 else ""))
    return normalise_positions(pos)


def load_run(run_dir: str | Path, which: str = "best") -> tuple[BrainEncoder, dict[str, Any]]:
    """Rebuild a trained encoder (eval mode, CPU) and its metadata from a run directory.

    Parameters
    ----------
    run_dir : path
        Directory written by :func:`train`.
    which : {'best', 'last'}
        Weights with the lowest validation loss, or the last checkpoint.
    """
    from ..contract import ChannelSpec

    rd = Path(run_dir)
    meta_path = rd / "meta.json"
    if not meta_path.is_file():
        raise ArtifactError(
            f"{rd} is not a finished training run (no meta.json); run `neurospeech train` first")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != RUN_FORMAT:
        raise ArtifactError(f"run format {meta.get('format')!r} unsupported (expected {RUN_FORMAT}); retrain")
    channels = [ChannelSpec.from_dict(c) for c in meta["channels"]]
    enc_cfg = EncoderConfig.from_dict(meta["encoder"])
    rep = meta["representation"]
    out_dim = meta["output_shape"][0]
    model = BrainEncoder(enc_cfg, _positions(channels), len(meta["subjects"]), out_dim, int(rep["time_pool"]))
    path = rd / ("best.pt" if which == "best" else "checkpoint.pt")
    model.load_state_dict(_safe_load(path)["model"])
    model.eval()
    digest = model_sha256(model)
    if which == "best" and digest != meta["training"]["model_sha256"]:
        raise ArtifactError(f"{path} does not match the model hash in {meta_path}; the run is inconsistent")
    return model, meta


def plot_curves(histories: dict[str, list[dict[str, float]]], path: str | Path) -> None:
    """Training and validation loss (and validation top-10) per epoch, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, hist in histories.items():
        if not hist:
            continue
        ep = [h["epoch"] for h in hist]
        axes[0].plot(ep, [h["train_loss"] for h in hist], label=f"{name} train")
        axes[0].plot(ep, [h["val_loss"] for h in hist], "--", label=f"{name} val")
        axes[1].plot(ep, [100 * h["val_top10"] for h in hist], label=name)
    axes[0].set(xlabel="epoch", ylabel="loss", title="loss")
    axes[1].set(xlabel="epoch", ylabel="top-10 (%)", title="validation top-10 (val segments)")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
