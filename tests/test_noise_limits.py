"""Noise-correlation analysis (Hazon et al. 2022) on the place-cell generator, on a simulated M/EEG dataset,
and its input checks. Budget: ~60 s on 2 idle cores (n_jobs=1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from neurospeech.tools.analyses._noise_decode import balanced_halves, shuffle_within_cells
from neurospeech.tools.analyses._noise_fit import fit_imse, imse_model
from neurospeech.tools.analyses._noise_geometry import fisher_bias_corrected
from neurospeech.tools.analyses.noise_limits import (
    NoiseLimitSettings,
    prepare_labels,
    run_noise_limits,
    write_outputs,
)
from neurospeech.tools.analyses.place_cells import PlaceCellSettings, save_place_cells, simulate_place_cells

from neurospeech.cli import cli
from neurospeech.errors import ConfigError, DataFormatError

SIZES = (10, 25, 50, 100, 250, 500)


@pytest.fixture(scope="module")
def limited():
    """s_d = 4 cm: information-limiting correlations (shared jitter of encoded position)."""
    data = simulate_place_cells(PlaceCellSettings(s_d=4.0, seed=1))
    s = NoiseLimitSettings(
        sizes=SIZES,
        n_subsets=2,
        decoder="lda",
        bin_width=data.bin_width,
        unit="cm",
        n_boot=100,
        n_jobs=1,
        progress=False,
        seed=1,
    )
    return data, run_noise_limits(data.X, data.y, data.direction, s)


def test_limiting_correlations_saturate_real_error(limited):
    data, res = limited
    s_d = data.settings.s_d
    real100, real500 = res.rms_at("unshuffled", 100), res.rms_at("unshuffled", 500)
    shuf100, shuf500 = res.rms_at("shuffled", 100), res.rms_at("shuffled", 500)
    assert real500 / real100 > 0.9, (real100, real500)
    assert 0.8 * s_d <= real500 <= 1.5 * s_d, real500
    assert shuf500 / shuf100 < 0.3, (shuf100, shuf500)
    n_real, n_shuf = res.fits["unshuffled"].n_star, res.fits["shuffled"].n_star
    assert n_shuf > 10 * n_real, (n_real, n_shuf)
    ratio, lo, hi = res.n_star_ratio()
    assert lo > 10, (ratio, lo, hi)
    # the real asymptote is inside the data and near the generator's ceiling 1/s_d (bins add quantisation)
    assert res.fits["unshuffled"].n_star < 500
    assert 0.8 * s_d < res.fits["unshuffled"].rms_inf < 1.5 * s_d


def test_limiting_correlations_geometry(limited):
    data, res = limited
    geo = res.geometry
    sv = geo["signal_noise_variance"]
    # differential correlations: noise along the signal direction grows with N in real data only
    assert sv["real"][-1] > 10 * sv["real"][0]
    assert sv["shuffled"][-1] < 2.5
    assert geo["top_eig_cosine"]["real"][0] > 0.7
    assert geo["top_eig_cosine"]["shuffled"][0] < 0.3
    assert geo["rms_noise_correlation"]["real"] > geo["rms_noise_correlation"]["shuffled"]
    # bias-corrected Fisher information: real saturates near 1/s_d^2, shuffled keeps growing
    fi_real = np.asarray(geo["fisher"]["real"], float)
    fi_shuf = np.asarray(geo["fisher"]["shuffled"], float)
    at100 = geo["sizes"].index(100)
    assert fi_real[at100] == pytest.approx(1 / data.settings.s_d**2, rel=0.35)
    assert fi_shuf[at100] > 4 * fi_real[at100]
    assert np.isnan(fi_real[geo["sizes"].index(500)])  # N >= 2T - 3: undefined, reported as NaN


def test_outputs_written(limited, tmp_path):
    _, res = limited
    paths = write_outputs(res, tmp_path, "nl")
    doc = json.loads(paths["json"].read_text())
    assert doc["sizes"] == list(SIZES)
    assert set(doc["curves"]) == {"unshuffled", "shuffled", "diagonal"}
    fit = doc["fits"]["unshuffled"]
    assert fit["I_inf"] == pytest.approx(fit["I0"] * fit["N_star"])
    assert fit["RMS_inf"] == pytest.approx(fit["I_inf"] ** -0.5)
    assert fit["N99"] == pytest.approx(99 * fit["N_star"])
    assert fit["ci"]["N_star"][0] <= fit["N_star"] <= fit["ci"]["N_star"][1]
    assert doc["fits"]["shuffled"]["extrapolated"] is True
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths["png"].stat().st_size > 20_000
    text = paths["txt"].read_text()
    assert "N* shuffled / real" in text and "extrapolated" in text


def test_independent_noise_real_equals_shuffled():
    data = simulate_place_cells(
        PlaceCellSettings(s_d=0.0, n_units=100, trials_per_bin=60, noise_sd=0.6, seed=2)
    )
    s = NoiseLimitSettings(
        sizes=(5, 10, 25, 50, 100),
        n_subsets=4,
        decoder="lda",
        bin_width=data.bin_width,
        unit="cm",
        n_boot=200,
        n_jobs=1,
        progress=False,
        geometry=False,
        seed=2,
    )
    res = run_noise_limits(data.X, data.y, data.direction, s)
    lo_r, hi_r = res.rms_ci("unshuffled")
    lo_s, hi_s = res.rms_ci("shuffled")
    assert np.all(res.rms("unshuffled") > 0)  # a real comparison, not 0 == 0
    assert np.all((lo_r <= hi_s) & (lo_s <= hi_r)), (res.rms("unshuffled"), res.rms("shuffled"))
    rel = np.abs(res.rms("unshuffled") - res.rms("shuffled")) / res.rms("shuffled")
    assert rel.max() < 0.15, rel
    # the N* intervals overlap too (no evidence for limiting correlations)
    (a0, a1), (b0, b1) = res.fit_ci("unshuffled", "N_star"), res.fit_ci("shuffled", "N_star")
    assert a0 <= b1 and b0 <= a1


def test_fit_recovers_known_parameters():
    n = np.array([5, 10, 25, 50, 100, 250, 500], float)
    fit = fit_imse(n, imse_model(n, 0.002, 40.0), n_star_max=5e5)
    assert fit.i0 == pytest.approx(0.002, rel=1e-4) and fit.n_star == pytest.approx(40.0, rel=1e-4)
    assert fit.rms_inf == pytest.approx((0.002 * 40) ** -0.5, rel=1e-4)
    lin = fit_imse(n, 0.01 * n, n_star_max=5e5)
    assert lin.at_bound and lin.i0 == pytest.approx(0.01, rel=1e-3)


def test_split_is_balanced_and_shuffle_keeps_marginals():
    rng = np.random.default_rng(0)
    cells = np.repeat(np.arange(6), [4, 5, 8, 9, 10, 11])
    in_a = balanced_halves(cells, rng)
    for c in range(6):
        n_a, n = in_a[cells == c].sum(), (cells == c).sum()
        assert abs(2 * n_a - n) <= 1
    X = rng.normal(size=(cells.size, 30)) + cells[:, None]
    Xs = shuffle_within_cells(X, cells, rng)
    for c in range(6):
        m = cells == c
        np.testing.assert_allclose(np.sort(Xs[m], axis=0), np.sort(X[m], axis=0))
    assert not np.allclose(Xs, X)


def test_fisher_bias_correction_is_unbiased():
    rng = np.random.default_rng(3)
    n, t = 20, 60
    dmu = np.full(n, 0.05)  # true information dmu^T dmu / ds^2 with identity noise, ds = 1 -> 0.05
    est = [
        fisher_bias_corrected(rng.normal(size=(t, n)), rng.normal(size=(t, n)) + dmu, 1.0) for _ in range(300)
    ]
    assert np.mean(est) == pytest.approx(0.05, abs=0.015)
    assert np.isnan(fisher_bias_corrected(rng.normal(size=(10, 20)), rng.normal(size=(10, 20)), 1.0))


# ---------------------------------------------------------------------------------------- bad inputs
def _run(X, y, group=None, **kw):
    s = NoiseLimitSettings(sizes=(2, 4), n_subsets=1, n_boot=10, progress=False, geometry=False, **kw)
    return run_noise_limits(X, y, group, s)


def test_shape_mismatch_names_counts_and_fix():
    X = np.zeros((40, 5))
    with pytest.raises(DataFormatError, match=r"X has 40 trials.*y has 39 labels.*transpose"):
        _run(X, np.arange(39) % 2)
    with pytest.raises(DataFormatError, match=r"group has shape \(12,\).*40 trials"):
        _run(X, np.arange(40) % 2, group=np.zeros(12))
    with pytest.raises(DataFormatError, match=r"2-D.*\(40,\)"):
        _run(np.zeros(40), np.arange(40) % 2)


def test_too_few_trials_per_class_names_class_and_fix():
    rng = np.random.default_rng(0)
    y = np.array([0] * 20 + [1] * 20 + [2] * 3)
    with pytest.raises(DataFormatError, match=r"class '2' has 3 trials.*need >= 4.*merge bins"):
        _run(rng.normal(size=(43, 5)), y)
    g = np.array([0, 1] * 21 + [0])
    y2 = np.array([0] * 38 + [1] * 5)
    with pytest.raises(DataFormatError, match=r"class '1' in group \d has [23] trials"):
        _run(rng.normal(size=(43, 5)), y2, group=g)


def test_nan_names_location_and_fix():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5))
    X[7, 3] = np.nan
    with pytest.raises(DataFormatError, match=r"1 NaN/inf.*trial 7, feature 3.*drop those trials"):
        _run(X, np.arange(40) % 2)
    y = (np.arange(40) % 2).astype(float)
    y[5] = np.nan
    with pytest.raises(DataFormatError, match=r"NaN/inf.*trial 5.*drop"):
        _run(rng.normal(size=(40, 5)), y)


def test_bad_settings_and_continuous_labels():
    with pytest.raises(ConfigError, match="n_subsets=0"):
        NoiseLimitSettings(n_subsets=0)
    with pytest.raises(ConfigError, match=r"ensemble size 9 exceeds the 5 features"):
        s = NoiseLimitSettings(sizes=(2, 9), progress=False)
        run_noise_limits(np.random.default_rng(0).normal(size=(40, 5)), np.arange(40) % 2, settings=s)
    y = np.random.default_rng(0).uniform(0, 120, size=400)
    with pytest.raises(DataFormatError, match=r"look continuous.*n_bins"):
        prepare_labels(y)
    with pytest.raises(DataFormatError, match=r"look continuous"):  # not silently binned by bin_width
        _run(np.random.default_rng(0).normal(size=(400, 5)), y, bin_width=6.0)
    lab = prepare_labels(y, n_bins=20, lo=0, hi=120)
    assert lab.bin_width == 6.0 and lab.cls.max() == 19 and lab.ordinal
    q = prepare_labels(y, n_bins=4, quantiles=True)
    assert np.bincount(q.cls).tolist() == [100, 100, 100, 100]
    cat = prepare_labels(np.array(["a", "b", "a", "c"]))
    assert not cat.ordinal and cat.names == ["a", "b", "c"]


def test_pluggable_decoder_and_joint_groups():
    from sklearn.linear_model import LogisticRegression

    data = simulate_place_cells(PlaceCellSettings(s_d=4.0, n_units=30, trials_per_bin=8, n_bins=6, seed=3))
    s = NoiseLimitSettings(
        sizes=(3, 10, 30),
        n_subsets=2,
        bin_width=data.bin_width,
        n_boot=10,
        progress=False,
        geometry=False,
        group_decoding="joint",
    )
    res = run_noise_limits(data.X, data.y, data.direction, s, decoder=LogisticRegression(max_iter=500))
    assert "LogisticRegression" in res.info["decoder"] and not res.info["separate_group_decoders"]
    assert res.rms("unshuffled")[-1] < res.rms("unshuffled")[0]


# ---------------------------------------------------------------------------------------- CLI
CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "configs" / "noise-limits.example.toml"


def test_cli_place_cells_roundtrip(tmp_path):
    runner = CliRunner()
    npz = tmp_path / "cells.npz"
    args = ["simulate-place-cells", str(npz), *"--units 40 --trials-per-bin 8 --bins 6 --s-d 4".split()]
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    args = ["analyze", "noise-limits", str(npz), "--out", str(out), "--config", str(CONFIG)]
    args += "--sizes 5,10,40 --subsets 2 --n-boot 20 --no-progress --jobs 1".split()
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "noise_limits.json").read_text())
    assert doc["unit"] == "cm" and doc["bin_width"] == pytest.approx(20.0)
    assert doc["info"]["n_groups"] == 2 and doc["info"]["input"]["source"] == str(npz)
    assert doc["settings"]["n_boot"] == 20 and doc["settings"]["n_star_max_factor"] == 1000.0
    assert "N* shuffled / real" in r.output


def test_cli_csv_and_bad_input_exit_code(tmp_path):
    from neurospeech.cli import main

    rng = np.random.default_rng(0)
    y = np.repeat(["lo", "mid", "hi"], 10)
    X = rng.normal(size=(30, 6)) + (y == "hi")[:, None]
    csv_path = tmp_path / "t.csv"
    lines = ["label," + ",".join(f"f{i}" for i in range(6))]
    lines += [f"{lab}," + ",".join(f"{v:.5f}" for v in row) for lab, row in zip(y, X)]
    csv_path.write_text("\n".join(lines) + "\n")
    args = ["analyze", "noise-limits", str(csv_path), "--out", str(tmp_path / "o"), "--label-column", "label"]
    with pytest.raises(SystemExit) as exc:
        main(args + "--sizes 2,6 --subsets 2 --n-boot 10 --no-progress --no-geometry".split())
    assert exc.value.code == 0
    doc = json.loads((tmp_path / "o" / "noise_limits.json").read_text())
    assert doc["info"]["ordinal"] is False and doc["unit"] == "class"
    bad = tmp_path / "bad.csv"
    bad.write_text("label,f0,f1\nlo,1,2\nlo,1,nan\n")
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "noise-limits", str(bad), "--out", str(tmp_path / "b"), "--label-column", "label"])
    assert exc.value.code == DataFormatError.exit_code


def test_place_cells_save_roundtrip(tmp_path):
    from neurospeech.tools.analyses._noise_io import read_table

    data = simulate_place_cells(n_units=12, trials_per_bin=4, n_bins=5, s_d=2.0)
    path = save_place_cells(data, tmp_path / "p.npz")
    t = read_table(path)
    np.testing.assert_array_equal(t.X, data.X)
    assert t.bin_width == pytest.approx(24.0) and t.unit == "cm" and t.group is not None
    with pytest.raises(ConfigError, match="s_d=-1"):
        simulate_place_cells(s_d=-1)


# ---------------------------------------------------------------------------------------- M/EEG dataset
@pytest.fixture(scope="module")
def ci_dataset(tmp_path_factory):
    """The project's `ci` simulated MEG dataset (BIDS, FIF, written by `neurospeech simulate`)."""
    root = tmp_path_factory.mktemp("nl_ci") / "ci"
    r = CliRunner().invoke(cli, ["simulate", str(root), "--preset", "ci"])
    assert r.exit_code == 0, r.output
    return root


