"""`neurospeech adapt` (a new participant) and the zero-calibration `export --subject mean`, through the CLI.

One session pipeline on the `ci` simulated preset: train a tiny encoder on subject 01 only, then calibrate
subject 02 as a new participant (`adapt --shared-lr 0`); the tests check the adapted run (exports, changed
row, frozen trunk), the shared fine-tuning (the default), the zero-calibration export, and the refusals with
their exit codes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from _lazy import lazy

from neurospeech.cli import main

pytestmark = pytest.mark.torch  # tests/_lazy.py: collected without torch, run with it
torch = lazy("torch")

TINY = '{"n_virtual": 16, "hidden": 32, "head_hidden": 32, "fourier_harmonics": 4}'


def _exit_code(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return int(exc.value.code or 0)


def _run(args: list[str]) -> None:
    code = _exit_code(args)
    assert code == 0, f"neurospeech {' '.join(args)} exited with {code}"


@pytest.fixture(scope="session")
def adapted(tmp_path_factory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("adapt")
    data = work / "data"
    _run(["-q", "simulate", str(data), "--preset", "ci"])
    run = work / "run"
    _run(["-q", "train", "--data", str(data), "--out", str(run), "--epochs", "1", "--batch-size", "32",
          "--subject", "01", "--set", f"encoder={TINY}", "--set", "progress=false", "--set", "threads=2"])
    run2 = work / "run2"
    _run(["-q", "adapt", str(run), "--data", str(data), "--subject", "02", "--out", str(run2),
          "--minutes", "0.8", "--epochs", "2", "--shared-lr", "0", "--lr-schedule", "constant",
          "--set", "progress=false", "--set", "threads=2"])
    return {"data": data, "run": run, "run2": run2, "work": work}


def test_adapted_run_changes_only_the_new_row(adapted):
    from neurospeech.models.train import load_run, model_sha256

    old, old_meta = load_run(adapted["run"])
    new, meta = load_run(adapted["run2"])  # checks best.pt against the hash in meta.json
    assert model_sha256(new) == meta["training"]["model_sha256"] != old_meta["training"]["model_sha256"]
    assert meta["subjects"] == ["01", "02"] and set(meta["scalers"]) == {"01", "02"}
    assert meta["scalers"]["01"] == old_meta["scalers"]["01"]
    assert meta["scalers"]["02"] != meta["scalers"]["01"]  # fitted on the new subject's data
    a = meta["adaptation"]
    assert 0 < a["minutes_used"] <= 0.8 + 1e-9 and a["n_windows"]["train"] > 0 and len(a["history"]) >= 1
    assert a["cpu_seconds"] > 0
    # the first 0.8 min play train-split sounds only: no validation pass, the 2 epochs asked for all run
    assert a["n_windows"]["val"] == 0 and a["early_stopping"].startswith("none: 2 epochs"), a["early_stopping"]
    assert len(a["history"]) == 2 and all(np.isnan(h["val_top10"]) for h in a["history"])
    old_state, new_state = old.state_dict(), new.state_dict()
    assert set(old_state) == set(new_state)
    for name, value in old_state.items():
        if name == "subject_layer.weight":
            continue
        assert torch.equal(value, new_state[name]), f"{name} changed: the trunk must stay frozen"
    w_old, w_new = old_state["subject_layer.weight"], new_state["subject_layer.weight"]
    assert w_new.shape[0] == w_old.shape[0] + 1
    assert torch.equal(w_new[0], w_old[0])
    init = w_old.mean(dim=0)  # the new row starts from the mean of the trained rows, then moves
    assert not torch.allclose(w_new[1], init, atol=1e-6)
    assert a["init_row_relative_change"] > 0
    # the BatchNorm running statistics (buffers) are part of the state compared above; the sizes check
    # that the comparison saw them
    assert any("running_mean" in k for k in old_state)


def test_shared_lr_fine_tunes_the_trunk_but_keeps_the_trained_rows(adapted, tmp_path):
    """`adapt --shared-lr` (default 1e-5): the shared weights move with the new row; the trained rows do not."""
    from neurospeech.models.train import load_run

    run3 = tmp_path / "run3"
    _run(["-q", "adapt", str(adapted["run"]), "--data", str(adapted["data"]), "--subject", "02",
          "--out", str(run3), "--minutes", "0.8", "--epochs", "2", "--shared-lr", "1e-3",
          "--set", "progress=false", "--set", "threads=2"])
    old, _ = load_run(adapted["run"])
    new, meta = load_run(run3)
    old_state, new_state = old.state_dict(), new.state_dict()
    moved = [k for k, v in old_state.items() if k != "subject_layer.weight" and v.dtype.is_floating_point
             and not torch.equal(v, new_state[k])]
    assert any(k.startswith("trunk.") for k in moved), moved
    assert torch.equal(new_state["subject_layer.weight"][0], old_state["subject_layer.weight"][0])
    assert meta["adaptation"]["config"]["shared_lr"] == 1e-3
    assert any(f.startswith("shared weights") for f in meta["adaptation"]["fitted"])
    assert _exit_code(["-q", "adapt", str(adapted["run"]), "--data", str(adapted["data"]), "--subject", "02",
                       "--out", str(tmp_path / "bad"), "--shared-lr", "-1"]) == 2


def test_cosine_schedule_decays_both_rates_to_zero_and_step_sets_the_window_spacing(adapted, tmp_path):
    """`adapt` (default ``--lr-schedule cosine``): half the starting rate after the first of two epochs, ~0 after
    the last (the history's ``lr``); the fixture's ``constant`` keeps it. ``step`` halves the window spacing:
    about twice the windows."""
    from neurospeech.models.train import load_run

    base = ["-q", "adapt", str(adapted["run"]), "--data", str(adapted["data"]), "--subject", "02",
            "--minutes", "0.8", "--epochs", "2", "--lr", "1e-2", "--set", "progress=false", "--set", "threads=2"]
    _run([*base, "--out", str(tmp_path / "cos"), "--set", "step=0.25"])
    _, meta = load_run(tmp_path / "cos")
    a = meta["adaptation"]
    lrs = [h["lr"] for h in a["history"]]
    assert len(lrs) == 2 and lrs[0] == pytest.approx(5e-3, rel=1e-6) and lrs[1] < 1e-12, lrs
    assert a["config"]["lr_schedule"] == "cosine" and a["config"]["step"] == 0.25
    _, const = load_run(adapted["run2"])  # the fixture's run: constant rate, the run's step
    assert [h["lr"] for h in const["adaptation"]["history"]] == [1e-2, 1e-2]
    n_half, n_full = a["n_windows"]["train"], const["adaptation"]["n_windows"]["train"]
    assert 1.7 * n_full <= n_half <= 2.3 * n_full, (n_half, n_full)
    assert _exit_code([*base, "--out", str(tmp_path / "bad"), "--set", "lr_schedule=linear"]) == 2
    assert _exit_code([*base, "--out", str(tmp_path / "bad2"), "--set", "step=0"]) == 2


def test_adapted_subject_exports_and_evaluates(adapted):
    from neurospeech.models.export import read_contract
    from neurospeech.models.train import load_run

    onnx_path = adapted["work"] / "sub02.onnx"
    _run(["-q", "export", str(adapted["run2"]), "--out", str(onnx_path), "--subject", "02"])
    contract = read_contract(onnx_path)
    meta = json.loads((adapted["run2"] / "meta.json").read_text())
    assert contract.subjects == ["02"] and contract.scalers["02"] == meta["scalers"]["02"]
    assert contract.training["export"]["parity_max_abs"] <= 1e-4
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(2, len(contract.channels), contract.window.n_times))
    z = sess.run(["latent"], {"brain": x.astype(np.float32)})[0]
    model, _ = load_run(adapted["run2"])
    with torch.no_grad():
        ref = model(torch.from_numpy(x.astype(np.float32)), torch.tensor([1, 1])).numpy()
    np.testing.assert_allclose(z, ref, atol=1e-4)  # the exported model is the new subject's row
    report = adapted["work"] / "eval"
    _run(["-q", "evaluate", str(adapted["run2"]), "--out", str(report), "--no-ridge"])
    rep = json.loads((report / "report.json").read_text())
    name = next(k for k in rep["methods"] if k != "random")
    assert set(rep["methods"][name]["per_subject"]) == {"01", "02"}


def test_zero_calibration_export_uses_mean_layer_and_pooled_scaler(adapted):
    from neurospeech.models.adapt import pooled_scaler
    from neurospeech.models.export import read_contract
    from neurospeech.models.train import load_run

    onnx_path = adapted["work"] / "mean.onnx"
    _run(["-q", "export", str(adapted["run2"]), "--out", str(onnx_path), "--subject", "mean"])
    contract = read_contract(onnx_path)
    meta = json.loads((adapted["run2"] / "meta.json").read_text())
    assert contract.subjects == ["mean"]
    pooled = pooled_scaler(meta["scalers"])
    s01, s02 = (np.asarray(meta["scalers"][s]["scale"]) for s in ("01", "02"))
    np.testing.assert_allclose(pooled.scale, np.sqrt(s01 * s02), rtol=1e-9)  # geometric mean
    np.testing.assert_allclose(contract.scalers["mean"]["scale"], pooled.scale, rtol=1e-12)
    model, _ = load_run(adapted["run2"])
    model.subject_layer.weight.data[:] = model.subject_layer.weight.data.mean(dim=0)  # every row = the mean
    x = np.random.default_rng(1).normal(size=(2, len(contract.channels), contract.window.n_times))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    z = sess.run(["latent"], {"brain": x.astype(np.float32)})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x.astype(np.float32)), torch.tensor([0, 0])).numpy()
    np.testing.assert_allclose(z, ref, atol=1e-4)


def test_adapt_refuses_bad_input(adapted, tmp_path):
    run, data = str(adapted["run"]), str(adapted["data"])
    # unknown run: model refused (4)
    assert _exit_code(["-q", "adapt", str(tmp_path / "nope"), "--data", data, "--subject", "02",
                       "--out", str(tmp_path / "o1")]) == 4
    # subject already in the run, the reserved name, a subject the data lacks: settings (2)
    assert _exit_code(["-q", "adapt", run, "--data", data, "--subject", "01", "--out", str(tmp_path / "o2")]) == 2
    assert _exit_code(["-q", "adapt", run, "--data", data, "--subject", "mean",
                       "--out", str(tmp_path / "o3")]) == 2
    assert _exit_code(["-q", "adapt", run, "--data", data, "--subject", "07", "--out", str(tmp_path / "o4")]) == 2
    # an existing run as output: settings (2)
    assert _exit_code(["-q", "adapt", run, "--data", data, "--subject", "02", "--out", run]) == 2
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_adapt_refuses_calibration_without_the_model_channels(adapted, tmp_path, capsys):
    from neurospeech.models.adapt import AdaptConfig, adapt

    from neurospeech.data import load_dataset, write_run
    from neurospeech.errors import DataFormatError

    rec = next(r for r in load_dataset(adapted["data"]) if r.subject == "02")
    raw = rec.load_raw()
    dropped = raw.ch_names[:3]
    raw.drop_channels(dropped)
    calib = tmp_path / "calib"
    write_run(calib, raw, rec.load_events(), subject="02", task=rec.task, run=rec.run)
    (calib / "dataset_description.json").write_text(
        (Path(adapted["data"]) / "dataset_description.json").read_text())
    code = _exit_code(["-q", "adapt", str(adapted["run"]), "--data", str(calib), "--subject", "02",
                       "--out", str(tmp_path / "o")])
    assert code == 3
    err = capsys.readouterr().err
    assert dropped[0] in err and "montage" in err
    with pytest.raises(DataFormatError, match="lacks 3 of the model's"):
        adapt(AdaptConfig(run=str(adapted["run"]), data=str(calib), subject="02", out=str(tmp_path / "o5"),
                          progress=False))


def test_adapt_curve_reuses_given_runs_without_training(adapted, tmp_path):
    """`adapt-curve --base-run/--within-run`: no training, the curve scored from the given runs.

    The adapted run (01 trained, 02 calibrated) stands in for a within-subject run: it holds subject 02.
    """
    run, run2, data = str(adapted["run"]), str(adapted["run2"]), str(adapted["data"])
    out = tmp_path / "curve"
    _run(["-q", "adapt-curve", data, "--held-out", "02", "--out", str(out), "--minutes", "0,0.8",
          "--base-run", run, "--within-run", run2, "--n-boot", "50",
          "--adapt-set", "max_epochs=1", "--adapt-set", "threads=2"])
    assert not (out / "runs" / "base").exists() and not (out / "runs" / "within").exists()  # nothing trained
    rep = json.loads((out / "curve.json").read_text())
    assert rep["base_run"] == run and rep["within_run"] == run2 and rep["trained_on"] == ["01"]
    assert rep["base_train_cpu_s"] is None and rep["within_train_cpu_s"] is None
    assert [r["minutes"] for r in rep["rows"]][:2] == [None, 0.0] and len(rep["rows"]) == 3
    adapted_meta = json.loads((out / "runs" / "adapt-0.8min" / "meta.json").read_text())
    assert adapted_meta["adaptation"]["source_run"] == str(Path(run).resolve())
    for r in rep["rows"]:
        assert r["ci95"][0] <= r["top10"] <= r["ci95"][1]
        assert r["chance_top10"] == min(10, r["n_candidates"]) / r["n_candidates"]
    assert (out / "curve.png").stat().st_size > 0 and "Base run" in (out / "curve.md").read_text()
    # a base run that holds the held-out subject, a within run that lacks it: settings (2); not a run: 4
    assert _exit_code(["-q", "adapt-curve", data, "--held-out", "02", "--out", str(tmp_path / "c2"),
                       "--base-run", run2, "--within-run", run2]) == 2
    assert _exit_code(["-q", "adapt-curve", data, "--held-out", "02", "--out", str(tmp_path / "c3"),
                       "--base-run", run, "--within-run", run]) == 2
    assert _exit_code(["-q", "adapt-curve", data, "--held-out", "02", "--out", str(tmp_path / "c4"),
                       "--base-run", str(tmp_path / "nope"), "--within-run", run2]) == 4
    assert not (tmp_path / "c2").exists() and not (tmp_path / "c4").exists()


def test_calibration_sounds_held_out_for_early_stopping_keep_every_sound_on_one_side():
    from neurospeech.models._data import TensorSet
    from neurospeech.models.adapt import _hold_out_sounds

    rng = np.random.default_rng(3)
    sounds = np.repeat([f"stimuli/s{k:04d}.wav" for k in range(60)], rng.integers(2, 9, 60))
    n = len(sounds)
    ws = TensorSet(brain=np.arange(n, dtype=np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32),
                   speech=np.zeros((n, 2, 2), np.float32), subject=np.zeros(n, np.int64),
                   segment_id=np.array([f"w{i}" for i in range(n)]), word=np.array(["x"] * n),
                   subject_name=np.array(["02"] * n))
    fit, stop, text = _hold_out_sounds(ws, sounds, 0.15, seed=0)
    assert len(fit) + len(stop) == n and stop is not fit and "held out" in text
    fit_ids, stop_ids = set(fit.segment_id.tolist()), set(stop.segment_id.tolist())
    assert not fit_ids & stop_ids
    index = {f"w{i}": s for i, s in enumerate(sounds)}
    fit_sounds, stop_sounds = {index[i] for i in fit_ids}, {index[i] for i in stop_ids}
    assert not fit_sounds & stop_sounds, "a sound's windows must not be split between fitting and stopping"
    assert 3 <= len(stop_sounds) <= 18  # ~15 % of 60 sounds (binomial, wide bounds)
    again = _hold_out_sounds(ws, sounds, 0.15, seed=0)[1]
    other = _hold_out_sounds(ws, sounds, 0.15, seed=1)[1]
    assert np.array_equal(again.segment_id, stop.segment_id) and not np.array_equal(other.segment_id,
                                                                                     stop.segment_id)
    # two sounds cannot be split: nothing held out (adapt then runs its epochs without stopping), nothing lost
    few = np.array(["a.wav", "a.wav", "b.wav", "b.wav"] + ["b.wav"] * (n - 4))
    fit2, stop2, text2 = _hold_out_sounds(ws, few, 0.15, seed=0)
    assert stop2 is fit2 and len(fit2) == n and "none held out" in text2
    fit3, stop3, _ = _hold_out_sounds(ws, sounds, 0.0, seed=0)
    assert stop3 is fit3 and len(fit3) == n
