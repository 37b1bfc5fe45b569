"""``decode-file``: the live pipeline over a recording file, as fast as possible, without LSL.

The file (FIF, EDF, BrainVision, BIDS runs of those; anything :func:`mne.io.read_raw` reads) is fed in chunks
through the same :class:`~neurospeech.service.pipeline.OnlinePipeline` and
:class:`~neurospeech.service.decoder.Decoder` the server uses, with ``raw.times`` as stamps.
Every sliding window (one per hop of data) is decoded -- none is skipped -- and, when word events are known
(the BIDS run's ``_events.tsv`` or ``--events``), every word-locked window too, with the event's segment id
as ground truth. Decisions are written as JSON lines with the same fields as the published decode headers.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import ConfigError, DataFormatError
from .config import ServeSettings
from .decoder import Decoder, load_artifacts
from .pipeline import OnlinePipeline, QualitySettings, check_stream

__all__ = ["FileMarker", "decode_file", "decode_raw", "events_path_for", "iter_jobs", "read_raw", "read_word_markers"]

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
    batch_size: int = 32,
    pipelined: bool = True,
) -> Iterator[dict[str, Any]]:
    """Yield decode headers for a continuous recording.

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
    pipelined : bool
        Run the encoder on each batch in a worker thread while this thread preprocesses the next batch and
        scores the previous one (onnxruntime releases the GIL, so two cores are used). Decisions come out in
        the same order with the same values either way.
    """
    model, bank, subject = artifacts or load_artifacts(
        settings.model, settings.bank, settings.subject, settings.intra_op_threads
    )
    decoder = Decoder(model, bank, subject, settings.topk)
    runner = _BatchRunner(decoder, pipelined)
    try:
        batch: list[Any] = []
        for job in iter_jobs(data, sfreq, names, model.contract, subject, settings, markers, types, units,
                             chunk_seconds, first_time):
            batch.append(job)
            if len(batch) >= batch_size:
                yield from runner.submit(batch)
                batch = []
        if batch:
            yield from runner.submit(batch)
        yield from runner.finish()
    finally:
        runner.close()


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
) -> Iterator[Any]:
    """The windows the live pipeline cuts from a continuous recording, in decision order.

    Yields :class:`~neurospeech.service.pipeline.WindowJob` (``x`` of shape ``(n_channels, n_times)``, or
    None for a flagged window): every sliding window (one per hop) and, with ``markers``, every word-locked
    window. Parameters as in :func:`decode_raw` (``contract``: the model's contract).
    """
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
    pending = sorted(markers or [], key=lambda m: m.time)
    n = data.shape[1]
    step = max(1, round(chunk_seconds * sfreq))
    stamps_all = first_time + np.arange(n) / sfreq
    last_key = None
    for i in range(0, n, step):
        # (n, C) in time order, contiguous: the pipeline reads it row-wise
        pipe.process_chunk(np.ascontiguousarray(data[:, i : i + step].T), stamps_all[i : i + step])
        for key, start in pipe.due_sliding(last_key):
            last_key = key
            job = pipe.make_job(start, "sliding")
            if job is not None:
                yield job
        while pending:
            status, where = pipe.locate_anchor(pending[0].time)
            if status == "wait":
                break
            m = pending.pop(0)
            if status == "drop":
                log.debug("word at %.3f s not decodable: %s", m.time, where)
                continue
            job = pipe.make_job(int(where), "word", dict(m.payload))
            if job is not None:
                yield job


class _BatchRunner:
    """Decides batches in order; with ``threaded`` the encoder runs in a worker thread.

    The worker only runs the encoder (onnxruntime releases the GIL); scoring and the headers are done by the
    caller when it collects a batch, which balances the two cores. At most two batches wait for the encoder
    (bounded memory; the caller blocks when the worker is behind). An exception in the worker is re-raised in
    the caller.
    """

    def __init__(self, decoder: Decoder, threaded: bool) -> None:
        self.decoder = decoder
        self.threaded = threaded
        self._todo: queue.Queue[tuple[list[Any], float] | None] = queue.Queue(maxsize=2)
        self._done: queue.Queue[tuple[list[Any], float, Any, BaseException | None]] = queue.Queue()
        self._n_submitted = self._n_done = 0
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._work, name="neurospeech-decode-file", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while (item := self._todo.get()) is not None:
            jobs, t0 = item
            try:
                self._done.put((jobs, t0, self.decoder.encode_batch(jobs), None))
            except BaseException as exc:  # handed to the caller, which re-raises it
                self._done.put((jobs, t0, None, exc))
                return

    def _take(self, block: bool) -> list[dict[str, Any]]:
        jobs, t0, z, exc = self._done.get(block=block)
        self._n_done += 1
        if exc is not None:
            raise exc
        return self.decoder.finish_batch(jobs, z, t0)

    def submit(self, jobs: list[Any]) -> Iterator[dict[str, Any]]:
        if not self.threaded:
            yield from self.decoder.decide_batch(jobs)
            return
        item = (jobs, time.perf_counter())
        while True:  # hand over, finishing whatever the encoder completed while we wait for room
            try:
                self._todo.put(item, timeout=0.05)
                break
            except queue.Full:
                while not self._done.empty():
                    yield from self._take(False)
                if self._thread is not None and not self._thread.is_alive():
                    yield from self._take(True)  # the worker died: re-raise its exception
        self._n_submitted += 1
        while not self._done.empty():
            yield from self._take(False)

    def finish(self) -> Iterator[dict[str, Any]]:
        while self._n_done < self._n_submitted:
            yield from self._take(True)

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            while True:
                try:
                    self._todo.put(None, timeout=0.05)
                    break
                except queue.Full:  # abandoned early: drop queued work so the worker can see the stop
                    try:
                        self._todo.get_nowait()
                    except queue.Empty:
                        pass
            self._thread.join(timeout=10)


def decode_file(
    path: str | Path,
    out: str | Path | IO[str],
    settings: ServeSettings,
    events: str | Path | None = None,
    chunk_seconds: float = 1.0,
    progress: bool = False,
) -> dict[str, Any]:
    """Decode a recording file and write the decisions as JSON lines.

    Returns a summary: counts, word-level top-1/top-10 accuracy against the markers' segment ids (when known),
    seconds of data, wall time and the real-time factor.
    """
    path = Path(path)
    model, bank, subject = load_artifacts(
        settings.model, settings.bank, settings.subject, settings.intra_op_threads
    )
    raw = read_raw(path)
    ev_path = Path(events) if events is not None else events_path_for(path)
    if events is not None and not Path(events).is_file():
        raise ConfigError(f"events file {str(events)!r} does not exist")
    markers = read_word_markers(ev_path) if ev_path is not None else []
    names = list(raw.ch_names)
    types = [t if t != "meg" else "mag" for t in raw.get_channel_types()]
    data = raw.get_data()
    sfreq = float(raw.info["sfreq"])
    duration = data.shape[1] / sfreq
    fh: IO[str]
    own = not hasattr(out, "write")
    fh = open(out, "w", encoding="utf-8") if own else out  # type: ignore[arg-type,assignment]
    counts = {"sliding": 0, "word": 0, "flagged": 0}
    top1 = top10 = n_words = 0
    t0 = time.perf_counter()
    try:
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=round(duration), unit="s", desc=path.name)
        last = 0.0
        for seq, h in enumerate(
            decode_raw(
                data, sfreq, names, settings, markers, types, None, chunk_seconds, 0.0, (model, bank, subject)
            )
        ):
            h = {
                "schema": "neurospeech.v1.decode",
                "seq": seq,
                "model_id": model.contract.model_id,
                "model_sha256": model.sha256,
                **h,
            }
            fh.write(json.dumps(h, separators=(",", ":")) + "\n")
            counts[h["kind"]] += 1
            if not h["topk"]:
                counts["flagged"] += 1
            if h["kind"] == "word" and h["topk"]:
                n_words += 1
                ids = [c["id"] for c in h["topk"]]
                top1 += ids[0] == h["truth"]["segment_id"]
                top10 += h["truth"]["segment_id"] in ids[:10]
            if bar is not None and h["t_window_end"] - last >= 1:
                bar.update(int(h["t_window_end"] - last))
                last = float(int(h["t_window_end"]))
        if bar is not None:
            bar.close()
    finally:
        if own:
            fh.close()
    wall = time.perf_counter() - t0
    return {
        "file": str(path),
        "seconds": duration,
        "wall_s": wall,
        "realtime_factor": duration / wall if wall > 0 else float("inf"),
        "decisions": counts,
        "markers": len(markers),
        "word_top1": top1 / n_words if n_words else None,
        "word_top10": top10 / n_words if n_words else None,
        "model_sha256": model.sha256,
    }
