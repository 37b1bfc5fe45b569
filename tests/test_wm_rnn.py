"""Working-memory RNN: task generator, loss, model, stopping rule, training smoke test, export and CLI."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from _lazy import lazy
from click.testing import CliRunner

from neurospeech.errors import ArtifactError, ConfigError, DataFormatError

pytestmark = pytest.mark.torch  # tests/_lazy.py: collected without torch, run with it
if TYPE_CHECKING:
    import torch
    from neurospeech.models.wm_rnn.model import (
        WMRNN,
        circular_weighted_loss,
        decode_colour,
        target_onehot,
        uniform_loss,
    )
    from neurospeech.models.wm_rnn.task import (
        TaskConfig,
        circ_dist,
        make_inputs,
        make_trials,
        output_centres,
        von_mises_code,
    )
    from neurospeech.models.wm_rnn.train import (
        TrainConfig,
        converged,
        evaluate,
        load_model,
        train_seed,
    )
else:
    torch = lazy("torch")
    WMRNN = lazy("neurospeech.models.wm_rnn.model", "WMRNN")
    circular_weighted_loss = lazy("neurospeech.models.wm_rnn.model", "circular_weighted_loss")
    decode_colour = lazy("neurospeech.models.wm_rnn.model", "decode_colour")
    target_onehot = lazy("neurospeech.models.wm_rnn.model", "target_onehot")
    uniform_loss = lazy("neurospeech.models.wm_rnn.model", "uniform_loss")
    TaskConfig = lazy("neurospeech.models.wm_rnn.task", "TaskConfig")
    circ_dist = lazy("neurospeech.models.wm_rnn.task", "circ_dist")
    make_inputs = lazy("neurospeech.models.wm_rnn.task", "make_inputs")
    make_trials = lazy("neurospeech.models.wm_rnn.task", "make_trials")
    output_centres = lazy("neurospeech.models.wm_rnn.task", "output_centres")
    von_mises_code = lazy("neurospeech.models.wm_rnn.task", "von_mises_code")
    TrainConfig = lazy("neurospeech.models.wm_rnn.train", "TrainConfig")
    converged = lazy("neurospeech.models.wm_rnn.train", "converged")
    evaluate = lazy("neurospeech.models.wm_rnn.train", "evaluate")
    load_model = lazy("neurospeech.models.wm_rnn.train", "load_model")
    train_seed = lazy("neurospeech.models.wm_rnn.train", "train_seed")


# ---------------------------------------------------------------- task
def test_inputs_have_36_channels_and_512_trial_types():
    cfg = TaskConfig()
    trials = make_trials(cfg)
    assert len(trials) == 512
    types = {(a, b, c) for a, b, c in zip(trials.colour1, trials.colour2, trials.cued, strict=True)}
    assert len(types) == 512
    x = make_inputs(cfg, trials)
    assert x.shape == (16, 512, 36) and x.dtype == np.float32
    assert cfg.n_inputs == 36 and cfg.cue_step == 8 and cfg.post_cue_step == 15 and cfg.pre_cue_step == 7


def test_von_mises_code_and_timing():
    cfg = TaskConfig()
    centres = output_centres(17)
    assert centres[0] == pytest.approx(-np.pi) and np.diff(centres) == pytest.approx(2 * np.pi / 17)
    code = von_mises_code(centres[[3]])
    assert code.shape == (1, 17)
    assert code[0, 3] == pytest.approx(1.0)  # peak 1 at the matching channel
    assert code[0, 4] == pytest.approx(math.exp(5 * (math.cos(2 * math.pi / 17) - 1)))  # kappa 5
    assert code[0, 12] < 1e-3
    trials = make_trials(cfg)
    x = make_inputs(cfg, trials)
    # colours only at step 0, location 1 in channels 0-16 and location 2 in 17-33
    assert np.allclose(x[0, :, :17], von_mises_code(trials.colour1))
    assert np.allclose(x[0, :, 17:34], von_mises_code(trials.colour2))
    assert not x[1:, :, :34].any()
    # the one-hot cue only at step 8, in channel 34 + cued location
    assert not np.delete(x[:, :, 34:], cfg.cue_step, axis=0).any()
    assert np.array_equal(x[cfg.cue_step, :, 34:].argmax(1), trials.cued)
    assert np.all(x[cfg.cue_step, :, 34:].sum(1) == 1)


def test_configurable_delays_and_cue_validity():
    cfg = TaskConfig.experiment2(post_cue_delay=0)
    assert (cfg.pre_cue_delay, cfg.post_cue_delay, cfg.n_steps) == (14, 0, 16)
    assert cfg.cue_step == 15 == cfg.post_cue_step
    x = make_inputs(cfg, make_trials(cfg))
    assert x[15, :, 34:].sum() == 512
    half = TaskConfig(cue_validity=0.5)
    t = make_trials(half, np.random.default_rng(0), n_repeats=4)
    frac_invalid = 1 - t.valid.mean()
    assert 0.45 < frac_invalid < 0.55
    assert np.array_equal(t.target[~t.valid], t.uncued_colour[~t.valid])
    with pytest.raises(ConfigError):
        TaskConfig(cue_validity=1.5)
    with pytest.raises(ConfigError):
        TaskConfig(pre_cue_delay=-1)
    with pytest.raises(ConfigError):
        TaskConfig.experiment2(post_cue_delay=15)


# ---------------------------------------------------------------- loss and model
def test_loss_weights_errors_by_circular_distance():
    target = torch.tensor([float(output_centres(17)[5])] * 2, dtype=torch.float64)
    perfect = target_onehot(target)
    assert float(circular_weighted_loss(perfect, target)) == pytest.approx(0.0, abs=1e-12)
    near, far = torch.zeros(2, 17, dtype=torch.float64), torch.zeros(2, 17, dtype=torch.float64)
    near[:, 6] = 1.0
    far[:, 13] = 1.0
    assert float(circular_weighted_loss(far, target)) > 10 * float(circular_weighted_loss(near, target))
    # the exact formula: (1/17) * d^2 for a single wrong channel d away from the target (target channel d=0)
    d = circ_dist(output_centres(17)[6], output_centres(17)[5])
    assert float(circular_weighted_loss(near, target)) == pytest.approx(d**2 / 17)
    u = uniform_loss()
    assert 0.011 < u < 0.013
    with pytest.raises(DataFormatError):
        circular_weighted_loss(torch.zeros(3, 17), torch.zeros(2))


def test_model_shapes_softmax_orthogonal_init_and_noise():
    torch.manual_seed(0)
    net = WMRNN(rec_gain=1.0)
    w = net.rec.weight.detach()
    assert torch.allclose(w @ w.T, torch.eye(200), atol=1e-5)
    cfg = TaskConfig()
    x = torch.from_numpy(make_inputs(cfg, make_trials(cfg)))
    p, h = net(x)
    assert p.shape == (512, 17) and h.shape == (16, 512, 200)
    assert torch.allclose(p.sum(1), torch.ones(512), atol=1e-5)
    assert (h >= 0).all()
    p1, _ = net(x, noise=False)
    p2, _ = net(x, noise=False)
    p3, _ = net(x, noise=True)
    assert torch.equal(p1, p2) and not torch.equal(p1, p3)
    assert decode_colour(p1).shape == (512,)
    with pytest.raises(DataFormatError):
        net(torch.zeros(16, 4, 35))


def test_stopping_rule():
    flat_low = [0.002 + 1e-6 * ((-1) ** i) for i in range(20)]
    assert converged(flat_low)
    assert not converged(flat_low[:10])  # fewer than 15 epochs
    falling = list(np.linspace(0.0035, 0.001, 15))  # slope -1.8e-4 < -2e-5
    assert not converged(falling)
    rising = list(np.linspace(0.001, 0.002, 15))
    assert not converged(rising)
    high = [0.004] * 15
    assert not converged(high)


# ---------------------------------------------------------------- training
def _tiny(**kw) -> TrainConfig:
    base: dict[str, Any] = dict(
        n_hidden=32,
        batch_size=128,
        lr=1e-3,
        max_epochs=2,
        checkpoint_every=1,
        eval_repeats=1,
        export_repeats=1,
        plateau_epochs=10_000,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_training_smoke_checkpoint_resume_and_export(tmp_path):
    cfg = _tiny()
    res = train_seed(cfg, seed=3, out_dir=tmp_path, progress=False)
    sd = tmp_path / "seed_3"
    assert res["epochs"] == 2 and not res["converged"] and res["restarts"] == []
    assert math.isfinite(res["final_loss"]) and 0 <= res["test_mean_abs_error_deg"] <= 180
    for name in ("model.pt", "checkpoint.pt", "config.json", "history.json", "result.json", "states.npz"):
        assert (sd / name).is_file(), name
    state = torch.load(sd / "model.pt", weights_only=True)
    assert state["rec.weight"].shape == (32, 32)
    net, cfg2 = load_model(sd)
    assert cfg2.to_dict() == cfg.to_dict()
    assert evaluate(net, cfg2.task, n_repeats=1)["n_trials"] == 512
    with np.load(sd / "states.npz", allow_pickle=False) as z:
        assert z["hidden"].shape == (512, 16, 32)
        assert int(z["pre_cue_step"]) == 7 and int(z["post_cue_step"]) == 15
    # the checkpoint's training time is the result's: a resumed run adds to exactly what this one reported
    ck = torch.load(sd / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert float(ck["train_time_s"]) == res["train_time_s"]
    # resume: the history continues from the checkpoint
    before = json.loads((sd / "history.json").read_text())["loss"]
    res3 = train_seed(_tiny(max_epochs=3), seed=3, out_dir=tmp_path, progress=False)
    assert res3["epochs"] == 3 and res3["train_time_s"] > res["train_time_s"]  # cumulative over sessions
    hist = json.loads((sd / "history.json").read_text())["loss"]
    assert len(hist) == 3 and hist[:2] == before
    with pytest.raises(ConfigError, match="other settings"):
        train_seed(_tiny(max_epochs=4, lr=5e-3), seed=3, out_dir=tmp_path, progress=False)


def test_loss_decreases_in_a_few_epochs(tmp_path):
    res = train_seed(
        _tiny(max_epochs=6, n_hidden=64, batch_size=32), seed=0, out_dir=tmp_path, progress=False
    )
    hist = json.loads((tmp_path / "seed_0" / "history.json").read_text())["loss"]
    assert len(hist) == 6
    assert min(hist[1:]) < hist[0]
    assert res["final_loss"] < 0.013


def test_plateau_is_detected_restarted_and_reported(tmp_path):
    # a tolerance so loose that every untrained network counts as "on the plateau" after 1 epoch
    cfg = _tiny(plateau_epochs=1, plateau_rel_tol=0.9, max_restarts=1, max_epochs=5)
    res = train_seed(cfg, seed=1, out_dir=tmp_path, progress=False)
    assert len(res["restarts"]) == 2 and res["plateau"]
    assert res["restarts"][0]["init_seed"] != res["restarts"][1]["init_seed"]
    assert all(r["epochs"] == 1 for r in res["restarts"])


def test_bad_training_settings_and_artifacts(tmp_path):
    with pytest.raises(ConfigError):
        TrainConfig(lr=0)
    with pytest.raises(ConfigError):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="unknown training settings"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="unknown task settings"):
        TrainConfig.from_dict({"task": {"delay": 3}})
    with pytest.raises(ArtifactError):
        load_model(tmp_path)
    sd = tmp_path / "seed_0"
    sd.mkdir()
    (sd / "config.json").write_text(json.dumps(_tiny().to_dict()))
    (sd / "model.pt").write_bytes(b"not a torch file")
    with pytest.raises(ArtifactError, match="cannot load"):
        load_model(sd)


# ---------------------------------------------------------------- analysis and CLI
def test_cli_train_export_analyze(tmp_path):
    from neurospeech.cli import cli

    cfg = tmp_path / "wm.toml"
    cfg.write_text(
        "[train]\nn_hidden = 24\nbatch_size = 256\nlr = 1e-3\nmax_epochs = 1\neval_repeats = 1\n"
        "export_repeats = 1\n[task]\npost_cue_delay = 3\n[run]\nseeds = [0]\nn_jobs = 1\n"
    )
    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["wm-rnn", "train", "--config", str(cfg), "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["task"]["post_cue_delay"] == 3 and summary["seeds"][0]["epochs"] == 1
    r = CliRunner().invoke(
        cli, ["wm-rnn", "export-states", "--seed-dir", str(out / "seed_0"), "--repeats", "1"]
    )
    assert r.exit_code == 0, r.output
    with np.load(out / "seed_0" / "geometry_location.npz", allow_pickle=False) as z:
        assert z["data"].shape == (1024, 12, 24) and set(np.unique(z["context"])) == {0, 1}
    r = CliRunner().invoke(
        cli, ["wm-rnn", "analyze", "--run", str(out), "--cv", "2", "--no-cross-temporal", "--no-plots"]
    )
    assert r.exit_code == 0, r.output
    geo = json.loads((out / "geometry.json").read_text())
    s = geo["seeds"][0]
    assert s["steps"] == {"cue": 8, "pre": 7, "post": 11}
    assert 0 <= s["pre"]["theta"] <= 180 and 0 <= s["post"]["ai_d2"] <= 1
    assert len(s["time_resolved"]["cued"]["theta"]) == 12
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlearning_rate = 1\n")
    r = CliRunner().invoke(cli, ["wm-rnn", "train", "--config", str(bad), "--out", str(out)])
    assert isinstance(r.exception, ConfigError) and r.exception.exit_code == 2


def test_example_config_is_valid():
    from pathlib import Path

    from neurospeech.models.wm_rnn._cli import load_config

    raw = load_config(Path(__file__).resolve().parents[1] / "deploy" / "configs" / "wm-rnn.example.toml")
    cfg = TrainConfig.from_dict({**raw["train"], "task": raw["task"]})
    assert cfg.task.n_inputs == 36 and cfg.n_hidden == 200 and raw["run"]["seeds"] == [0, 1, 2, 3, 4]


def test_seeds_train_in_parallel_processes(tmp_path):
    from neurospeech.models.wm_rnn.train import train_many

    res = train_many(_tiny(max_epochs=1, n_hidden=16), [0, 1], tmp_path, n_jobs=2, progress=False)
    assert [r["seed"] for r in res] == [0, 1] and all(r["epochs"] == 1 for r in res)
    assert res[0]["final_loss"] != res[1]["final_loss"]  # different initialisations
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["seeds"]) == 2
