"""The exported brain encoder in onnxruntime: SHA-256 checked before load, contract read from the file.

The file's bytes are read once, hashed, checked against the hash the caller expects (the candidate bank's
``model_sha256``), and only then handed to onnxruntime: the session runs exactly the bytes that were checked.
The :class:`~neurospeech.contract.ModelContract` comes from the ONNX metadata key
:data:`neurospeech.contract.METADATA_KEY`, or from a ``<model>.contract.json`` sidecar.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..contract import CONTRACT_SHA_KEY, METADATA_KEY, ModelContract
from ..errors import ArtifactError, ConfigError

__all__ = ["EncoderModel", "sidecar_path"]

log = logging.getLogger(__name__)

_ORT_INT = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}


def sidecar_path(model_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.contract.json``."""
    p = Path(model_path)
    return p.with_name(p.stem + ".contract.json")


class EncoderModel:
    """An ONNX brain encoder with its contract.

    Parameters
    ----------
    path : path
        The ``.onnx`` file.
    expected_sha256 : str or None
        Refuse the file unless its SHA-256 equals this (checked before onnxruntime sees the bytes).
    check : callable or None
        Called with the file's SHA-256 before loading (e.g. ``bank.check_model``); raises to refuse.
    intra_op_threads : int
        onnxruntime intra-op threads.

    Attributes
    ----------
    sha256 : str
    contract : ModelContract
    output_shape : tuple of int
        ``(F, T')`` of one window's latent.
    """

    def __init__(
        self,
        path: str | Path,
        expected_sha256: str | None = None,
        check: Callable[[str], None] | None = None,
        intra_op_threads: int = 1,
    ) -> None:
        p = Path(path)
        if not p.is_file():
            raise ArtifactError(f"model file {str(p)!r} does not exist; export one with `neurospeech export`")
        data = p.read_bytes()
        self.path = p
        self.sha256 = hashlib.sha256(data).hexdigest()
        if expected_sha256 is not None and expected_sha256 != self.sha256:
            raise ArtifactError(
                f"model {str(p)!r} has sha256 {self.sha256[:12]}..., not {expected_sha256[:12]}...; "
                "the file is corrupted or not the model you meant"
            )
        if check is not None:
            check(self.sha256)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(intra_op_threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for a corrupted graph
            raise ArtifactError(
                f"model {str(p)!r} could not be loaded by onnxruntime ({type(exc).__name__}: "
                f"{str(exc)[:300]}); the file is corrupted or not an ONNX model: re-export it"
            ) from exc
        self.contract = self._read_contract(p)
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.brain_input = self.contract.inputs.get("brain", "brain")
        if self.brain_input not in inputs:
            if len(inputs) == 1:
                self.brain_input = next(iter(inputs))
            else:
                raise ArtifactError(
                    f"model has no input {self.brain_input!r} (inputs: {sorted(inputs)}); re-export the model"
                )
        sub = self.contract.inputs.get("subject", "subject")
        others = [n for n in inputs if n != self.brain_input]
        if sub in others:
            self.subject_input: str | None = sub
        elif len(others) == 1 and inputs[others[0]].type in ("tensor(int64)", "tensor(int32)"):
            self.subject_input = others[0]  # the only other (integer) input is the subject index
        elif others:
            raise ArtifactError(
                f"model inputs {sorted(inputs)} do not match its contract (brain {self.brain_input!r}, "
                f"subject {sub!r}); re-export the model"
            )
        else:
            self.subject_input = None
        self._subject_dtype = (
            _ORT_INT.get(inputs[self.subject_input].type, np.int64) if self.subject_input else None
        )
        outputs = [o.name for o in self.session.get_outputs()]
        want = self.contract.output.get("name")
        self.output_name = want if want in outputs else outputs[0]
        shape = self.contract.output.get("shape")
        self.output_shape = tuple(int(s) for s in shape) if shape else None
        brain_shape = inputs[self.brain_input].shape
        n_ch = len(self.contract.channels)
        if len(brain_shape) == 3 and isinstance(brain_shape[1], int) and brain_shape[1] != n_ch:
            raise ArtifactError(
                f"model input {self.brain_input!r} has {brain_shape[1]} channels, its contract lists {n_ch}; "
                "re-export the model"
            )

    def _read_contract(self, p: Path) -> ModelContract:
        """The embedded contract (checked against its stored sha256 and against a sidecar), else the sidecar.

        A sidecar sits outside the model's SHA-256 (which the bank checks): one that disagrees with the
        embedded contract is refused rather than ignored; a sidecar-only contract is checked against the
        bank's ``contract_sha256`` in :func:`~neurospeech.service.decoder.load_artifacts`.
        """
        meta = self.session.get_modelmeta().custom_metadata_map
        side = sidecar_path(p)
        if METADATA_KEY in meta:
            contract = ModelContract.from_json(meta[METADATA_KEY])
            digest = contract.sha256()
            if CONTRACT_SHA_KEY in meta and meta[CONTRACT_SHA_KEY] != digest:
                raise ArtifactError(
                    f"the contract embedded in {str(p)!r} does not match its stored sha256: the file was altered;"
                    " re-export the model"
                )
            if side.is_file():
                try:
                    other = ModelContract.load(side).sha256()
                except (ArtifactError, OSError, ValueError) as exc:
                    raise ArtifactError(
                        f"contract sidecar {str(side)!r} next to {p.name!r} is unreadable ({exc}); delete it or "
                        "re-export the model"
                    ) from exc
                if other != digest:
                    raise ArtifactError(
                        f"contract sidecar {str(side)!r} differs from the contract inside {p.name!r} (sha256 "
                        f"{other[:12]}... vs {digest[:12]}...): one of them was edited; delete the sidecar or "
                        "re-export the model"
                    )
            return contract
        if side.is_file():
            return ModelContract.load(side)
        raise ArtifactError(
            f"model {str(p)!r} carries no contract (metadata key {METADATA_KEY!r}) and has no sidecar "
            f"{side.name!r}; export it with `neurospeech export`"
        )

    def subject_index(self, subject: str) -> int:
        """Index of ``subject`` in the model's subject layer (``ConfigError``, exit 2, when unknown)."""
        if subject not in self.contract.subjects:
            raise ConfigError(
                f"subject {subject!r} is not in the model (known: {self.contract.subjects}); pass one of them"
            )
        return self.contract.subjects.index(subject)

    def encode(self, x: NDArray[np.float32], subject_index: int = 0) -> NDArray[np.float32]:
        """Latent of one window ``(C, T)`` -> ``(F, T')``, or a batch ``(B, C, T)`` -> ``(B, F, T')``."""
        single = x.ndim == 2
        xb = np.ascontiguousarray(x[None] if single else x, dtype=np.float32)
        feeds: dict[str, Any] = {self.brain_input: xb}
        if self.subject_input is not None:
            feeds[self.subject_input] = np.full(len(xb), subject_index, dtype=self._subject_dtype)
        z = self.session.run([self.output_name], feeds)[0]
        return z[0] if single else z
