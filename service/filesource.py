"""``decode-file``: the live pipeline over a recording file, as fast as possible, without LSL.

The file (FIF, EDF, BrainVision, BIDS runs of those; anything :func:`mne.io.read_raw` reads) is fed in chunks
through the same :class:`~neurospeech.service.pipeline.OnlinePipeline` and
:class:`~neurospeech.service.decoder.Decoder` the server uses, with ``raw.times`` as stamps.
Every sliding window (one per hop of data) is decoded -- none is skipped -- and, when word events are known
(the BIDS run's ``_events.tsv`` or ``--events``), every word-locked window too, with the event's segment id
as ground truth. Decisions are written as JSON lines with the same fields as the published decode headers.

Early decisions (issue 18): with a model whose contract declares ``early_decisions``, every word-locked window
is also decided from the data available at onset + each declared delay (:func:`early_jobs`, the function the
live scheduler uses); those lines (``kind: "word_early"``, ``delay_s``, ``t_onset``, schema
``neurospeech.v1.word_early``) come just before their word's final line, and the summary's ``early_decisions``
holds accuracy vs decision delay (:func:`neurospeech.early.delay_curve`: top-1/top-10 with 95 % bootstrap
intervals over words, chance, share of the full-window top-10).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from threadpoolctl import threadpool_limits

from ..early import delay_curve, delays_of, mask_unseen
from ..errors import ConfigError, DataFormatError
from ._partial_file import PartialFile, write_error
from .config import ServeSettings
from .decoder import Decoder, load_artifacts
from .early_decisions import early_header
from .jobs import WindowCut, WindowJob
from .messages import encode_header
from .pipeline import OnlinePipeline
from .quality import QualitySettings
from .rescale import attach_rescaler
from .streamcheck import check_stream

__all__ = [
    "FileMarker",
    "channel_types",
    "decode_file",
    "decode_raw",
    "early_jobs",
    "early_summary",
    "events_path_for",
    "iter_jobs",
    "read_raw",
    "read_word_markers",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileMarker:
    """A word event on the raw.times clock."""

    time: float
    payload: dict[str, Any]


def events_path_for(path: Path) -> Path | None:
    """The BIDS ``_events.tsv`` next to a run (``sub-01_task-x_meg.fif`` -> ``sub-01_task-x_events.tsv``)."""
    stem = path.name.split(".")[0]
    if "_" not in stem:
        return None
    cand = path.with_name(stem.rsplit("_", 1)[0] + "_events.tsv")
    return cand if cand.is_file() else None


def read_word_markers(events_tsv: Path) -> list[FileMarker]:
    """Word rows of an events table as markers with segment ids (``neurospeech.data`` format)."""
    from ..data import read_events_tsv, segment_id

    ev = read_events_tsv(events_tsv).words()
    out = []
    for k in range(len(ev)):
        sound, st = str(ev.sound[k]), float(ev.sound_time[k])
        out.append(
            FileMarker(
                float(ev.onset[k]),
                {
                    "segment_id": segment_id(sound, st),
                    "word": str(ev.word[k]),
                    "sound": sound,
                    "sound_time": st,
                    "sentence": str(ev.sentence[k]),
                },
            )
        )
    return out


def read_raw(path: Path) -> Any:
    """Read a recording with mne (preloaded); ``DataFormatError`` when it does not exist or cannot be read."""
    import mne

    if not path.exists():
        raise DataFormatError(f"recording {str(path)!r} does not exist")
    try:
        raw = mne.io.read_raw(path, preload=True, verbose="error")
    except Exception as exc:  # mne raises many types for unreadable files
        raise DataFormatError(f"cannot read {str(path)!r} with mne ({type(exc).__name__}: {exc})") from exc
    return raw


def channel_types(raw: Any) -> list[str]:
    """Contract channel types of an mne Raw (mne's generic ``meg`` -> ``mag``, the contract's magnetometer)."""
    return [t if t != "meg" else "mag" for t in raw.get_channel_types()]


def decode_raw(
    data: np.ndarray,
    sfreq: float,
    names: list[str],
    settings: ServeSettings,
    markers: list[FileMarker] | None = None,
    types: list[str] | None = None,
    units: list[str] | None = None,
    chunk_seconds: float = 1.0,
    first_time: float = 0.0,
    artifacts: tuple[Any, Any, str] | None = None,
    batch_size: int = 16,
    workers: int = 2,
    encoder_stats: dict[str, Any] | None = None,
    early: bool | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield decode headers for a continuous recording.

    ``encoder_stats``: a dict filled at the end with the decoder's batching state (``batching``,
    ``batch_failures``, ``last_batch_error``; see :meth:`~neurospeech.service.decoder.Decoder.stats`).

    Parameters
    ----------
    data : array, shape (n_channels, n_times)
        Stream-order channels in stream units.
    sfreq : float
    names, types, units : list of str
        Channel labels (and optionally types/units) for the contract check.
    settings : ServeSettings
        Model, bank, subject, hop, top-k and quality settings.
    markers : list of FileMarker
        Word events (times on the same clock as ``first_time``).
    chunk_seconds : float
        Chunk size fed to the pipeline (does not change the result).
    batch_size : int
        Windows encoded and scored together (1: exactly the live server's per-window calls).
    workers : int
        Threads that check, scale, encode and score batches of windows while this thread filters, resamples
        and cuts the next ones (onnxruntime and most numpy work release the GIL, so they run on separate
        cores). 0: everything in this thread. Decisions come out in the same order with the same values
        whatever the number.
    early : bool or None
        Also yield the early decisions of every word-locked window (``kind: "word_early"``, just before the
        word's final decision). None: when the model declares early decisions; True with a model that does
        not: ``ConfigError``.
    """
    if workers < 0:
        raise ConfigError(f"workers must be 0 or more, got {workers!r}")
    model, bank, subject = artifacts or load_artifacts(
        settings.model, settings.bank, settings.subject, settings.intra_op_threads
    )
    delays = delays_of(model.contract)
    if early and not delays:
        raise ConfigError(f"model {model.contract.model_id!r} does not declare early decisions (contract key "
                          "early_decisions); train one with --set early_decisions=true, or leave early off")
    pipe = _open_pipeline(model.contract, names, sfreq, subject, settings, types, units, chunk_seconds)
    runner = _BatchRunner(
        Decoder(model, bank, subject, settings.topk), pipe.assess, workers,
        (pipe.n_channels, model.contract.window.n_times),
        delays if early is not False else (), model.contract.window,
    )
    try:
        batch: list[WindowCut] = []
        for cut in _iter_cuts(pipe, data, sfreq, settings, markers, chunk_seconds, first_time):
            batch.append(cut)
            if len(batch) >= batch_size:
                yield from runner.submit(batch)
                batch = []
        if batch:
            yield from runner.submit(batch)
        yield from runner.finish()
    finally:
        runner.close()
        if encoder_stats is not None:
            encoder_stats.update(runner.decoder.stats())


