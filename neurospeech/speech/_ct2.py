"""Reader for CTranslate2 ``model.bin`` files (weights only; numpy, no ctranslate2 import).

Binary layout (``ctranslate2/specs/model_spec.py`` ``_serialize``, binary version 6), little endian::

    u32 binary_version | str spec_name | u32 revision | u32 n_variables
    n_variables x { str name | u8 ndim | ndim x u32 dim | u8 dtype_id | u32 n_bytes | n_bytes data }
    u32 n_aliases | n_aliases x { str alias | str target }
    str = u16 length (including the trailing NUL) | bytes | NUL

dtype ids: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16. Quantised int8 weights come with a
``<name>_scale`` variable (``float = int8 / scale`` per output row).
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import ArtifactError

__all__ = ["read_ct2_variables"]

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: None}  # 5: bfloat16


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def read_ct2_variables(path: str | Path, keep: Callable[[str], bool] = lambda name: True
                       ) -> dict[str, np.ndarray]:
    """Read the variables of a CTranslate2 model file.

    Parameters
    ----------
    path : path
        ``model.bin``.
    keep : callable
        ``keep(name) -> bool``; other variables are skipped without being decoded.

    Returns
    -------
    variables : dict of str -> ndarray
        Float variables as float32 (int8 weights dequantised with their ``_scale``), integers as stored.

    Raises
    ------
    ArtifactError
        Missing file, unsupported binary version, or truncated/corrupted content.
    """
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"CTranslate2 model file {str(p)!r} does not exist; pass the model directory "
                            "that holds model.bin")
    out: dict[str, np.ndarray] = {}
    with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        o = 0

        def u(fmt: str) -> int:
            nonlocal o
            (v,) = struct.unpack_from("<" + fmt, buf, o)
            o += struct.calcsize(fmt)
            return int(v)

        def s() -> str:
            nonlocal o
            n = u("H")
            text = bytes(buf[o : o + n - 1]).decode("utf-8")
            o += n
            return text

        try:
            version = u("I")
            if version not in (5, 6):
                raise ArtifactError(f"{str(p)!r}: CTranslate2 binary version {version} is not supported "
                                    "(supported: 5, 6); convert the model with ctranslate2 >= 3")
            s()  # spec name
            u("I")  # revision
            n_var = u("I")
            for _ in range(n_var):
                name = s()
                ndim = u("B")
                shape = tuple(u("I") for _ in range(ndim))
                dtype_id = u("B")
                n_bytes = u("I")
                start = o
                o += n_bytes
                if o > len(buf):
                    raise ArtifactError(f"{str(p)!r} is truncated (variable {name!r}); reinstall the model")
                if not keep(name):
                    continue
                if dtype_id not in _DTYPES:
                    raise ArtifactError(f"{str(p)!r}: variable {name!r} has unknown dtype id {dtype_id}")
                dt = _DTYPES[dtype_id]
                raw = np.frombuffer(buf[start:o], dtype=np.uint16 if dt is None else dt).reshape(shape)
                arr = _bf16_to_f32(raw) if dt is None else raw
                out[name] = arr.astype(np.float32) if arr.dtype.kind == "f" else arr
        except struct.error as exc:
            raise ArtifactError(f"{str(p)!r} is truncated or not a CTranslate2 model ({exc})") from exc
    for name in [n for n in out if n.endswith("_scale") and n[: -len("_scale")] in out]:
        base = name[: -len("_scale")]
        if out[base].dtype.kind == "i":
            scale = out.pop(name).astype(np.float32)
            w = out[base].astype(np.float32)
            out[base] = w / scale.reshape((-1,) + (1,) * (w.ndim - 1))
    return out
