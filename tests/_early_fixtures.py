"""An early-decision ONNX encoder for the service tests (torch-free, built with onnx.helper).

Like tests/_service_fixtures.py's linear encoder ``Z = W @ X``, but with the early-decision input convention of
an exported model (:mod:`neurospeech.early`): a time step where any channel is NaN is unseen, its NaNs are
replaced by 0 and its output column by a fixed "unseen" vector ``u``. The bank holds the full-window latents of
the planted anchors, so an early decision's scores can be recomputed offline exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import onnx
from _service_fixtures import Artifacts, build_artifacts, offline_windows
from onnx import TensorProto, helper

from neurospeech.contract import METADATA_KEY
from neurospeech.early import contract_entry
from neurospeech.scoring import CandidateBank, normalise_candidates


def write_early_onnx(path: Path, contract, weight: np.ndarray, unseen: np.ndarray) -> None:
    """``latent = where(unseen step, u, W @ where(NaN, 0, brain))`` with a subject input and the contract."""
    f, c = weight.shape
    t = contract.window.n_times
    brain = helper.make_tensor_value_info("brain", TensorProto.FLOAT, ["batch", c, t])
    subject = helper.make_tensor_value_info("subject", TensorProto.INT64, ["batch"])
    latent = helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["batch", f, t])
    inits = [
        helper.make_tensor("W", TensorProto.FLOAT, [f, c], weight.astype(np.float32).ravel().tolist()),
        helper.make_tensor("U", TensorProto.FLOAT, [f, 1], unseen.astype(np.float32).ravel().tolist()),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("ax1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
    ]
    nodes = [
        helper.make_node("ReduceSum", ["brain", "ax1"], ["colsum"], keepdims=1),
        helper.make_node("IsNaN", ["colsum"], ["gone"]),
        helper.make_node("Where", ["gone", "zero", "brain"], ["seen"]),
        helper.make_node("MatMul", ["W", "seen"], ["wx"]),
        helper.make_node("Where", ["gone", "U", "wx"], ["masked"]),
        helper.make_node("Cast", ["subject"], ["subj_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["subj_f", "zero"], ["subj0"]),
        helper.make_node("Unsqueeze", ["subj0", "axes"], ["subj3"]),
        helper.make_node("Add", ["masked", "subj3"], ["latent"]),
    ]
    graph = helper.make_graph(nodes, "early_linear_encoder", [brain, subject], [latent], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {METADATA_KEY: contract.to_json()})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def early_latent(x: np.ndarray, weight: np.ndarray, unseen: np.ndarray) -> np.ndarray:
    """NumPy twin of :func:`write_early_onnx`'s graph: ``(n, C, T) -> (n, F, T)``."""
    gone = np.isnan(x.sum(axis=1, keepdims=True))
    z = np.einsum("fc,nct->nft", weight.astype(np.float32), np.where(gone, 0.0, x).astype(np.float32))
    return np.where(gone, unseen.astype(np.float32)[None, :, None], z)


@dataclasses.dataclass
class EarlyArtifacts:
    art: Artifacts
    weight: np.ndarray
    unseen: np.ndarray


def build_early_artifacts(tmp: Path, duration: float = 30.0, n_features: int = 8, seed: int = 0,
                          **kw) -> EarlyArtifacts:
    """:func:`build_artifacts`, then the model replaced by an early-decision one and the bank rebuilt for it."""
    art = build_artifacts(tmp, duration=duration, n_features=n_features, seed=seed, **kw)
    contract = dataclasses.replace(art.contract, model_id="test-early-linear", early_decisions=contract_entry())
    rng = np.random.default_rng(seed + 7)
    c = len(art.names)
    weight = rng.standard_normal((n_features, c)) / np.sqrt(c)
    unseen = rng.standard_normal(n_features)
    write_early_onnx(art.model, contract, weight, unseen)
    sha = hashlib.sha256(art.model.read_bytes()).hexdigest()
    x, valid = offline_windows(art.data, art.sfreq, contract, art.anchors)
    assert valid.all()  # the anchors were chosen valid by build_artifacts
    z = early_latent(x, weight, unseen)
    old = CandidateBank.load(art.bank)
    n_planted = len(art.anchors)
    feats = np.concatenate([normalise_candidates(z), np.asarray(old.features)[n_planted:]]).astype(np.float32)
    bank = CandidateBank(features=feats, ids=old.ids, words=old.words, sounds=old.sounds, sentences=old.sentences,
                         sound_times=old.sound_times,
                         header={**old.header, "model_sha256": sha})
    bank.save(art.bank)
    return EarlyArtifacts(dataclasses.replace(art, contract=contract), weight, unseen)
