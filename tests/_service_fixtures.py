"""Artifacts for the service tests: a small real ONNX encoder (built with onnx.helper), its contract, a
recording, and a candidate bank in which the windows at known anchors decode to known candidates.

The encoder is a fixed random linear map ``Z = W @ X`` (``(1, C, 343) -> (1, F, 343)``). The bank holds, for
each planted anchor, the encoder output of the window that the *offline* path cuts there (normalised), plus
random distractors. A live decision on the same anchor therefore has that candidate as top-1 exactly when the
online window equals the offline one -- which is what the end-to-end tests assert.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from _player import Player  # re-exported: the player lives in a light module its child process imports
from onnx import TensorProto, helper

from neurospeech.contract import METADATA_KEY, ChannelSpec, ModelContract, SpeechSpec
from neurospeech.preprocessing import (
    PreprocessingSpec,
    RobustScaler,
    WindowSpec,
    extract_windows,
    preprocess_continuous,
    preprocess_window,
)
from neurospeech.scoring import CandidateBank, normalise_candidates

SUBJECT = "sim01"


def segment_id(sound: str, sound_time: float) -> str:
    key = f"{sound}@{round(float(sound_time) * 1000)}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


@dataclass
class Artifacts:
    model: Path
    bank: Path
    contract: ModelContract
    data: np.ndarray  # (C, n) SI units
    sfreq: float
    names: list[str]
    anchors: np.ndarray  # seconds from the first sample
    ids: list[str]
    words: list[str]
    sounds: list[str] = field(default_factory=list)
    sound_times: list[float] = field(default_factory=list)


def make_recording(n_channels: int = 12, sfreq: float = 600.0, duration: float = 40.0, seed: int = 0):
    """Coloured noise (EEG-like amplitudes, volts), different on every channel. Returns data (C, n), names."""
    rng = np.random.default_rng(seed)
    n = round(duration * sfreq)
    white = rng.standard_normal((n_channels, n))
    # 1/f-ish: cumulative sum with leak, plus white noise
    data = np.empty_like(white)
    acc = np.zeros(n_channels)
    for i in range(0, n, 4096):
        blk = white[:, i : i + 4096]
        out = np.empty_like(blk)
        for j in range(blk.shape[1]):
            acc = 0.98 * acc + blk[:, j]
            out[:, j] = acc
        data[:, i : i + 4096] = out
    data = (data + 2.0 * white) * 2e-6
    names = [f"EEG{i + 1:03d}" for i in range(n_channels)]
    return data, names


def make_contract(
    names, sfreq, scaler: RobustScaler, n_features: int, window=None, spec=None
) -> ModelContract:
    window = window or WindowSpec()
    spec = spec or PreprocessingSpec()
    angles = np.linspace(0, 2 * np.pi, len(names), endpoint=False)
    return ModelContract(
        model_id="test-linear",
        preset="test",
        channels=[
            ChannelSpec(n, "eeg", "V", (float(np.cos(a)), float(np.sin(a)))) for n, a in zip(names, angles)
        ],
        sfreq_raw=float(sfreq),
        window=window,
        preprocessing=spec,
        scalers={SUBJECT: scaler.to_dict()},
        subjects=[SUBJECT],
        speech=SpeechSpec("mel", n_features),
        output={"name": "latent", "shape": [n_features, window.n_times]},
        inputs={"brain": "brain", "subject": "subject"},
    )


def write_onnx(path: Path, contract: ModelContract, weight: np.ndarray) -> None:
    """Linear encoder ``latent = W @ brain`` with a (used) subject input, contract in the metadata."""
    f, c = weight.shape
    t = contract.window.n_times
    brain = helper.make_tensor_value_info("brain", TensorProto.FLOAT, ["batch", c, t])
    subject = helper.make_tensor_value_info("subject", TensorProto.INT64, ["batch"])
    latent = helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["batch", f, t])
    w = helper.make_tensor("W", TensorProto.FLOAT, [f, c], weight.astype(np.float32).ravel().tolist())
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    nodes = [
        helper.make_node("MatMul", ["W", "brain"], ["wx"]),
        # subject enters as 0 * subject (keeps the input in the graph like a real subject layer would)
        helper.make_node("Cast", ["subject"], ["subj_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["subj_f", "zero"], ["subj0"]),
        helper.make_node("Unsqueeze", ["subj0", "axes"], ["subj3"]),
        helper.make_node("Add", ["wx", "subj3"], ["latent"]),
    ]
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])
    graph = helper.make_graph(
        nodes, "linear_encoder", [brain, subject], [latent], initializer=[w, zero, axes]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {METADATA_KEY: contract.to_json()})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def offline_windows(data, sfreq, contract: ModelContract, anchors, first_time: float = 0.0):
    """The trainer's path: preprocess_continuous -> extract_windows -> preprocess_window (scaled, clamped)."""
    cont, times = preprocess_continuous(
        data, sfreq, contract.window, contract.preprocessing, first_time=first_time
    )
    raw_w, valid = extract_windows(cont, times, np.asarray(anchors) + first_time, contract.window)
    sc = contract.scaler(SUBJECT)
    x = preprocess_window(raw_w, contract.window, sc.center, sc.scale, contract.preprocessing.clamp)
    return x, valid


