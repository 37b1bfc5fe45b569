"""Small copies of the public corpora, written in each corpus's own layout (file names, columns, string formats,
units as docs/datasets.md records them), for tests/test_readers.py.

Recordings are real system files where the project has them (tests/data/real-formats: a KIT ``.con`` and a CTF
``.ds`` from MNE's testing data): a longer run is made from the real file's header with its sample count
patched and simulated data in the system's own integer format, so the bytes a reader parses are those the
acquisition software writes. Speech is a synthetic voiced signal; brain data are noise plus a response to the
speech envelope (the readers are under test, not the decoding).
"""

from __future__ import annotations

import json
import shutil
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from neurospeech.data import split_of, write_wav

REAL = Path(__file__).resolve().parent / "data" / "real-formats"
KIT_DIR = REAL / "KIT"
CTF_DS = REAL / "CTF" / "somMDYO-18av.ds"

WORDS = ("alice", "was", "beginning", "to", "get", "very", "tired", "of", "sitting", "by", "her", "sister",
         "on", "the", "bank", "and", "having", "nothing", "do")
SR_AUDIO = 16000


def pick_sounds(pattern: str, candidates: range, n: int) -> list[int]:
    """``n`` indices whose sound ``pattern.format(i)`` covers the train and val splits (hash split)."""
    chosen: list[int] = []
    need = {"val": 1, "train": 2}
    for i in candidates:
        s = split_of(pattern.format(i))
        if need.get(s, 0) > 0:
            need[s] -= 1
            chosen.append(i)
    for i in candidates:
        if len(chosen) >= n:
            break
        if i not in chosen:
            chosen.append(i)
    if any(need.values()):
        raise RuntimeError(f"no train/val cover for {pattern} in {candidates}")
    return sorted(chosen[:max(n, len(chosen))])


def speech(seconds: float, seed: int) -> np.ndarray:
    """A voiced, syllable-rate modulated signal (float in [-1, 1]) at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR_AUDIO)) / SR_AUDIO
    f0 = 110 + 20 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / SR_AUDIO
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6))) ** 2
    x = voiced * env + 0.05 * rng.standard_normal(len(t))
    return (0.5 * x / np.max(np.abs(x))).astype(np.float64)


def word_times(seconds: float, seed: int, step: float = 0.42) -> list[tuple[float, float, str]]:
    """(start, end, word) inside a wav of ``seconds``."""
    rng = np.random.default_rng(seed)
    out, t, k = [], 0.1, int(rng.integers(len(WORDS)))
    while t + 0.3 < seconds:
        out.append((round(t, 3), round(t + 0.3, 3), WORDS[k % len(WORDS)]))
        t += step
        k += 1
    return out


def brain_response(n_ch: int, n_times: int, sfreq: float, onsets: list[tuple[float, np.ndarray]],
                   seed: int) -> np.ndarray:
    """Noise (smoothed) plus a response to each sound's envelope, shape (n_ch, n_times), unit variance."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_ch, n_times))
    k = max(1, int(sfreq / 40))
    x = np.cumsum(x, axis=1)
    x[:, k:] = x[:, k:] - x[:, :-k]
    x /= x.std(axis=1, keepdims=True)
    mix = rng.standard_normal(n_ch)
    for t0, env in onsets:
        e = np.interp(np.arange(int(len(env) / SR_AUDIO * sfreq)) / sfreq,
                      np.arange(len(env)) / SR_AUDIO, np.abs(env))
        i0 = int((t0 + 0.1) * sfreq)
        n = min(len(e), n_times - i0)
        if n > 0:
            x[:, i0:i0 + n] += 2.0 * mix[:, None] * (e[None, :n] / (e.std() + 1e-9))
    return x


# ---------------------------------------------------------------------------------------------- MEG-MASC
def write_fastscan(path: Path, points_m: np.ndarray) -> None:
    """FastSCAN text: ``%`` header lines, then ``x y z`` per line in millimetres."""
    lines = ["% Polhemus FastSCAN 3D digitisation", "% units: mm", f"% {len(points_m)} points"]
    lines += [f"{x:.4f}\t{y:.4f}\t{z:.4f}" for x, y, z in points_m * 1000.0]
    path.write_text("\n".join(lines) + "\n")


