"""train / evaluate / export / bank on a simulated `ci` dataset, through the real CLI.

One session-scoped pipeline: `neurospeech simulate --preset ci` -> `train` (tiny encoder, 2 epochs) ->
`evaluate` -> `export` -> `bank`; the tests below check its artifacts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
import pytest
from _lazy import lazy

from neurospeech.cli import main
from neurospeech.contract import METADATA_KEY, ModelContract, sha256_file
from neurospeech.data import split_of
from neurospeech.errors import ArtifactError
from neurospeech.scoring import CandidateBank

pytestmark = pytest.mark.torch  # tests/_lazy.py: collected without torch, run with it
if TYPE_CHECKING:
    import torch
else:
    torch = lazy("torch")

TINY = '{"n_virtual": 16, "hidden": 32, "head_hidden": 32, "fourier_harmonics": 4}'


def _run(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 0, f"neurospeech {' '.join(args)} exited with {exc.value.code}"


@pytest.fixture(scope="session")
def ci_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ci") / "data"
    _run(["simulate", str(root), "--preset", "ci"])
    return root


@pytest.fixture(scope="session")
def pipeline(ci_data, tmp_path_factory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("pipeline")
    run = work / "run"
    _run(["-q", "train", "--data", str(ci_data), "--out", str(run), "--epochs", "2", "--batch-size", "32",
          "--set", f"encoder={TINY}", "--set", "progress=false", "--set", "threads=2"])
    report = work / "eval"
    _run(["-q", "evaluate", str(run), "--out", str(report), "--max-ridge-windows", "60",
          "--ridge-components", "16"])
    onnx_path = work / "model.onnx"
    _run(["-q", "export", str(run), "--out", str(onnx_path), "--metrics", str(report / "report.json")])
    bank_path = work / "bank.npz"
    _run(["-q", "bank", "--model", str(onnx_path), "--data", str(ci_data), "--out", str(bank_path)])
    return {"data": ci_data, "run": run, "report": report, "onnx": onnx_path, "bank": bank_path, "work": work}


def test_train_writes_a_complete_run(pipeline):
    run = pipeline["run"]
    meta = json.loads((run / "meta.json").read_text())
    assert meta["training"]["epochs_run"] == 2 and len(meta["history"]) == 2
    assert meta["subjects"] == ["01", "02"] and set(meta["scalers"]) == {"01", "02"}
    assert meta["output_shape"] == [64, 49]
    assert meta["data"]["split"]["fractions"] == [0.7, 0.1, 0.2] and meta["data"]["split"]["source"] == "hash"
    assert len(meta["speech"]["mean"]) == meta["speech"]["dim"] == 120
    for name in ("checkpoint.pt", "best.pt", "curves.png"):
        assert (run / name).is_file()
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert int(ck["epoch"]) == 1
    from neurospeech.models.train import load_run, model_sha256

    model, _ = load_run(run)
    assert model_sha256(model) == meta["training"]["model_sha256"]


def test_split_settings_are_validated():
    from neurospeech.models.train import TrainConfig

    from neurospeech.errors import ConfigError

    assert TrainConfig(split_fractions=[0.6, 0.2, 0.2]).split_fractions == [0.6, 0.2, 0.2]
    with pytest.raises(ConfigError, match="fractions"):
        TrainConfig(split_fractions=[0.6, 0.6, 0.2])


def test_regression_baseline_gets_its_own_learning_rate(pipeline, tmp_path):
    """--loss mse without --set lr: a short search on the validation split picks the rate (recorded)."""
    run = tmp_path / "mse"
    _run(["-q", "train", "--data", str(pipeline["data"]), "--out", str(run), "--epochs", "1", "--batch-size", "32",
          "--loss", "mse", "--set", f"encoder={TINY}", "--set", "progress=false", "--set", "threads=2",
          "--set", "mse_lr_grid=[0.0003, 0.003]", "--set", "lr_search_epochs=1"])
    meta = json.loads((run / "meta.json").read_text())
    search = meta["training"]["lr_search"]
    assert set(search["trials"]) == {"0.0003", "0.003"}
    assert meta["training"]["lr"] == search["lr"] in (0.0003, 0.003)
    best = search["trials"][f"{search['lr']:g}"]
    assert all(best["val_top10"] >= t["val_top10"] for t in search["trials"].values())
    assert json.loads((run / "lr_search.json").read_text()) == search
    clip = json.loads((pipeline["run"] / "meta.json").read_text())["training"]
    assert clip["lr"] == 3e-4 and clip["lr_search"]["trials"] is None


def test_split_disjointness(pipeline):
    meta = json.loads((pipeline["run"] / "meta.json").read_text())
    report = json.loads((pipeline["report"] / "report.json").read_text())
    train_sounds, test_sounds = set(meta["data"]["train_sounds"]), set(report["test_sounds"])
    assert train_sounds and test_sounds
    assert not train_sounds & test_sounds
    assert all(split_of(s) == "train" for s in train_sounds)
    assert all(split_of(s) == "test" for s in test_sounds)
    bank = CandidateBank.load(pipeline["bank"])
    assert not set(bank.sounds.tolist()) & train_sounds


def test_resume_continues_from_checkpoint(pipeline, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(pipeline["run"], run)
    _run(["-q", "train", "--data", str(pipeline["data"]), "--out", str(run), "--epochs", "3",
          "--batch-size", "32",
          "--set", f"encoder={TINY}", "--set", "progress=false", "--set", "threads=2"])
    meta = json.loads((run / "meta.json").read_text())
    old = json.loads((pipeline["run"] / "meta.json").read_text())
    assert len(meta["history"]) == 3
    assert meta["history"][:2] == old["history"][:2]  # the first two epochs were not redone


def test_evaluate_report(pipeline):
    rep = json.loads((pipeline["report"] / "report.json").read_text())
    assert set(rep["methods"]) == {"efficient-clip-mel", "efficient-clip-mel+centred", "random", "frequency",
                                   "ridge-mel"}
    for res in rep["methods"].values():
        o = res["overall"]
        assert o["n_candidates"] == rep["methods"]["random"]["overall"]["n_candidates"] > 10
        assert o["chance_top10"] == pytest.approx(10 / o["n_candidates"])
        assert 0 <= o["top1"] <= o["top5"] <= o["top10"] <= 1
        for key in ("top1", "top10", "word_identity_top1", "word_identity_top10"):
            lo, hi = o[f"{key}_ci"]
            assert lo <= o[key] <= hi
        assert set(res["per_subject"]) == {"01", "02"}
        assert 1 / o["n_queries"] <= o["hubness_max_top1_share"] <= 1
    md = (pipeline["report"] / "report.md").read_text()
    assert md.startswith("# Evaluation") and "word identity" in md and "[" in md
    assert (pipeline["report"] / "topk.png").is_file() and (pipeline["report"] / "curves.png").is_file()
    # the simulated ci data are strongly decodable: the linear baseline must be far above chance
    ridge = rep["methods"]["ridge-mel"]
    assert ridge["overall"]["top10"] > 2 * ridge["overall"]["chance_top10"]
    assert ridge["response_window_s"] == [-0.2, 0.8] and set(ridge["fits"]) == {"01", "02"}
    # word identity chance is measured, and the random method falls in its region
    ch = rep["chance"]["word_identity_top10"]
    assert ch["lo"] <= ch["mean"] <= ch["hi"] and ch["mean"] > rep["chance"]["word_identity_top10_naive"]
    ratio = rep["ratios"]["efficient-clip-mel / ridge-mel"]
    assert ratio["ci"][0] <= ratio["ratio"] <= ratio["ci"][1]


def test_calibrate_gives_the_ridge_number_of_evaluate(pipeline, tmp_path):
    """`neurospeech calibrate` and evaluate's ridge row are one code path: same windows, same number."""
    from neurospeech.models.calibrate import run_calibration

    rep = json.loads((pipeline["report"] / "report.json").read_text())["methods"]["ridge-mel"]
    cal = run_calibration(pipeline["data"], max_train=60, n_boot=50, chance_draws=5,
                          decoder={"n_components": 16})
    assert cal["n_candidates"] == rep["overall"]["n_candidates"] and cal["n_queries"] == rep["overall"]["n_queries"]
    for key in ("top1", "top5", "top10", "word_identity_top10"):
        assert cal[key] == pytest.approx(rep["overall"][key]), key
    assert {s: v["alpha"] for s, v in cal["ridge"]["fits"].items()} == {
        s: v["alpha"] for s, v in rep["fits"].items()}


