"""Synthetic MEG for the benchmarks: 275 magnetometers at 1200 Hz (CTF-like), 1/f-ish noise at MEG amplitude,
optional word markers; and a stream process (``python -m neurospeech.tools.bench._synthetic``) that replays it
into LSL in a loop until SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["synthetic_meg", "synthetic_source"]


def synthetic_meg(
    n_channels: int = 275, sfreq: float = 1200.0, seconds: float = 60.0, seed: int = 0
) -> tuple[NDArray[np.float32], list[str], NDArray[np.float64]]:
    """Data ``(n_channels, n_times)`` in tesla (~1 pT), channel names, 2-D sensor positions in [0, 1]."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = round(seconds * sfreq)
    white = rng.standard_normal((n, n_channels)).astype(np.float32)
    pink = lfilter([1.0], [1.0, -0.98], white, axis=0).astype(np.float32)
    data = ((pink + 2.0 * white) * 2e-13).T
    names = [f"MEG{k + 1:04d}" for k in range(n_channels)]
    ang = np.linspace(0, 2 * np.pi, n_channels, endpoint=False)
    rad = 0.15 + 0.35 * rng.random(n_channels)
    pos = np.stack([0.5 + rad * np.cos(ang), 0.5 + rad * np.sin(ang)], axis=1)
    return np.ascontiguousarray(data), names, pos


def word_markers(
    seconds: float, sfreq: float, ids: list[tuple[str, float, str]], every: float = 0.7, start: float = 1.0
) -> list[Any]:
    """Markers every ``every`` s cycling through ``ids`` = [(sound, sound_time, word)]."""
    from ...data import segment_id
    from ..replay import WordMarker

    out = []
    t, k = start, 0
    while t < seconds - 3.5:
        sound, st, word = ids[k % len(ids)]
        out.append(
            WordMarker(
                sample=round(t * sfreq),
                payload={
                    "segment_id": segment_id(sound, st),
                    "word": word,
                    "sound": sound,
                    "sound_time": st,
                    "sentence": f"s{k // 8}",
                },
            )
        )
        t += every
        k += 1
    return out


def synthetic_source(
    n_channels: int = 275,
    sfreq: float = 1200.0,
    seconds: float = 60.0,
    seed: int = 0,
    markers: bool = False,
    name: str = "bench-meg",
) -> Any:
    """A :class:`neurospeech.tools.replay.ReplaySource` of :func:`synthetic_meg` data (with markers that name
    the first bank candidates, see :func:`neurospeech.tools.bench._artifacts.bank_entries`)."""
    from ..replay import ReplaySource
    from ._artifacts import bank_entries

    data, names, _ = synthetic_meg(n_channels, sfreq, seconds, seed)
    mk = word_markers(seconds, sfreq, bank_entries(200)) if markers else []
    return ReplaySource(
        data=np.ascontiguousarray(data.T),
        sfreq=sfreq,
        labels=names,
        types=["mag"] * n_channels,
        units=["T"] * n_channels,
        markers=mk,
        name=name,
        stream_type="MEG",
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Replay synthetic MEG into LSL in a loop until SIGTERM.")
    p.add_argument("--name", required=True)
    p.add_argument("--channels", type=int, default=275)
    p.add_argument("--sfreq", type=float, default=1200.0)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--chunk", type=float, default=0.01)
    p.add_argument("--markers", action="store_true")
    a = p.parse_args(argv)
    from ...service.acquisition import ensure_lsl_config

    ensure_lsl_config()
    from ..replay import Replayer, ReplaySettings

    src = synthetic_source(a.channels, a.sfreq, a.seconds, markers=a.markers, name=a.name)
    rep = Replayer(src, ReplaySettings(name=a.name, chunk_s=a.chunk, loop=True, markers=a.markers))
    signal.signal(signal.SIGTERM, lambda *x: rep.stop())
    signal.signal(signal.SIGINT, lambda *x: rep.stop())
    print("ready", flush=True)
    stats = rep.run()
    rep.close()
    print(
        f"pushed {stats.samples_pushed} samples, {stats.markers_pushed} markers, max late "
        f"{stats.max_late_s * 1000:.1f} ms",
        file=sys.stderr,
        flush=True,
    )


if __name__ == "__main__":
    main()
