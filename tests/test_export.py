"""ONNX export: parity with PyTorch on the exact window shape, folded front end, embedded contract."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
import pytest
from _lazy import lazy

from neurospeech.contract import METADATA_KEY, ModelContract, sha256_file
from neurospeech.errors import ArtifactError
from neurospeech.preprocessing import PreprocessingSpec, RobustScaler, WindowSpec

pytestmark = pytest.mark.torch  # tests/_lazy.py: collected without torch, run with it
if TYPE_CHECKING:
    import torch
    from neurospeech.models.encoder import BrainEncoder, normalise_positions, preset_config
    from neurospeech.models.export import (
        INPUT_BRAIN,
        INPUT_SUBJECT,
        OUTPUT,
        build_contract,
        export_onnx,
        read_contract,
        sidecar_path,
    )
    from neurospeech.models.represent import ScoringRepresentation
else:
    torch = lazy("torch")
    BrainEncoder = lazy("neurospeech.models.encoder", "BrainEncoder")
    normalise_positions = lazy("neurospeech.models.encoder", "normalise_positions")
    preset_config = lazy("neurospeech.models.encoder", "preset_config")
    INPUT_BRAIN = lazy("neurospeech.models.export", "INPUT_BRAIN")
    INPUT_SUBJECT = lazy("neurospeech.models.export", "INPUT_SUBJECT")
    OUTPUT = lazy("neurospeech.models.export", "OUTPUT")
    build_contract = lazy("neurospeech.models.export", "build_contract")
    export_onnx = lazy("neurospeech.models.export", "export_onnx")
    read_contract = lazy("neurospeech.models.export", "read_contract")
    sidecar_path = lazy("neurospeech.models.export", "sidecar_path")
    ScoringRepresentation = lazy("neurospeech.models.represent", "ScoringRepresentation")

C, T = 9, 343


def synthetic_meta(preset: str, subjects: list[str], out_dim: int, pool: int) -> dict:
    rng = np.random.default_rng(0)
    chans = [{"name": f"MEG{i:03d}", "type": "mag", "unit": "T", "pos": [float(a), float(b)]}
             for i, (a, b) in enumerate(rng.random((C, 2)))]
    rep = ScoringRepresentation(in_dim=out_dim + 2, projection=np.eye(out_dim, out_dim + 2, dtype=np.float32),
                                time_pool=pool)
    return {
        "channels": chans, "sfreq_raw": 1000.0, "window": WindowSpec().to_dict(),
        "preprocessing": PreprocessingSpec().to_dict(),
        "scalers": {s: RobustScaler(center=np.zeros(C), scale=np.ones(C)).to_dict() for s in subjects},
        "subjects": subjects,
        "speech": {"kind": "mel", "dim": out_dim + 2, "params": {"n_mels": out_dim + 2},
                   "mean": [0.0] * (out_dim + 2), "std": [1.0] * (out_dim + 2)},
        "representation": rep.to_dict(), "output_shape": [out_dim, T // pool],
        "config": {"preset": preset, "loss": "clip"}, "encoder": preset_config(preset).to_dict(),
        "data": {"root": "/nowhere"}, "history": [],
        "training": {"model_sha256": "0" * 64},
    }


def _model(preset: str, n_subjects: int, out_dim: int, pool: int) -> BrainEncoder:
    torch.manual_seed(0)
    cfg = preset_config(preset, n_virtual=16, hidden=24, head_hidden=32, fourier_harmonics=4)
    pos = normalise_positions(np.random.default_rng(0).random((C, 2)))
    m = BrainEncoder(cfg, pos, n_subjects, out_dim, pool)
    with torch.no_grad():  # make the subject layers and BatchNorm statistics non-trivial
        m.subject_layer.weight.add_(0.2 * torch.randn_like(m.subject_layer.weight))
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm1d) and mod.running_mean is not None and mod.running_var is not None:
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.mark.parametrize(("preset", "pool"), [("efficient", 7), ("paper", 1)])
def test_onnx_parity_all_subjects(tmp_path, preset, pool):
    subjects = ["01", "02", "03"]
    model = _model(preset, 3, 8, pool)
    contract = build_contract(synthetic_meta(preset, subjects, 8, pool))
    path = tmp_path / "enc.onnx"
    info = export_onnx(model, contract, path)
    assert info["parity_max_abs"] <= 1e-4
    assert info["sha256"] == sha256_file(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [INPUT_BRAIN, INPUT_SUBJECT]
    x = np.random.default_rng(5).normal(size=(4, C, T)).astype(np.float32) * 3
    subj = np.array([2, 0, 1, 2], dtype=np.int64)
    out = sess.run([OUTPUT], {INPUT_BRAIN: x, INPUT_SUBJECT: subj})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x), torch.from_numpy(subj)).numpy()
    assert out.shape == (4, 8, T // pool)
    assert np.max(np.abs(out - ref)) <= 1e-4
    # contract embedded and in the sidecar, self-describing inputs
    meta = sess.get_modelmeta().custom_metadata_map
    c2 = ModelContract.from_json(meta[METADATA_KEY])
    assert c2.inputs["brain"] == INPUT_BRAIN and c2.inputs["subject"] == INPUT_SUBJECT
    assert c2.output["shape"] == [8, T // pool]
    assert c2.subjects == subjects and set(c2.scalers) == set(subjects)
    assert c2.training["export"]["parity_max_abs"] == info["parity_max_abs"]
    assert read_contract(path).sha256() == c2.sha256()
    assert json.loads(sidecar_path(path).read_text())["model_id"] == c2.model_id


def test_onnx_single_subject_fold(tmp_path):
    model = _model("efficient", 3, 8, 7)
    contract = build_contract(synthetic_meta("efficient", ["01", "02", "03"], 8, 7), subject="02")
    path = tmp_path / "s02.onnx"
    info = export_onnx(model, contract, path, subject_index=1)
    assert info["parity_max_abs"] <= 1e-4
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [INPUT_BRAIN]
    x = np.random.default_rng(1).normal(size=(1, C, T)).astype(np.float32)
    out = sess.run([OUTPUT], {INPUT_BRAIN: x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x), torch.tensor([1])).numpy()
    assert np.max(np.abs(out - ref)) <= 1e-4
    c = read_contract(path)
    assert c.inputs["subject"] is None and c.subjects == ["02"] and list(c.scalers) == ["02"]


def test_tampered_contract_is_refused(tmp_path):
    import onnx

    model = _model("efficient", 1, 8, 7)
    path = tmp_path / "m.onnx"
    export_onnx(model, build_contract(synthetic_meta("efficient", ["01"], 8, 7)), path)
    proto = onnx.load(str(path))
    for e in proto.metadata_props:
        if e.key == METADATA_KEY:
            d = json.loads(e.value)
            d["window"]["lag"] = 0.1
            e.value = json.dumps(d)
    onnx.save(proto, str(path))
    with pytest.raises(ArtifactError):
        read_contract(path)


def test_quantized_real_encoder_keeps_gelu_in_float(tmp_path):
    """The exported encoder (opset 20) has one Gelu node per GELU; int8 quantization leaves those in float,
    quantizing the convolutions only (opset 17's Div/Erf/Add/Mul/Mul got quantized one op at a time: slower)."""
    import onnx
    from neurospeech.tools.quantize import quantize_model

    model = _model("efficient", 1, 8, 7)
    contract = build_contract(synthetic_meta("efficient", ["01"], 8, 7), subject="01")
    path = tmp_path / "enc.onnx"
    export_onnx(model, contract, path, subject_index=0)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "Gelu" in ops and "Erf" not in ops, sorted(set(ops))
    # the paper's 1x1 ConvTranspose head goes out as the Conv it equals (the quantizer makes it integer)
    assert "ConvTranspose" not in ops and isinstance(model.trunk.head_out, torch.nn.ConvTranspose1d)
    x = np.random.default_rng(2).normal(size=(24, C, T)).astype(np.float32)
    info = quantize_model(path, tmp_path / "enc.int8.onnx", x)
    qops = [n.op_type for n in onnx.load(str(tmp_path / "enc.int8.onnx")).graph.node]
    assert qops.count("Gelu") == ops.count("Gelu") and "Erf" not in qops
    # every convolution is quantized: each Conv reads dequantized weights (onnxruntime fuses it to QLinearConv)
    qgraph = onnx.load(str(tmp_path / "enc.int8.onnx")).graph
    producers = {o: n.op_type for n in qgraph.node for o in n.output}
    convs = [n for n in qgraph.node if n.op_type == "Conv"]
    assert len(convs) == ops.count("Conv")
    assert all(producers.get(n.input[1]) == "DequantizeLinear" for n in convs)
    assert "QuantizeLinear" in qops and "DequantizeLinear" in qops
    assert info["agreement"]["cosine_median"] > 0.98, info["agreement"]
