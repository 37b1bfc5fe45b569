"""models.ridge: the tuned backward ridge recovers a planted lagged map, widens its alpha grid at an edge, never
imports torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from neurospeech.models.ridge import RidgeDecoder

from neurospeech.errors import ConfigError, DataFormatError


def _planted(n=120, c=12, f=3, t=60, lags=4, seed=0, noise=0.05):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, t))
    w = rng.standard_normal((f, c, lags))
    y = np.zeros((n, f, t))
    for j in range(lags):  # y[t] = sum_j W_j x[t + j]
        y[:, :, : t - j] += np.einsum("fc,nct->nft", w[:, :, j], x[:, :, j:])
    y += noise * rng.standard_normal(y.shape)
    return x.astype(np.float32), y.astype(np.float32)


def test_ridge_recovers_a_planted_lagged_map():
    x, y = _planted()
    dec = RidgeDecoder(lags=4, lag_start=0, lag_step=1, n_components=None, row_step=1).fit(x[:100], y[:100])
    pred = dec.predict(x[100:])
    assert pred.shape == y[100:].shape and pred.dtype == np.float32
    r = np.corrcoef(pred.ravel(), y[100:].ravel())[0, 1]
    assert r > 0.95
    assert dec.alpha_ in set(dec.val_scores_)
    # too few lags cannot explain the map as well
    short = RidgeDecoder(lags=1, lag_start=0, lag_step=1, n_components=None, row_step=1).fit(x[:100], y[:100])
    r_short = np.corrcoef(short.predict(x[100:]).ravel(), y[100:].ravel())[0, 1]
    assert r_short < r - 0.1


def test_validation_windows_choose_alpha_and_the_edge_check_widens_the_grid():
    x, y = _planted(n=140, noise=0.05)
    # a grid whose best end is the low one: a nearly noiseless map wants almost no shrinkage
    dec = RidgeDecoder(lags=4, lag_start=0, lag_step=1, n_components=None, row_step=1,
                       alphas=[10.0, 100.0, 1000.0]).fit(x[:100], y[:100], x[100:120], y[100:120])
    assert dec.grid_extensions_ >= 1 and min(dec.val_scores_) < 10.0
    assert dec.alpha_ < 10.0
    r = np.corrcoef(dec.predict(x[120:]).ravel(), y[120:].ravel())[0, 1]
    assert r > 0.95
    # few short training windows of a very noisy map: shrinkage pays, the high end of the grid widens
    xn, yn = _planted(n=100, c=40, t=12, seed=0, noise=30.0)
    dn = RidgeDecoder(lags=4, lag_start=0, lag_step=1, n_components=None, row_step=1,
                      alphas=[1e-3, 1e-2]).fit(xn[:20], yn[:20], xn[20:], yn[20:])
    assert dn.grid_extensions_ >= 1 and dn.alpha_ > 1e-2
    assert dn.val_scores_[dn.alpha_] > dn.val_scores_[1e-3]
    with pytest.raises(ConfigError, match="both"):
        RidgeDecoder(lags=2).fit(x, y, x)
    with pytest.raises(DataFormatError, match="do not match"):
        RidgeDecoder(lags=2).fit(x, y, x[:, :3], y)


def test_response_window_lags():
    from neurospeech.models.ridge import lags_for_response

    assert lags_for_response(-0.2, 0.8, 120.0, 0.15) == (-42, 121)
    dec = RidgeDecoder.for_response(0.0, 0.05, 120.0, 0.15)
    assert dec.lag_start == -18 and dec.lags == 7
    with pytest.raises(ConfigError):
        lags_for_response(0.5, 0.1)


def test_ridge_on_noise_predicts_nothing():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((80, 6, 40)).astype(np.float32)
    y = rng.standard_normal((80, 2, 40)).astype(np.float32)
    dec = RidgeDecoder(lags=3, lag_start=0, lag_step=1, row_step=1).fit(x[:60], y[:60])
    r = np.corrcoef(dec.predict(x[60:]).ravel(), y[60:].ravel())[0, 1]
    assert abs(r) < 0.1


def test_ridge_input_errors():
    x, y = _planted(n=10)
    with pytest.raises(ConfigError):
        RidgeDecoder(lags=0)
    with pytest.raises(ConfigError):
        RidgeDecoder().predict(x)
    with pytest.raises(DataFormatError):
        RidgeDecoder().fit(x, y[:5])
    with pytest.raises(DataFormatError):
        RidgeDecoder().fit(x[0], y[0])
    bad = x.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(DataFormatError):
        RidgeDecoder().fit(bad, y)
    dec = RidgeDecoder(lags=2, lag_start=0, lag_step=1, row_step=1).fit(x, y)
    with pytest.raises(DataFormatError):
        dec.predict(x[:, :5])


def test_ridge_module_does_not_import_torch():
    code = "import sys, neurospeech.models.ridge; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
