"""Two CPU processes (gloo): gathered negatives equal the single-process loss; DDP keeps ranks identical."""

from __future__ import annotations

import json
import os
import socket
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import pytest
from _lazy import lazy

pytestmark = pytest.mark.torch  # tests/_lazy.py: collected without torch, run with it
if TYPE_CHECKING:
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from neurospeech.models.encoder import BrainEncoder, normalise_positions, preset_config
    from neurospeech.models.loss import ClipLoss
    from neurospeech.models.train import TrainConfig, fit, init_distributed, model_sha256
else:
    torch = lazy("torch")
    dist = lazy("torch.distributed")
    mp = lazy("torch.multiprocessing")
    BrainEncoder = lazy("neurospeech.models.encoder", "BrainEncoder")
    normalise_positions = lazy("neurospeech.models.encoder", "normalise_positions")
    preset_config = lazy("neurospeech.models.encoder", "preset_config")
    ClipLoss = lazy("neurospeech.models.loss", "ClipLoss")
    TrainConfig = lazy("neurospeech.models.train", "TrainConfig")
    fit = lazy("neurospeech.models.train", "fit")
    init_distributed = lazy("neurospeech.models.train", "init_distributed")
    model_sha256 = lazy("neurospeech.models.train", "model_sha256")

C, T, N_SUBJ, F_OUT, POOL = 10, 343, 2, 8, 7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data(n: int, seed: int) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(n, F_OUT, T // POOL)).astype(np.float32)
    brain = rng.normal(size=(n, C, T)).astype(np.float32)
    brain[:, :F_OUT, : (T // POOL) * POOL] += np.repeat(y, POOL, axis=2)  # decodable
    return SimpleNamespace(brain=brain, speech=y, subject=rng.integers(0, N_SUBJ, n).astype(np.int64),
                           segment_id=np.array([f"s{i}" for i in range(n)]), __len__=None)


class _Set:
    brain: torch.Tensor

    def __init__(self, ns: SimpleNamespace) -> None:
        self.__dict__.update(vars(ns))

    def __len__(self) -> int:
        return len(self.brain)


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
                       "RANK": str(rank), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    r, w, _ = init_distributed("cpu")
    assert (r, w) == (rank, world)
    # 1) gathered-negatives loss on this rank's half of a global batch
    g = torch.Generator().manual_seed(123)
    z = torch.randn(8, 3, 5, generator=g)
    y = torch.randn(8, 3, 5, generator=g)
    half = slice(rank * 4, (rank + 1) * 4)
    zl = z[half].clone().requires_grad_(True)
    loss = ClipLoss(gather=True)(zl, y[half])
    loss.backward()
    assert zl.grad is not None
    local = {"loss": float(loss.detach()), "grad": zl.grad.numpy().tolist()}
    # 2) DDP training: identical parameters on every rank afterwards
    torch.manual_seed(0)
    # fit() takes a resolved learning rate (train() resolves lr=None per loss): the paper's CLIP rate
    cfg = TrainConfig(data="x", out=out_dir, batch_size=16, max_epochs=2, patience=5, batches_per_epoch=3,
                      lr=3e-4, progress=False, device="cpu", resume=False)
    enc = preset_config("efficient", n_virtual=8, hidden=16, head_hidden=16, fourier_harmonics=3)
    pos = normalise_positions(np.random.default_rng(0).random((C, 2)))
    model = BrainEncoder(enc, pos, N_SUBJ, F_OUT, POOL)
    hist = fit(model, _Set(_data(64, 0)), _Set(_data(24, 1)), cfg, run_dir=None if rank else
               __import__("pathlib").Path(out_dir))
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    local.update({"max_param_diff": float(max((g_ - flat).abs().max() for g_ in gathered)),
                  "sha": model_sha256(model), "history": hist})
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(local, f)
    dist.destroy_process_group()


@pytest.mark.timeout(240)
def test_two_cpu_processes(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # gathered negatives: the mean of the per-rank losses is the single-process loss of the global batch
    g = torch.Generator().manual_seed(123)
    z = torch.randn(8, 3, 5, generator=g).requires_grad_(True)
    y = torch.randn(8, 3, 5, generator=g)
    full = ClipLoss()(z, y)
    full.backward()
    assert np.mean([r["loss"] for r in res]) == pytest.approx(full.item(), rel=1e-6)
    # ... and the gradient each rank computes for its half, averaged as DDP does, is the full-batch gradient
    grads = np.concatenate([np.asarray(r["grad"]) for r in res]) / 2
    np.testing.assert_allclose(grads, z.grad.numpy(), rtol=1e-5, atol=1e-7)
    # without gathering the loss would differ (fewer negatives)
    assert ClipLoss()(z[:4], y[:4]).item() != pytest.approx(full.item(), rel=1e-3)
    # DDP: same weights on both ranks, same history, checkpoint written by rank 0
    assert res[0]["max_param_diff"] == 0.0 and res[1]["max_param_diff"] == 0.0
    assert res[0]["sha"] == res[1]["sha"]
    assert [h["val_loss"] for h in res[0]["history"]] == [h["val_loss"] for h in res[1]["history"]]
    assert len(res[0]["history"]) == 2
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert int(ck["epoch"]) == 1