def iter_jobs(
    data: np.ndarray,
    sfreq: float,
    names: list[str],
    contract: Any,
    subject: str,
    settings: ServeSettings,
    markers: list[FileMarker] | None = None,
    types: list[str] | None = None,
    units: list[str] | None = None,
    chunk_seconds: float = 1.0,
    first_time: float = 0.0,
) -> Iterator[WindowJob]:
    """The windows the live pipeline cuts from a continuous recording, in decision order.

    Yields :class:`~neurospeech.service.jobs.WindowJob` (``x`` of shape ``(n_channels, n_times)``, or
    None for a flagged window): every sliding window (one per hop) and, with ``markers``, every word-locked
    window. Parameters as in :func:`decode_raw` (``contract``: the model's contract).
    """
    pipe = _open_pipeline(contract, names, sfreq, subject, settings, types, units, chunk_seconds)
    for cut in _iter_cuts(pipe, data, sfreq, settings, markers, chunk_seconds, first_time):
        yield pipe.assess(cut)[0]


def _open_pipeline(
    contract: Any,
    names: list[str],
    sfreq: float,
    subject: str,
    settings: ServeSettings,
    types: list[str] | None,
    units: list[str] | None,
    chunk_seconds: float,
) -> OnlinePipeline:
    cmap = check_stream(contract, names, sfreq, units, types, strict_rate=settings.strict_rate)
    need = contract.window.n_window / contract.window.sfreq + 2 * chunk_seconds + 2.0
    pipe = OnlinePipeline(
        contract,
        cmap,
        sfreq,
        subject,
        max(need, 10.0),
        settings.hop,
        QualitySettings.from_settings(settings),
        np.inf,
        settings.clock_halftime,
    )
    pipe.clock.min_span = np.inf  # file times are exact: keep the nominal rate
    attach_rescaler(pipe, settings, contract, subject)  # per-session scaling (if asked)
    return pipe


