"""Per-session scaling (service/rescale.py): the estimator, the switch, the settings, a 3x gain absorbed."""

from __future__ import annotations

import numpy as np
import pytest
from _service_fixtures import SUBJECT, Player, build_artifacts, run_session, serve_settings
from neurospeech.service.config import ServeSettings
from neurospeech.service.filesource import decode_raw
from neurospeech.service.rescale import SessionRescaler, attach_rescaler, session_scaler

from neurospeech.errors import ConfigError
from neurospeech.preprocessing import RobustScaler, WindowSpec, preprocess_continuous, preprocess_window

WIN = WindowSpec()


def _cont(n_ch=6, seconds=140.0, seed=0):
    rng = np.random.default_rng(seed)
    n = round(seconds * WIN.sfreq)
    x = np.cumsum(rng.standard_normal((n_ch, n)), axis=1) * 0.05 + rng.standard_normal((n_ch, n))
    return (x * np.geomspace(1e-6, 1e-4, n_ch)[:, None]).astype(np.float32)


def test_session_scaler_is_the_trainers_statistic():
    """Windows every 0.5 s, baselined, at most 200 drawn with the trainer's seed: RobustScaler.fit's result."""
    cont = _cont()
    training = RobustScaler(np.zeros(6), np.ones(6))
    pieces = [cont[:, :9000], cont[:, 9000:]]  # two segments: no window across them
    got, info = session_scaler(pieces, WIN, training)
    starts = [(k, s) for k, p in enumerate(pieces) for s in range(0, p.shape[1] - WIN.n_window + 1, 60)]
    assert len(starts) > 200 and info["n_windows"] == 200
    windows = np.stack([pieces[k][:, s : s + WIN.n_window] for k, s in starts])
    ref = RobustScaler.fit(preprocess_window(windows, WIN), max_windows=200)
    np.testing.assert_array_equal(got.center, ref.center)
    np.testing.assert_array_equal(got.scale, ref.scale)
    assert info["gain_vs_training"] == pytest.approx(float(np.median(ref.scale)))


def test_rescaler_switches_once_with_exactly_n_seconds_skipping_bad_samples():
    cont = _cont(seconds=12.0)
    cont[2] = 0.0  # flat in this session: keeps the training statistics
    training = RobustScaler(np.full(6, 0.5), np.full(6, 2e-5))
    r = SessionRescaler(training, WIN, 8.0, [f"c{i}" for i in range(6)])
    bad_at = slice(300, 330)
    dirty = cont.copy()
    dirty[:, bad_at] = 1e3  # computed from non-finite input: must not reach the fit
    count = 0
    for i in range(0, cont.shape[1], 37):
        y = dirty[:, i : i + 37]
        bad = np.zeros((y.shape[1], 6), dtype=bool)
        m = np.arange(i, i + y.shape[1])
        bad[(m >= bad_at.start) & (m < bad_at.stop), 0] = True
        count += y.shape[1]
        r.feed(y, bad if bad.any() else None, 0, count)
        if r.done:
            break
    assert r.done and r.switch_index == count
    # the clean pieces on either side of the bad stretch, 8 s of clean data in all (the end of the chunk cut)
    need = round(8.0 * WIN.sfreq)
    clean = [cont[:, : bad_at.start], cont[:, bad_at.stop : bad_at.stop + need - bad_at.start]]
    ref, _ = session_scaler(clean, WIN, training)
    np.testing.assert_array_equal(r.session.center, ref.center)
    np.testing.assert_array_equal(r.session.scale, ref.scale)
    assert r.session.scale[2] == 2e-5 and r.session.center[2] == 0.5 and r.info["kept_training"] == [2]
    assert np.all(np.abs(r.session.center[[0, 1, 3]]) < 1e-2)  # the 1e3 values would have shifted medians
    # windows ending before the switch keep the training scaler (and say so), the others get the session's
    sc, pending = r.scaler_for(count - WIN.n_window)
    assert sc is training and pending
    sc, pending = r.scaler_for(count - WIN.n_window + 1)
    assert sc is r.session and not pending
    st = r.status()
    assert st["source"] == "session" and st["collected_s"] == pytest.approx(8.0)


class _Pipe:
    def __init__(self):
        self.scaler = RobustScaler(np.zeros(3), np.ones(3))
        self.names = ["a", "b", "c"]
        self.rescaler = None


class _Contract:
    window = WIN

    def __init__(self, training):
        self.training = training


def test_rescale_settings_default_on_for_adapted_subjects_and_bounded():
    adapted = _Contract({"adapted_subjects": {"new": {"kind": "calibration"}}})
    s = ServeSettings(stream_name="x")
    assert s.rescale_seconds is None
    assert attach_rescaler(_Pipe(), s, adapted, "new").seconds == 60.0  # adapted: on by default
    assert attach_rescaler(_Pipe(), s, adapted, "01") is None  # a training subject: off
    assert attach_rescaler(_Pipe(), s, _Contract({}), "01") is None
    assert attach_rescaler(_Pipe(), s.replace(rescale_seconds=0.0), adapted, "new") is None  # 0: off
    p = _Pipe()
    assert attach_rescaler(p, s.replace(rescale_seconds=20.0), _Contract({}), "01") is p.rescaler
    with pytest.raises(ConfigError, match="shorter than one model window"):
        attach_rescaler(_Pipe(), s.replace(rescale_seconds=1.0), _Contract({}), "01")
    for bad in (-1.0, 601.0):
        with pytest.raises(ConfigError, match="rescale_seconds"):
            ServeSettings(stream_name="x", rescale_seconds=bad)


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    return build_artifacts(tmp_path_factory.mktemp("art"), duration=30.0, n_distractors=50)


