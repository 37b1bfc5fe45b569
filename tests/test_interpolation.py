"""Bad-channel interpolation per channel type (service/interpolation.py) through the window quality gate."""

from __future__ import annotations

import logging

import mne
import numpy as np
import pytest
from neurospeech.service.interpolation import ChannelInterpolator
from neurospeech.service.quality import QualitySettings, assess_window

from neurospeech.contract import ChannelSpec
from neurospeech.preprocessing import RobustScaler, WindowSpec, preprocess_window

WIN = WindowSpec()
INTERP = QualitySettings(policy="interpolate", max_bad_fraction=0.25)


def _neuromag_channels() -> list[ChannelSpec]:
    """The 306 Neuromag channels, each triplet (mag xxx1, grads xxx2 / xxx3) at one shared 2-D position, as the
    project's contracts place them (neurospeech.data.segments.sensor_positions)."""
    lay = mne.channels.read_layout("Vectorview-all")
    centre = {n: lay.pos[i, :2] + lay.pos[i, 2:] / 2 for i, n in enumerate(lay.names)}
    out = []
    for n in lay.names:
        trip = n[:-1]
        xy = np.mean([centre[trip + k] for k in "123"], axis=0)
        typ = "mag" if n.endswith("1") else "grad"
        out.append(ChannelSpec(n, typ, "T" if typ == "mag" else "T/m", (float(xy[0]), float(xy[1]))))
    return out


def _scaler(n: int) -> RobustScaler:
    return RobustScaler(np.zeros(n), np.ones(n))


def test_bad_magnetometer_is_rebuilt_from_magnetometers_only():
    chans = _neuromag_channels()
    n = len(chans)
    t = np.arange(WIN.n_window) / WIN.sfreq
    # every magnetometer carries one waveform, each gradiometer orientation another: a rebuilt channel shows
    # which kind of channel it came from
    wave = {"1": np.sin(2 * np.pi * 3 * t), "2": 5 * np.cos(2 * np.pi * 7 * t), "3": -4 * np.sin(2 * np.pi * 11 * t)}
    w = np.stack([wave[c.name[-1]] for c in chans]).astype(np.float32)
    true = preprocess_window(w, WIN)
    bad_mag = [c.name for c in chans].index("MEG 0111")
    bad_grad = [c.name for c in chans].index("MEG 1442")
    w[bad_mag] = 0.0  # flat
    w[bad_grad] = 0.0
    interp = ChannelInterpolator(chans, INTERP.n_neighbours)
    x, flags, bad = assess_window(w, WIN, _scaler(n), 20.0, INTERP, [c.name for c in chans], interp)
    assert x is not None and set(bad) == {"MEG 0111", "MEG 1442"}
    assert "interpolated:MEG 0111,MEG 1442" in flags and not any(f.startswith("zeroed") for f in flags)
    np.testing.assert_allclose(x[bad_mag], true[bad_mag], atol=1e-5)
    np.testing.assert_allclose(x[bad_grad], true[bad_grad], atol=1e-5)
    # the operator reads only magnetometers for the magnetometer (the 2-D neighbours at distance 0 are its
    # own triplet's gradiometers), only xxx2 gradiometers for the xxx2 gradiometer
    op = interp.operator(np.isin(np.arange(n), [bad_mag, bad_grad]))
    for row, suffix in zip(op.rows, ("1", "2"), strict=True):
        used = op.cols[op.weights[list(op.rows).index(row)] != 0]
        assert len(used) == INTERP.n_neighbours
        assert all(chans[j].name.endswith(suffix) for j in used), [chans[j].name for j in used]


def _eeg_channels(with_loc: bool) -> tuple[list[ChannelSpec], np.ndarray]:
    montage = mne.channels.make_standard_montage("biosemi64")
    info = mne.create_info(montage.ch_names, 100.0, "eeg")
    info.set_montage(montage)
    lay = mne.channels.make_eeg_layout(info, radius=0.5, width=0.0, height=0.0, exclude=[])
    xyz = np.array([ch["loc"][:3] for ch in info["chs"]])
    chans = [
        ChannelSpec(n, "eeg", "V", (float(lay.pos[i, 0]), float(lay.pos[i, 1])),
                    (float(xyz[i, 0]), float(xyz[i, 1]), float(xyz[i, 2])) if with_loc else None)
        for i, n in enumerate(montage.ch_names)
    ]
    return chans, xyz


def _smooth_field(xyz: np.ndarray) -> np.ndarray:
    """A smooth scalp potential over time: two spatial patterns (low-order in position), shape (C, n_window)."""
    u = xyz / np.linalg.norm(xyz, axis=1, keepdims=True)
    t = np.arange(WIN.n_window) / WIN.sfreq
    a = 1.0 + u[:, 0] - 0.5 * u[:, 1] + 0.8 * u[:, 2] ** 2
    b = u[:, 0] * u[:, 1] + 0.5 * u[:, 2]
    return np.outer(a, np.sin(2 * np.pi * 4 * t)) + np.outer(b, np.cos(2 * np.pi * 9 * t))


