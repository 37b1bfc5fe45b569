"""A LibriBrain-layout corpus of many runs of 306-channel MEG (noise), for the memory-bounded training tests.

Written in pnpl's layout (docs/datasets.md, tests/_reader_fixtures.make_libribrain): per run an ``.h5`` with
``data`` (306 x n, float32, T and T/m), ``times`` and the attributes, an events ``.tsv`` (kind, segment,
timemeg) and a row of ``stimuli/libribrain_audio.tsv``. Runs share three short wavs (two train, one
validation sound under the hash split), so speech features cost little while the MEG grows with ``n_runs``.
The MEG is sampled at 120 Hz (the model rate), so its float32 size on disk is its size in the cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _reader_fixtures import SR_AUDIO, pick_sounds, speech, word_times

from neurospeech.data import write_wav

N_CHANNELS = 306
SFREQ = 120.0


def make_big_libribrain(root: Path, n_runs: int, run_seconds: float = 40.0, seed: int = 0) -> int:
    """Write the corpus; returns the bytes of MEG at the model rate (float32), i.e. the cache's size."""
    import h5py

    names = [f"MEG{k:03d}{j}" for k in range(1, 103) for j in (1, 2, 3)]
    types = ["mag" if n.endswith("1") else "grad" for n in names]
    pattern = "stimuli/book/chapter_{:02d}.wav"
    ids = pick_sounds(pattern, range(1, 60), 3)[:3]
    wav_s = run_seconds - 6.0
    for i in ids:
        write_wav(root / pattern.format(i), speech(wav_s, seed + i), SR_AUDIO)
    rows = ["task\tsession\trun\tsound\tmeg_time"]
    rng = np.random.default_rng(seed)
    n = int(run_seconds * SFREQ)
    gain = np.where(np.array(types) == "mag", 1e-12, 1e-11).astype(np.float32)[:, None]
    total = 0
    ser = root / "Sherlock1" / "derivatives" / "serialised"
    evd = root / "Sherlock1" / "derivatives" / "events"
    ser.mkdir(parents=True, exist_ok=True)
    evd.mkdir(parents=True, exist_ok=True)
    for r in range(1, n_runs + 1):
        sound = pattern.format(ids[r % len(ids)])
        x = rng.standard_normal((N_CHANNELS, n), dtype=np.float32) * gain
        base = f"sub-0_ses-{r}_task-Sherlock1_run-1"
        with h5py.File(ser / f"{base}_proc-bads+headpos+sss+notch+bp+ds_meg.h5", "w") as f:
            f.create_dataset("data", data=x)
            f.create_dataset("times", data=(np.arange(n) / SFREQ).astype(np.float32))
            f.attrs["sample_frequency"] = SFREQ
            f.attrs["channel_names"] = ", ".join(names)
            f.attrs["channel_types"] = ", ".join(types)
        total += x.nbytes
        t_audio = 3.0
        ev = ["kind\tsegment\ttimemeg\tsentenceidx\twordidx"]
        for k, (a, _, w) in enumerate(word_times(wav_s, seed + r)):
            ev.append(f"word\t{w}\t{t_audio + a:.4f}\t1\t{k}")
        (evd / f"{base}_events.tsv").write_text("\n".join(ev) + "\n")
        rows.append(f"Sherlock1\t{r}\t1\t{sound}\t{t_audio}")
    (root / "stimuli" / "libribrain_audio.tsv").write_text("\n".join(rows) + "\n")
    return total
