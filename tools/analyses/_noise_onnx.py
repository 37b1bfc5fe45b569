"""Encoder latents as features: word windows of a BIDS dataset through an exported ONNX encoder.

The windows are cut exactly as the model was trained and is served (the contract in the ONNX metadata:
channel order and units, :func:`neurospeech.preprocessing.preprocess_continuous`, ``extract_windows``,
``preprocess_window`` with the subject's robust scaler and clamp); the output ``(F, T)`` of every window is
averaged over ``n_time_bins`` equal parts of T, giving ``F x n_time_bins`` features per word.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from neurospeech.errors import ArtifactError, ConfigError, DataFormatError

from ._noise_io import FeatureTable, word_labels

__all__ = ["onnx_latents"]

log = logging.getLogger(__name__)


def onnx_latents(
    model_path: str | Path,
    root: str | Path,
    *,
    label: str = "word",
    subjects: list[str] | None = None,
    tasks: list[str] | None = None,
    n_time_bins: int = 1,
    min_repeats: int = 4,
    batch: int = 32,
) -> FeatureTable:
    """Latent features of word-onset windows.

    Parameters
    ----------
    model_path : path
        ONNX encoder exported by ``neurospeech export`` (contract under ``METADATA_KEY``).
    root : path
        BIDS dataset root.
    label : str
        ``"word"``, ``"duration"`` or ``"loudness"`` (see :func:`epochs_features`).
    subjects, tasks : list of str, optional
    n_time_bins : int
        Time bins of the model output per latent feature.
    min_repeats : int
        Minimum repetitions per word for ``label="word"``.
    batch : int
        Windows per ONNX call.

    Returns
    -------
    FeatureTable
        ``X`` of shape (n_words, F * n_time_bins), subject as group when there are several.
    """
    import onnxruntime as ort

    from neurospeech.contract import METADATA_KEY, ModelContract, match_channels
    from neurospeech.data import load_dataset
    from neurospeech.preprocessing import (
        RobustScaler,
        extract_windows,
        preprocess_continuous,
        preprocess_window,
    )

    if n_time_bins < 1:
        raise ConfigError(f"n_time_bins={n_time_bins} is invalid; give an integer >= 1")
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ArtifactError(f"model {str(model_path)!r} does not exist; export one with `neurospeech export`")
    try:
        sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ArtifactError(f"{model_path} is not a loadable ONNX model ({exc})") from exc
    meta = sess.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in meta:
        raise ArtifactError(
            f"{model_path} carries no neurospeech contract ({METADATA_KEY!r} metadata); "
            f"export it with `neurospeech export`"
        )
    contract = ModelContract.from_json(meta[METADATA_KEY])
    names = {"brain": "brain", "subject": "subject", **(contract.inputs or {})}
    graph_inputs = {i.name for i in sess.get_inputs()}
    recs = load_dataset(root, subjects=subjects, tasks=tasks)
    X_parts, y_parts, g_parts = [], [], []
    for rec in recs:
        raw = rec.load_raw()
        cmap = match_channels(contract, list(raw.ch_names))
        data = raw.get_data()[cmap.index] * cmap.scale[:, None]
        cont, times = preprocess_continuous(data, raw.info["sfreq"], contract.window, contract.preprocessing)
        words = rec.load_events().words()
        keep, y_all = word_labels(words, label, Path(root), min_repeats)
        anchors, y = words.onset[keep], y_all[keep]
        raw_w, valid = extract_windows(cont, times, anchors, contract.window)
        if not valid.any():
            log.warning("run %s: no complete windows", rec.name)
            continue
        raw_w, y = raw_w[valid], y[valid]
        if rec.subject in contract.scalers:
            scaler = contract.scaler(rec.subject)
            subj_idx = contract.subjects.index(rec.subject) if rec.subject in contract.subjects else 0
        else:
            log.warning(
                "subject %s is not in the model's contract (%s): scaler fitted on its own windows, "
                "subject layer 0",
                rec.subject,
                contract.subjects[:5],
            )
            scaler = RobustScaler.fit(
                raw_w - raw_w[..., contract.window.baseline_slice].mean(-1, keepdims=True)
            )
            subj_idx = 0
        x = preprocess_window(
            raw_w, contract.window, scaler.center, scaler.scale, contract.preprocessing.clamp
        )
        outs = []
        for i in range(0, len(x), batch):
            feed = {names["brain"]: x[i : i + batch].astype(np.float32)}
            if names["subject"] in graph_inputs:
                feed[names["subject"]] = np.full(len(feed[names["brain"]]), subj_idx, dtype=np.int64)
            outs.append(np.asarray(sess.run(None, feed)[0]))
        z = np.concatenate(outs)  # (n, F, T)
        if z.ndim != 3:
            raise ArtifactError(f"{model_path} returned shape {z.shape}; expected (batch, F, T) latents")
        parts = np.array_split(np.arange(z.shape[2]), n_time_bins)
        X_parts.append(np.concatenate([z[:, :, p].mean(axis=2) for p in parts], axis=1))
        y_parts.append(y)
        g_parts.append(np.full(len(y), f"sub-{rec.subject}"))
    if not X_parts:
        raise DataFormatError(f"no word windows found in {root} for {model_path.name}")
    group = np.concatenate(g_parts)
    f = X_parts[0].shape[1] // n_time_bins
    fnames = [
        f"latent{k}" if n_time_bins == 1 else f"latent{k}@{b}" for b in range(n_time_bins) for k in range(f)
    ]
    return FeatureTable(
        X=np.concatenate(X_parts).astype(np.float64),
        y=np.concatenate(y_parts),
        group=group if np.unique(group).size > 1 else None,
        feature_names=fnames,
        meta={
            "source": str(root),
            "model": str(model_path),
            "model_id": contract.model_id,
            "label": label,
            "n_time_bins": n_time_bins,
            "runs": [r.name for r in recs],
        },
    )