def test_export_contract_and_bank(pipeline):
    onnx_path, bank_path = pipeline["onnx"], pipeline["bank"]
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    contract = ModelContract.from_json(sess.get_modelmeta().custom_metadata_map[METADATA_KEY])
    meta = json.loads((pipeline["run"] / "meta.json").read_text())
    assert contract.training["model_sha256"] == meta["training"]["model_sha256"]
    assert contract.metrics["overall"]["n_candidates"] > 0
    assert contract.training["export"]["parity_max_abs"] <= 1e-4
    assert len(contract.channels) == len(meta["channels"]) and contract.channels[0].unit in ("T", "T/m")
    assert contract.inputs == {**contract.inputs, "brain": "brain", "subject": "subject_index"}
    bank = CandidateBank.load(bank_path)
    assert bank.model_sha256 == sha256_file(onnx_path)
    bank.check_model(sha256_file(onnx_path))
    assert bank.header["output_shape"] == contract.output["shape"]
    assert bank.features.shape[1] == int(np.prod(contract.output["shape"]))
    # the ONNX output is what the bank scores
    x = np.zeros((1, len(contract.channels), contract.window.n_times), dtype=np.float32)
    z = sess.run(["latent"], {"brain": x, "subject_index": np.array([0], dtype=np.int64)})[0]
    assert bank.scores(z[0]).shape == (len(bank),)
    # candidate ids are the shared segment ids
    from neurospeech.data import segment_id

    assert bank.ids[0] == segment_id(str(bank.sounds[0]), float(bank.sound_times[0]))