def _iter_cuts(
    pipe: OnlinePipeline,
    data: np.ndarray,
    sfreq: float,
    settings: ServeSettings,
    markers: list[FileMarker] | None,
    chunk_seconds: float,
    first_time: float,
) -> Iterator[WindowCut]:
    """Feed the recording in chunks; yield every window as soon as it is complete, in decision order."""
    pending = sorted(markers or [], key=lambda m: m.time)
    n = data.shape[1]
    step = max(1, round(chunk_seconds * sfreq))
    stamps_all = first_time + np.arange(n) / sfreq
    last_key = None
    for i in range(0, n, step):
        # (n, C) in time order, as a view: the resampler's one copy of the chunk also transposes it
        pipe.process_chunk(data[:, i : i + step].T, stamps_all[i : i + step])
        for key, start in pipe.due_sliding(last_key):
            last_key = key
            cut = pipe.cut(start, "sliding")
            if cut is not None:
                yield cut
        while pending:
            status, where = pipe.locate_anchor(pending[0].time)
            if status == "wait":
                break
            m = pending.pop(0)
            if status == "drop":
                log.debug("word at %.3f s not decodable: %s", m.time, where)
                continue
            cut = pipe.cut(int(where), "word", dict(m.payload))
            if cut is not None:
                yield cut


class _BatchRunner:
    """Decides batches of cut windows, in order, in ``workers`` threads (0: in the caller).

    A worker checks and scales the windows (``assess``), runs the encoder and scores the bank; the caller
    keeps reading the recording. At most ``workers + 1`` batches are in flight (bounded memory: the caller
    waits for the oldest when the workers are behind). A worker's exception is re-raised in the caller when
    its batch comes up.
    """

    def __init__(
        self, decoder: Decoder, assess: Callable[[WindowCut, Any], tuple[WindowJob, Any]], workers: int,
        window_shape: tuple[int, int], delays: tuple[float, ...] = (), window: Any = None,
    ) -> None:
        self.decoder = decoder
        self.assess = assess
        self.window_shape = window_shape
        self.delays = tuple(delays)
        self.window = window
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="neurospeech-decode-file") if workers else None
        self.max_pending = workers + 1
        self.pending: deque[Future[list[dict[str, Any]]]] = deque()

    def _decide(self, cuts: list[WindowCut]) -> list[dict[str, Any]]:
        # windows are scaled straight into the encoder's batch (no per-window array, no stacking copy)
        batch = np.empty((len(cuts), *self.window_shape), dtype=np.float32)
        jobs = [self.assess(c, batch[i])[0] for i, c in enumerate(cuts)]
        if not self.delays or not any(j.kind == "word" and j.x is not None for j in jobs):
            return self.decoder.decide_batch(jobs, batch)
        # early decisions: each decodable word window also at onset + every delay, just before its final one
        order: list[tuple[WindowJob, float | None]] = []
        for j in jobs:
            if j.kind == "word" and j.x is not None:
                order += [(e, d) for e, d in zip(early_jobs(j, self.window, self.delays), self.delays, strict=True)]
            order.append((j, None))
        all_jobs = [j for j, _ in order]
        heads = self.decoder.decide_batch(all_jobs, np.stack([np.asarray(j.x) for j in all_jobs])
                                          if all(j.x is not None for j in all_jobs) else None)
        return [early_header(h, d, self.window, from_full_window=True) if d is not None else h
                for h, (_, d) in zip(heads, order, strict=True)]

    def submit(self, cuts: list[WindowCut]) -> Iterator[dict[str, Any]]:
        if self.pool is None:
            yield from self._decide(cuts)
            return
        self.pending.append(self.pool.submit(self._decide, cuts))
        while self.pending and (len(self.pending) > self.max_pending or self.pending[0].done()):
            yield from self.pending.popleft().result()

    def finish(self) -> Iterator[dict[str, Any]]:
        while self.pending:
            yield from self.pending.popleft().result()

    def close(self) -> None:
        if self.pool is not None:
            for f in self.pending:
                f.cancel()
            self.pending.clear()
            self.pool.shutdown(wait=True, cancel_futures=True)


