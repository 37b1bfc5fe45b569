"""wav2vec 2.0 features from a local Hugging Face checkpoint (``transformers`` + torch, imported lazily).

The paper (Défossez et al. 2022) averaged layers 14-18 of wav2vec2-large-xlsr-53. Layers index
``hidden_states`` of ``Wav2Vec2Model(..., output_hidden_states=True)``: 0 = input of the first transformer
layer, k = output of layer k. Frames are 20 ms apart (conv stride 320 samples at 16 kHz) and frame j covers
samples ``[320 j, 320 j + 400)``, i.e. it is centred at ``j / 50 + 0.0125`` s; the output is resampled to
frame k at ``k / sfreq_out``. Long files run in 30-s chunks overlapping by ``2 * context`` s (inner edges
discarded, as for Whisper). Nothing is downloaded (``local_files_only=True``).
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..contract import sha256_file
from ..errors import ArtifactError, ConfigError
from .extractors import FeatureExtractor, layer_range
from .mel import _check_wav, n_output_frames
from .whisper import _resample_audio, resample_frames

__all__ = ["Wav2Vec2Extractor"]

SAMPLE_RATE = 16000
STRIDE = 320
RECEPTIVE = 400
_WEIGHT_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")


def _import_backend() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ConfigError(
            f"speech features 'wav2vec2' need torch and transformers ({exc}); install the extras "
            "`pip install neurospeech[train,speech]`, or use features 'mel' or 'whisper'"
        ) from exc
    return torch, transformers


@cache
def _hash_checkpoint(path: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, _, _ in stamp:
        h.update(name.encode() + b"\0" + sha256_file(Path(path) / name).encode())
    return h.hexdigest()


def _stamp(path: Path) -> tuple[tuple[str, int, int], ...]:
    out = []
    for name in _WEIGHT_FILES:
        p = path / name
        if p.is_file():
            st = os.stat(p)
            out.append((name, st.st_size, st.st_mtime_ns))
    return tuple(out)


class Wav2Vec2Extractor(FeatureExtractor):
    """Average of a range of wav2vec2 hidden layers, at ``sfreq_out``.

    Parameters
    ----------
    model_path : path
        Local Hugging Face checkpoint directory (``config.json`` + ``model.safetensors`` or
        ``pytorch_model.bin``).
    layers : (int, int)
        Inclusive range of ``hidden_states`` indices averaged (paper: 14-18).
    sfreq_out : float
        Output rate in Hz.
    normalize : bool
        Zero-mean unit-variance audio per file (what ``Wav2Vec2FeatureExtractor(do_normalize=True)`` does;
        required by the xlsr / large checkpoints).
    context : float
        Seconds discarded at inner chunk edges of 30-s chunks.
    device : str
        torch device.
    model_sha256 : str or None
        Expected checkpoint hash (when rebuilding from a contract); mismatch raises.
    """

    kind = "wav2vec2"

    def __init__(self, model_path: str | Path, layers: tuple[int, int] | list[int] | int = (14, 18),
                 sfreq_out: float = 120.0, normalize: bool = True, context: float = 5.0,
                 device: str = "cpu", model_sha256: str | None = None) -> None:
        self.model_path = Path(model_path)
        if not (self.model_path / "config.json").is_file():
            raise ArtifactError(f"wav2vec2 checkpoint {str(self.model_path)!r} has no config.json; pass a "
                                "local Hugging Face checkpoint directory (save_pretrained output)")
        stamp = _stamp(self.model_path)
        if len(stamp) < 2:
            raise ArtifactError(f"wav2vec2 checkpoint {str(self.model_path)!r} has no weights "
                                "(model.safetensors or pytorch_model.bin)")
        if not 0 <= float(context) < 15:
            raise ConfigError(f"wav2vec2 context must be in [0, 15) s, got {context!r}")
        self.model_sha256 = _hash_checkpoint(str(self.model_path), stamp)
        if model_sha256 is not None and model_sha256 != self.model_sha256:
            raise ArtifactError(f"wav2vec2 checkpoint {str(self.model_path)!r} has hash "
                                f"{self.model_sha256[:12]}... but {model_sha256[:12]}... was expected; "
                                "pass the checkpoint the model was trained with")
        cfg = json.loads((self.model_path / "config.json").read_text())
        n_layers = int(cfg.get("num_hidden_layers", 0))
        self.layers = layer_range(layers, n_layers, "wav2vec2")
        self.dim = int(cfg["hidden_size"])
        self.sfreq_out = float(sfreq_out)
        self.normalize = bool(normalize)
        self.context = float(context)
        self.device = str(device)
        self._model: Any = None

    @property
    def params(self) -> dict[str, Any]:
        return {"model_path": str(self.model_path), "layers": list(self.layers), "sfreq_out": self.sfreq_out,
                "normalize": self.normalize, "context": self.context, "model_sha256": self.model_sha256}

    def _load(self) -> Any:
        if self._model is None:
            _, transformers = _import_backend()
            path = str(self.model_path)
            try:
                model = transformers.Wav2Vec2Model.from_pretrained(path, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ArtifactError(f"cannot load wav2vec2 checkpoint {path!r}: {exc}") from exc
            self._model = model.to(self.device).eval()
        return self._model

    def __call__(self, wav: NDArray, sr: float) -> NDArray[np.float32]:
        torch, _ = _import_backend()
        model = self._load()
        x0 = _check_wav(wav, sr)
        x = _resample_audio(x0, sr, SAMPLE_RATE)
        if self.normalize:
            x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        if x.size < RECEPTIVE:
            x = np.concatenate([x, np.zeros(RECEPTIVE - x.size, np.float32)])
        n50 = (x.size - RECEPTIVE) // STRIDE + 1
        per_chunk = 30 * SAMPLE_RATE // STRIDE  # 1500 frames
        ctx = round(self.context * 50)
        step = per_chunk - 2 * ctx
        out = np.empty((self.dim, n50), np.float32)
        start = 0
        with torch.inference_mode():
            while True:
                seg = x[start * STRIDE : (start + per_chunk - 1) * STRIDE + RECEPTIVE]
                inp = torch.from_numpy(np.ascontiguousarray(seg, np.float32))[None].to(self.device)
                hs = model(inp, output_hidden_states=True).hidden_states
                avg = torch.stack([hs[k][0] for k in range(self.layers[0], self.layers[1] + 1)]).mean(0)
                feats = avg.float().cpu().numpy()  # (n_frames_chunk, dim)
                last = start + per_chunk >= n50
                keep0 = 0 if start == 0 else ctx
                keep1 = feats.shape[0] if last else per_chunk - ctx
                a, b = start + keep0, min(start + keep1, n50)
                out[:, a:b] = feats[keep0 : keep0 + (b - a)].T
                if last:
                    break
                start += step
        n_out = n_output_frames(x0.size, sr, self.sfreq_out)
        # resample to frames at 0.0125 + m / sfreq_out, then shift by linear interpolation onto k / sfreq_out
        t0 = (RECEPTIVE / 2) / SAMPLE_RATE
        y = resample_frames(out, 50.0, self.sfreq_out, n_out + 2)
        pos = np.clip((np.arange(n_out) / self.sfreq_out - t0) * self.sfreq_out, 0, y.shape[1] - 1)
        i0 = np.floor(pos).astype(np.int64)
        i1 = np.minimum(i0 + 1, y.shape[1] - 1)
        w = (pos - i0).astype(np.float32)
        return np.ascontiguousarray(y[:, i0] * (1 - w) + y[:, i1] * w, dtype=np.float32)