@pytest.mark.parametrize("with_loc", [True, False], ids=["splines-3d", "neighbours-2d"])
def test_eeg_channel_rebuilt_close_to_the_true_signal(with_loc, caplog):
    chans, xyz = _eeg_channels(with_loc)
    names = [c.name for c in chans]
    w = _smooth_field(xyz).astype(np.float32)
    true = preprocess_window(w, WIN)
    k = names.index("C3")
    w[k] = 0.0
    with caplog.at_level(logging.INFO, logger="neurospeech.service.interpolation"):
        interp = ChannelInterpolator(chans, INTERP.n_neighbours)
    assert interp.spline == with_loc
    x, flags, _ = assess_window(w, WIN, _scaler(len(chans)), 20.0, INTERP, names, interp)
    assert x is not None and "interpolated:C3" in flags
    err = np.linalg.norm(x[k] - true[k]) / np.linalg.norm(true[k])
    # zeroing it (the old behaviour without positions) is off by 100 %
    assert err < (0.05 if with_loc else 0.2), err
    if with_loc:  # the rebuilt channel comes from many EEG channels, weighted by MNE's splines
        op = interp.operator(np.array([n == "C3" for n in names]))
        assert len(op.cols) > INTERP.n_neighbours


def test_operator_cached_per_bad_set():
    chans, xyz = _eeg_channels(True)
    names = [c.name for c in chans]
    interp = ChannelInterpolator(chans, 4, cache_size=2)
    w = _smooth_field(xyz).astype(np.float32)
    for dead in (["C3"], ["C3"], ["Cz", "P4"], ["C3"], ["O1"], ["Cz", "P4"]):
        ww = w.copy()
        ww[[names.index(d) for d in dead]] = 0.0
        _, flags, _ = assess_window(ww, WIN, _scaler(len(chans)), 20.0, INTERP, names, interp)
        assert "interpolated:" + ",".join(sorted(dead, key=names.index)) in flags
    # C3 (miss), C3 (hit), Cz+P4 (miss), C3 (hit), O1 (miss, evicts Cz+P4), Cz+P4 (miss)
    assert interp.misses == 4


def test_channel_without_position_or_same_type_neighbour_is_zeroed_not_interpolated():
    rng = np.random.default_rng(0)
    chans = [ChannelSpec(f"E{i}", "eeg", "V", (float(np.cos(i)), float(np.sin(i)))) for i in range(10)]
    chans[3] = ChannelSpec("E3", "eeg", "V", None)  # no position
    chans.append(ChannelSpec("EOG1", "eog", "V", (0.0, 1.2)))  # the only channel of its type
    names = [c.name for c in chans]
    w = rng.standard_normal((len(chans), WIN.n_window)).astype(np.float32)
    w[[3, 10, 5]] = 0.0
    q = QualitySettings(policy="interpolate", max_bad_fraction=0.5)
    x, flags, bad = assess_window(w, WIN, _scaler(len(chans)), 20.0, q, names, ChannelInterpolator(chans, 4))
    assert x is not None and set(bad) == {"E3", "E5", "EOG1"}
    assert "interpolated:E5" in flags and "zeroed:E3,EOG1" in flags, flags
    assert np.all(x[[3, 10]] == 0.0) and np.any(x[5] != 0.0)
    # no interpolator at all: every bad channel is zeroed, none claimed interpolated
    x, flags, _ = assess_window(w, WIN, _scaler(len(chans)), 20.0, q, names, None)
    assert "zeroed:E3,E5,EOG1" in flags and not any(f.startswith("interpolated") for f in flags)


def test_contract_channel_loc_is_additive():
    c = ChannelSpec("C3", "eeg", "V", (0.1, 0.2))
    assert "loc" not in c.to_dict()  # contracts without 3-D locations are unchanged (same sha256)
    c3 = ChannelSpec("C3", "eeg", "V", (0.1, 0.2), (0.01, 0.02, 0.03))
    assert ChannelSpec.from_dict(c3.to_dict()) == c3 and ChannelSpec.from_dict(c.to_dict()) == c


def test_contract_channel_specs_carry_eeg_locations_so_the_service_can_use_splines():
    """channel_specs (what export writes into the contract) keeps EEG electrodes' 3-D locations (and only
    theirs: MEG would also need coil orientations), so a live EEG model interpolates with MNE's splines."""
    from neurospeech.data.segments import channel_specs

    eeg = mne.create_info(mne.channels.make_standard_montage("biosemi64").ch_names, 200.0, "eeg")
    eeg.set_montage("biosemi64")
    specs = channel_specs(eeg)
    assert all(s.loc is not None for s in specs)
    np.testing.assert_allclose(specs[5].loc, eeg["chs"][5]["loc"][:3])
    assert ChannelSpec.from_dict(specs[5].to_dict()).loc == specs[5].loc
    bare = mne.create_info(["A", "B"], 200.0, "eeg")  # no montage: no location, none invented
    assert all(s.loc is None for s in channel_specs(bare))
    meg = mne.create_info(["MEG 0111"], 200.0, "mag")
    assert channel_specs(meg)[0].loc is None
