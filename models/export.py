"""ONNX export of a trained encoder with its :class:`~neurospeech.contract.ModelContract`.

For a fixed montage the spatial attention, the 1x1 conv and the subject layer are linear and input-independent
in eval mode, so they fold into one ``D x C`` matrix (plus bias) per subject
(:meth:`BrainEncoder.folded_front`):

- ``--subject S``: a single-subject model, input ``brain (batch, C, T)`` only (contract ``inputs.subject`` is
  null, ``subjects == [S]``);
- otherwise: all subjects' matrices stacked ``(S, D, C)``, selected by an int64 input
  ``subject_index (batch,)``
  (contract ``inputs.subject == "subject_index"``; index = position in ``contract.subjects``).

The output ``latent (batch, F', T')`` is exactly what :meth:`neurospeech.scoring.CandidateBank.scores`
consumes.
The contract goes into the ONNX ``metadata_props`` under :data:`neurospeech.contract.METADATA_KEY` (with its
sha256 under ``neurospeech.contract.sha256``) and into a sidecar ``<model>.contract.json``. The export checks
onnxruntime against PyTorch on the exact window shape and records the largest absolute difference.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..contract import (
    CONTRACT_SHA_KEY,
    METADATA_KEY,
    ChannelSpec,
    ModelContract,
    SpeechSpec,
    embed_contract,
    sha256_file,
)
from ..errors import ArtifactError, ConfigError
from ..preprocessing import PreprocessingSpec, WindowSpec
from .encoder import BrainEncoder, mask_front

__all__ = ["FoldedEncoder", "build_contract", "export_onnx", "export_run", "read_contract", "sidecar_path"]

log = logging.getLogger(__name__)

OPSET = 20  # 20: GELU is one Gelu node, which the int8 quantizer leaves in float (17 decomposes it into
#          Div/Erf/Add/Mul/Mul that it quantizes one by one: 1.5x slower int8 encoder, measured)
INPUT_BRAIN = "brain"
INPUT_SUBJECT = "subject_index"
OUTPUT = "latent"


class FoldedEncoder(nn.Module):
    """Inference copy of a :class:`BrainEncoder` with its front end folded into one matrix per subject.

    Parameters
    ----------
    model : BrainEncoder
        Trained encoder (its eval-mode weights are copied).
    subject : int or None
        Fold for this subject index only (no subject input), or keep every subject (``subject_index`` input).
    """

    matrix: Tensor  # buffers (register_buffer), declared for type checkers
    bias: Tensor
    unseen: Tensor | None

    def __init__(self, model: BrainEncoder, subject: int | None = None) -> None:
        super().__init__()
        mat, bias = model.folded_front()
        self.single = subject is not None
        if subject is not None:
            if not 0 <= subject < mat.shape[0]:
                raise ConfigError(f"subject index {subject} out of range 0..{mat.shape[0] - 1}")
            mat, bias = mat[subject], bias[subject]
        self.register_buffer("matrix", mat.detach().clone().float())
        self.register_buffer("bias", bias.detach().clone().float())
        self.trunk = copy.deepcopy(model.trunk).eval()
        self.trunk.head_out = _as_conv(self.trunk.head_out)
        # early decisions: NaN samples -> the learned unseen vector (None: a model without early decisions)
        self.register_buffer("unseen", None if model.unseen is None else model.unseen.detach().clone().float())

    def _front(self, brain: Tensor, subject_index: Tensor | None) -> Tensor:
        if self.single:
            # a 1x1 convolution rather than matmul + add: one fused op in onnxruntime, and one that its int8
            # quantizer turns into an integer convolution (a MatMul with a constant left operand stays float)
            return F.conv1d(brain, self.matrix[:, :, None], self.bias)
        return torch.matmul(self.matrix[subject_index], brain) + self.bias[subject_index][:, :, None]

    def forward(self, brain: Tensor, subject_index: Tensor | None = None) -> Tensor:
        if self.unseen is None:
            return self.trunk(self._front(brain, subject_index))
        return self.trunk(mask_front(brain, lambda b: self._front(b, subject_index), self.unseen))


def _as_conv(layer: nn.Module) -> nn.Module:
    """A 1x1 ``ConvTranspose1d`` (the paper's output head) as the ``Conv1d`` it equals; other layers as they are.

    Same numbers (the export's parity check compares with the torch model), but onnxruntime's int8 quantizer
    turns a ``Conv`` into an integer convolution and leaves a ``ConvTranspose`` in float between a dequantize
    and a quantize (measured: that one layer was ~6 % of the int8 efficient encoder's time).
    """
    if not (
        isinstance(layer, nn.ConvTranspose1d)
        and layer.kernel_size == (1,) and layer.stride == (1,) and layer.padding == (0,)
        and layer.output_padding == (0,) and layer.dilation == (1,) and layer.groups == 1
    ):
        return layer
    conv = nn.Conv1d(layer.in_channels, layer.out_channels, 1, bias=layer.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(layer.weight.transpose(0, 1))  # (in, out, 1) -> (out, in, 1)
        if layer.bias is not None and conv.bias is not None:
            conv.bias.copy_(layer.bias)
    return conv.eval()


def sidecar_path(onnx_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.contract.json``."""
    p = Path(onnx_path)
    return p.with_name(p.stem + ".contract.json")


def build_contract(meta: dict[str, Any], subject: str | None = None, metrics: dict[str, Any] | None = None,
                   model_id: str | None = None) -> ModelContract:
    """Contract of a run (``meta.json`` from :func:`neurospeech.models.train.train`)."""
    subjects = list(meta["subjects"])
    if subject is not None and subject not in subjects:
        raise ConfigError(f"subject {subject!r} is not in the run (known: {subjects}); choose one of these")
    keep = [subject] if subject is not None else subjects
    training = dict(meta["training"])
    training.update({"data": meta["data"], "config": meta["config"], "encoder": meta["encoder"],
                     "history_val_loss": [h["val_loss"] for h in meta.get("history", [])]})
    # subjects fitted after training (neurospeech adapt / the zero-calibration mean subject): the service
    # re-estimates their robust scaler on the live session by default (neurospeech.service.rescale)
    adapted = {str(r["subject"]): {"kind": kind} for kind, r in (
        ("calibration", meta.get("adaptation")), ("zero_calibration", meta.get("zero_calibration"))) if r}
    if any(s in keep for s in adapted):
        training["adapted_subjects"] = {s: v for s, v in adapted.items() if s in keep}
    rep = meta["representation"]
    output = {
        "name": OUTPUT,
        "shape": list(meta["output_shape"]),
        "layout": "(batch, features, frames)",
        "frame_rate": meta["window"]["sfreq"] / rep["time_pool"],
        "score": "sum(latent * candidate) with candidates flattened and divided by their Frobenius norm "
                 "(neurospeech.scoring.CandidateBank.scores)",
        "speech_to_output": rep,
    }
    inputs = {
        "brain": INPUT_BRAIN,
        "brain_shape": ["batch", len(meta["channels"]), WindowSpec.from_dict(meta["window"]).n_times],
        "brain_dtype": "float32",
        "subject": None if subject is not None else INPUT_SUBJECT,
        "subject_dtype": None if subject is not None else "int64",
        "subject_doc": None if subject is not None else "index into `subjects`, shape (batch,)",
    }
    mid = model_id or (f"{meta['config']['preset']}-{meta['config']['loss']}-{meta['speech']['kind']}-"
                       f"{training['model_sha256'][:8]}" + (f"-sub-{subject}" if subject else ""))
    early: dict[str, Any] = {}
    if meta["encoder"].get("early_decisions"):
        from ..early import DEFAULT_DELAYS, contract_entry

        early = contract_entry(meta["config"].get("early_delays") or DEFAULT_DELAYS)
    return ModelContract(
        model_id=mid,
        preset=str(meta["config"]["preset"]),
        channels=[ChannelSpec.from_dict(c) for c in meta["channels"]],
        sfreq_raw=float(meta["sfreq_raw"]),
        window=WindowSpec.from_dict(meta["window"]),
        preprocessing=PreprocessingSpec.from_dict(meta["preprocessing"]),
        scalers={s: meta["scalers"][s] for s in keep},
        subjects=keep,
        speech=SpeechSpec(**meta["speech"]),
        output=output,
        inputs=inputs,
        training=training,
        metrics=dict(metrics or {}),
        early_decisions=early,
    )


def _onnx_bytes(folded: FoldedEncoder, n_channels: int, n_times: int) -> bytes:
    brain = torch.zeros(1, n_channels, n_times)
    args: tuple[Tensor, ...] = (brain,)
    names = [INPUT_BRAIN]
    axes: dict[str, dict[int, str]] = {INPUT_BRAIN: {0: "batch"}, OUTPUT: {0: "batch"}}
    if not folded.single:
        args = (brain, torch.zeros(1, dtype=torch.int64))
        names.append(INPUT_SUBJECT)
        axes[INPUT_SUBJECT] = {0: "batch"}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated but needs no onnxscript
        torch.onnx.export(
            folded, args,
            buf,  # type: ignore[arg-type]  # a file object works; the stubs only name paths
            input_names=names, output_names=[OUTPUT], dynamic_axes=axes,
            opset_version=OPSET, dynamo=False, do_constant_folding=True,
        )
    return buf.getvalue()


def _parity(model: BrainEncoder, onnx_bytes: bytes, subject: int | None, n_times: int, batch: int = 3,
            seed: int = 0) -> float:
    """Largest |onnxruntime - torch| over random windows (torch = the unfolded encoder)."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, model.n_channels, n_times)).astype(np.float32)
    if model.unseen is not None:  # early decisions: the last window's tail unseen (NaN), as the service sends
        x[-1, :, n_times // 3:] = np.nan
    subj = (np.full(batch, subject) if subject is not None
            else rng.integers(0, model.n_subjects, size=batch)).astype(np.int64)
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x), torch.from_numpy(subj)).numpy()
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    feed: dict[str, np.ndarray] = {INPUT_BRAIN: x}
    if subject is None:
        feed[INPUT_SUBJECT] = subj
    out = sess.run([OUTPUT], feed)[0]
    if not (np.isfinite(out).all() and np.isfinite(ref).all()):
        return float("inf")
    return float(np.max(np.abs(out - ref)))


def export_onnx(model: BrainEncoder, contract: ModelContract, path: str | Path, subject_index: int | None =
None,
                tolerance: float = 1e-4) -> dict[str, Any]:
    """Write ``path`` (ONNX with the contract in its metadata) and its sidecar JSON.

    Parameters
    ----------
    model : BrainEncoder
        Trained encoder.
    contract : ModelContract
        Its contract (``subjects`` must be ``[that subject]`` when ``subject_index`` is given).
    path : path
        Output ``.onnx`` file.
    subject_index : int or None
        Fold a single subject (index into the model's subject layer).
    tolerance : float
        Largest allowed |onnxruntime - torch| on the exact window shape; larger raises ``ArtifactError``.

    Returns
    -------
    dict
        ``path``, ``sha256`` (of the ONNX file), ``contract_sha256``, ``parity_max_abs``, ``seconds``.
    """
    import onnx

    t0 = time.perf_counter()
    model = model.eval().cpu()
    n_times = contract.window.n_times
    folded = FoldedEncoder(model, subject_index).eval()
    raw = _onnx_bytes(folded, model.n_channels, n_times)
    err = _parity(model, raw, subject_index, n_times)
    if not err <= tolerance:
        raise ArtifactError(f"ONNX output differs from PyTorch by {err:.3g} > {tolerance}; export aborted")
    contract.training = {**contract.training, "export": {"parity_max_abs": err, "opset": OPSET,
                                                          "folded_front": True, "torch": torch.__version__}}
    proto = onnx.load_from_string(raw)
    embed_contract(proto, contract)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out))
    contract.save(sidecar_path(out))
    info: dict[str, Any] = {"path": str(out), "sha256": sha256_file(out), "contract_sha256": contract.sha256(),
            "parity_max_abs": err, "seconds": time.perf_counter() - t0}
    log.info("exported %s (sha256 %s..., parity %.2e)", out, info["sha256"][:12], err)
    return info


def read_contract(onnx_path: str | Path) -> ModelContract:
    """The contract embedded in an exported model (checked against its stored sha256 and the sidecar)."""
    import onnx

    p = Path(onnx_path)
    if not p.is_file():
        raise ArtifactError(f"model {str(p)!r} does not exist; export one with `neurospeech export`")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others
        raise ArtifactError(f"{p} is not a readable ONNX model ({exc})") from exc
    props = {e.key: e.value for e in proto.metadata_props}
    if METADATA_KEY not in props:
        raise ArtifactError(f"{p} carries no neurospeech contract; export it with `neurospeech export`")
    contract = ModelContract.from_json(props[METADATA_KEY])
    if CONTRACT_SHA_KEY in props and props[CONTRACT_SHA_KEY] != contract.sha256():
        raise ArtifactError(f"the contract embedded in {p} does not match its sha256; the file was altered")
    side = sidecar_path(p)
    if side.is_file() and ModelContract.load(side).sha256() != contract.sha256():
        raise ArtifactError(f"sidecar {side} differs from the contract inside {p}; re-export the model")
    return contract


def export_run(run_dir: str | Path, out: str | Path, subject: str | None = None,
               metrics: dict[str, Any] | str | Path | None = None) -> dict[str, Any]:
    """Export the best weights of a run directory (see :func:`export_onnx`).

    ``metrics``: a dict, or the path of an ``evaluate`` JSON whose overall results for this run are embedded.
    ``subject="mean"`` (when the run has no subject of that name): the zero-calibration model of
    :func:`neurospeech.models.adapt.with_mean_subject` (mean subject matrix, pooled robust scaler).
    """
    from .train import load_run

    model, meta = load_run(run_dir)
    m = _metrics_for(meta, metrics)
    if subject is not None and subject not in meta["subjects"]:
        from .adapt import MEAN_SUBJECT, with_mean_subject

        if subject == MEAN_SUBJECT:  # zero calibration: mean subject layer, pooled scaler
            model, meta = with_mean_subject(model, meta)
            m = {**m, "describes": "the run's trained subjects, not the zero-calibration subject"} if m else m
    contract = build_contract(meta, subject=subject, metrics=m)
    idx = None if subject is None else meta["subjects"].index(subject)
    return export_onnx(model, contract, out, subject_index=idx)


def _metrics_for(meta: dict[str, Any], metrics: dict[str, Any] | str | Path | None) -> dict[str, Any]:
    if metrics is None or isinstance(metrics, dict):
        return dict(metrics or {})
    p = Path(metrics)
    try:
        report = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"cannot read metrics {str(p)!r}: {exc}") from exc
    digest = meta["training"]["model_sha256"]
    for res in report.get("methods", {}).values():
        if res.get("model_sha256") == digest:
            return {"source": str(p), "split": report.get("split"), "overall": res.get("overall"),
                    "per_subject": res.get("per_subject")}
    raise ArtifactError(f"{p} holds no results for this model (sha256 {digest[:12]}...); evaluate this run")
