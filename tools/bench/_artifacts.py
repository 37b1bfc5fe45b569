"""Benchmark artifacts: an (untrained) exported encoder of a preset for the synthetic 275-channel montage,
with a candidate bank of 10,000 random candidates in its output layout.

The cost of the encoder does not depend on its weights, so an untrained network exported with the trainer's
own exporter (:func:`neurospeech.models.export.export_onnx`) measures exactly what a trained one costs. The
scoring representation is the trainer's default (64 PCA components, ``time_pool`` 7: 64 x 49 per candidate).
Artifacts are cached in ``<workdir>/<preset>-<key>/`` (torch is needed only to build them).

``early=True`` builds the same encoder with early decisions (:mod:`neurospeech.early`): the learned *unseen*
vector in its graph and ``early_decisions`` declared in its contract, so the service makes a provisional
decision at word onset + 0.5, 1.0, 1.5 and 2.0 s for every word marker (cached in ``<preset>-early-<key>/``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ...contract import sha256_file
from ...preprocessing import TRAIN_RESAMPLE_PHASE

__all__ = ["bank_entries", "bank_tag", "bank_variant", "build_artifacts", "compressed_bank", "quantized_artifacts"]

log = logging.getLogger(__name__)


def bank_entries(n: int) -> list[tuple[str, float, str]]:
    """(sound, sound_time, word) of the first ``n`` bank candidates (markers of the soak refer to them)."""
    return [(f"stimuli/bench{k // 20:04d}.wav", round((k % 20) * 0.5, 3), f"word{k}") for k in range(n)]


def build_artifacts(
    workdir: str | Path,
    preset: str,
    n_candidates: int = 10000,
    n_channels: int = 275,
    sfreq: float = 1200.0,
    score_dim: int = 64,
    time_pool: int = 7,
    seed: int = 0,
    early: bool = False,
) -> dict[str, Any]:
    """Export (or reuse) ``model.onnx`` + ``bank.npz`` for ``preset``; returns paths and provenance.

    ``early``: the encoder accepts NaN-masked partial windows and its contract declares ``early_decisions``
    (default delays); the returned dict then has ``early_delays_s``.
    """
    # the last item is the artifact version: bump it when the export changes (3: opset 20, Gelu nodes; 4: the
    # 1x1 ConvTranspose head exported as a Conv)
    # 5: the anti-aliasing filter is the trainer's default (what a newly trained model ships with), in the key
    parts: list[Any] = [preset, n_candidates, n_channels, sfreq, score_dim, time_pool, seed, 5, TRAIN_RESAMPLE_PHASE]
    if early:  # additive: the key (and the cache folder) of a model without early decisions is unchanged
        parts.append("early")
    key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:10]
    d = Path(workdir) / (f"{preset}-early-{key}" if early else f"{preset}-{key}")
    info_path = d / "artifacts.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        if (
            Path(info["model"]).is_file()
            and Path(info["bank"]).is_file()
            and sha256_file(info["model"]) == info["model_sha256"]
        ):
            return info
    d.mkdir(parents=True, exist_ok=True)

    import torch

    from ...contract import ChannelSpec, ModelContract, SpeechSpec
    from ...early import DEFAULT_DELAYS, contract_entry
    from ...models.encoder import BrainEncoder, count_macs, normalise_positions, preset_config
    from ...models.export import export_onnx
    from ...preprocessing import (
        PreprocessingSpec,
        RobustScaler,
        WindowSpec,
        extract_windows,
        preprocess_continuous,
        preprocess_window,
    )
    from ...scoring import CandidateBank, normalise_candidates
    from ._synthetic import synthetic_meg

    window, spec = WindowSpec(), PreprocessingSpec(resample_phase=TRAIN_RESAMPLE_PHASE)
    data, names, pos = synthetic_meg(n_channels, sfreq, 30.0, seed)
    cont, times = preprocess_continuous(data, sfreq, window, spec)
    raw_w, valid = extract_windows(cont, times, np.arange(1.0, 26.0, 0.25), window)
    scaler = RobustScaler.fit(preprocess_window(raw_w[valid], window))
    n_frames = window.n_times // time_pool
    contract = ModelContract(
        model_id=f"bench-{preset}{'-early' if early else ''}-untrained-{key}",
        preset=preset,
        channels=[
            ChannelSpec(n, "mag", "T", (float(p[0]), float(p[1]))) for n, p in zip(names, pos, strict=True)
        ],
        sfreq_raw=sfreq,
        window=window,
        preprocessing=spec,
        scalers={"bench": scaler.to_dict()},
        subjects=["bench"],
        speech=SpeechSpec("mel", score_dim),
        output={"name": "latent", "shape": [score_dim, n_frames]},
        inputs={"brain": "brain", "subject": None},
        training={"note": "untrained weights: benchmark of cost only"},
        early_decisions=contract_entry(DEFAULT_DELAYS) if early else {},
    )
    torch.manual_seed(seed)
    config = preset_config(preset, early_decisions=True) if early else preset_config(preset)
    model = BrainEncoder(config, normalise_positions(pos), 1, score_dim, time_pool).eval()
    macs = count_macs(model, window.n_times)
    exp = export_onnx(model, contract, d / "model.onnx", subject_index=0)
    rng = np.random.default_rng(seed + 7)
    feats = normalise_candidates(rng.standard_normal((n_candidates, score_dim * n_frames), dtype=np.float32))
    ent = bank_entries(n_candidates)
    from ...data import segment_id

    bank = CandidateBank(
        features=feats,
        ids=np.array([segment_id(s, t) for s, t, _ in ent]),
        words=np.array([w for _, _, w in ent]),
        sounds=np.array([s for s, _, _ in ent]),
        sentences=np.array([f"s{k // 8}" for k in range(n_candidates)]),
        sound_times=np.array([t for _, t, _ in ent], dtype=np.float64),
        header={
            "model_sha256": exp["sha256"],
            "output_shape": [score_dim, n_frames],
            "speech": {"kind": "mel", "dim": score_dim},
            "note": "random candidates (benchmark)",
        },
    )
    bank.save(d / "bank.npz")
    info = {
        "preset": preset,
        "model": str(d / "model.onnx"),
        "bank": str(d / "bank.npz"),
        "model_sha256": exp["sha256"],
        "n_candidates": n_candidates,
        "n_channels": n_channels,
        "sfreq": sfreq,
        "output_shape": [score_dim, n_frames],
        "macs": macs,
        "model_mb": (d / "model.onnx").stat().st_size / 1e6,
        "bank_mb": (d / "bank.npz").stat().st_size / 1e6,
        **({"early_delays_s": list(DEFAULT_DELAYS)} if early else {}),
    }
    info_path.write_text(json.dumps(info, indent=1, default=str))
    log.info("built %s artifacts in %s", preset, d)
    return info


def bank_variant(token: int | str) -> int | str:
    """A bank variant as the benchmark names it: ``0`` the exact bank, ``N`` (> 0) a rank-N compressed bank,
    ``"pN"`` (N > 0) the exact bank with a rank-N prefilter. ``ValueError`` for anything else."""
    t = str(token).strip()
    if t[:1] == "p" and t[1:].isdigit() and int(t[1:]) > 0:
        return t
    n = int(t)  # ValueError for text that is neither
    if n < 0:
        raise ValueError(f"bank rank must be 0 or positive, got {n}")
    return n


def bank_tag(rank: int | str) -> str:
    """Short name of a bank variant (:func:`bank_variant`): ``""`` exact, ``"rN"`` compressed, ``"pN"``
    prefiltered (file names and table labels)."""
    v = bank_variant(rank)
    return v if isinstance(v, str) else f"r{v}" if v else ""


def compressed_bank(art: dict[str, Any], rank: int | str) -> dict[str, Any]:
    """Write (or reuse) ``bank-r<rank>.npz`` next to the exact bank of ``art`` (from :func:`build_artifacts`);
    ``rank="p<N>"``: ``bank-p<N>.npz``, the exact bank with a rank-N prefilter (shortlist 200).

    Returns ``bank`` (its path), ``bank_rank``, ``bank_energy_kept``, ``bank_macs_per_decision``, ``bank_mb``
    and ``bank_note``. The benchmark bank is random (full-rank), so the energy kept here says nothing about
    accuracy on speech: the compressed bank measures cost only.
    """
    from ...scoring import CandidateBank

    exact = Path(art["bank"])
    rank = bank_variant(rank)
    pre = isinstance(rank, str)
    out = exact.with_name(f"bank-{bank_tag(rank)}.npz")
    meta = out.with_suffix(".json")
    if out.is_file() and meta.is_file() and json.loads(meta.read_text()).get("exact_sha256") == sha256_file(exact):
        info = json.loads(meta.read_text())
    else:
        log.info("%s the benchmark bank to rank %s", "prefiltering" if pre else "compressing", rank)
        full = CandidateBank.load(exact)
        b = full.with_prefilter(int(rank[1:])) if isinstance(rank, str) else full.compressed(rank)
        b.save(out)
        info = {
            "exact_sha256": sha256_file(exact),
            "bank_rank": rank,
            "bank_energy_kept": b.header["prefilter" if pre else "compression"]["energy"],
            "bank_macs_per_decision": b.macs_per_decision(),
        }
        meta.write_text(json.dumps(info, indent=1))
    return {
        "bank": str(out),
        "bank_rank": info["bank_rank"],
        "bank_energy_kept": info["bank_energy_kept"],
        "bank_macs_per_decision": info["bank_macs_per_decision"],
        "bank_mb": out.stat().st_size / 1e6,
        "bank_note": "random (full-rank) candidates: energy kept is not an accuracy measure; cost only",
    }


def quantized_artifacts(art: dict[str, Any], recording: str | Path) -> dict[str, Any]:
    """int8 copy of ``art``'s model (calibrated on windows of ``recording``) with its bank rebound to it.

    Written (or reused) next to the float model as ``model.int8-<bank stem>.onnx`` / ``<bank stem>.int8.npz``.
    Returns ``art`` updated with ``model``, ``bank``, ``model_sha256``, ``quantized`` (the agreement on held-out
    windows; the weights are untrained, so it measures quantization error on real windows, not accuracy).
    """
    from ..quantize import calibration_windows, quantize_model

    model = Path(art["model"])
    bank = Path(art["bank"])
    out = model.with_name(f"model.int8-{bank.stem}.onnx")
    bank_out = bank.with_name(f"{bank.stem}.int8.npz")
    meta = out.with_suffix(".json")
    if meta.is_file() and out.is_file() and bank_out.is_file():
        info = json.loads(meta.read_text())
        if info.get("source_sha256") == sha256_file(model) and info.get("sha256") == sha256_file(out):
            return {**art, "model": str(out), "bank": str(bank_out), "model_sha256": info["sha256"],
                    "quantized": info["agreement"], "model_mb": out.stat().st_size / 1e6}
    x = calibration_windows(model, recording, n_windows=256)
    info = quantize_model(model, out, x, bank=bank, bank_out=bank_out)
    info["source_sha256"] = sha256_file(model)
    meta.write_text(json.dumps(info, indent=1))
    return {**art, "model": str(out), "bank": str(bank_out), "model_sha256": info["sha256"],
            "quantized": info["agreement"], "model_mb": out.stat().st_size / 1e6}
