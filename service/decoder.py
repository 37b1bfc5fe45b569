"""Window -> encoder -> CLIP scores against the candidate bank -> top-k decision header.

Used by the live server and by ``decode-file`` alike: both make the same decisions from the same windows.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from ..errors import ArtifactError, ConfigError
from ..scoring import CandidateBank
from .jobs import WindowJob
from .model import EncoderModel

__all__ = ["Decoder", "load_artifacts"]

log = logging.getLogger(__name__)


def load_artifacts(
    model_path: Any, bank_path: Any, subject: str | None, intra_op_threads: int = 1
) -> tuple[EncoderModel, CandidateBank, str]:
    """Load the bank, then the model (its SHA-256 checked against the bank before onnxruntime loads it).

    Returns ``(model, bank, subject)`` with the subject resolved (the model's only subject when None).

    Raises
    ------
    ArtifactError
        Missing/corrupted files, a bank built for another model or contract, a bank with non-finite values or
        candidates of another dimension than the model's output (exit code 4).
    ConfigError
        Unknown subject, or none given for a multi-subject model (exit code 2).
    """
    try:
        bank = CandidateBank.load(bank_path)
    except ArtifactError:
        raise
    except Exception as exc:  # a truncated zip (BadZipFile), bad rows (DataFormatError), zlib errors ...
        raise ArtifactError(
            f"candidate bank {str(bank_path)!r} is corrupted or not a neurospeech bank ({type(exc).__name__}: "
            f"{exc}); rebuild it with `neurospeech bank`"
        ) from exc
    if len(bank) == 0:
        raise ArtifactError(f"candidate bank {str(bank_path)!r} is empty; rebuild it")
    _check_bank_values(bank, bank_path)
    model = EncoderModel(model_path, check=_model_check(bank, model_path), intra_op_threads=intra_op_threads)
    contract = model.contract
    if subject is None:
        if len(contract.scalers) != 1:
            raise ConfigError(
                f"the model knows several subjects {sorted(contract.scalers)}; choose one with --subject "
                "(or [model] subject = ... in the config)"
            )
        subject = next(iter(contract.scalers))
    if subject not in contract.scalers:
        raise ConfigError(
            f"subject {subject!r} is not in the model (known: {sorted(contract.scalers)}); pass --subject with "
            "one of these, or retrain including this subject"
        )
    _check_bank_fits(bank, bank_path, model)
    return model, bank, subject


def _model_check(bank: CandidateBank, model_path: Any) -> Any:
    """``EncoderModel``'s pre-load check: the bank's ``model_sha256`` (naming both possible causes)."""

    def check(sha: str) -> None:
        if bank.model_sha256 != sha:
            raise ArtifactError(
                f"candidate bank was built for model sha256 {bank.model_sha256[:12] or '<none>'}... (model_id "
                f"{bank.header.get('model_id', '?')!r}) but model {str(model_path)!r} is {sha[:12]}...: either "
                "the model file was changed or corrupted after the bank was built (re-export or restore it), or "
                "the bank belongs to another model (rebuild the bank with `neurospeech bank --model <model.onnx>`)"
            )

    return check


def _check_bank_values(bank: CandidateBank, path: Any) -> None:
    """Refuse non-finite candidates, times or basis (every decision would go out with ``prob: null``)."""
    for name, arr in (("features", bank.features), ("basis", bank.basis), ("sound_times", bank.sound_times),
                      ("prefilter_basis", bank.prefilter_basis), ("prefilter_features", bank.prefilter_features)):
        if arr is None:
            continue
        a = np.asarray(arr)
        if a.dtype.kind not in "fiu":
            raise ArtifactError(f"candidate bank {str(path)!r}: {name} has dtype {a.dtype}, not numbers; rebuild it")
        bad = ~np.isfinite(a)
        if bad.any():
            rows = np.unique(np.nonzero(bad)[0])
            raise ArtifactError(
                f"candidate bank {str(path)!r}: {int(bad.sum())} non-finite value(s) (NaN/Inf) in {name}, rows "
                f"{rows[:5].tolist()}{' ...' if len(rows) > 5 else ''}; the bank is corrupted: rebuild it"
            )


def _check_bank_fits(bank: CandidateBank, path: Any, model: EncoderModel) -> None:
    """The bank's feature dimension, output shape and contract hash against the model's."""
    out = model.output_shape
    if out is None:  # the contract has no output shape: take the graph's, when static
        dims = model.session.get_outputs()[0].shape
        if len(dims) == 3 and all(isinstance(d, int) for d in dims[1:]):
            out = (int(dims[1]), int(dims[2]))
    shape = bank.header.get("output_shape")
    if shape is not None and out is not None and tuple(int(v) for v in shape) != tuple(out):
        raise ArtifactError(
            f"bank output shape {tuple(shape)} differs from the model's {tuple(out)}; rebuild the bank for this model"
        )
    if out is not None and bank.dim != int(np.prod(out)):
        raise ArtifactError(
            f"candidate bank {str(path)!r} holds {bank.dim}-dimensional candidates but the model outputs "
            f"{tuple(out)} = {int(np.prod(out))} values per window; rebuild the bank for this model"
        )
    stored = bank.header.get("contract_sha256")
    if stored is not None and stored != model.contract.sha256():
        raise ArtifactError(
            f"candidate bank {str(path)!r} was built for contract sha256 {str(stored)[:12]}... but the model's "
            f"contract is {model.contract.sha256()[:12]}... (edited sidecar, or a bank for another export); "
            "rebuild the bank or restore the model's contract"
        )


class Decoder:
    """Scores windows against a bank.

    Parameters
    ----------
    model : EncoderModel
    bank : CandidateBank
    subject : str
    k : int
        Candidates reported per decision.
    """

    def __init__(self, model: EncoderModel, bank: CandidateBank, subject: str, k: int = 10) -> None:
        self.model = model
        self.bank = bank
        self.subject = subject
        self.k = int(k)
        self.subject_index = model.subject_index(subject) if subject in model.contract.subjects else 0
        self._ids = bank.ids.astype(str)
        self._words = bank.words.astype(str)
        self._sounds = bank.sounds.astype(str)
        self._times = np.asarray(bank.sound_times, dtype=np.float64)
        # batching (decode-file): off for good for a model exported with a fixed batch of 1; after a failed batch
        # call, windows are encoded one by one and batching is retried after 1, 2, 4 ... 256 batches
        self._batch_ok = _batch_dim(model) != 1
        self._batch_retry_in = 0
        self._batch_backoff = 1
        self._batch_lock = threading.Lock()  # decode-file's workers share the decoder
        self.batch_failures = 0
        self.last_batch_error: str | None = None
        if not self._batch_ok:
            log.info("the model takes one window at a time (fixed batch of 1): windows are encoded one by one")

    def decide(
        self, job: WindowJob, with_latent: bool = False
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Decode one window.

        Returns
        -------
        header : dict
            The decode header fields the service fills (kind, subject, times, processing_ms, topk, truth,
            flags); the publisher adds schema/seq/t_sent/model.
        arrays : dict
            ``{"latent": (F, T')}`` when ``with_latent``, else empty.
        """
        z = self.model.encode(job.x, self.subject_index) if job.x is not None else None
        ranked = None
        if z is not None:
            best, score, prob = self.bank.topk(z, self.k)
            ranked = (best[0], score[0], prob[0])
        return self._finish(job, z, ranked, with_latent)

    def decide_batch(self, jobs: list[WindowJob], batch: Any = None) -> list[dict[str, Any]]:
        """Decode several windows at once (one encoder call, one matrix product against the bank).

        Gives the same decisions as :meth:`decide` one by one (up to float rounding), much faster offline: the
        bank is read once per batch instead of once per window. ``processing_ms`` is the batch time divided
        by the number of windows. ``batch``: the jobs' windows already stacked, ``(len(jobs), C, T)``
        float32, when every job has one (saves a copy of the batch).
        """
        t0 = time.perf_counter()
        return self._score_batch(jobs, self._encode_batch(jobs, batch), t0)

    def _encode_batch(self, jobs: list[WindowJob], batch: Any = None) -> Any:
        """Encoder part of :meth:`decide_batch`: latents ``(n_ok, F, T')`` of the jobs with data (or None)."""
        if batch is not None and len(batch) == len(jobs) and all(j.x is not None for j in jobs):
            xb = np.asarray(batch, dtype=np.float32)
        else:
            xs = [np.asarray(j.x) for j in jobs if j.x is not None]
            if not xs:
                return None
            xb = np.stack(xs)
        with self._batch_lock:
            try_batch = self._batch_ok and self._batch_retry_in <= 0
            if self._batch_ok and not try_batch:
                self._batch_retry_in -= 1
        if try_batch:
            try:
                z = self.model.encode(xb, self.subject_index)
            except Exception as exc:  # e.g. memory for a large batch; a real error fails one by one too
                with self._batch_lock:
                    self.batch_failures += 1
                    self.last_batch_error = f"{type(exc).__name__}: {exc}"[:500]
                    self._batch_retry_in = backoff = self._batch_backoff
                    self._batch_backoff = min(2 * backoff, 256)
                log.warning(
                    "encoding a batch of %d windows failed (%s); encoding them one by one, batching again after "
                    "%d batch(es)", len(xb), self.last_batch_error, backoff,
                )
            else:
                with self._batch_lock:
                    self._batch_backoff = 1
                return z
        return np.stack([self.model.encode(x, self.subject_index) for x in xb])

    def stats(self) -> dict[str, Any]:
        """Batching state (decode-file): ``batching`` (False: one window per encoder call for good),
        ``batch_failures`` and ``last_batch_error``."""
        return {"batching": self._batch_ok, "batch_failures": self.batch_failures,
                "last_batch_error": self.last_batch_error}

    def _score_batch(self, jobs: list[WindowJob], z: Any, t0: float) -> list[dict[str, Any]]:
        """Scoring part of :meth:`decide_batch`, given :meth:`_encode_batch`'s latents (``t0``: start time)."""
        idx = [i for i, j in enumerate(jobs) if j.x is not None]
        zs: Any = [None] * len(jobs)
        ranked: Any = [None] * len(jobs)
        if idx:
            best, score, prob = self.bank.topk(z, self.k)
            for k, i in enumerate(idx):
                zs[i], ranked[i] = z[k], (best[k], score[k], prob[k])
        share = (time.perf_counter() - t0) / max(1, len(jobs))
        out = []
        for i, job in enumerate(jobs):
            job.t_created = time.perf_counter() - share
            out.append(self._finish(job, zs[i], ranked[i], False)[0])
        return out

    def _finish(
        self, job: WindowJob, z: Any, ranked: Any, with_latent: bool
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``ranked``: ``(indices, scores, probabilities)`` of the window's top-k (:meth:`CandidateBank.topk`)."""
        arrays: dict[str, np.ndarray] = {}
        entries: list[dict[str, Any]] = []
        flags = list(job.flags)
        if z is not None and not (np.isfinite(ranked[1]).all() and np.isfinite(ranked[2]).all()):
            # the encoder produced NaN/Inf (the bank is checked finite at load): report, do not rank garbage
            flags.append("nonfinite_output")
            z = None
        if z is not None:
            best, score, prob = ranked
            entries = [
                {
                    "rank": r + 1,
                    "id": self._ids[i],
                    "word": self._words[i],
                    "sound": self._sounds[i],
                    "sound_time": float(self._times[i]),
                    "score": float(score[r]),
                    "prob": float(prob[r]),
                }
                for r, i in enumerate(best.tolist())
            ]
            if with_latent:
                arrays["latent"] = np.asarray(z, dtype=np.float32)
        header = {
            "kind": job.kind,
            "subject": self.subject,
            "t_window_start": job.t_window_start,
            "t_window_end": job.t_window_end,
            "t_newest_sample": job.t_newest_sample,
            "processing_ms": (time.perf_counter() - job.t_created) * 1e3,
            "topk": entries,
            "truth": job.truth,
            "flags": flags,
        }
        return header, arrays


def _batch_dim(model: EncoderModel) -> Any:
    """The brain input's batch dimension as the ONNX graph declares it (an int when fixed, else a name/None)."""
    try:
        shape = next(i.shape for i in model.session.get_inputs() if i.name == model.brain_input)
    except (AttributeError, StopIteration):
        return None
    return shape[0] if shape else None
