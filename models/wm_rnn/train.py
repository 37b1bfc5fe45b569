"""Training of the working-memory RNN: RMSprop, the paper's convergence rule, plateau restarts, many seeds.

Each seed trains in its own process (``torch.set_num_threads(1)``), writes ``seed_<s>/`` with ``model.pt``
(state_dict), ``checkpoint.pt`` (resumable), ``history.json`` and ``result.json``. All ``torch.load``
calls use ``weights_only=True``.

Notes (measured here, 2 shared CPU cores)
-----------------------------------------
- Paper settings (RMSprop lr 1e-4, batch 1): ~3.4 s per epoch of 512 updates on an idle core.
- With ``W_rec`` a plain orthogonal matrix (gain 1.0) no network left the uniform-output plateau (loss
  ~0.0120 = :func:`~neurospeech.models.wm_rnn.model.uniform_loss`, chance error ~90 deg): batch 32 / lr 1e-3
  for 150 epochs, batch 8 / lr 1e-3 for 60 epochs, batch 1 / lr 1e-4 for 8 epochs; the hidden activity
  shrank (mean 0.04 -> 0.015) as the network suppressed noise. The ReLU halves the signal's energy at every
  step, so the step-0 colour is ~0.5% of its size at the read-out. With gain sqrt(2) (the default) the same
  runs left the plateau within 3-20 epochs; batch 32 / lr 1e-3 converges by the paper's rule in ~50-100
  epochs (~0.3 s each on an idle core).
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from neurospeech.errors import ArtifactError, ConfigError

from .model import WMRNN, circular_weighted_loss, decode_colour, uniform_loss
from .task import TaskConfig, circ_dist, make_inputs, make_trials

__all__ = [
    "TrainConfig",
    "converged",
    "evaluate",
    "export_states",
    "load_model",
    "train_jobs",
    "train_many",
    "train_seed",
]

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Settings of one training run (per seed).

    Attributes
    ----------
    task : TaskConfig
    n_hidden, noise_sd : network size (200) and hidden noise (0.07).
    rec_gain : float
        ``W_rec`` starts as ``rec_gain`` x a random orthogonal matrix. Default sqrt(2) (the ReLU gain):
        with a plain orthogonal matrix (1.0) the ReLU halves the activity's energy every step, the step-0
        colour signal is ~0.5% of its size after 15 steps, and in our runs every network sat on the
        uniform-output plateau (see the module notes); 1.0 is the paper's literal setting, still available.
    lr : float
        RMSprop learning rate (paper: 1e-4).
    batch_size : int
        Trials per update; an epoch is every trial type ``epoch_repeats`` times, shuffled.
    max_epochs : int
        Hard cap (a run that hits it is reported ``converged = False``).
    conv_window, conv_slope_min, conv_loss_max : the paper's stopping rule: the least-squares slope of the
        last ``conv_window`` (15) epoch losses lies in ``[conv_slope_min, 0]`` (-2e-5) and all of them are
        below ``conv_loss_max`` (0.0036).
    plateau_epochs, plateau_rel_tol : after ``plateau_epochs`` epochs, a loss within ``plateau_rel_tol`` of
        the uniform-output loss means the network is stuck on the plateau: it is restarted with a new
        initialisation (at most ``max_restarts`` times) and the event is reported.
    checkpoint_every : epochs between checkpoints.
    """

    task: TaskConfig = field(default_factory=TaskConfig)
    n_hidden: int = 200
    noise_sd: float = 0.07
    rec_gain: float = math.sqrt(2.0)
    lr: float = 1e-4
    batch_size: int = 1
    epoch_repeats: int = 1
    max_epochs: int = 5000
    conv_window: int = 15
    conv_slope_min: float = -2e-5
    conv_loss_max: float = 0.0036
    plateau_epochs: int = 30
    plateau_rel_tol: float = 0.02
    max_restarts: int = 3
    checkpoint_every: int = 25
    eval_repeats: int = 10
    export_repeats: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.task, dict):
            self.task = TaskConfig(**self.task)
        for name in (
            "n_hidden",
            "batch_size",
            "epoch_repeats",
            "max_epochs",
            "conv_window",
            "checkpoint_every",
            "eval_repeats",
            "export_repeats",
        ):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not self.rec_gain > 0:
            raise ConfigError(f"rec_gain must be > 0, got {self.rec_gain}")
        if self.noise_sd < 0:
            raise ConfigError(f"noise_sd must be >= 0, got {self.noise_sd}")
        if self.conv_window < 2:
            raise ConfigError(f"conv_window must be >= 2 to fit a slope, got {self.conv_window}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["task"] = self.task.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training settings {unknown}; allowed: {sorted(known)}")
        d = dict(d)
        if "task" in d:
            task = dict(d["task"])
            tknown = {f.name for f in fields(TaskConfig)}
            bad = sorted(set(task) - tknown)
            if bad:
                raise ConfigError(f"unknown task settings {bad}; allowed: {sorted(tknown)}")
            d["task"] = TaskConfig(**task)
        return cls(**d)


