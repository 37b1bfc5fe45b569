"""int8 quantization of an exported encoder (real onnxruntime quantization, real FIF) and the pipelined
decode-file path."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from _service_fixtures import build_artifacts
from neurospeech.service.config import ServeSettings
from neurospeech.service.decoder import load_artifacts
from neurospeech.service.filesource import FileMarker, decode_raw
from neurospeech.service.model import EncoderModel

from neurospeech.errors import ArtifactError, ConfigError


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    return build_artifacts(tmp_path_factory.mktemp("art"))  # 40 s: ~75 windows at a 0.5 s hop


@pytest.fixture(scope="module")
def fif(art, tmp_path_factory):
    import mne

    p = tmp_path_factory.mktemp("rec") / "sub-01_task-listen_eeg.fif"
    mne.io.RawArray(art.data, mne.create_info(art.names, art.sfreq, "eeg"), verbose="error").save(p, verbose="error")
    return p


@pytest.fixture(scope="module")
def quantized(art, fif, tmp_path_factory):
    from neurospeech.tools.quantize import calibration_windows, quantize_model

    d = tmp_path_factory.mktemp("q")
    x = calibration_windows(art.model, fif, n_windows=64)
    assert x.shape == (64, len(art.names), art.contract.window.n_times) and x.dtype == np.float32
    info = quantize_model(art.model, d / "model.int8.onnx", x, bank=art.bank, bank_out=d / "bank.int8.npz")
    return d, info


def _markers(art):
    return [FileMarker(float(a), {"segment_id": i, "word": w, "sound": s, "sound_time": t})
            for a, i, w, s, t in zip(art.anchors, art.ids, art.words, art.sounds, art.sound_times, strict=True)]


def test_quantized_model_follows_the_float_one_and_carries_its_contract(art, quantized):
    d, info = quantized
    agree = info["agreement"]
    assert agree["cosine_median"] > 0.99 and agree["top1_agreement"] >= 0.9, agree
    m = EncoderModel(d / "model.int8.onnx")
    assert m.sha256 == info["sha256"] and m.contract.model_id == art.contract.model_id + "+int8"
    q = m.contract.training["quantization"]
    assert q["source_sha256"] == EncoderModel(art.model).sha256 and q["agreement"] == agree
    assert q["calibration_windows"] == 48  # 64 windows, a quarter held out for the agreement
    # integer ops really are in the graph
    import onnx

    ops = {n.op_type for n in onnx.load(str(d / "model.int8.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops


def test_rebound_bank_pairs_with_the_int8_model_only(art, quantized):
    d, _ = quantized
    model, bank, _ = load_artifacts(d / "model.int8.onnx", d / "bank.int8.npz", None, 1)
    assert model.contract.model_id.endswith("+int8")
    assert bank.header["rebound_from_model"] == EncoderModel(art.model).sha256
    with pytest.raises(ArtifactError, match="bank"):
        load_artifacts(d / "model.int8.onnx", art.bank, None, 1)


def test_int8_model_decodes_a_file_like_the_float_one(art, fif, quantized):
    d, _ = quantized
    settings = ServeSettings(model=str(d / "model.int8.onnx"), bank=str(d / "bank.int8.npz"), hop=0.25)
    heads = list(decode_raw(art.data, art.sfreq, art.names, settings, _markers(art)))
    words = [h for h in heads if h["kind"] == "word"]
    assert len(words) >= 20
    top1 = np.mean([h["topk"][0]["id"] == h["truth"]["segment_id"] for h in words])
    assert top1 >= 0.9, top1


def test_quantizing_twice_and_bad_windows_are_refused(art, quantized, tmp_path):
    from neurospeech.tools.quantize import quantize_model

    d, _ = quantized
    x = np.zeros((16, len(art.names), art.contract.window.n_times), np.float32)
    with pytest.raises(ConfigError, match="already quantized"):
        quantize_model(d / "model.int8.onnx", tmp_path / "again.onnx", x)
    with pytest.raises(ConfigError, match="shape"):
        quantize_model(art.model, tmp_path / "bad.onnx", x[:, :3])


def test_decode_file_workers_give_the_same_decisions_in_the_same_order(art):
    settings = ServeSettings(model=str(art.model), bank=str(art.bank), hop=0.25)
    arts = load_artifacts(art.model, art.bank, None, 1)
    kw = {"markers": _markers(art), "artifacts": arts, "batch_size": 3}
    a = list(decode_raw(art.data, art.sfreq, art.names, settings, workers=0, **kw))
    b = list(decode_raw(art.data, art.sfreq, art.names, settings, workers=2, **kw))
    assert len(a) == len(b) > 50
    for x, y in zip(a, b, strict=True):
        assert (x["kind"], x["t_window_end"]) == (y["kind"], y["t_window_end"])
        assert [c["id"] for c in x["topk"]] == [c["id"] for c in y["topk"]]
        assert np.allclose([c["prob"] for c in x["topk"]], [c["prob"] for c in y["topk"]], atol=1e-6)


def test_quantize_cli_prints_the_agreement(art, fif, tmp_path):
    out = tmp_path / "m.int8.onnx"
    proc = subprocess.run([sys.executable, "-m", "neurospeech", "-q", "quantize", str(art.model), str(fif),
                           "--out", str(out), "--windows", "32"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-1500:]
    info = json.loads(proc.stdout)
    assert info["sha256"] == EncoderModel(out).sha256 and info["agreement"]["cosine_median"] > 0.99