def test_runs_on_simulated_meg_dataset(ci_dataset, tmp_path):
    out = tmp_path / "ci"
    args = ["analyze", "noise-limits", "--bids", str(ci_dataset), "--label", "word", "--out", str(out)]
    r = CliRunner().invoke(cli, args + "--n-sizes 6 --subsets 3 --n-boot 50 --whiten --no-progress".split())
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "noise_limits.json").read_text())
    info = doc["info"]
    assert info["n_features"] > 100 and info["n_groups"] == 2  # sensors; two subjects as nuisance groups
    assert info["whitened"] and info["whitening_reference"]
    assert doc["sizes"][-1] == info["n_features"] and len(doc["sizes"]) == 6
    mse = doc["curves"]["unshuffled"]["mse_mean"]
    assert all(0 <= m <= 1 for m in mse)  # 0/1 error for word identity
    # the chance check is reported consistently with the measured error
    assert info["at_chance"] == (mse[-1] ** 0.5 > 0.9 * info["chance_mse"] ** 0.5)
    text = (out / "noise_limits.txt").read_text()
    assert "RMS error at N=" in text and ("chance level" in text) == info["at_chance"]
    assert (out / "noise_limits.png").stat().st_size > 20_000
    assert set(doc["geometry"]["rms_noise_correlation"]) == {"real", "shuffled"}