def _decode(art, gain, **kw):
    s = ServeSettings(model=art.model, bank=art.bank, hop=0.5, topk=5, **kw)
    out = list(decode_raw((art.data * gain).astype(np.float32), art.sfreq, art.names, s, workers=0))
    return {round(h["t_window_start"], 4): h for h in out if h["kind"] == "sliding"}


def test_three_times_the_gain_is_absorbed_once_rescaled(art):
    one = _decode(art, 1.0, rescale_seconds=10.0)
    three = _decode(art, 3.0, rescale_seconds=10.0)
    assert one.keys() == three.keys()
    after = [t for t, h in one.items() if "scaler:training" not in h["flags"]]
    before = [t for t, h in one.items() if "scaler:training" in h["flags"]]
    assert before and len(after) > 20
    assert all(t < min(after) for t in before)
    for t in after:
        a, b = one[t], three[t]
        assert "scaler:training" not in b["flags"]
        assert [c["id"] for c in a["topk"]] == [c["id"] for c in b["topk"]]
        np.testing.assert_allclose([c["score"] for c in b["topk"]], [c["score"] for c in a["topk"]], rtol=1e-3)
    # without rescaling the 3x stream is scaled with the training session's IQRs: the scores are ~3x off
    plain1, plain3 = _decode(art, 1.0), _decode(art, 3.0)
    ratio = np.median([plain3[t]["topk"][0]["score"] / plain1[t]["topk"][0]["score"] for t in after])
    assert ratio > 2.0, ratio
    assert not any("scaler:training" in h["flags"] for h in plain3.values())


@pytest.mark.integration
def test_live_stream_at_three_times_the_gain_switches_to_the_session_scaler(art):
    """Real LSL outlet -> serve on loopback: status reports the session scaler and its gain vs training, which
    is 3x what the same first seconds give at 1x (the live path fits exactly the first N s)."""
    seconds = 5.0
    data = art.data[:, : round(10.0 * art.sfreq)]
    player = Player(data, art.sfreq, art.names, scale=3.0, stamp_on_schedule=True).start()
    msgs, stats = run_session(serve_settings(art, player, rescale_seconds=seconds, markers=False),
                              timeout=30.0, player=player)  # asserts exit code 0 and no player error
    sc = stats["scaler"]
    assert sc["source"] == "session" and sc["seconds"] == seconds and sc["collected_s"] == pytest.approx(seconds)
    cont, _ = preprocess_continuous(data.astype(np.float32), art.sfreq, WIN)
    training = art.contract.scaler(SUBJECT)
    _, info1 = session_scaler([cont[:, : round(seconds * WIN.sfreq)]], WIN, training)
    assert sc["gain_vs_training"] == pytest.approx(3.0 * info1["gain_vs_training"], rel=1e-3)
    statuses = [m for m in msgs if m.kind == "status"]
    assert statuses[0]["scaler"]["source"] == "training" and statuses[-1]["scaler"]["source"] == "session"
    dec = [m for m in msgs if m.kind == "decode"]
    flagged = [("scaler:training" in m["flags"]) for m in dec]
    assert True in flagged and False in flagged
    assert flagged == sorted(flagged, reverse=True)  # training scaler first, then the session's for good


@pytest.mark.torch
@pytest.mark.parametrize("record", ["adaptation", "zero_calibration", None])
def test_export_marks_adapted_subjects_in_the_contract(record):
    """The contract says which subject was fitted after training (the service's default for rescaling)."""
    from neurospeech.models.export import build_contract  # imports torch

    sc = {"center": [0.0, 0.0], "scale": [1.0, 1.0]}
    meta = {
        "subjects": ["01", "new"], "scalers": {"01": sc, "new": sc},
        "training": {"model_sha256": "0" * 64}, "data": "d", "config": {"preset": "p", "loss": "clip"},
        "encoder": {}, "representation": {"time_pool": 1}, "output_shape": [4, WIN.n_times],
        "window": WIN.to_dict(), "channels": [{"name": f"c{i}", "type": "eeg", "unit": "V"} for i in range(2)],
        "sfreq_raw": 600.0, "preprocessing": {}, "speech": {"kind": "mel", "dim": 4},
    }
    if record:
        meta[record] = {"subject": "new"}
    kind = {"adaptation": "calibration", "zero_calibration": "zero_calibration"}.get(record or "")
    c = build_contract(meta, subject="new")
    assert c.training.get("adapted_subjects") == ({"new": {"kind": kind}} if record else None)
    assert "adapted_subjects" not in build_contract(meta, subject="01").training  # a training subject: not
    s = ServeSettings(stream_name="x")
    assert (attach_rescaler(_Pipe(), s, c, "new") is not None) == bool(record)
