"""Simulate a whole BIDS dataset: stimuli, subjects, runs; presets; deterministic given the seed."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import mne
import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from neurospeech import __version__
from neurospeech.data import events_from_rows, split_of, write_run, write_wav
from neurospeech.errors import ConfigError

from ._lexicon import PHONES, Lexicon, make_lexicon, make_sentences, seeded_rng
from ._physics import (
    EEG_MONTAGES,
    EMB_DIM,
    MEG_SYSTEMS,
    SubjectModel,
    background,
    make_subject,
    source_activity,
)
from ._speech import AUDIO_SR, Utterance, acoustic_drivers, phone_matrix, synthesize_sentence

__all__ = ["PRESETS", "SimSettings", "settings_for", "simulate_dataset", "word_embedding"]

log = logging.getLogger(__name__)

TASK = "listen"


@dataclass(frozen=True)
class SimSettings:
    """Simulation settings (see :data:`PRESETS`).

    Attributes
    ----------
    preset : str
        Name of the preset these settings came from.
    sensors : str
        ``ctf275``, ``ctf151``, ``neuromag306`` (MEG) or ``biosemi32/64/128``, ``easycap-M10`` (EEG).
    sfreq : float
        Sampling rate of the written recordings, Hz.
    n_subjects : int
    minutes : float
        Minutes of distinct speech (every subject hears all of it, in its own order).
    run_minutes : float
        Approximate length of one run.
    snr_db : float
        10 log10 of the stimulus-driven signal power over the background power (sensor average).
    seed : int
    vocabulary : int
        Number of word types.
    n_noise_dipoles : int
        Random dipoles of the 1/f background.
    brain_rms, sensor_rms : float
        Background brain activity and sensor noise, sensor rms in SI units (0: per-modality default).
    alpha_rel : float
        Alpha rms at the most alpha-dominated sensor relative to ``brain_rms``.
    line_noise : float
        Line-noise (50 Hz) amplitude relative to ``brain_rms`` (0: none).
    bad_channels : int
        Channels per subject with excess noise, listed in ``channels.tsv`` as bad.
    blinks : bool
        Eye blinks (EEG only).
    speech : str
        ``numpy`` (built-in synthesiser, exact times) or ``auto``/``festival`` (TTS if installed).
    """

    preset: str = "custom"
    sensors: str = "ctf275"
    sfreq: float = 200.0
    n_subjects: int = 2
    minutes: float = 1.0
    run_minutes: float = 6.0
    snr_db: float = -10.0
    seed: int = 0
    vocabulary: int = 400
    n_noise_dipoles: int = 200
    brain_rms: float = 0.0
    sensor_rms: float = 0.0
    alpha_rel: float = 1.0
    line_noise: float = 0.0
    bad_channels: int = 1
    blinks: bool = True
    speech: str = "numpy"

    def __post_init__(self) -> None:
        if self.sensors not in MEG_SYSTEMS and self.sensors not in EEG_MONTAGES:
            raise ConfigError(
                f"sensors {self.sensors!r} unknown; choose one of {sorted(MEG_SYSTEMS) + list(EEG_MONTAGES)}"
            )
        if not 100 <= self.sfreq <= 2000:
            raise ConfigError(f"sfreq must be within 100..2000 Hz, got {self.sfreq!r}")
        if self.n_subjects < 1 or self.minutes <= 0 or self.run_minutes <= 0:
            raise ConfigError("n_subjects must be >= 1 and minutes, run_minutes > 0")
        if self.vocabulary < 20:
            raise ConfigError(f"vocabulary must be >= 20 word types, got {self.vocabulary}")
        if self.speech not in ("numpy", "auto", "festival"):
            raise ConfigError(f"speech must be 'numpy', 'auto' or 'festival', got {self.speech!r}")

    @property
    def is_meg(self) -> bool:
        return self.sensors in MEG_SYSTEMS

    @property
    def datatype(self) -> str:
        return "meg" if self.is_meg else "eeg"

    def resolved(self) -> dict[str, float]:
        """Noise levels with per-modality defaults filled in (SI units)."""
        if self.is_meg:
            return {"brain_rms": self.brain_rms or 300e-15, "sensor_rms": self.sensor_rms or 60e-15,
                    "blink_amp": 0.0}
        return {"brain_rms": self.brain_rms or 12e-6, "sensor_rms": self.sensor_rms or 1.5e-6,
                "blink_amp": 100e-6 if self.blinks else 0.0}


PRESETS: dict[str, SimSettings] = {
    # CI: tiny and fast (2 subjects x 1 min, CTF-151 at 150 Hz), strong signal so tiny models learn something
    "ci": SimSettings(preset="ci", sensors="ctf151", sfreq=150.0, n_subjects=2, minutes=1.0, run_minutes=3.0,
                      snr_db=0.0, vocabulary=60, n_noise_dipoles=100),
    # MEG benchmark like MOUS/MEG-MASC: CTF-275, 4 subjects, 60 min of distinct speech each heard by all
    "meg-bench": SimSettings(preset="meg-bench", sensors="ctf275", sfreq=200.0, n_subjects=4, minutes=60.0,
                             run_minutes=6.0, snr_db=-29.0, vocabulary=1200, line_noise=0.1),
    # EEG benchmark: BioSemi 64
    "eeg-bench": SimSettings(preset="eeg-bench", sensors="biosemi64", sfreq=200.0, n_subjects=4,
                             minutes=60.0, run_minutes=6.0, snr_db=-31.0, vocabulary=1200, line_noise=0.2),
}


# ---------------------------------------------------------------------------------- stimuli
@dataclass
class Stimulus:
    sound: str  # relative wav path
    sentence: str
    words: list[str]
    utt: Utterance
    acoustic: NDArray[np.float64] = field(repr=False, default_factory=lambda: np.zeros((0, 0)))
    phonetic: NDArray[np.float64] = field(repr=False, default_factory=lambda: np.zeros((0, 0)))


def word_embedding(word: str, seed: int) -> NDArray[np.float64]:
    """Stable unit-norm embedding of a word type (sha256-seeded)."""
    v = seeded_rng("embedding", seed, word).standard_normal(EMB_DIM)
    return v / np.linalg.norm(v)


def _make_stimuli(s: SimSettings, root: Path) -> tuple[Lexicon, list[Stimulus], str]:
    lex = make_lexicon(s.vocabulary, s.seed)
    use_tts = False
    engine = "numpy"
    if s.speech in ("auto", "festival"):
        from ._tts import festival_available

        if festival_available():
            use_tts, engine = True, "festival"
        elif s.speech == "festival":
            raise ConfigError("speech='festival' but festival is not installed (apt-get install festival)")
    stims: list[Stimulus] = []
    total = 0.0
    target = s.minutes * 60.0
    batch = max(8, int(target / 2.5 * 1.1))
    sentences = make_sentences(lex, batch, s.seed)
    tts_cache: dict[int, Utterance | None] = {}
    i = 0
    pbar = tqdm(total=round(target), desc="stimuli", unit="s", disable=target < 120)
    while total < target:
        if i >= len(sentences):
            sentences = make_sentences(lex, len(sentences) * 2, s.seed)
        words = sentences[i]
        sid = f"s{i:04d}"
        utt = None
        if use_tts:
            if i not in tts_cache:
                from ._tts import festival_batch

                chunk = list(range(i, min(len(sentences), i + 100)))
                tts_cache.update(zip(chunk, festival_batch([sentences[k] for k in chunk]), strict=True))
            utt = tts_cache.pop(i)
        if utt is None:
            utt = synthesize_sentence(words, lex, key=f"{s.seed}/{sid}", voice=i % 2)
        sound = f"stimuli/{sid}.wav"
        write_wav(root / sound, utt.wav, utt.sr)
        st = Stimulus(sound=sound, sentence=sid, words=words, utt=utt)
        n_out = int(np.ceil(utt.duration * s.sfreq))
        st.acoustic = acoustic_drivers(utt.wav, utt.sr, s.sfreq)[:, :n_out]
        st.phonetic = phone_matrix(utt.phones, s.sfreq, st.acoustic.shape[1])
        stims.append(st)
        total += utt.duration
        pbar.update(round(utt.duration))
        i += 1
    pbar.close()
    # global, fixed normalisation of the acoustic drivers (dataset-wide statistics)
    cat = np.concatenate([st.acoustic for st in stims], axis=1)
    scale = cat.std(axis=1, keepdims=True) + 1e-12
    for st in stims:
        st.acoustic = st.acoustic / scale
    with open(root / "stimuli" / "stimuli.tsv", "w", encoding="utf-8") as f:
        f.write("sound\tsentence\tsplit\tduration\ttext\n")
        for st in stims:
            f.write(f"{st.sound}\t{st.sentence}\t{split_of(st.sound)}\t{st.utt.duration:.6f}\t"
                    f"{' '.join(st.words)}\n")
    return lex, stims, engine


# ---------------------------------------------------------------------------------- runs
def _schedule(s: SimSettings, stims: list[Stimulus], subject: str
              ) -> list[tuple[str, list[tuple[int, float]]]]:
    """Per run, its split and the (stimulus index, onset in s) list.

    Every subject hears every stimulus once, in its own random order. Runs hold the sounds of one split
    only (train runs first, then validation, then test), so held-out runs contain only sentences that no
    training run contains, and a test run can be replayed as a whole.
    """
    rng = seeded_rng("order", s.seed, subject)
    shuffled: list[int] = rng.permutation(len(stims)).tolist()
    rank = {"train": 0, "val": 1, "test": 2}
    order = sorted(shuffled, key=lambda k: rank[split_of(stims[k].sound)])  # stable: keeps the shuffle
    runs: list[tuple[str, list[tuple[int, float]]]] = []
    cur: list[tuple[int, float]] = []
    cur_split = ""
    t = 2.0
    for k in order:
        sp = split_of(stims[k].sound)
        if cur and (t > s.run_minutes * 60 or sp != cur_split):
            runs.append((cur_split, cur))
            cur, t = [], 2.0
        cur_split = sp
        onset = round(t * s.sfreq) / s.sfreq  # sounds start on a sample
        cur.append((int(k), onset))
        t = onset + stims[k].utt.duration + float(rng.uniform(0.6, 1.2))
    runs.append((cur_split, cur))
    return runs


def _drivers(s: SimSettings, lex: Lexicon, stims: list[Stimulus], plan: list[tuple[int, float]],
             n: int) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    from ._physics import N_ACOUSTIC, N_LEXICAL, N_PHONETIC

    ac = np.zeros((N_ACOUSTIC, n))
    ph = np.zeros((N_PHONETIC, n))
    lx = np.zeros((N_LEXICAL, n))
    logf = -np.log(lex.freq)
    mu, sd = float(logf.mean()), float(logf.std())
    for k, onset in plan:
        st = stims[k]
        a = round(onset * s.sfreq)
        m = min(st.acoustic.shape[1], n - a)
        ac[:, a:a + m] += st.acoustic[:, :m]
        ph[:, a:a + m] += st.phonetic[:, :m]
        for w, t0, _ in st.utt.words:
            i = round((onset + t0) * s.sfreq)
            if i < n:
                surprisal = (logf[lex.index(w)] - mu) / sd
                lx[:, i] += np.concatenate([word_embedding(w, s.seed), [surprisal, 1.0]])
    return ac, ph, lx


def _events(stims: list[Stimulus], plan: list[tuple[int, float]]) -> Any:
    rows = []
    for k, onset in plan:
        st = stims[k]
        rows.append(dict(onset=onset, duration=st.utt.duration, kind="sound", word="", sound=st.sound,
                         sound_time=0.0, sentence=st.sentence))
        for w, t0, t1 in st.utt.words:
            rows.append(dict(onset=onset + t0, duration=t1 - t0, kind="word", word=w, sound=st.sound,
                             sound_time=t0, sentence=st.sentence))
    return events_from_rows(rows)


def _simulate_subject(s: SimSettings, lex: Lexicon, stims: list[Stimulus], subject: str, root: Path,
                      meas_date: Any) -> dict[str, Any]:
    sub: SubjectModel = make_subject(subject, s.sensors, s.sfreq, s.seed, s.n_noise_dipoles, s.bad_channels)
    levels = s.resolved()
    good = np.array([c not in sub.bad_channels for c in sub.info["ch_names"]])
    sig_idx = [i for i, r in enumerate(sub.sources.roles) if r != "alpha"]
    src_norm: NDArray[np.float64] | None = None
    sig_scale: float | None = None
    info_runs = []
    for r, (run_split, plan) in enumerate(_schedule(s, stims, subject), start=1):
        last_k, last_on = plan[-1]
        dur = last_on + stims[last_k].utt.duration + 3.0
        n = int(np.ceil(dur * s.sfreq))
        ac, ph, lx = _drivers(s, lex, stims, plan, n)
        src = source_activity(sub, ac, ph, lx)[sig_idx]
        if src_norm is None:  # fixed per subject (from run 1): each source to unit rms, times its role gain
            src_norm = 1.0 / (src.std(axis=1) + 1e-30)
        src *= src_norm[:, None]
        sig = sub.gain_signal[:, sig_idx] @ src
        rng = seeded_rng("noise", s.seed, subject, r)
        noise = background(sub, n, s.sfreq, rng, levels["brain_rms"], s.alpha_rel, levels["sensor_rms"],
                           levels["blink_amp"], s.line_noise)
        if sig_scale is None:  # SNR = mean signal power / mean background power, per channel type
            types = np.array(sub.info.get_channel_types())
            if len(set(types)) == 1:
                p_sig = float(np.mean(sig[good].var(axis=1)))
                p_noise = float(np.mean(noise[good].var(axis=1)))
                sig_scale = float(np.sqrt(10 ** (s.snr_db / 10) * p_noise / p_sig))
            else:
                ratios = [float(np.mean(sig[good & (types == t)].var(axis=1)))
                          / float(np.mean(noise[good & (types == t)].var(axis=1)))
                          for t in sorted(set(types))]
                sig_scale = float(np.sqrt(10 ** (s.snr_db / 10) / np.mean(ratios)))
        data = sig * sig_scale + noise
        raw = mne.io.RawArray(data, sub.info.copy(), verbose="error")
        raw.set_meas_date(meas_date)
        raw.info["bads"] = list(sub.bad_channels)
        write_run(root, raw, _events(stims, plan), subject=subject, task=TASK, run=f"{r:02d}")
        info_runs.append({"run": f"{r:02d}", "split": run_split, "seconds": round(n / s.sfreq, 3),
                          "n_sounds": len(plan)})
    if sig_scale is None:
        raise ConfigError(f"subject {subject!r}: no run was scheduled from {len(stims)} stimuli; the simulation needs "
                          "at least one sentence of speech (raise minutes)")
    moment = sig_scale * float(np.mean([np.linalg.norm(w) for w in sub.sources.weights if w.size]))
    return {"subject": subject, "runs": info_runs, "bad_channels": sub.bad_channels,
            "alpha_freq": round(sub.alpha_freq, 3), "signal_scale": sig_scale,
            "mean_source_rms_Am": moment}


def _dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def simulate_dataset(root: str | Path, settings: SimSettings, overwrite: bool = False) -> dict[str, Any]:
    """Write a simulated BIDS dataset and return a summary (also saved as ``simulation.json``).

    Parameters
    ----------
    root : str or Path
        Output folder (must be empty or absent unless ``overwrite``).
    settings : SimSettings
    overwrite : bool
        Delete an existing dataset at ``root`` first.
    """
    import datetime as _dt

    root = Path(root)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise ConfigError(f"output folder {str(root)!r} is not empty; pass --overwrite or choose another")
        if not (root / "simulation.json").is_file():
            raise ConfigError(f"refusing to delete {str(root)!r}: it is not a simulated dataset")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lex, stims, engine = _make_stimuli(settings, root)
    meas_date = _dt.datetime(2024, 1, 1, 9, 0, tzinfo=_dt.UTC)
    subjects = [f"{i + 1:02d}" for i in range(settings.n_subjects)]
    per_subject = []
    for subj in tqdm(subjects, desc="subjects", unit="subj", disable=settings.minutes < 2):
        per_subject.append(_simulate_subject(settings, lex, stims, subj, root, meas_date))
    splits = [split_of(st.sound) for st in stims]
    n_words = {sp: sum(len(st.words) for st, x in zip(stims, splits, strict=True) if x == sp)
               for sp in ("train", "val", "test")}
    summary = {
        "neurospeech_version": __version__,
        "settings": asdict(settings),
        "speech_engine": engine,
        "audio_sr": AUDIO_SR,
        "n_sounds": len(stims),
        "speech_seconds": round(sum(st.utt.duration for st in stims), 3),
        "n_word_types": len({w for st in stims for w in st.words}),
        "sounds_per_split": {sp: splits.count(sp) for sp in ("train", "val", "test")},
        "words_per_split": n_words,
        "subjects": per_subject,
        "phones": sorted(PHONES),
        "build_seconds": round(time.perf_counter() - t0, 2),
    }
    import mne_bids

    mne_bids.make_dataset_description(
        path=root, name=f"neurospeech simulated speech listening ({settings.preset})",
        data_license="CC0", authors=["neurospeech simulator"], overwrite=True, verbose="error",
    )
    summary["size_bytes"] = _dir_size(root)
    (root / "simulation.json").write_text(json.dumps(summary, indent=1))
    _readme(root, summary)
    return summary


def _readme(root: Path, summary: dict[str, Any]) -> None:
    s = summary["settings"]
    text = (
        f"Simulated M/EEG speech-listening dataset (neurospeech {summary['neurospeech_version']}).\n\n"
        f"Preset {s['preset']}: {s['n_subjects']} subjects, sensors {s['sensors']} at {s['sfreq']} Hz, "
        f"{summary['speech_seconds'] / 60:.1f} min of distinct speech ({summary['n_sounds']} sentences, "
        f"engine {summary['speech_engine']}), SNR {s['snr_db']} dB, seed {s['seed']}.\n"
        "Events: onset, duration, trial_type (sound|word), sound, sound_time, word, sentence.\n"
        "Stimuli: stimuli/*.wav, stimuli/stimuli.tsv. Settings and per-subject details: simulation.json.\n"
    )
    (root / "README").write_text(text)


def settings_for(preset: str, **overrides: Any) -> SimSettings:
    """Preset settings with overrides (None values ignored)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    kw = {k: v for k, v in overrides.items() if v is not None}
    return replace(PRESETS[preset], **kw)