def converged(
    losses: list[float], window: int = 15, slope_min: float = -2e-5, loss_max: float = 0.0036
) -> bool:
    """The paper's stopping rule on the per-epoch losses (see :class:`TrainConfig`)."""
    if len(losses) < window:
        return False
    last = np.asarray(losses[-window:], dtype=float)
    slope = np.polyfit(np.arange(window, dtype=float), last, 1)[0]
    return bool(slope_min <= slope <= 0.0 and np.all(last < loss_max))


def _build(cfg: TrainConfig) -> WMRNN:
    return WMRNN(cfg.task.n_inputs, cfg.n_hidden, cfg.task.n_channels, cfg.noise_sd, cfg.rec_gain)


def load_model(seed_dir: str | Path) -> tuple[WMRNN, TrainConfig]:
    """Load ``model.pt`` and ``config.json`` of a trained seed (``weights_only=True``)."""
    seed_dir = Path(seed_dir)
    cfg_path, model_path = seed_dir / "config.json", seed_dir / "model.pt"
    if not cfg_path.is_file() or not model_path.is_file():
        raise ArtifactError(
            f"{seed_dir} lacks config.json or model.pt; train it first (neurospeech wm-rnn train)"
        )
    cfg = TrainConfig.from_dict(json.loads(cfg_path.read_text()))
    net = _build(cfg)
    try:
        state = torch.load(model_path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except Exception as exc:
        raise ArtifactError(f"cannot load {model_path}: {exc}; re-train or re-export it") from exc
    net.eval()
    return net, cfg


@torch.no_grad()
def evaluate(net: WMRNN, task: TaskConfig, n_repeats: int = 10, seed: int = 12345) -> dict:
    """Test the network on every trial type ``n_repeats`` times (hidden noise on).

    Returns a dict with ``loss``, ``mean_abs_error_deg`` (valid trials: report vs probed colour),
    ``median_abs_error_deg``, ``n_trials``.
    """
    rng = np.random.default_rng(seed)
    trials = make_trials(task, rng, n_repeats)
    x = torch.from_numpy(make_inputs(task, trials))
    gen = torch.Generator().manual_seed(seed)
    probs, _ = net(x, noise=True, generator=gen)
    target = torch.from_numpy(trials.target.astype(np.float32))
    loss = float(circular_weighted_loss(probs, target))
    err = np.degrees(circ_dist(decode_colour(probs), trials.target))
    valid = trials.valid
    return {
        "loss": loss,
        "mean_abs_error_deg": float(err[valid].mean()),
        "median_abs_error_deg": float(np.median(err[valid])),
        "n_trials": len(trials),
    }


@torch.no_grad()
def export_states(
    net: WMRNN, task: TaskConfig, path: str | Path, n_repeats: int = 2, seed: int = 777
) -> Path:
    """Write hidden states of test trials to an ``.npz`` (no pickles).

    Arrays: ``hidden`` (n_trials, n_steps, n_hidden) float32, ``colour1``, ``colour2``, ``cued``, ``probed``,
    ``report`` (decoded colour), ``probs`` (n_trials, 17), and the scalars ``cue_step``, ``pre_cue_step``,
    ``post_cue_step``.
    """
    rng = np.random.default_rng(seed)
    trials = make_trials(task, rng, n_repeats)
    x = torch.from_numpy(make_inputs(task, trials))
    probs, hidden = net(x, noise=True, generator=torch.Generator().manual_seed(seed))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        hidden=hidden.permute(1, 0, 2).numpy().astype(np.float32),
        colour1=trials.colour1,
        colour2=trials.colour2,
        cued=trials.cued,
        probed=trials.probed,
        report=decode_colour(probs),
        probs=probs.numpy(),
        cue_step=np.int64(task.cue_step),
        pre_cue_step=np.int64(task.pre_cue_step),
        post_cue_step=np.int64(task.post_cue_step),
    )
    return path