def build_artifacts(
    tmp: Path,
    n_channels: int = 12,
    sfreq: float = 600.0,
    duration: float = 40.0,
    n_features: int = 8,
    n_distractors: int = 200,
    word_every: float = 0.7,
    seed: int = 0,
) -> Artifacts:
    """Write ``model.onnx`` + ``bank.npz`` into ``tmp`` and return everything a test needs."""
    tmp = Path(tmp)
    rng = np.random.default_rng(seed + 1)
    data, names = make_recording(n_channels, sfreq, duration, seed)
    window = WindowSpec()
    cont, times = preprocess_continuous(data, sfreq, window)
    fit_anchors = np.arange(1.0, duration - 3.0, 0.5)
    raw_w, _ = extract_windows(cont, times, fit_anchors, window)
    scaler = RobustScaler.fit(preprocess_window(raw_w, window))
    contract = make_contract(names, sfreq, scaler, n_features, window)
    weight = rng.standard_normal((n_features, n_channels)) / np.sqrt(n_channels)
    model_path = tmp / "model.onnx"
    write_onnx(model_path, contract, weight)
    sha = hashlib.sha256(model_path.read_bytes()).hexdigest()
    anchors = np.arange(1.0, duration - 3.0, word_every)
    x, valid = offline_windows(data, sfreq, contract, anchors)
    anchors = anchors[valid]
    z = np.einsum("fc,nct->nft", weight.astype(np.float32), x)
    distract = rng.standard_normal((n_distractors, n_features, window.n_times)).astype(np.float32)
    feats = normalise_candidates(np.concatenate([z, distract]))
    sounds = [f"stimuli/s{i // 10:04d}.wav" for i in range(len(anchors))]
    stimes = [round(float(i % 10) * 0.5, 3) for i in range(len(anchors))]
    ids = [segment_id(s, t) for s, t in zip(sounds, stimes)]
    words = [f"w{i}" for i in range(len(anchors))]
    n_all = len(feats)
    bank = CandidateBank(
        features=feats,
        ids=np.array(ids + [f"d{i:05d}" for i in range(n_distractors)]),
        words=np.array(words + ["<distractor>"] * n_distractors),
        sounds=np.array(sounds + ["stimuli/none.wav"] * n_distractors),
        sentences=np.array(["s"] * n_all),
        sound_times=np.array(stimes + [0.0] * n_distractors),
        header={"model_sha256": sha, "output_shape": [n_features, window.n_times], "speech": {"kind": "mel"}},
    )
    bank_path = tmp / "bank.npz"
    bank.save(bank_path)
    return Artifacts(model_path, bank_path, contract, data, sfreq, names, anchors, ids, words, sounds, stimes)


