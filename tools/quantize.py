"""int8 quantization of an exported encoder, calibrated on windows the live pipeline cuts from a recording.

onnxruntime's static quantization (QDQ format, int8 weights per output channel, uint8 activations with
ranges calibrated on real windows) roughly halves the encoder's CPU time on x86 with VNNI. The windows come
from :func:`neurospeech.service.filesource.iter_jobs`, i.e. the exact online preprocessing, so the
activation ranges are those the service will see. A quarter of the windows are held out: the quantized model's
latents are compared with the float model's there (cosine similarity, and with a bank the top-1 / top-10
agreement of the ranked candidates) and the figures travel in the contract (``training.quantization``).

The contract is copied with ``model_id`` suffixed ``+int8``; a bank built for the float model can be rebound
to the quantized one (same speech side, new model hash) with ``bank_out``.

No torch here: onnx + onnxruntime only. It sits in the tools layer because it composes the models' artifacts
with the service's pipeline (models/ and service/ never import each other).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
from numpy.typing import NDArray

from ..contract import ModelContract, embed_contract, sha256_file
from ..errors import ArtifactError, ConfigError, NeurospeechError

__all__ = ["agreement", "calibration_windows", "quantize_cmd", "quantize_model"]

log = logging.getLogger(__name__)


def calibration_windows(model: str | Path, recording: str | Path, subject: str | None = None,
                        n_windows: int = 512, hop: float = 0.5) -> NDArray[np.float32]:
    """Model-ready windows of a recording, cut by the live pipeline (flagged windows left out).

    Parameters
    ----------
    model : path
        The float ``.onnx`` (its contract gives channels, rates and the scaler of ``subject``).
    recording : path
        Anything :func:`mne.io.read_raw` reads (FIF, EDF, BrainVision, a BIDS run).
    subject : str or None
        Subject whose scaler applies (None: the model's only subject).
    n_windows : int
        At most this many windows, spread evenly over the recording.
    hop : float
        Sliding-window hop in seconds.

    Returns
    -------
    x : array, shape (n, n_channels, n_times), float32
    """
    from ..service.config import ServeSettings
    from ..service.filesource import channel_types, iter_jobs, read_raw
    from ..service.model import EncoderModel

    enc = EncoderModel(model)
    contract = enc.contract
    if subject is None:
        if len(contract.subjects) != 1:
            raise ConfigError(f"the model has subjects {contract.subjects}; pass subject= (--subject) for the "
                              "recording's subject")
        subject = contract.subjects[0]
    contract.scaler(subject)  # unknown subject: a clear error now
    raw = read_raw(Path(recording))
    types = channel_types(raw)
    settings = ServeSettings(model=Path(model), subject=subject, hop=hop)
    xs = [j.x for j in iter_jobs(raw.get_data(), float(raw.info["sfreq"]), list(raw.ch_names), contract, subject,
                                 settings, types=types) if j.x is not None]
    if len(xs) < 8:
        raise ConfigError(f"{recording} gave only {len(xs)} clean windows at hop {hop} s; calibrate on a longer "
                          "recording (>= 10 s of clean data)")
    keep = np.unique(np.linspace(0, len(xs) - 1, min(n_windows, len(xs))).round().astype(int))
    return np.stack([xs[i] for i in keep]).astype(np.float32)


def _feeds(enc: Any, x: NDArray[np.float32], subject_index: int) -> list[dict[str, NDArray[Any]]]:
    """onnxruntime feeds of ``enc`` (an ``EncoderModel``) for windows ``x``, 8 windows per batch."""
    out = []
    for i in range(0, len(x), 8):
        f: dict[str, NDArray[Any]] = {enc.brain_input: np.ascontiguousarray(x[i : i + 8])}
        if enc.subject_input is not None:
            f[enc.subject_input] = np.full(len(f[enc.brain_input]), subject_index, dtype=np.int64)
        out.append(f)
    return out


def _latents(session: Any, feeds: list[dict[str, NDArray[Any]]]) -> NDArray[np.float32]:
    return np.concatenate([session.run(None, f)[0] for f in feeds]).astype(np.float32)


def agreement(z_ref: NDArray[np.float32], z_q: NDArray[np.float32], bank: Any = None) -> dict[str, Any]:
    """How closely quantized latents follow the float ones.

    Parameters
    ----------
    z_ref, z_q : array, shape (n, F, T)
        Float and quantized latents of the same windows.
    bank : CandidateBank or None
        When given, the ranked candidates are compared too.

    Returns
    -------
    dict
        ``cosine_median`` / ``cosine_min`` (per window, latents flattened), ``rel_error_median``
        (||z_q - z|| / ||z||), and with a bank ``top1_agreement`` (same best candidate) and ``top10_overlap``
        (mean share of the float top-10 found in the quantized top-10).
    """
    a = z_ref.reshape(len(z_ref), -1).astype(np.float64)
    b = z_q.reshape(len(z_q), -1).astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    rel = np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(a, axis=1), 1e-30)
    out: dict[str, Any] = {"n_windows": len(a), "cosine_median": float(np.median(cos)),
                           "cosine_min": float(cos.min()), "rel_error_median": float(np.median(rel))}
    if bank is not None:
        from ..scoring import topk

        sa, sb = bank.scores(z_ref), bank.scores(z_q)
        t1 = [int(np.argmax(x) == np.argmax(y)) for x, y in zip(sa, sb, strict=True)]
        k = min(10, sa.shape[1])
        ov = [len(set(topk(x, k).tolist()) & set(topk(y, k).tolist())) / k for x, y in zip(sa, sb, strict=True)]
        out.update(top1_agreement=float(np.mean(t1)), top10_overlap=float(np.mean(ov)), n_candidates=len(bank))
    return out


def quantize_model(model: str | Path, out: str | Path, windows: NDArray[np.float32], subject: str | None = None,
                   bank: str | Path | None = None, bank_out: str | Path | None = None,
                   holdout: float = 0.25) -> dict[str, Any]:
    """Write an int8 (QDQ) copy of ``model`` calibrated on ``windows``, with its contract.

    Parameters
    ----------
    model, out : path
        Float input and quantized output ``.onnx``.
    windows : array, shape (n, n_channels, n_times)
        Model-ready windows (:func:`calibration_windows`); the last ``holdout`` share is used only to measure
        the agreement.
    subject : str or None
        Subject index fed to a multi-subject model during calibration.
    bank, bank_out : path or None
        A bank of the float model, rebound to the quantized one (written to ``bank_out``); the agreement then
        includes the candidate ranking.

    Returns
    -------
    dict
        ``path``, ``sha256``, ``agreement`` (see :func:`agreement`), ``calibration_windows``, ``seconds``,
        ``bank`` (the rebound bank path, if any).
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ..scoring import CandidateBank
    from ..service.model import EncoderModel, sidecar_path

    t0 = time.perf_counter()
    src = Path(model)
    enc = EncoderModel(src)
    contract = enc.contract
    if "quantization" in contract.training:
        raise ConfigError(f"{src} is already quantized ({contract.training['quantization'].get('scheme')}); "
                          "quantize the float model")
    if bank_out is not None and bank is None:
        raise ConfigError("bank_out needs bank (the float model's candidate bank) as well")
    x = np.asarray(windows, dtype=np.float32)
    n_ch, n_t = len(contract.channels), contract.window.n_times
    if x.ndim != 3 or x.shape[1:] != (n_ch, n_t):
        raise ConfigError(f"calibration windows must have shape (n, {n_ch}, {n_t}), got {x.shape}")
    if not 0.0 < holdout < 0.9:
        raise ConfigError(f"holdout must be in (0, 0.9), got {holdout}")
    n_hold = max(1, round(holdout * len(x)))
    if len(x) - n_hold < 4:
        raise ConfigError(f"{len(x)} windows are too few to calibrate and check (need >= {4 + n_hold})")
    # interleave: calibration and check windows both span the whole recording
    hold = np.zeros(len(x), bool)
    hold[np.linspace(0, len(x) - 1, n_hold).round().astype(int)] = True
    sub_idx = enc.subject_index(subject) if subject is not None else 0
    b = CandidateBank.load(bank) if bank is not None else None
    if b is not None:
        b.check_model(enc.sha256)
    calib = _feeds(enc, x[~hold], sub_idx)

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it = iter(calib)

        def get_next(self) -> dict[str, NDArray[Any]] | None:
            return next(self._it, None)

    dst = Path(out)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="neurospeech-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        qtmp = Path(tmp) / "q.onnx"
        try:
            quant_pre_process(str(src), str(pre))
            quantize_static(str(pre), str(qtmp), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        except NeurospeechError:
            raise
        except Exception as exc:  # onnxruntime.quantization raises many types
            raise ArtifactError(f"quantizing {src} failed ({type(exc).__name__}: {exc})") from exc
        import onnxruntime as ort

        checks = _feeds(enc, x[hold], sub_idx)
        q_sess = ort.InferenceSession(str(qtmp), providers=["CPUExecutionProvider"])
        agree = agreement(_latents(enc.session, checks), _latents(q_sess, checks), b)
        proto = onnx.load(str(qtmp))
    q = ModelContract.from_json(contract.to_json())
    q.model_id = f"{contract.model_id}+int8"
    q.training = {**q.training, "quantization": {
        "scheme": "int8 QDQ (onnxruntime static; weights int8 per channel, activations uint8)",
        "calibration_windows": int((~hold).sum()), "source_sha256": enc.sha256, "agreement": agree}}
    embed_contract(proto, q)
    onnx.save(proto, str(dst))
    q.save(sidecar_path(dst))
    info: dict[str, Any] = {"path": str(dst), "sha256": sha256_file(dst), "agreement": agree,
                            "calibration_windows": int((~hold).sum())}
    if b is not None and bank_out is not None:
        rebound = dataclasses.replace(b, header={**b.header, "model_sha256": info["sha256"],
                                                 "rebound_from_model": enc.sha256})
        rebound.save(bank_out)
        info["bank"] = str(bank_out)
    info["seconds"] = time.perf_counter() - t0
    log.info("quantized %s -> %s (cosine median %.4f)", src, dst, agree["cosine_median"])
    return info


@click.command("quantize")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("recording", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output int8 .onnx file.")
@click.option("--subject", default=None, help="The recording's subject (multi-subject models).")
@click.option("--windows", "n_windows", type=click.IntRange(min=16), default=512, show_default=True,
              help="Windows cut from RECORDING (a quarter held out to measure the agreement).")
@click.option("--bank", "bank_in", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The float model's bank: rebound to the int8 model and used to measure ranking agreement.")
@click.option("--bank-out", type=click.Path(dir_okay=False), default=None, help="Where the rebound bank goes.")
def quantize_cmd(model: str, recording: str, out: str, subject: str | None, n_windows: int, bank_in: str | None,
                 bank_out: str | None) -> None:
    """Quantize MODEL to int8 (about 2x faster on CPU), calibrated on windows of RECORDING.

    RECORDING is read with mne (FIF, EDF, BrainVision, a BIDS run) and cut by the live pipeline. Prints the
    agreement with the float model on held-out windows; it also travels in the contract.
    """
    x = calibration_windows(model, recording, subject=subject, n_windows=n_windows)
    info = quantize_model(model, out, x, subject=subject, bank=bank_in, bank_out=bank_out)
    click.echo(json.dumps(info, indent=1))