def test_runs_on_encoder_latents_from_onnx(ci_dataset, tmp_path):
    """Features from an exported encoder: a real onnxruntime session over the contract's windows."""
    from dataclasses import replace

    from _service_fixtures import make_contract, write_onnx

    from neurospeech.data import load_dataset
    from neurospeech.preprocessing import RobustScaler

    raw = load_dataset(ci_dataset)[0].load_raw()
    names = list(raw.ch_names)
    scaler = RobustScaler(center=np.zeros(len(names)), scale=np.full(len(names), 1e-13))
    contract = make_contract(names, raw.info["sfreq"], scaler, n_features=16)
    contract = replace(contract, scalers={"01": scaler.to_dict()}, subjects=["01"])  # sub-02: fallback
    weight = np.random.default_rng(0).normal(size=(16, len(names))) / np.sqrt(len(names))
    model = tmp_path / "enc.onnx"
    write_onnx(model, contract, weight)
    out = tmp_path / "lat"
    args = ["analyze", "noise-limits", "--bids", str(ci_dataset), "--onnx", str(model), "--out", str(out)]
    args += "--n-time-bins 2 --sizes 2,8,32 --subsets 2 --n-boot 20 --no-progress --no-geometry".split()
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "noise_limits.json").read_text())
    assert doc["info"]["n_features"] == 32 and doc["info"]["input"]["model"] == str(model)
    assert doc["info"]["n_groups"] == 2
    r = CliRunner().invoke(cli, ["analyze", "noise-limits", "--onnx", str(model), "--out", str(out)])
    assert r.exit_code != 0 and "--onnx needs --bids" in str(r.exception)