def write_kit_con(dst: Path, seconds: float, onsets: list[tuple[float, np.ndarray]], seed: int) -> None:
    """A continuous KIT ``.con``: the real file's header with its sample count patched, int16 data."""
    import mne
    from mne.io.kit.constants import KIT

    src = KIT_DIR / "MQKIT_125_2sec.con"
    raw = mne.io.read_raw_kit(src, verbose="error")
    sq = raw._raw_extras[0]
    dirs = sq["dirs"]
    data_off = int(dirs[KIT.DIR_INDEX_RAW_DATA]["offset"])
    nchan = int(sq["nchan"])
    sfreq = float(raw.info["sfreq"])
    n = int(seconds * sfreq)
    head = bytearray(src.read_bytes()[:data_off])
    acq = int(dirs[KIT.DIR_INDEX_ACQ_COND]["offset"])
    struct.pack_into("<i", head, acq + 16, n)  # samples count of a continuous acquisition
    struct.pack_into("<ii", head, KIT.DIR_INDEX_RAW_DATA * 16 + 8, n * nchan, n * nchan)
    meg = mne.pick_types(raw.info, meg=True, ref_meg=False)
    x = np.zeros((nchan, n), dtype=np.float64)
    x[meg] = brain_response(len(meg), n, sfreq, onsets, seed) * 400  # ~400 ADC counts
    data = np.clip(np.round(x), -32767, 32767).astype("<i2").T.tobytes()  # sample-major
    dst.write_bytes(bytes(head) + data)


