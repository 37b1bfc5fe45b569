"""Noise limits with the paper's decoder (one-vs-one linear SVM) on the place-cell generator.

Slow (a few minutes on 2 cores): the fast suite checks the same criteria with shrinkage LDA. With the
scikit-learn default C = 1 the SVM trained on correlated trials is still improving between N = 100 and 500 at
100 trials per bin (RMS ratio ~0.87-0.89, see the benchmark figures in the report); with stronger
regularisation (C = 0.05) it reaches its asymptote like LDA does.
"""

from __future__ import annotations

import pytest
from neurospeech.tools.analyses.noise_limits import NoiseLimitSettings, run_noise_limits
from neurospeech.tools.analyses.place_cells import PlaceCellSettings, simulate_place_cells

pytestmark = pytest.mark.slow


def test_svm_limiting_correlations_saturate_real_error():
    data = simulate_place_cells(PlaceCellSettings(s_d=4.0, seed=1))
    s = NoiseLimitSettings(
        sizes=(10, 25, 50, 100, 250, 500),
        n_subsets=2,
        decoder="svm",
        svm_c=0.05,
        bin_width=data.bin_width,
        unit="cm",
        n_boot=100,
        n_jobs=1,
        progress=False,
        geometry=False,
        seed=1,
    )
    res = run_noise_limits(data.X, data.y, data.direction, s)
    s_d = data.settings.s_d
    assert res.rms_at("unshuffled", 500) / res.rms_at("unshuffled", 100) > 0.9
    assert 0.8 * s_d <= res.rms_at("unshuffled", 500) <= 1.5 * s_d
    assert res.rms_at("shuffled", 500) / res.rms_at("shuffled", 100) < 0.3
    assert res.fits["shuffled"].n_star > 10 * res.fits["unshuffled"].n_star
