"""The service with an encoder exported by the trainer's own exporter (torch only to build it).

A small untrained ``efficient``-style BrainEncoder with two subjects is exported with
:func:`neurospeech.models.export.export_onnx` (subject input kept); the bank holds its outputs on the offline
windows at planted word onsets. The service's streaming path (``decode_raw``: the pipeline and decoder the
server uses) must then rank every planted segment first, for the subject it is told to use.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np
import pytest
from _lazy import lazy
from _service_fixtures import SUBJECT, make_recording, offline_windows, segment_id

pytestmark = pytest.mark.torch  # tests/_lazy.py: collected without torch, run with it
if TYPE_CHECKING:
    import torch
else:
    torch = lazy("torch")


def test_trainer_export_decodes_planted_words(tmp_path):
    from neurospeech.models.encoder import BrainEncoder, normalise_positions, preset_config
    from neurospeech.models.export import export_onnx, read_contract
    from neurospeech.service.config import ServeSettings
    from neurospeech.service.filesource import FileMarker, decode_raw
    from neurospeech.service.model import EncoderModel

    from neurospeech.contract import ChannelSpec, ModelContract, SpeechSpec
    from neurospeech.preprocessing import (
        PreprocessingSpec,
        RobustScaler,
        WindowSpec,
        extract_windows,
        preprocess_continuous,
        preprocess_window,
    )
    from neurospeech.scoring import CandidateBank, normalise_candidates

    sfreq, n_ch, dur = 600.0, 12, 12.0
    data, names = make_recording(n_ch, sfreq, dur, seed=11)
    window, spec = WindowSpec(), PreprocessingSpec()
    cont, times = preprocess_continuous(data, sfreq, window, spec)
    raw_w, _ = extract_windows(cont, times, np.arange(1.0, dur - 3, 0.5), window)
    scaler = RobustScaler.fit(preprocess_window(raw_w, window))
    angles = np.linspace(0, 2 * np.pi, n_ch, endpoint=False)
    pos = np.stack([np.cos(angles), np.sin(angles)], 1)
    out_dim, pool = 16, 7
    contract = ModelContract(
        model_id="test-efficient-untrained",
        preset="efficient",
        channels=[ChannelSpec(n, "eeg", "V", (float(p[0]), float(p[1]))) for n, p in zip(names, pos)],
        sfreq_raw=sfreq,
        window=window,
        preprocessing=spec,
        scalers={"other": scaler.to_dict(), SUBJECT: scaler.to_dict()},
        subjects=["other", SUBJECT],
        speech=SpeechSpec("mel", out_dim),
        output={"name": "latent", "shape": [out_dim, window.n_times // pool]},
        inputs={"brain": "brain", "subject": "subject_index"},  # the exporter's input names
    )
    torch.manual_seed(0)
    cfg = preset_config("efficient", n_virtual=16, hidden=16, n_blocks=2, head_hidden=32)
    net = BrainEncoder(cfg, normalise_positions(pos), 2, out_dim, pool).eval()
    info = export_onnx(net, contract, tmp_path / "model.onnx")
    assert read_contract(tmp_path / "model.onnx").model_id == contract.model_id
    model = EncoderModel(tmp_path / "model.onnx", expected_sha256=info["sha256"])
    assert model.subject_input is not None and model.output_shape == (out_dim, window.n_times // pool)

    anchors = np.arange(1.0, dur - 3.0, 0.8)
    x, valid = offline_windows(data, sfreq, model.contract, anchors)
    anchors = anchors[valid]
    z = model.encode(x, model.subject_index(SUBJECT))
    rng = np.random.default_rng(1)
    distract = rng.standard_normal((100, *z.shape[1:])).astype(np.float32)
    ids = [segment_id("stimuli/t.wav", 0.5 * k) for k in range(len(anchors))]
    n_all = len(anchors) + 100
    CandidateBank(
        features=normalise_candidates(np.concatenate([z, distract])),
        ids=np.array(ids + [f"d{k}" for k in range(100)]),
        words=np.array([f"w{k}" for k in range(n_all)]),
        sounds=np.array(["stimuli/t.wav"] * n_all),
        sentences=np.array(["s"] * n_all),
        sound_times=np.zeros(n_all),
        header={"model_sha256": hashlib.sha256((tmp_path / "model.onnx").read_bytes()).hexdigest(),
                "output_shape": list(z.shape[1:])},
    ).save(tmp_path / "bank.npz")

    settings = ServeSettings(model=tmp_path / "model.onnx", bank=tmp_path / "bank.npz", subject=SUBJECT,
                             topk=3)
    markers = [FileMarker(float(a), {"segment_id": i, "word": "w"}) for a, i in zip(anchors, ids)]
    heads = list(decode_raw(data.astype(np.float32), sfreq, names, settings, markers, chunk_seconds=0.37))
    words = [h for h in heads if h["kind"] == "word"]
    assert len(words) == len(anchors)
    assert all(h["topk"][0]["id"] == h["truth"]["segment_id"] for h in words)
    assert sum(h["kind"] == "sliding" for h in heads) > 20
