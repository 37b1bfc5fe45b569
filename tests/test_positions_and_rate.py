"""Sensor positions through public MNE API, and the training rate of a recording (issue 17 §3).

Positions: the encoder's spatial attention places channels by their 2-D positions. They come from MNE's
public layout code (:func:`neurospeech.data.segments.sensor_positions`); where the private
``mne.channels.layout._find_topomap_coords`` (the old source) gave positions, the new ones are the same up to
one scale and shift, so what the encoder sees (min-max normalised positions) is unchanged. Where it failed
(Neuromag triplets and KIT's unplaced channels overlap), the new code places every located sensor, and a
channel without a location is a WARNING, not a silent circle.

Rate: ``raw_sfreq`` is the contract's ``sfreq_raw``; an unreadable sidecar is a DataFormatError naming the
file, never a rate of 0 Hz that makes the service refuse every stream.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mne
import mne_bids
import numpy as np
import pytest
from neurospeech.models._data import raw_sfreq
from neurospeech.tools.simulate._physics import make_info

from neurospeech.data import Recording
from neurospeech.data.formats._base import CorpusRecording, bids_name
from neurospeech.data.segments import channel_specs, sensor_positions
from neurospeech.errors import DataFormatError

REAL = Path(__file__).resolve().parent / "data" / "real-formats"


def _data_info(info: mne.Info) -> mne.Info:
    """The data channels, as the readers hand them to channel_specs."""
    return mne.pick_info(info, mne.pick_types(info, meg=True, eeg=True, ref_meg=False, exclude=[]))


def _real(kind: str) -> mne.Info:
    with mne.utils.use_log_level("error"):
        if kind == "kit-dig":
            k = REAL / "KIT"
            raw = mne.io.read_raw_kit(k / "MQKIT_125_2sec.con", mrk=k / "MQKIT_125.mrk", elp=k / "MQKIT_125.elp",
                                      hsp=k / "MQKIT_125.hsp")
        elif kind == "kit":
            raw = mne.io.read_raw_kit(REAL / "KIT" / "test_as-raw.con")
        elif kind == "ctf":
            raw = mne.io.read_raw_ctf(REAL / "CTF" / "somMDYO-18av.ds")
        else:
            raw = mne.io.read_raw_brainvision(REAL / "Brainvision" / "test_NO.vhdr")
        return _data_info(raw.info)


def _old_positions(info: mne.Info) -> np.ndarray | None:
    """The old source (private MNE); None when it failed, as the old code's ``except Exception`` did."""
    from mne.channels.layout import _find_topomap_coords  # private: computed here only to compare

    try:
        with mne.utils.use_log_level("error"):
            return np.asarray(_find_topomap_coords(info, picks=list(range(len(info["ch_names"])))))
    except (ValueError, RuntimeError):
        return None


def _normalised(p: np.ndarray) -> np.ndarray:
    return (p - p.min(axis=0)) / (p.max(axis=0) - p.min(axis=0))


SYSTEMS = ["ctf275", "ctf151", "biosemi64", "easycap-M10", "kit-dig", "ctf"]


@pytest.mark.parametrize("system", SYSTEMS)
def test_positions_match_the_old_private_function_where_it_worked(system):
    info = _data_info(make_info(system, 600.0)) if system not in ("kit-dig", "ctf") else _real(system)
    old = _old_positions(info)
    assert old is not None, f"the old function failed on {system}"
    new = sensor_positions(info)
    assert list(new) == info["ch_names"]
    xy = np.array([new[n] for n in info["ch_names"]])
    # same up to one scale and shift: new = a * old + b
    design = np.c_[old.reshape(-1), np.tile([1.0, 0.0], len(old)), np.tile([0.0, 1.0], len(old))]
    coef, *_ = np.linalg.lstsq(design, xy.reshape(-1), rcond=None)
    assert coef[0] > 0
    np.testing.assert_allclose(design @ coef, xy.reshape(-1), atol=1e-7)
    # so the encoder's input (min-max normalised positions) is unchanged
    np.testing.assert_allclose(_normalised(xy), _normalised(old), atol=1e-7)


def test_neuromag_triplets_share_one_position_where_the_old_function_failed():
    info = _data_info(make_info("neuromag306", 600.0))
    assert _old_positions(info) is None  # overlapping sensors: the old code fell back to a circle
    pos = sensor_positions(info)
    assert len(pos) == 306
    # a magnetometer and its two gradiometers (MEG0111, MEG0112, MEG0113) sit at one place
    assert pos["MEG 0111"] == pos["MEG 0112"] == pos["MEG 0113"] != pos["MEG 0121"]
    assert len(set(pos.values())) == 102