def _save_checkpoint(
    path: Path,
    net: WMRNN,
    opt: torch.optim.Optimizer,
    losses: list[float],
    attempt: int,
    init_seed: int,
    train_time_s: float,
) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": net.state_dict(),
            "optimizer": opt.state_dict(),
            "losses": torch.tensor(losses, dtype=torch.float64),
            "attempt": attempt,
            "init_seed": init_seed,
            "rng": torch.get_rng_state(),
            "train_time_s": float(train_time_s),
        },
        tmp,
    )
    tmp.replace(path)


def train_seed(
    cfg: TrainConfig,
    seed: int,
    out_dir: str | Path,
    resume: bool = True,
    position: int = 0,
    progress: bool = True,
) -> dict:
    """Train one network to the stopping rule and write its artefacts to ``out_dir/seed_<seed>``.

    Returns the result dict (also written to ``result.json``): ``seed``, ``converged``, ``epochs``,
    ``train_time_s`` (seconds of training, summed over resumed sessions; the final evaluation and export are not
    counted: the checkpoint holds the same figure), ``final_loss``, ``restarts`` (plateau restarts), ``plateau``
    (True if every attempt plateaued), test metrics from :func:`evaluate`.
    """
    torch.set_num_threads(1)
    seed_dir = Path(out_dir) / f"seed_{seed}"
    seed_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = seed_dir / "checkpoint.pt"
    if resume and ckpt_path.is_file() and (seed_dir / "config.json").is_file():
        old = json.loads((seed_dir / "config.json").read_text())
        new = cfg.to_dict()
        free = {"max_epochs", "checkpoint_every", "eval_repeats", "export_repeats"}
        changed = sorted(k for k in new if k not in free and old.get(k) != new[k])
        if changed:
            raise ConfigError(
                f"{seed_dir} holds a checkpoint trained with other settings ({changed}); pass --no-resume to "
                "start over or choose another --out"
            )
    (seed_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    plateau_level = uniform_loss(cfg.task.n_channels, cfg.task.n_colours)
    task = cfg.task
    trials_all = make_trials(task, np.random.default_rng(seed), cfg.epoch_repeats)
    n = len(trials_all)
    t0 = time.perf_counter()

    attempt, losses = 0, []
    init_seed = seed
    prior_s = 0.0  # training time of earlier sessions (resume)
    net = None
    opt = None
    if resume and ckpt_path.is_file():
        try:
            ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ArtifactError(
                f"checkpoint {ckpt_path} is unreadable ({exc}); delete it to start over"
            ) from exc
        attempt, init_seed = int(ck["attempt"]), int(ck["init_seed"])
        torch.manual_seed(init_seed)
        net = _build(cfg)
        net.load_state_dict(ck["model"])
        opt = torch.optim.RMSprop(net.parameters(), lr=cfg.lr)
        opt.load_state_dict(ck["optimizer"])
        losses = [float(v) for v in ck["losses"]]
        torch.set_rng_state(ck["rng"])
        prior_s = float(ck.get("train_time_s", 0.0))
        log.info("seed %d: resumed at epoch %d (attempt %d)", seed, len(losses), attempt)

    restarts: list[dict] = []
    is_conv = converged(losses, cfg.conv_window, cfg.conv_slope_min, cfg.conv_loss_max)
    while True:
        if net is None:
            init_seed = seed + 100_003 * attempt
            torch.manual_seed(init_seed)
            net = _build(cfg)
            opt = torch.optim.RMSprop(net.parameters(), lr=cfg.lr)
            losses = []
        assert opt is not None
        rng = np.random.default_rng(init_seed + len(losses))
        bar = tqdm(
            total=cfg.max_epochs,
            initial=len(losses),
            desc=f"seed {seed}",
            position=position,
            disable=not progress,
            leave=False,
            dynamic_ncols=True,
        )
        plateaued = False
        x_all = torch.from_numpy(make_inputs(task, trials_all))
        tgt_all = torch.from_numpy(trials_all.target.astype(np.float32))
        while not is_conv and len(losses) < cfg.max_epochs:
            net.train()
            order = rng.permutation(n)
            total = 0.0
            for start in range(0, n, cfg.batch_size):
                idx = torch.from_numpy(order[start : start + cfg.batch_size])
                probs, _ = net(x_all[:, idx])
                loss = circular_weighted_loss(probs, tgt_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            ep_loss = total / n
            if not math.isfinite(ep_loss):
                raise ArtifactError(
                    f"seed {seed}: loss became {ep_loss} at epoch {len(losses)}; lower the lr"
                )
            losses.append(ep_loss)
            bar.update(1)
            bar.set_postfix(loss=f"{ep_loss:.5f}")
            is_conv = converged(losses, cfg.conv_window, cfg.conv_slope_min, cfg.conv_loss_max)
            if len(losses) % cfg.checkpoint_every == 0:
                _save_checkpoint(
                    ckpt_path, net, opt, losses, attempt, init_seed, prior_s + time.perf_counter() - t0
                )
            if len(losses) == cfg.plateau_epochs and ep_loss > plateau_level * (1 - cfg.plateau_rel_tol):
                plateaued = True
                break
        bar.close()
        if plateaued:
            restarts.append(
                {
                    "attempt": attempt,
                    "init_seed": init_seed,
                    "epochs": len(losses),
                    "loss": losses[-1],
                    "uniform_loss": plateau_level,
                }
            )
            log.warning(
                "seed %d attempt %d: stuck on the uniform-output plateau (loss %.5f ~ %.5f) after %d epochs",
                seed,
                attempt,
                losses[-1],
                plateau_level,
                len(losses),
            )
            if attempt >= cfg.max_restarts:
                break
            attempt += 1
            net, opt = None, None
            continue
        break

    assert net is not None and opt is not None
    # training time only, the same figure in the checkpoint and the result: the evaluation and export below are
    # not counted (before, the result counted them and the checkpoint did not, so a resumed run could report
    # less cumulative time than the run it resumed; seen under load in tests/test_wm_rnn.py)
    train_s = prior_s + time.perf_counter() - t0
    _save_checkpoint(ckpt_path, net, opt, losses, attempt, init_seed, train_s)
    torch.save(net.state_dict(), seed_dir / "model.pt")
    net.eval()
    metrics = evaluate(net, task, cfg.eval_repeats, seed=10_000 + seed)
    export_states(net, task, seed_dir / "states.npz", cfg.export_repeats, seed=20_000 + seed)
    result = {
        "seed": seed,
        "init_seed": init_seed,
        "converged": bool(is_conv),
        "epochs": len(losses),
        "train_time_s": train_s,
        "final_loss": losses[-1] if losses else float("nan"),
        "uniform_loss": plateau_level,
        "restarts": restarts,
        "plateau": bool(restarts) and len(restarts) > cfg.max_restarts,
        **{f"test_{k}": v for k, v in metrics.items()},
    }
    (seed_dir / "history.json").write_text(json.dumps({"loss": losses}))
    (seed_dir / "result.json").write_text(json.dumps(result, indent=2))
    log.info(
        "seed %d: %s after %d epochs (%.0f s), test mean |error| %.2f deg",
        seed,
        "converged" if is_conv else "NOT converged",
        len(losses),
        result["train_time_s"],
        metrics["mean_abs_error_deg"],
    )
    return result


def _worker(args: tuple) -> dict:
    cfg_dict, seed, out_dir, resume, position, progress = args
    torch.set_num_threads(1)
    return train_seed(TrainConfig.from_dict(cfg_dict), seed, out_dir, resume, position, progress)


def train_jobs(
    jobs: Sequence[tuple[TrainConfig, int, str | Path]],
    n_jobs: int = 2,
    resume: bool = True,
    progress: bool = True,
) -> list[dict]:
    """Train ``(config, seed, out_dir)`` jobs in ``n_jobs`` spawned processes (one torch thread each)."""
    if not jobs:
        raise ConfigError("no seeds given; pass e.g. --seeds 0,1,2,3,4")
    if n_jobs < 1:
        raise ConfigError(f"n_jobs must be >= 1, got {n_jobs}")
    args = [(c.to_dict(), s, str(o), resume, i, progress) for i, (c, s, o) in enumerate(jobs)]
    if n_jobs == 1 or len(args) == 1:
        return [_worker(a) for a in args]
    ctx = mp.get_context("spawn")
    with ctx.Pool(min(n_jobs, len(args))) as pool:
        results = pool.map(_worker, args, chunksize=1)
        pool.close()  # let the workers exit cleanly (no leaked semaphores) before the context terminates them
        pool.join()
    return results


def train_many(
    cfg: TrainConfig,
    seeds: list[int],
    out_dir: str | Path,
    n_jobs: int = 2,
    resume: bool = True,
    progress: bool = True,
) -> list[dict]:
    """Train several seeds of one config in parallel processes.

    Writes ``out_dir/summary.json`` and returns the per-seed results in seed order.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = train_jobs([(cfg, s, out_dir) for s in seeds], n_jobs, resume, progress)
    (out_dir / "summary.json").write_text(json.dumps({"config": cfg.to_dict(), "seeds": results}, indent=2))
    return results
