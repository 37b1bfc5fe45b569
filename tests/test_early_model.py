"""Early decisions, model side: the unseen mask, truncated training, ONNX export and the additive contract key."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
import pytest
from _lazy import lazy
from test_export import C, T, _model, synthetic_meta

from neurospeech.contract import ModelContract
from neurospeech.early import DEFAULT_DELAYS, mask_unseen, n_seen, supports_early
from neurospeech.errors import ArtifactError, ConfigError
from neurospeech.preprocessing import WindowSpec

pytestmark = pytest.mark.torch  # tests/_lazy.py: collected without torch, run with it
if TYPE_CHECKING:
    import torch
    from neurospeech.models.encoder import BrainEncoder, normalise_positions, preset_config, truncate_batch
    from neurospeech.models.export import INPUT_BRAIN, OUTPUT, build_contract, export_onnx, read_contract
    from neurospeech.models.train import TrainConfig, early_plan
else:
    torch = lazy("torch")
    BrainEncoder = lazy("neurospeech.models.encoder", "BrainEncoder")
    normalise_positions = lazy("neurospeech.models.encoder", "normalise_positions")
    preset_config = lazy("neurospeech.models.encoder", "preset_config")
    truncate_batch = lazy("neurospeech.models.encoder", "truncate_batch")
    INPUT_BRAIN = lazy("neurospeech.models.export", "INPUT_BRAIN")
    OUTPUT = lazy("neurospeech.models.export", "OUTPUT")
    build_contract = lazy("neurospeech.models.export", "build_contract")
    export_onnx = lazy("neurospeech.models.export", "export_onnx")
    read_contract = lazy("neurospeech.models.export", "read_contract")
    TrainConfig = lazy("neurospeech.models.train", "TrainConfig")
    early_plan = lazy("neurospeech.models.train", "early_plan")


def _early_model(out_dim: int = 8, pool: int = 7) -> BrainEncoder:
    torch.manual_seed(1)
    cfg = preset_config("efficient", n_virtual=16, hidden=24, head_hidden=32, fourier_harmonics=4,
                        early_decisions=True)
    pos = normalise_positions(np.random.default_rng(0).random((C, 2)))
    return BrainEncoder(cfg, pos, 2, out_dim, pool).eval()


def test_n_seen_matches_the_window_geometry():
    w = WindowSpec()  # model input starts at tmin + lag = -0.35 s, 120 Hz, 343 samples
    assert w.n_times == T
    # sample k lies at -0.35 + k / 120 s; at onset + 0.5 s samples 0 .. 102 exist
    assert n_seen(w, 0.5) == 103
    assert n_seen(w, 1.0) == 163
    assert n_seen(w, 2.5) == T and n_seen(w, 9.0) == T
    assert n_seen(w, -1.0) == 0
    x = np.ones((2, 3, T), dtype=np.float32)
    m = mask_unseen(x, w, 1.0)
    assert np.isfinite(m[..., :163]).all() and np.isnan(m[..., 163:]).all()
    assert np.isfinite(x).all()  # a copy
    with pytest.raises(ConfigError, match="343"):
        mask_unseen(np.ones((3, 100)), w, 1.0)


def test_unseen_part_is_masked_not_zero_filled_and_seen_part_decides():
    m = _early_model()
    x = torch.randn(2, C, T)
    k = n_seen(WindowSpec(), 1.0)
    nan_tail = x.clone()
    nan_tail[:, :, k:] = float("nan")
    zero_tail = x.clone()
    zero_tail[:, :, k:] = 0.0
    other_tail = x.clone()
    other_tail[:, :, k:] = float("nan")
    with torch.no_grad():
        z_nan = m(nan_tail, torch.tensor([0, 1]))
        z_zero = m(zero_tail, torch.tensor([0, 1]))
        z_full = m(x, torch.tensor([0, 1]))
        # what was never seen cannot matter: a different (unseen) tail gives the same latent
        x2 = x.clone()
        x2[:, :, k:] = torch.randn(2, C, T - k) * 5
        x2[:, :, k:] = float("nan")
        z_other = m(x2, torch.tensor([0, 1]))
    assert torch.isfinite(z_nan).all()
    assert not torch.allclose(z_nan, z_zero, atol=1e-4)  # the model knows: unseen != zeros
    assert not torch.allclose(z_nan, z_full, atol=1e-4)
    assert torch.equal(z_nan, z_other)
    # the mask token is a trained parameter
    assert any(n == "unseen" for n, _ in m.named_parameters())


def test_model_without_early_decisions_is_unchanged():
    m = _model("efficient", 1, 8, 7)
    assert m.unseen is None
    assert "early_decisions" not in m.config.to_dict()  # older runs' meta.json stay what they were
    assert not any("unseen" in k for k in m.state_dict())


def test_truncated_training_plan():
    cfg = TrainConfig(data="x", early_decisions=True, early_prob=0.5)
    plan = early_plan(cfg, T)
    assert plan.keep == tuple(n_seen(WindowSpec(), d) for d in DEFAULT_DELAYS)
    keep = plan.draw(np.random.default_rng(0), 4000)
    assert 0.45 < np.mean(keep == T) < 0.55
    assert set(np.unique(keep).tolist()) == {*plan.keep, T}
    x = torch.randn(3, C, T)
    xt = truncate_batch(x, torch.tensor([T, 100, 5]))
    assert torch.equal(xt[0], x[0])
    assert torch.isnan(xt[1, :, 100:]).all() and torch.equal(xt[1, :, :100], x[1, :, :100])
    assert torch.isnan(xt[2, :, 5:]).all()
    for bad, match in ((dict(early_prob=1.0), "early_prob"), (dict(early_delays=[3.0]), "3.0"),
                       (dict(early_delays=[]), "early_delays"), (dict(early_delays=["soon"]), "early_delays")):
        with pytest.raises(ConfigError, match=match):  # refused by the settings model or by the plan
            early_plan(TrainConfig(data="x", early_decisions=True, **bad), T)


def test_export_supports_early_and_old_contracts_stay_identical(tmp_path):
    m = _early_model()
    meta = synthetic_meta("efficient", ["01", "02"], 8, 7)
    meta["encoder"] = m.config.to_dict()
    meta["config"]["early_delays"] = [0.5, 1.0, 1.5, 2.0]
    contract = build_contract(meta)
    assert contract.supports_early and supports_early(contract)
    assert contract.early_decisions["delays_s"] == [0.5, 1.0, 1.5, 2.0]
    info = export_onnx(m, contract, tmp_path / "m.onnx")
    assert info["parity_max_abs"] < 1e-4  # parity includes a NaN-masked window
    back = read_contract(tmp_path / "m.onnx")
    assert back.supports_early and back.early_decisions == contract.early_decisions
    # onnxruntime on an early window equals torch on it
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = mask_unseen(np.random.default_rng(3).normal(size=(1, C, T)), WindowSpec(), 0.5)
    out = sess.run([OUTPUT], {INPUT_BRAIN: x, "subject_index": np.array([1])})[0]
    with torch.no_grad():
        ref = m(torch.from_numpy(x), torch.tensor([1])).numpy()
    assert np.isfinite(out).all() and np.max(np.abs(out - ref)) < 1e-4

    # a model without early decisions: no key at all in its contract JSON (same bytes, same sha256 as before)
    old_meta = synthetic_meta("efficient", ["01"], 8, 7)
    old = build_contract(old_meta)
    d = old.to_dict()
    assert "early_decisions" not in d and not old.supports_early
    again = ModelContract.from_dict(d)
    assert again.sha256() == old.sha256() and not supports_early(again)
    # a contract from a newer version with an unknown unseen marker is refused with a clear error
    bad = contract.to_dict()
    bad["early_decisions"] = {**bad["early_decisions"], "unseen": "mask-input"}
    with pytest.raises(ArtifactError, match="unseen"):
        ModelContract.from_dict(bad)


@pytest.mark.slow  # simulate + train + evaluate + export: 30-100 s on the 2-core VM; the parts have fast tests
def test_train_evaluate_export_early_through_the_cli(tmp_path):
    """train --set early_decisions=true -> evaluate (curve, table, plot) -> export (contract says so)."""
    import json

    from test_train_cli import TINY, _run

    data = tmp_path / "data"
    _run(["simulate", str(data), "--preset", "ci"])
    run = tmp_path / "early"
    _run(["-q", "train", "--data", str(data), "--out", str(run), "--epochs", "1", "--batch-size", "32",
          "--set", f"encoder={TINY}", "--set", "progress=false", "--set", "threads=2",
          "--set", "early_decisions=true", "--set", "early_prob=0.5"])
    meta = json.loads((run / "meta.json").read_text())
    assert meta["encoder"]["early_decisions"] is True and meta["config"]["early_delays"] == [0.5, 1.0, 1.5, 2.0]
    report = tmp_path / "eval"
    _run(["-q", "evaluate", str(run), "--out", str(report), "--no-ridge", "--no-random"])
    rep = json.loads((report / "report.json").read_text())
    rows = rep["early"]["methods"]["efficient-clip-mel"]
    assert [r["delay_s"] for r in rows] == [0.5, 1.0, 1.5, 2.0, 2.5]
    assert rep["early"]["modes"]["efficient-clip-mel"].startswith("masked")
    assert rows[-1]["top10"] == rep["methods"]["efficient-clip-mel"]["overall"]["top10"]
    for r in rows:
        assert r["top10_ci"][0] <= r["top10"] <= r["top10_ci"][1]
        assert r["chance_top10"] == pytest.approx(rep["methods"]["efficient-clip-mel"]["overall"]["chance_top10"])
    assert "Accuracy vs decision delay" in (report / "report.md").read_text()
    assert (report / "early.png").is_file()
    # the same evaluation without the curve and the centred scores: same full-window figures, no curve
    plain = tmp_path / "eval-plain"
    _run(["-q", "evaluate", str(run), "--out", str(plain), "--no-ridge", "--no-random", "--no-early-curve",
          "--no-centred"])
    rep2 = json.loads((plain / "report.json").read_text())
    assert not rep2.get("early") and not (plain / "early.png").exists()
    assert "Accuracy vs decision delay" not in (plain / "report.md").read_text()
    assert set(rep2["methods"]) < set(rep["methods"])  # the centred variant is gone, nothing else
    assert rep2["methods"]["efficient-clip-mel"]["overall"] == rep["methods"]["efficient-clip-mel"]["overall"]
    onnx_path = tmp_path / "m.onnx"
    _run(["-q", "export", str(run), "--out", str(onnx_path)])
    c = read_contract(onnx_path)
    assert c.supports_early and c.early_decisions["delays_s"] == [0.5, 1.0, 1.5, 2.0]


def test_evaluate_cuts_test_windows_per_filter():
    """Two runs that differ only in their resampling filter must not share one cut of the test windows."""
    from neurospeech.models.evaluate import _test_set_key

    from neurospeech.data import Splits

    meta = {"speech": {"kind": "mel"}, "representation": {"pca": 64}, "scalers": {"01": {"center": [0.0]}},
            "subjects": ["01"], "window": WindowSpec().to_dict(),
            "preprocessing": {"resample_phase": "linear", "resample_half_len": 10}}
    splits = Splits()
    same = {**meta, "preprocessing": dict(meta["preprocessing"])}
    minimum = {**meta, "preprocessing": {**meta["preprocessing"], "resample_phase": "minimum"}}
    assert _test_set_key(same, splits) == _test_set_key(meta, splits)
    assert _test_set_key(minimum, splits) != _test_set_key(meta, splits)
