"""Representational-geometry analysis on synthetic rings with known answers (numpy/scipy/sklearn only)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from neurospeech.errors import ConfigError, DataFormatError
from neurospeech.geometry import (
    GeometrySettings,
    alignment_index,
    analyze,
    bin_feature,
    condition_means,
    cross_context_decoding,
    cross_temporal_decoding,
    group_stats,
    jsonable,
    plane_geometry,
    principal_angles,
    rayleigh_test,
    time_resolved,
    v_test,
    variance_explained,
)

N_FEAT = 40


def _basis(seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((N_FEAT, N_FEAT)))
    return q


def rings(kind: str, n_per: int = 30, noise: float = 0.05, seed: int = 0, phase2: float = 0.0):
    """Two rings of 16 colours (n_per trials each) embedded in N_FEAT dims by a random rotation.

    kind: 'orthogonal' (ring 2 in a plane at 90 deg), 'parallel' (same orientation, offset), 'mirror'
    (parallel but traversed the other way), 'disjoint' (ring 2 in two dimensions unused by ring 1),
    'same' (same subspace).
    """
    rng = np.random.default_rng(seed)
    q = _basis(seed)
    ang = np.repeat(-np.pi + 2 * np.pi * (np.arange(16) + 0.5) / 16, n_per)
    xs, fs, cs = [], [], []
    for ctx in (0, 1):
        p = np.zeros((len(ang), N_FEAT))
        a = ang + (phase2 if ctx == 1 else 0.0)
        if ctx == 0:
            p[:, 0], p[:, 1], p[:, 2] = np.cos(a), np.sin(a), 1.0
        elif kind == "orthogonal":
            p[:, 0], p[:, 2], p[:, 1] = np.cos(a), np.sin(a), -1.0
        elif kind == "parallel":
            p[:, 0], p[:, 1], p[:, 2] = np.cos(a), np.sin(a), -1.0
        elif kind == "mirror":
            p[:, 0], p[:, 1], p[:, 2] = np.cos(a), -np.sin(a), -1.0
        elif kind == "disjoint":
            p[:, 3], p[:, 4] = np.cos(a), np.sin(a)
        elif kind == "same":
            p[:, 0], p[:, 1] = 1.3 * np.cos(a + 0.4), 0.8 * np.sin(a + 0.4)
        xs.append(p @ q.T + noise * rng.standard_normal(p.shape))
        fs.append(ang)
        cs.append(np.full(len(ang), ctx))
    return np.concatenate(xs), np.concatenate(fs), np.concatenate(cs)


@pytest.mark.parametrize(("kind", "expected"), [("orthogonal", 90.0), ("parallel", 0.0), ("mirror", 180.0)])
def test_plane_angle_of_known_configurations(kind, expected):
    x, f, c = rings(kind)
    means = condition_means(x, f, c)
    assert means.shape == (8, N_FEAT)
    g = plane_geometry(means)
    assert abs(g.theta - expected) <= 3.0, (kind, g.theta)
    assert abs(abs(g.theta_signed) - g.theta) < 1e-9
    assert g.var_explained_3pc > 0.95
    assert variance_explained(means, 3) == pytest.approx(g.var_explained_3pc)


def test_phase_alignment_and_its_nan_cases():
    # parallel planes, same phase -> psi ~ 0
    g = plane_geometry(condition_means(*rings("parallel")))
    assert abs(g.psi) < 5 and g.psi_reason == ""
    # parallel planes, ring 2 rotated by a quarter turn inside its plane -> |psi| ~ 90
    g = plane_geometry(condition_means(*rings("parallel", phase2=np.pi / 2)))
    assert abs(abs(g.psi) - 90) < 5, g.psi
    # orthogonal planes are rotated onto each other first: the phase is still aligned
    g = plane_geometry(condition_means(*rings("orthogonal")))
    assert abs(g.psi) < 5
    # mirror: cos theta <= 0 -> NaN
    g = plane_geometry(condition_means(*rings("mirror")))
    assert np.isnan(g.psi) and g.psi_reason == "cos_theta<=0"
    # self-intersecting quadrilateral (bins 1 and 2 swapped in context 1) -> NaN
    m = condition_means(*rings("parallel"))
    m[[5, 6]] = m[[6, 5]]
    g = plane_geometry(m)
    assert np.isnan(g.psi) and g.psi_reason == "self_intersecting"


def test_alignment_index_and_principal_angles():
    m_disjoint = condition_means(*rings("disjoint"))
    m_same = condition_means(*rings("same"))
    assert alignment_index(m_disjoint, d=2) < 0.05
    assert alignment_index(m_same, d=2) > 0.85
    assert alignment_index(m_same, d=3) > 0.85
    assert np.all(principal_angles(m_disjoint) > 80)
    assert np.all(principal_angles(m_same) < 10)
    # AI is a ratio of variances: in [0, 1]
    for m in (m_disjoint, m_same, condition_means(*rings("orthogonal"))):
        for d in (2, 3):
            assert 0.0 <= alignment_index(m, d) <= 1.0 + 1e-9


def test_time_resolved_follows_a_rotation():
    # context 1's ring rotates from orthogonal (t=0) to parallel (t=last)
    rng = np.random.default_rng(1)
    q = _basis(1)
    ang = np.repeat(-np.pi + 2 * np.pi * (np.arange(16) + 0.5) / 16, 10)
    n_t = 5
    x = np.zeros((2 * len(ang), n_t, N_FEAT))
    for t, phi in enumerate(np.linspace(np.pi / 2, 0, n_t)):
        p0 = np.stack([np.cos(ang), np.sin(ang), np.ones_like(ang)], 1)
        # ring in the plane spanned by x and (cos phi * y + sin phi * z)
        p1 = np.stack([np.cos(ang), np.cos(phi) * np.sin(ang), np.sin(phi) * np.sin(ang) - 1.0], 1)
        for i, p in enumerate((p0, p1)):
            full = np.zeros((len(ang), N_FEAT))
            full[:, :3] = p
            x[i * len(ang) : (i + 1) * len(ang), t] = full @ q.T + 0.03 * rng.standard_normal(full.shape)
    f = np.concatenate([ang, ang])
    c = np.repeat([0, 1], len(ang))
    tr = time_resolved(x, f, c)
    theta = np.array(tr["theta"])
    assert theta.shape == (n_t,)
    assert np.allclose(theta, np.degrees(np.linspace(np.pi / 2, 0, n_t)), atol=4)
    assert tr["ai_d2"][-1] > tr["ai_d2"][0] + 0.3


def test_decoding_within_across_time_and_context():
    x, f, c = rings("disjoint", n_per=12, noise=0.15)
    fb = bin_feature(f)
    res = cross_context_decoding(x, fb, c, cv=3)
    assert res["within"] > 0.8
    assert res["cross"] < 0.5  # chance is 0.25: a decoder of one subspace cannot read the other
    x2, f2, c2 = rings("same", n_per=12, noise=0.15)
    res2 = cross_context_decoding(x2, bin_feature(f2), c2, cv=3)
    assert res2["cross"] > 0.6
    # cross-temporal: time 0 carries the code, time 1 is pure noise
    rng = np.random.default_rng(0)
    xt = np.stack([x, rng.standard_normal(x.shape)], axis=1)
    acc = cross_temporal_decoding(xt, fb, cv=3)
    assert acc.shape == (2, 2)
    assert acc[0, 0] > 0.8 and acc[1, 1] < 0.45 and acc[0, 1] < 0.45


def test_circular_statistics():
    rng = np.random.default_rng(0)
    conc = rng.vonmises(0.0, 8.0, 30)
    unif = rng.uniform(-np.pi, np.pi, 30)
    r = rayleigh_test(conc)
    assert r["p"] < 1e-3 and r["z"] == pytest.approx(30 * r["R"] ** 2)
    assert rayleigh_test(unif)["p"] > 0.05
    assert v_test(conc, 0.0)["p"] < 1e-3
    assert v_test(conc, np.pi)["p"] > 0.99  # concentrated, but at the opposite direction
    gs = group_stats(np.degrees(conc), np.array([np.nan, 10.0, -5.0, 3.0]))
    assert abs(gs["theta"]["circ_mean_deg"]) < 15 and gs["psi"]["n_nan"] == 1
    with pytest.raises(DataFormatError):
        rayleigh_test(np.array([np.nan, np.nan]))


def test_analyze_json_ready():
    x, f, c = rings("orthogonal", n_per=6)
    x3 = np.stack([x, x + 0.01], axis=1)
    res = analyze(x3, f, c, {"a": 0, "b": 1}, GeometrySettings(cv=3))
    text = json.dumps(jsonable(res), allow_nan=False)
    back = json.loads(text)
    assert set(back["at"]) == {"a", "b"}
    assert abs(back["at"]["a"]["theta"] - 90) < 3
    assert len(back["time_resolved"]["theta"]) == 2
    assert np.array(back["cross_temporal"]).shape == (2, 2)


def test_bad_inputs_raise_clear_errors():
    x, f, c = rings("parallel", n_per=3)
    with pytest.raises(DataFormatError, match="feature and context"):
        condition_means(x, f[:-1], c)
    with pytest.raises(DataFormatError, match="context must hold only 0 and 1"):
        condition_means(x, f, c + 1)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataFormatError, match="NaN"):
        condition_means(bad, f, c)
    with pytest.raises(DataFormatError, match="no trials"):
        keep = bin_feature(f) != 2
        condition_means(x[keep], f[keep], c[keep])
    with pytest.raises(DataFormatError):
        plane_geometry(np.zeros((8, 2)))
    with pytest.raises(ConfigError):
        GeometrySettings(n_bins=2)
    with pytest.raises(ConfigError):
        alignment_index(condition_means(x, f, c), d=4)
    with pytest.raises(ConfigError):
        analyze(x, f, c, {"late": 3}, GeometrySettings(decoding=False))


def test_cli_geometry(tmp_path):
    from neurospeech.cli import cli

    x, f, c = rings("orthogonal", n_per=6)
    x3 = np.stack([x, x], axis=1).astype(np.float32)
    path = tmp_path / "in.npz"
    np.savez(path, data=x3, feature=f, context=c)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        cli,
        [
            "analyze",
            "geometry",
            "--input",
            str(path),
            "--out",
            str(out),
            "--time",
            "pre=0",
            "--cv",
            "3",
            "--no-cross-temporal",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads((out / "geometry.json").read_text())
    assert abs(data["at"]["pre"]["theta"] - 90) < 3
    assert (out / "planes.png").stat().st_size > 10_000
    assert (out / "time_resolved.png").is_file()
    # a malformed file and a bad --time give real exit codes through the entry point
    np.savez(tmp_path / "bad.npz", data=x3)
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "neurospeech",
            "analyze",
            "geometry",
            "--input",
            str(tmp_path / "bad.npz"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 3 and "lacks arrays" in p.stderr
    res = CliRunner().invoke(
        cli, ["analyze", "geometry", "--input", str(path), "--out", str(out), "--time", "pre"]
    )
    assert isinstance(res.exception, ConfigError) and res.exception.exit_code == 2
    assert "NAME=INDEX" in str(res.exception)
