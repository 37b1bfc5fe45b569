"""Model/bank loading and refusals, settings validation, decoding of planted windows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _service_fixtures import SUBJECT, build_artifacts, offline_windows
from neurospeech.service.config import ServeSettings, load_settings
from neurospeech.service.decoder import Decoder, load_artifacts
from neurospeech.service.jobs import WindowJob
from neurospeech.service.model import EncoderModel, sidecar_path

from neurospeech.contract import ModelContract
from neurospeech.errors import ArtifactError, ConfigError
from neurospeech.scoring import CandidateBank


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    return build_artifacts(tmp_path_factory.mktemp("art"), duration=12.0)


def test_planted_windows_decode_to_their_candidates(art):
    model, bank, subject = load_artifacts(art.model, art.bank, None)
    assert subject == SUBJECT and model.contract.model_id == "test-linear"
    x, valid = offline_windows(art.data, art.sfreq, model.contract, art.anchors)
    dec = Decoder(model, bank, subject, k=3)
    for xi, sid in zip(x, np.array(art.ids)[valid]):
        h, arrays = dec.decide(
            WindowJob("word", xi, [], 0.0, 3.0, 3.1, {"segment_id": sid}), with_latent=True
        )
        assert h["topk"][0]["id"] == sid and [c["rank"] for c in h["topk"]] == [1, 2, 3]
        assert 0 < h["topk"][0]["prob"] <= 1 and h["topk"][0]["score"] >= h["topk"][1]["score"]
        assert arrays["latent"].shape == (8, 343)
    # batched decoding (decode-file) gives the same decisions as one window at a time (the live server)
    jobs = [WindowJob("word", xi, [], 0.0, 3.0, 3.1, None) for xi in x[:5]]
    jobs.insert(2, WindowJob("sliding", None, ["skipped"], 0.0, 3.0, 3.1))
    batched = dec.decide_batch(jobs)
    for job, hb in zip(jobs, batched):
        h1, _ = dec.decide(job)
        assert [c["id"] for c in hb["topk"]] == [c["id"] for c in h1["topk"]]
        assert np.allclose([c["score"] for c in hb["topk"]], [c["score"] for c in h1["topk"]], atol=1e-5)
    # a skipped window is reported, not scored
    h, _ = dec.decide(WindowJob("sliding", None, ["flat:EEG001", "skipped"], 0.0, 3.0, 3.1))
    assert h["topk"] == [] and "skipped" in h["flags"]


def test_refusals_of_missing_corrupted_and_foreign_artifacts(art, tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        EncoderModel(tmp_path / "nope.onnx")
    bad = tmp_path / "corrupt.onnx"
    raw = bytearray(art.model.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = b"\xff" * 64
    bad.write_bytes(bytes(raw[: len(raw) - 100]))
    with pytest.raises(ArtifactError, match=r"could not be loaded|corrupted"):
        EncoderModel(bad)
    # the bank names the model's sha256: a corrupted (or other) model is refused before onnxruntime loads it
    bank = CandidateBank.load(art.bank)
    with pytest.raises(ArtifactError, match="rebuild the bank"):
        EncoderModel(bad, check=bank.check_model)
    with pytest.raises(ArtifactError, match="not 000000000000"):
        EncoderModel(art.model, expected_sha256="0" * 64)
    bank.header["model_sha256"] = "f" * 64
    other = tmp_path / "other_bank.npz"
    bank.save(other)
    with pytest.raises(ArtifactError, match="built for model sha256 ffffffffffff"):
        load_artifacts(art.model, other, None)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="corrupted"):
        load_artifacts(art.model, tmp_path / "junk.npz", None)
    with pytest.raises(ConfigError, match="sim01"):
        load_artifacts(art.model, art.bank, "sub-99")


def test_contract_from_sidecar_when_metadata_is_absent(art, tmp_path):
    import onnx

    m = onnx.load(str(art.model))
    del m.metadata_props[:]
    p = tmp_path / "plain.onnx"
    onnx.save(m, str(p))
    with pytest.raises(ArtifactError, match="carries no contract"):
        EncoderModel(p)
    art.contract.save(sidecar_path(p))
    assert EncoderModel(p).contract.to_json() == ModelContract.load(sidecar_path(p)).to_json()


def test_settings_validation_and_toml(tmp_path):
    with pytest.raises(ConfigError, match="hop"):
        ServeSettings(hop=0)
    with pytest.raises(ConfigError, match="bad_channel_policy"):
        ServeSettings(bad_channel_policy="ignore")
    with pytest.raises(ConfigError, match="loss_timeout"):
        ServeSettings(loss_timeout=5.0)
    with pytest.raises(ConfigError, match="no stream"):
        ServeSettings().validate(need_stream=True)
    cfg = tmp_path / "serve.toml"
    cfg.write_text(
        '[model]\nmodel = "m.onnx"\nbank = "b.npz"\n[stream]\nstream_name = "amp"\n'
        '[decode]\nhop = 0.1\n[publish]\nendpoint = "tcp://127.0.0.1:6000"\n'
    )
    s = load_settings(cfg, topk=3)
    assert s.model == tmp_path / "m.onnx" and s.hop == 0.1 and s.topk == 3
    assert s.publish == {"endpoint": "tcp://127.0.0.1:6000"} and s.marker_stream_name == "amp-markers"
    cfg.write_text("[decode]\nhopp = 0.1\n")
    with pytest.raises(ConfigError, match="unknown key 'hopp'"):
        load_settings(cfg)
    cfg.write_text("[decode\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_example_config_loads():
    from pathlib import Path

    ex = Path(__file__).resolve().parents[1] / "deploy" / "configs" / "serve.example.toml"
    s = load_settings(ex)
    assert s.hop == 0.25 and s.publish["endpoint"].startswith("tcp://127.0.0.1")
    json.dumps(s.publish)