def early_jobs(job: WindowJob, window: Any, delays: tuple[float, ...]) -> list[WindowJob]:
    """The early versions of a word-locked job: its model input with the samples after onset + delay NaN.

    Parameters
    ----------
    job : WindowJob
        A decodable word window (``x`` of shape ``(n_channels, n_times)``) from the live pipeline.
    window : WindowSpec
        The model's window (``contract.window``).
    delays : tuple of float
        Decision delays (s after the onset).

    Returns
    -------
    list of WindowJob
        One per delay, ``kind == "word_early"``, same truth and times as ``job``. The preprocessed samples up
        to onset + delay are exactly those available at that moment (every step after the causal resampler is
        per sample, the baseline lies before the onset).
    """
    if job.x is None:
        return []
    import dataclasses

    return [dataclasses.replace(job, kind="word_early", x=mask_unseen(job.x, window, d), flags=list(job.flags))
            for d in delays]


def early_summary(ranks: dict[float, list[int]], groups: list[str], n_candidates: int,
                  window: Any = None) -> dict[str, Any] | None:
    """Accuracy vs decision delay of decode-file's word decisions (JSON-safe: non-finite numbers -> None).

    ``ranks``: per delay (the full window under ``window.tmax``) the rank of the true segment in each word's
    top-k (``k`` when absent), the same words at every delay; ``groups``: their segment ids; ``window``: the
    model's window (adds the evidence-limited reference of :func:`neurospeech.early.delay_curve`).
    """
    if not ranks or not groups:
        return None
    rows = delay_curve({d: np.asarray(r) for d, r in ranks.items()}, np.asarray(groups), n_candidates,
                       window=window)

    def clean(v: Any) -> Any:
        if isinstance(v, float):
            return v if np.isfinite(v) else None
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    from ..early import curve_markdown

    return {"curve": [{k: clean(v) for k, v in r.items()} for r in rows],
            "table": "\n".join(curve_markdown({"decode-file": rows})),
            "note": "segment identification at word-locked decisions from the data up to onset + delay_s "
                    "(the last row: the full window); 95 % bootstrap intervals over words"}


def _as_float32(data: np.ndarray) -> np.ndarray:
    """``(channels, times)`` float64 -> float32 with each channel's first sample subtracted (in float64 first).

    The pipeline's windows are baseline-corrected, so a constant per channel changes no decision; without it,
    float32 would round an EEG channel's DC offset (50 mV: 3.7 nV steps) instead of its signal. Half the memory and
    half the bytes to stream through the resampler (decode-file ~6 % faster, same decisions: tested).
    """
    out = np.empty(data.shape, dtype=np.float32)
    np.subtract(data, data[:, :1], out=out, casting="same_kind")
    return out