# --------------------------------------------------------------------------------------------- LSL player
def word_markers(art: Artifacts):
    """(data time, payload) of every planted word."""
    return [
        (float(a), {"segment_id": i, "word": w, "sound": s, "sound_time": t, "sentence": "s"})
        for a, i, w, s, t in zip(art.anchors, art.ids, art.words, art.sounds, art.sound_times)
    ]


def serve_settings(art: Artifacts, player: Player, **kw):
    from neurospeech.service.config import ServeSettings

    base = dict(
        model=art.model,
        bank=art.bank,
        stream_name=player.name,
        resolve_timeout=5.0,
        hop=0.25,
        topk=5,
        status_interval=0.25,
        publish={"endpoint": "tcp://127.0.0.1:*"},
    )
    base.update(kw)
    return ServeSettings(**base)


def run_parallel(timeout: float = 120.0, **jobs: Callable[[], Any]) -> dict[str, Any]:
    """Run ``name=callable`` side by side in threads; returns name -> result (an exception is re-raised as an
    AssertionError naming the job; a job still running after ``timeout`` s fails the test)."""
    out: dict[str, Any] = {}

    def one(name: str, fn: Callable[[], Any]) -> None:
        try:
            out[name] = fn()
        except BaseException as exc:
            out[name] = exc

    threads = [threading.Thread(target=one, args=item) for item in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    for name in jobs:
        if isinstance(out.get(name), BaseException):
            raise AssertionError(name) from out[name]
        assert name in out, f"{name} did not finish"
    return out


def run_session(settings, until: Callable[[list], bool] | None = None, timeout: float = 60.0, player=None):
    """Serve with ``settings`` until ``until(msgs)`` holds (default: until ``player`` is done) or ``timeout`` s
    pass (a deadline for a loaded machine, not a pace check); returns (messages, final server stats).

    Fails the test when a service thread died, the service did not stop with exit code 0, or the player
    reported an error.
    """
    from neurospeech.service.client import Subscriber
    from neurospeech.service.server import Server

    if until is None:
        if player is None:
            raise ValueError("run_session needs `until` or a `player` to wait for")
        until = lambda msgs: player.done  # noqa: E731
    server = Server(settings)
    server.start()
    sub = Subscriber(server.publisher.endpoint)
    msgs: list = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until(msgs):
            m = sub.recv(0.1)
            if m is not None:
                msgs.append(m)
        stats = server.stats()
        alive = all(t.is_alive() for t in server._threads)
    finally:
        sub.close()
        server.stop()
        server.join()
        if player is not None:
            player.stop()
    assert alive and server.exit_code == 0, server.error
    assert player is None or player.error is None, player.error
    return msgs, stats


@contextlib.contextmanager
def busy_cores(n: int | None = None):
    """Occupy ``n`` cores (default: all) with busy-loop subprocesses for the duration of the block."""
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n or os.cpu_count() or 2)
    ]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def push_time_chunks(n: int, sfreq: float, chunk: int, stalls: dict[float, float] | None = None,
                     t0: float = 1000.0, eps: float = 2e-4):
    """Chunks of a producer that stamps each chunk with ``local_clock()`` when it pushes it (pylsl's SendData).

    It pushes chunk ``[i, j)`` when its last sample is due (``t0 + j / sfreq``) or, after a stall
    (``stalls``: data time -> seconds the producer sleeps before the chunk reaching it), as soon as it can:
    the chunks after a stall go out ``eps`` s apart until it is back on schedule. liblsl deduces the earlier
    samples' stamps from the last one at the nominal rate. Yields ``(i, j, stamps, t_push)``.
    """
    pending = sorted((stalls or {}).items())
    t_free = t0
    for i in range(0, n, chunk):
        j = min(i + chunk, n)
        t = max(t0 + j / sfreq, t_free)
        while pending and pending[0][0] * sfreq <= j:
            t += pending.pop(0)[1]
        t_free = t + eps
        yield i, j, t - np.arange(j - i)[::-1] / sfreq, t