def make_meg_masc(root: Path, n_sounds: int = 6, seed: int = 0) -> dict:
    """MEG-MASC layout: one subject, session 0, task 0 (story lw1); returns what was written."""
    from mne.io.kit.coreg import _read_dig_kit

    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "MEG-MASC", "BIDSVersion": "1.6.0"}))
    (root / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\t25\tF\n")
    idx = pick_sounds("stimuli/audio/lw1_{}.wav", range(0, 40), n_sounds)
    rows, onsets, t, words = [], [], 1.0, 0
    for j, i in enumerate(idx):
        sound = f"stimuli/audio/lw1_{i}.wav"
        dur = 3.0
        wav = speech(dur, seed * 100 + i)
        write_wav(root / sound, wav, SR_AUDIO)
        onsets.append((t, wav))
        rows.append((t, dur, {"story": "lw1", "story_uid": 0, "sound_id": i, "kind": "sound",
                              "meta": "", "sound": sound, "start": 0.0}))
        for w0, w1, w in word_times(dur, seed + i):
            d = {"story": "lw1", "story_uid": 0, "sound_id": i, "kind": "word", "meta": "",
                 "pronounced": 1.0, "sound": sound, "sequence_id": j, "condition": "sentence",
                 "word_index": words, "speech_rate": 205.0, "voice": "Allison", "start": w0, "word": w}
            rows.append((t + w0, round(w1 - w0, 3), d))
            ph = {"story": "lw1", "story_uid": 0, "sound_id": i, "kind": "phoneme", "phoneme": "ae_I",
                  "sound": sound, "start": w0, "word_index": words}
            rows.append((t + w0, 0.08, ph))
            words += 1
        t += dur + 0.5
    seconds = t + 3.0
    meg = root / "sub-01" / "ses-0" / "meg"
    meg.mkdir(parents=True)
    con = meg / "sub-01_ses-0_task-0_meg.con"
    write_kit_con(con, seconds, onsets, seed)
    shutil.copy(KIT_DIR / "MQKIT_125.mrk", meg / "sub-01_ses-0_task-0_markers.mrk")
    write_fastscan(meg / "sub-01_ses-0_acq-ELP_headshape.pos", _read_dig_kit(KIT_DIR / "MQKIT_125.elp"))
    write_fastscan(meg / "sub-01_ses-0_acq-HSP_headshape.pos", _read_dig_kit(KIT_DIR / "MQKIT_125.hsp"))
    import mne

    names = mne.io.read_raw_kit(con, verbose="error").ch_names
    lines = ["name\ttype\tunits\tstatus"] + [f"{c}\tMEGMAG\tT\t{'bad' if k == 5 else 'good'}"
                                              for k, c in enumerate(names)]
    (meg / "sub-01_ses-0_task-0_channels.tsv").write_text("\n".join(lines) + "\n")
    ev = ["onset\tduration\ttrial_type\tvalue\tsample"]
    for onset, dur, d in sorted(rows, key=lambda r: r[0]):
        ev.append(f"{onset:.3f}\t{dur}\t{d!r}\t{1 if d['kind'] == 'word' else 0}\t{int(onset * 1000)}")
    (meg / "sub-01_ses-0_task-0_events.tsv").write_text("\n".join(ev) + "\n")
    return {"sounds": [f"stimuli/audio/lw1_{i}.wav" for i in idx], "seconds": seconds, "bad": names[5],
            "n_words": words}


# ------------------------------------------------------------------------------------------------ MOUS
def write_textgrid(path: Path, words: list[tuple[float, float, str]], xmax: float) -> None:
    """A Praat TextGrid (long text format) with a ``words`` and a ``phones`` tier, silences as ``""``/``sil``."""
    def tier(name: str, items: list[tuple[float, float, str]]) -> list[str]:
        filled, t = [], 0.0
        for a, b, w in items:
            if a > t:
                filled.append((t, a, "sil" if name == "phones" else ""))
            filled.append((a, b, w))
            t = b
        if t < xmax:
            filled.append((t, xmax, ""))
        out = ['        class = "IntervalTier"', f'        name = "{name}"', "        xmin = 0",
               f"        xmax = {xmax}", f"        intervals: size = {len(filled)}"]
        for k, (a, b, w) in enumerate(filled, start=1):
            out += [f"        intervals [{k}]:", f"            xmin = {a}", f"            xmax = {b}",
                    f'            text = "{w}"']
        return out

    phones = [(a, round((a + b) / 2, 3), w[:1].upper()) for a, b, w in words]
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {xmax}",
             "tiers? <exists>", "size = 2", "item []:", "    item [1]:", *tier("phones", phones)]
    lines += ["    item [2]:", *tier("words", words)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_ctf_ds(dst: Path, seconds: float, onsets: list[tuple[float, np.ndarray]], seed: int) -> float:
    """A continuous CTF ``.ds``: the real dataset's files renamed, its trial count patched, int32 data."""
    import mne

    name = dst.name[:-3]
    dst.mkdir(parents=True)
    for f in CTF_DS.iterdir():
        target = dst / (name + f.name[len(CTF_DS.name) - 3:] if f.name.startswith(CTF_DS.name[:-3]) else f.name)
        if not f.name.endswith(".meg4"):
            shutil.copy(f, target)
    ref = mne.io.read_raw_ctf(CTF_DS, verbose="error")
    res4 = bytearray((dst / f"{name}.res4").read_bytes())
    nsamp, = struct.unpack_from(">i", res4, 1288)
    nchan, = struct.unpack_from(">h", res4, 1292)
    sfreq, = struct.unpack_from(">d", res4, 1296)
    n_trials = int(np.ceil(seconds * sfreq / nsamp))
    struct.pack_into(">h", res4, 1312, n_trials)  # no_trials: MNE reads the trials back to back as one run
    (dst / f"{name}.res4").write_bytes(bytes(res4))
    real = np.frombuffer((CTF_DS / f"{CTF_DS.name[:-3]}.meg4").read_bytes()[8:], dtype=">i4")
    real = real.reshape(-1, nchan, nsamp)[0]
    cal = np.ones(nchan)
    volts = ref.get_data()[:, :nsamp]
    for c in range(nchan):  # physical units per count of each channel, from the real file
        nz = np.flatnonzero(real[c])
        if len(nz):
            cal[c] = volts[c, nz[0]] / real[c, nz[0]]
    n = n_trials * nsamp
    x = np.zeros((nchan, n))
    meg = mne.pick_types(ref.info, meg=True, ref_meg=False)
    x[meg] = brain_response(len(meg), n, sfreq, onsets, seed) * 2e-13 / cal[meg, None]
    counts = np.clip(np.round(x), -2**31 + 1, 2**31 - 1).astype(">i4")
    trials = counts.reshape(nchan, n_trials, nsamp).transpose(1, 0, 2)  # trial-major, then channel-major
    (dst / f"{name}.meg4").write_bytes(b"MEG41CP\x00" + trials.tobytes())
    return float(sfreq)


def make_mous(root: Path, n_sounds: int = 4, seed: int = 1, subject: str = "A2002") -> dict:
    """MOUS layout: one auditory subject (plus a visual one that must be ignored)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "MOUS", "BIDSVersion": "1.2.0"}))
    (root / "participants.tsv").write_text(f"participant_id\tage\tsex\nsub-{subject}\t22\tM\nsub-V1001\t23\tF\n")
    ids = pick_sounds("stimuli/audio_files/EQ_Ramp_Int2_Int1LPF{:03d}.wav", range(1, 120), n_sounds)
    texts, ev, onsets, t, n_words = [], ["onset\tduration\tsample\ttype\tvalue"], [], 2.0, 0
    ev.append("0.5\tn/a\t626\tNothing\tZINNEN")
    for i in ids:
        dur = 3.0
        wav = speech(dur, seed * 100 + i)
        write_wav(root / f"stimuli/audio_files/EQ_Ramp_Int2_Int1LPF{i:03d}.wav", wav, SR_AUDIO)
        words = word_times(dur, seed + i)
        write_textgrid(root / f"derivatives/phonemes/EQ_Ramp_Int2_Int1LPF{i:03d}.TextGrid", words, dur)
        texts.append(f"{i} " + " ".join(w for _, _, w in words))
        onsets.append((t, wav))
        ev.append(f"{t - 0.3:.4f}\tn/a\t{int((t - 0.3) * 1250)}\ttrial\tn/a")
        ev.append(f"{t - 0.3:.4f}\tn/a\t{int((t - 0.3) * 1250)}\tUPPT001\t{i % 10 + 1}")
        ev.append(f"{t:.4f}\tn/a\t{int(t * 1250)}\tSound\tStart File {i:03d}.wav")
        ev.append(f"{t + dur + 0.05:.4f}\tn/a\t{int((t + dur + 0.05) * 1250)}\tNothing\tEnd of file {i:03d}.wav")
        n_words += len(words)
        t += dur + 0.6
    (root / "stimuli" / "stimuli.txt").write_text("\n".join(texts) + "\n")
    meg = root / f"sub-{subject}" / "meg"
    sfreq = write_ctf_ds(meg / f"sub-{subject}_task-auditory_meg.ds", t + 3.0, onsets, seed)
    (meg / f"sub-{subject}_task-auditory_events.tsv").write_text("\n".join(ev) + "\n")
    import mne

    names = mne.io.read_raw_ctf(meg / f"sub-{subject}_task-auditory_meg.ds", verbose="error").ch_names
    meg_names = [c for c in names if c.startswith("M")]
    lines = ["name\ttype\tunits\tstatus"] + [f"{c}\tMEGGRADAXIAL\tT\t{'bad' if c == meg_names[3] else 'good'}"
                                              for c in names]
    (meg / f"sub-{subject}_task-auditory_channels.tsv").write_text("\n".join(lines) + "\n")
    vis = root / "sub-V1001" / "meg" / "sub-V1001_task-visual_meg.ds"
    vis.mkdir(parents=True)
    (vis.parent / "sub-V1001_task-visual_events.tsv").write_text("onset\tduration\tsample\ttype\tvalue\n")
    return {"ids": ids, "seconds": t + 3.0, "bad": meg_names[3], "n_words": n_words, "sfreq": sfreq,
            "sounds": [f"stimuli/audio_files/EQ_Ramp_Int2_Int1LPF{i:03d}.wav" for i in ids]}


# ------------------------------------------------------------------------------------------- Broderick
def make_broderick(root: Path, n_runs: int = 4, n_subjects: int = 1, seed: int = 2, wavs: bool = True) -> dict:
    """``Natural Speech`` layout: EEG/SubjectN/SubjectN_RunR.mat, Stimuli/Text/RunR.mat, Stimuli/Audio.

    The real corpus has runs 1-20; a fixture needs a run whose audio hashes to the validation split, and
    none of audio1-20 does (see docs/datasets.md), so the run numbers are picked from 1-99.
    """
    from scipy.io import savemat

    runs = pick_sounds("Stimuli/Audio/audio{}.wav", range(1, 100), n_runs)
    fs, dur = 128, 3.0
    words_of: dict[int, list[tuple[float, float, str]]] = {}
    for r in runs:
        wav = speech(dur, seed * 100 + r)
        if wavs:
            write_wav(root / f"Stimuli/Audio/audio{r}.wav", wav, SR_AUDIO)
        words = word_times(dur, seed + r)
        words_of[r] = words
        vec = np.empty((len(words), 1), dtype=object)
        for k, (_, _, w) in enumerate(words):
            vec[k, 0] = w
        (root / "Stimuli" / "Text").mkdir(parents=True, exist_ok=True)
        savemat(root / f"Stimuli/Text/Run{r}.mat", {
            "wordVec": vec, "onset_time": np.array([[a] for a, _, _ in words]),
            "offset_time": np.array([[b] for _, b, _ in words])})
        (root / "Stimuli" / "Envelopes").mkdir(parents=True, exist_ok=True)
        for s in range(1, n_subjects + 1):
            n = int((dur + 3.0) * fs)
            x = brain_response(130, n, fs, [(0.0, wav)], seed + 10 * s + r) * 20.0  # uV
            x[128:] = 5.0 * np.random.default_rng(s).standard_normal((2, n)) + 30.0  # mastoids
            d = root / "EEG" / f"Subject{s}"
            d.mkdir(parents=True, exist_ok=True)
            savemat(d / f"Subject{s}_Run{r}.mat", {"eegData": x[:128].T, "mastoids": x[128:].T,
                                                   "fs": np.array([[fs]])})
    return {"runs": runs, "words": words_of, "fs": fs, "seconds": dur + 3.0}


# --------------------------------------------------------------------------------------------- Brennan
def make_brennan(root: Path, segments: tuple[int, ...] = (1, 2, 3, 4, 5), seed: int = 3,
                 subjects: tuple[str, ...] = ("S01",)) -> dict:
    """Deep Blue v2 layout: S01.vhdr (BrainVision), timelock-preprocessing/S01.mat, the csv, audio/."""
    import mne
    from scipy.io import savemat

    fs, dur, gap, lead = 500.0, 3.0, 0.7, 2.0
    table: list[dict[str, Any]] = []
    onsets: list[tuple[float, np.ndarray]] = []
    starts: dict[int, float] = {}
    order, sentence, t = 1, 1, lead
    for seg in segments:
        wav = speech(dur, seed * 100 + seg)
        write_wav(root / f"audio/DownTheRabbitHoleFinal_SoundFile{seg}.wav", wav, SR_AUDIO)
        onsets.append((t, wav))
        starts[seg] = t
        for pos, (a, b, w) in enumerate(word_times(dur, seed + seg), start=1):
            table.append({"Word": w, "Segment": seg, "onset": a, "offset": b, "Order": order,
                          "LogFreq": 9.1, "LogFreq_Prev": 8.2, "LogFreq_Next": 10.3, "SndPower": 0.01,
                          "Length": round(b - a, 3), "Position": pos, "Sentence": sentence, "IsLexical": 1,
                          "NGRAM": 5.2, "RNN": 4.1, "CFG": 3.3})
            order += 1
        sentence += 1
        t += dur + gap
    cols = list(table[0])
    lines = [",".join(cols)] + [",".join(str(r[c]) for c in cols) for r in table]
    (root / "AliceChapterOne-EEG.csv").write_text("\n".join(lines) + "\n")
    seconds = t + 3.0
    names = [str(k) for k in range(1, 62)]
    for sub in subjects:
        n = int(seconds * fs)
        x = brain_response(63, n, fs, onsets, seed + int(sub[1:])) * 10e-6
        info = mne.create_info([*names, "VEOG", "Aux5"], fs, ["eeg"] * 61 + ["eog", "misc"])
        raw = mne.io.RawArray(x, info, verbose="error")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pybv: VEOG/Aux5 have no voltage unit here
            mne.export.export_raw(root / f"{sub}.vhdr", raw, fmt="brainvision", overwrite=True, verbose="error")
        pre = int(0.3 * fs)
        trl = []
        for r in table:
            ev = round((starts[int(r["Segment"])] + float(r["onset"])) * fs) + 1  # 1-based sample
            trl.append([ev - pre, ev + int(1.0 * fs), -pre, float(r["Order"]), float(r["Position"])])
        proc = {"trl": np.array(trl), "varnames": np.array(["Order", "Position"], dtype=object),
                "tot_trials": len(trl), "tot_chans": 61,
                "impedence": {"bads": np.array(["7"], dtype=object)},
                "rejections": {"badchans": np.array(["33"], dtype=object)}}
        (root / "timelock-preprocessing").mkdir(parents=True, exist_ok=True)
        savemat(root / "timelock-preprocessing" / f"{sub}.mat", {"proc": proc})
    return {"segments": segments, "starts": starts, "n_words": len(table), "seconds": seconds, "fs": fs,
            "bads": ["33", "7"]}


# ------------------------------------------------------------------------------------------ LibriBrain
def make_libribrain(root: Path, n_runs: int = 4, seed: int = 4, audio_table: bool = True) -> dict:
    """pnpl's local LibriBrain folder: serialised h5 + events tsv per run (Sherlock1, session k, run 1)."""
    import h5py

    names = [f"MEG{k:03d}{j}" for k in range(1, 11) for j in (1, 2, 3)]
    types = ["mag" if n.endswith("1") else "grad" for n in names]
    fs, dur = 250.0, 3.0
    sess = pick_sounds("stimuli/sherlock1/sherlock1_{:02d}.wav", range(1, 40), n_runs)
    rows = ["task\tsession\trun\tsound\tmeg_time"]
    for ses in sess:
        sound = f"stimuli/sherlock1/sherlock1_{ses:02d}.wav"
        wav = speech(dur, seed * 100 + ses)
        write_wav(root / sound, wav, SR_AUDIO)
        t0, t_audio = 10.0, 1.5  # the h5 times clock starts at t0; the wav starts t_audio later
        n = int((t_audio + dur + 3.0) * fs)
        x = brain_response(len(names), n, fs, [(t_audio, wav)], seed + ses)
        x *= np.where(np.array(types) == "mag", 1e-12, 1e-11)[:, None]
        base = f"sub-0_ses-{ses}_task-Sherlock1_run-1"
        ser = root / "Sherlock1" / "derivatives" / "serialised"
        ser.mkdir(parents=True, exist_ok=True)
        with h5py.File(ser / f"{base}_proc-bads+headpos+sss+notch+bp+ds_meg.h5", "w") as f:
            f.create_dataset("data", data=x.astype(np.float32), chunks=(len(names), 50))
            f.create_dataset("times", data=(t0 + np.arange(n) / fs).astype(np.float32), chunks=(50,))
            f.attrs["sample_frequency"] = fs
            f.attrs["highpass_cutoff"] = 0.1
            f.attrs["lowpass_cutoff"] = 125.0
            f.attrs["channel_names"] = ", ".join(names)
            f.attrs["channel_types"] = ", ".join(types)
        ev = ["kind\tsegment\ttimemeg\tsentenceidx\twordidx"]
        for k, (a, b, w) in enumerate(word_times(dur, seed + ses)):
            ev.append(f"word\t{w}\t{t0 + t_audio + a:.4f}\t1\t{k}")
            ev.append(f"phoneme\t{w[:1]}\t{t0 + t_audio + a:.4f}\t1\t{k}")
            ev.append(f"silence\t\t{t0 + t_audio + b:.4f}\t1\t{k}")
        evd = root / "Sherlock1" / "derivatives" / "events"
        evd.mkdir(parents=True, exist_ok=True)
        (evd / f"{base}_events.tsv").write_text("\n".join(ev) + "\n")
        rows.append(f"Sherlock1\t{ses}\t1\t{sound}\t{t0 + t_audio}")
    if audio_table:
        (root / "stimuli" / "libribrain_audio.tsv").write_text("\n".join(rows) + "\n")
    return {"sessions": sess, "names": names, "types": types, "fs": fs, "t_audio": 1.5}