def test_channels_without_location_are_a_warning(caplog):
    info = _real("kit")  # 32 channels of this KIT file carry no location
    with caplog.at_level(logging.WARNING, logger="neurospeech.data.segments"):
        specs = channel_specs(info)
    unplaced = [c.name for c in specs if c.pos is None]
    placed = [c for c in specs if c.pos is not None]
    assert 0 < len(unplaced) < len(specs) and len(placed) > 100
    assert f"{len(unplaced)} data channel(s) have no sensor location" in caplog.text
    assert unplaced[0] in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="neurospeech.data.segments"):
        specs = channel_specs(_real("brainvision"))  # EEG without a montage
    assert all(c.pos is None for c in specs)
    assert "65 data channel(s) have no sensor location" in caplog.text and "set a montage" in caplog.text


# ------------------------------------------------------------------------------------------------ raw_sfreq
def _bids_recording(tmp_path: Path, sidecar: object | None) -> Recording:
    bp = mne_bids.BIDSPath(subject="01", task="listen", datatype="meg", suffix="meg", extension=".fif",
                           root=tmp_path)
    side = Path(bp.copy().update(extension=".json").fpath)
    side.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(sidecar, str):
        side.write_text(sidecar)
    elif sidecar is not None:
        side.write_text(json.dumps(sidecar))
    return Recording(tmp_path, "01", None, "listen", None, "meg", bp)


def test_raw_sfreq_reads_the_sidecar(tmp_path):
    assert raw_sfreq(_bids_recording(tmp_path, {"SamplingFrequency": 1200})) == 1200.0


@pytest.mark.parametrize("sidecar, reason", [
    ('{"SamplingFrequency": 12', "cannot read the sampling rate"),
    ({"PowerLineFrequency": 50}, "has no SamplingFrequency"),
    ({"SamplingFrequency": 0}, "SamplingFrequency 0"),
    ({"SamplingFrequency": "fast"}, "SamplingFrequency 'fast'"),
])
def test_raw_sfreq_refuses_a_bad_sidecar_naming_it(tmp_path, sidecar, reason):
    rec = _bids_recording(tmp_path, sidecar)
    with pytest.raises(DataFormatError, match=reason) as exc:
        raw_sfreq(rec)
    assert "sub-01_task-listen_meg.json" in str(exc.value)


def test_raw_sfreq_of_a_corpus_without_sidecar_asks_its_reader(tmp_path):
    raw = mne.io.RawArray(np.zeros((2, 100)), mne.create_info(["a", "b"], 250.0, "eeg"), verbose="error")
    rec = CorpusRecording(tmp_path, "01", None, "x", None, "eeg", bids_name(tmp_path, "01", "x", "eeg"),
                          raw_loader=lambda: raw)
    assert raw_sfreq(rec) == 250.0

    def unreadable() -> mne.io.BaseRaw:
        raise DataFormatError(f"cannot read {tmp_path / 'x.h5'}: truncated")

    rec = CorpusRecording(tmp_path, "01", None, "x", None, "eeg", bids_name(tmp_path, "01", "x", "eeg"),
                          raw_loader=unreadable)
    with pytest.raises(DataFormatError, match=r"x\.h5"):
        raw_sfreq(rec)


# ------------------------------------------------------------------------------------------------ encoder
@pytest.mark.torch
def test_encoder_positions_warn_instead_of_a_silent_circle(caplog):
    from neurospeech.models.train import _positions

    from neurospeech.contract import ChannelSpec

    none = [ChannelSpec(f"c{i}", "eeg", "V", None) for i in range(4)]
    with caplog.at_level(logging.WARNING, logger="neurospeech.models.train"):
        pos = _positions(none)
    assert np.isfinite(pos).all() and "none of the 4 channels has a sensor position" in caplog.text
    caplog.clear()
    some = [ChannelSpec("a", "eeg", "V", (0.0, 0.0)), ChannelSpec("b", "eeg", "V", (1.0, 1.0)), none[0]]
    with caplog.at_level(logging.WARNING, logger="neurospeech.models.train"):
        pos = _positions(some)
    assert np.isnan(pos[2]).all() and "1 of 3 channels have no sensor position" in caplog.text
