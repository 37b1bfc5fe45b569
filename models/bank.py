"""``neurospeech bank``: candidate speech segments for one exported model, in the form the service scores.

From the model's contract (read from the ONNX file) the bank rebuilds the speech target exactly as in
training: extractor ``contract.speech.kind/params`` over whole stimulus files (feature cache), global
standardisation ``contract.speech.mean/std``, the scoring representation
``contract.output["speech_to_output"]``
(projection, time pooling), windows ``sound_time + [tmin, tmax - lag]`` cut by
:func:`neurospeech.data.segments.speech_window` (the function training used). Candidates are the word
onsets of
the chosen split's sounds, one per ``segment_id(sound, sound_time)``. The header stores ``model_sha256`` = the
sha256 of the ONNX file, so :meth:`CandidateBank.check_model` refuses a bank built for another model.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import sha256_file
from ..data import Splits, load_dataset, segment_id
from ..data.segments import speech_window
from ..errors import ConfigError, DataFormatError
from ..scoring import CandidateBank, normalise_candidates

__all__ = ["build_bank", "word_candidates"]

log = logging.getLogger(__name__)


def word_candidates(root: str | Path, split: str | None = "test", fmt: str | None = None) -> dict[str, np.ndarray]:
    """Distinct word-onset segments of a dataset's events (every run), optionally one split's sounds only.

    Returns
    -------
    dict of arrays, shape (n,)
        ``ids``, ``words``, ``sounds``, ``sentences``, ``sound_times``, sorted by sound then time.
    """
    if split not in (None, "all", "train", "val", "test"):
        raise ConfigError(f"split must be 'train', 'val', 'test' or 'all', got {split!r}")
    seen: dict[str, tuple[str, str, str, float]] = {}
    split_of = Splits.for_dataset(root)  # the dataset's splits.json when present, else the hash split
    for rec in load_dataset(root, fmt=fmt):
        w = rec.load_events().words()
        for k in range(len(w)):
            sound = str(w.sound[k])
            if not sound or (split not in (None, "all") and split_of(sound) != split):
                continue
            st = float(w.sound_time[k])
            sid = segment_id(sound, st)
            seen.setdefault(sid, (str(w.word[k]), sound, str(w.sentence[k]), st))
    if not seen:
        raise DataFormatError(f"no word events in the {split!r} split of {root}; nothing to put in a bank")
    rows = sorted(seen.items(), key=lambda kv: (kv[1][1], kv[1][3]))
    return {
        "ids": np.array([r[0] for r in rows], dtype=np.str_),
        "words": np.array([r[1][0] for r in rows], dtype=np.str_),
        "sounds": np.array([r[1][1] for r in rows], dtype=np.str_),
        "sentences": np.array([r[1][2] for r in rows], dtype=np.str_),
        "sound_times": np.array([r[1][3] for r in rows], dtype=np.float64),
    }


def _cache_on(data_cache: str, root: Path, fmt: str | None, given: bool) -> bool:
    """Whether ``build_bank`` reads targets from the memory-mapped target cache (see its ``data_cache``)."""
    from ..data.formats import BIDS, detect_format

    if data_cache not in ("auto", "on", "off"):
        raise ConfigError(f"data_cache must be 'auto', 'on' or 'off', got {data_cache!r}")
    if data_cache != "auto":
        return data_cache == "on"
    return not given and (fmt or detect_format(root)) != BIDS


def build_bank(model: str | Path, data: str | Path, out: str | Path | None = None, split: str = "test",
               feature_cache: str | Path | None = None, progress: bool = True,
               rank: int | None = None, fmt: str | None = None,
               candidates: dict[str, np.ndarray] | None = None, data_cache: str = "auto",
               batch_size: int = 256, prefilter: int | str | None = None, shortlist: int = 200) -> CandidateBank:
    """Build (and optionally save) the candidate bank of ``model`` from the stimuli of dataset ``data``.

    Parameters
    ----------
    model : path
        Exported ONNX encoder (its embedded contract defines the speech representation).
    data : path
        Dataset root with ``stimuli/`` and events.
    out : path or None
        Where to save the ``.npz`` bank.
    split : {'test', 'val', 'train', 'all'}
        Sounds whose word onsets become candidates.
    feature_cache : path or None
        Feature cache directory (None: :func:`neurospeech.speech.cache.default_cache_dir`).
    rank : int or None
        Store a low-rank compressed bank (:meth:`CandidateBank.compressed`); None or 0: the exact bank.
    prefilter, shortlist : int, 'auto' or None, int
        Instead of ``rank``: keep the exact bank and add a rank-``prefilter`` prefilter that picks the
        ``shortlist`` candidates scored exactly per decision (:meth:`CandidateBank.with_prefilter`). ``'auto'``
        (``neurospeech bank``'s default): rank 512 where it pays and keeps 99 % of the candidates' energy,
        else the exact bank (:meth:`CandidateBank.with_auto_prefilter`). None or 0: the exact bank.
    fmt : str or None
        Layout of ``data`` (:mod:`neurospeech.data.formats`); None: detected.
    candidates : dict or None
        Candidates given directly (``neurospeech.data.formats.audio_word_candidates``: sounds relative to
        ``data``, a folder of wavs); None: the word events of the dataset ``data``.
    data_cache : {'auto', 'on', 'off'}
        ``on``: each sound's standardised, projected features are memory-mapped from the target cache that
        training and ``evaluate`` stream from (``<feature cache>/recordings/targets``,
        :class:`neurospeech.models._stream.TargetCache`), written there once if missing; ``off``: computed in
        memory, one sound at a time; ``auto``: on for a public corpus, off for the project's BIDS and for
        ``candidates`` given directly. Either way the candidates are cut and pooled ``batch_size`` at a time
        into the bank's rows, so memory holds the bank plus one sound's features (tested equal).
    batch_size : int
        Candidates cut and pooled at a time.
    """
    from tqdm import tqdm

    from ._data import SpeechTargets
    from .export import read_contract

    if prefilter == "auto" and rank:
        prefilter = None  # a compressed bank asked for: no prefilter on it
    if isinstance(prefilter, str) and prefilter != "auto":
        raise ConfigError(f"prefilter must be a rank (a positive integer), 'auto' or None, got {prefilter!r}")
    if rank and prefilter:  # refused before any work
        raise ConfigError("give either rank (a compressed bank) or prefilter (an exact bank with a prefilter)")
    t0 = time.perf_counter()
    contract = read_contract(model)
    rep: dict[str, Any] | None = contract.output.get("speech_to_output")
    if rep is None:
        raise DataFormatError(f"the contract of {model} has no output.speech_to_output; re-export the model")
    root = Path(data)
    from ..speech.cache import resolve_cache_dir

    cache = resolve_cache_dir(feature_cache)
    speech = {"kind": contract.speech.kind, "dim": contract.speech.dim, "params": contract.speech.params,
              "mean": contract.speech.mean, "std": contract.speech.std}
    targets = SpeechTargets.from_spec(root, speech, rep, cache)
    cand = candidates if candidates is not None else word_candidates(root, split, fmt)
    if batch_size < 1:
        raise ConfigError(f"bank batch_size must be at least 1 candidate, got {batch_size}; e.g. 256")
    tcache = None
    if _cache_on(data_cache, root, fmt, candidates is not None):
        from ..data._cache import default_recording_cache_dir
        from ._stream import TargetCache

        tcache = TargetCache(targets, default_recording_cache_dir(feature_cache) / "targets")
    window = contract.window
    out_shape = [int(v) for v in contract.output["shape"]]
    pooled = np.empty((len(cand["ids"]), *out_shape), dtype=np.float32)
    for sound in tqdm(sorted(set(cand["sounds"].tolist())), desc="bank", unit="wav", disable=not progress):
        f = tcache.get(sound) if tcache is not None else targets(sound)
        rows = np.flatnonzero(cand["sounds"] == sound)
        for b in range(0, len(rows), batch_size):  # cut and pooled a batch at a time: (batch, F', n_times)
            r = rows[b:b + batch_size]
            p = targets.representation.pool(np.stack([speech_window(f, float(cand["sound_times"][i]), window)
                                                      for i in r]))
            if list(p.shape[1:]) != out_shape:
                raise DataFormatError(
                    f"bank segments have shape {list(p.shape[1:])} but the model outputs {out_shape}; the "
                    "contract's speech representation does not match its output: re-export the model")
            pooled[r] = p
        targets._memo.pop(sound, None)  # one sound's features in memory at a time
        del f
    bank = CandidateBank(
        features=normalise_candidates(pooled), ids=cand["ids"], words=cand["words"], sounds=cand["sounds"],
        sentences=cand["sentences"], sound_times=cand["sound_times"],
        header={
            "model_sha256": sha256_file(model),
            "model_id": contract.model_id,
            "contract_sha256": contract.sha256(),
            "output_shape": out_shape,
            "speech": {"kind": contract.speech.kind, "params": contract.speech.params},
            "split": split,
            "data": str(root.resolve()),
            "n_sounds": len(set(cand["sounds"].tolist())),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    if prefilter == "auto":
        bank, why = bank.with_auto_prefilter(shortlist=int(shortlist))
        log.info("bank: %s", why)
    elif prefilter:
        exact_macs = bank.macs_per_decision()
        bank = bank.with_prefilter(int(prefilter), int(shortlist))
        log.info("prefilter of rank %d (%.2f%% of the candidates' energy), %d candidates scored exactly: %d MACs "
                 "per decision (exact: %d, %.1fx fewer)", prefilter, 100 * bank.header["prefilter"]["energy"],
                 bank.shortlist, bank.macs_per_decision(), exact_macs, exact_macs / bank.macs_per_decision())
    if rank:
        exact_macs = bank.macs_per_decision()
        bank = bank.compressed(int(rank))
        log.info("bank compressed to rank %d: %.2f%% of the candidates' energy kept; %d MACs per decision "
                 "(exact: %d, %.1fx fewer)", rank, 100 * bank.header["compression"]["energy"],
                 bank.macs_per_decision(), exact_macs, exact_macs / bank.macs_per_decision())
        if bank.macs_per_decision() >= exact_macs:
            log.warning("rank %d does not reduce scoring cost for %d candidates; use the exact bank", rank, len(bank))
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        bank.save(out)
    log.info("bank: %d candidates from %d sounds (%s split), %.1f MB, %.1f s", len(bank),
             bank.header["n_sounds"], split,
             sum(a.nbytes for a in (bank.features, bank.basis, bank.prefilter_basis, bank.prefilter_features)
                 if a is not None) / 1e6,
             time.perf_counter() - t0)
    return bank