def test_bank_for_another_model_is_refused(pipeline):
    other = pipeline["work"] / "sub01.onnx"
    _run(["-q", "export", str(pipeline["run"]), "--out", str(other), "--subject", "01"])
    bank = CandidateBank.load(pipeline["bank"])
    with pytest.raises(ArtifactError, match="rebuild the bank"):
        bank.check_model(sha256_file(other))


def test_bank_prefilter_keeps_the_exact_bank_and_refuses_rank_with_it(pipeline, tmp_path):
    exact = CandidateBank.load(pipeline["bank"])
    out = tmp_path / "bank_p.npz"
    _run(["-q", "bank", "--model", str(pipeline["onnx"]), "--data", str(pipeline["data"]), "--out", str(out),
          "--prefilter", "8", "--shortlist", "5"])
    pre = CandidateBank.load(out)
    assert pre.header["prefilter"]["rank"] == 8 and pre.shortlist == min(5, len(pre))
    np.testing.assert_array_equal(pre.features, exact.features)
    np.testing.assert_array_equal(pre.ids, exact.ids)
    z = np.random.default_rng(0).standard_normal((3, *exact.header["output_shape"])).astype(np.float32)
    idx, best, _ = pre.topk(z, 3)
    np.testing.assert_allclose(best, np.take_along_axis(exact.scores(z), idx, axis=1), rtol=1e-5, atol=1e-5)
    with pytest.raises(SystemExit) as exc:
        main(["-q", "bank", "--model", str(pipeline["onnx"]), "--data", str(pipeline["data"]), "--out",
              str(tmp_path / "x.npz"), "--prefilter", "8", "--rank", "8"])
    assert exc.value.code == 2 and not (tmp_path / "x.npz").exists()
    # the default (auto) leaves a bank of this size exact (a prefilter pays from thousands of candidates), as
    # does off; anything else is refused
    assert "prefilter" not in exact.header and exact.prefilter_basis is None
    _run(["-q", "bank", "--model", str(pipeline["onnx"]), "--data", str(pipeline["data"]), "--out",
          str(tmp_path / "off.npz"), "--prefilter", "off"])
    off = CandidateBank.load(tmp_path / "off.npz")
    assert off.prefilter_basis is None
    np.testing.assert_array_equal(off.features, exact.features)
    with pytest.raises(SystemExit) as exc:
        main(["-q", "bank", "--model", str(pipeline["onnx"]), "--data", str(pipeline["data"]), "--out",
              str(tmp_path / "y.npz"), "--prefilter", "some"])
    assert exc.value.code == 2 and not (tmp_path / "y.npz").exists()