def decode_file(
    path: str | Path,
    out: str | Path | IO[str],
    settings: ServeSettings,
    events: str | Path | None = None,
    chunk_seconds: float = 1.0,
    progress: bool = False,
    workers: int = 2,
) -> dict[str, Any]:
    """Decode a recording file and write the decisions as JSON lines (``workers`` as in :func:`decode_raw`).

    A path ``out`` is written through a temporary file in the same folder, renamed to ``out`` only when every
    decision is written: an interrupted or failed run leaves no output that looks complete (an existing
    ``out`` is left as it was). Lines are standard JSON (non-finite numbers are written as ``null``).

    Raises
    ------
    ConfigError
        ``out`` cannot be written (missing or read-only folder, full disk): exit code 2.

    Returns a summary: counts, word-level top-1/top-10 accuracy against the markers' segment ids (when known),
    seconds of data, ``read_s`` (reading the file into memory with mne), ``wall_s`` (running the pipeline over
    it: resampling, windows, encoder, scoring, writing the decisions) and ``realtime_factor`` =
    seconds / wall_s.
    """
    path = Path(path)
    model, bank, subject = load_artifacts(
        settings.model, settings.bank, settings.subject, settings.intra_op_threads
    )
    t_read = time.perf_counter()
    raw = read_raw(path)
    ev_path = Path(events) if events is not None else events_path_for(path)
    if events is not None and not Path(events).is_file():
        raise ConfigError(f"events file {str(events)!r} does not exist")
    markers = read_word_markers(ev_path) if ev_path is not None else []
    names = list(raw.ch_names)
    types = channel_types(raw)
    sfreq = float(raw.info["sfreq"])
    data = _as_float32(raw.get_data())
    del raw  # keep only the float32 copy: a quarter of mne's float64 data and its copy
    duration = data.shape[1] / sfreq
    read_s = time.perf_counter() - t_read
    fh: IO[str]
    own = not hasattr(out, "write")
    target = Path(out) if own else None  # type: ignore[arg-type]
    counts = {"sliding": 0, "word": 0, "flagged": 0}
    encoder_stats: dict[str, Any] = {}
    top1 = top10 = n_words = 0
    delays = delays_of(model.contract)
    if delays:
        counts["word_early"] = 0
    # early decisions: per word, the rank of the truth in the top-k at each delay
    early_ranks: dict[float, list[int]] = {d: [] for d in (*delays, model.contract.window.tmax)}
    early_groups: list[str] = []
    pending_early: dict[float, int] = {}
    t0 = time.perf_counter()
    partial = PartialFile(target) if target is not None else None  # no file yet: created by open() below
    try:
        fh = partial.open() if partial is not None else out  # type: ignore[assignment]
        # BLAS pools on top of the worker threads oversubscribe the cores (see ServeSettings.blas_threads)
        with threadpool_limits(settings.blas_threads, user_api="blas"):
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=round(duration), unit="s", desc=path.name)
            last = 0.0
            for seq, h in enumerate(
                decode_raw(
                    data, sfreq, names, settings, markers, types, None, chunk_seconds, 0.0, (model, bank, subject),
                    workers=workers, encoder_stats=encoder_stats,
                )
            ):
                h = {
                    "schema": "neurospeech.v1.word_early" if h["kind"] == "word_early" else "neurospeech.v1.decode",
                    "seq": seq,
                    "model_id": model.contract.model_id,
                    "model_sha256": model.sha256,
                    **h,
                }
                line = encode_header(h, "json").decode("utf-8")  # NaN/Inf -> null: standard JSON only
                try:
                    fh.write(line + "\n")
                except OSError as exc:
                    raise write_error(target, exc) from exc
                counts[h["kind"]] += 1
                if not h["topk"]:
                    counts["flagged"] += 1
                if h["kind"] == "word_early" and h["topk"] and h["truth"]:
                    pending_early[float(h["delay_s"])] = _rank_in(h)
                if h["kind"] == "word" and h["topk"]:
                    n_words += 1
                    ids = [c["id"] for c in h["topk"]]
                    top1 += ids[0] == h["truth"]["segment_id"]
                    top10 += h["truth"]["segment_id"] in ids[:10]
                    if delays and len(pending_early) == len(delays):  # a word with every early decision
                        for d, r in pending_early.items():
                            early_ranks[d].append(r)
                        early_ranks[model.contract.window.tmax].append(_rank_in(h))
                        early_groups.append(str(h["truth"]["segment_id"]))
                if h["kind"] in ("word", "sliding"):
                    pending_early = {}
                if bar is not None and h["t_window_end"] - last >= 1:
                    bar.update(int(h["t_window_end"] - last))
                    last = float(int(h["t_window_end"]))
            if bar is not None:
                bar.close()
        if partial is not None:
            partial.commit()
    finally:
        if partial is not None:  # failed or interrupted: no output that looks complete (after commit: nothing)
            partial.discard()
    wall = time.perf_counter() - t0
    return {
        "file": str(path),
        "seconds": duration,
        "read_s": read_s,
        "wall_s": wall,
        "realtime_factor": duration / wall if wall > 0 else None,
        "decisions": counts,
        "encoder": encoder_stats,  # batching, batch_failures, last_batch_error
        "markers": len(markers),
        # segment identification at word-locked decisions (not word identity): chance k / len(bank)
        "word_locked": n_words,
        "segment_top1": top1 / n_words if n_words else None,
        "segment_top10": top10 / n_words if n_words else None,
        "n_candidates": len(bank),
        "model_sha256": model.sha256,
        "early_decisions": early_summary(early_ranks, early_groups, len(bank), model.contract.window)
        if delays else None,
    }


def _rank_in(h: dict[str, Any]) -> int:
    """Rank (0 = best) of the truth in a decision's top-k; a large number when it is not there."""
    ids = [c["id"] for c in h["topk"]]
    truth = h["truth"]["segment_id"]
    return ids.index(truth) if truth in ids else 1 << 30
