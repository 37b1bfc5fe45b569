"""Sensors, head model, sources and noise of the simulated brain (MNE forward model, fixed dipoles).

Coordinates: a "brain frame" centred on the sphere model's origin, x right, y anterior, z up (metres).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import mne
import numpy as np
from numpy.typing import NDArray
from scipy import signal

from neurospeech.errors import ConfigError

from ._lexicon import ARTICULATORY, seeded_rng
from ._speech import N_BANDS

__all__ = ["EEG_MONTAGES", "MEG_SYSTEMS", "SourceModel", "SubjectModel", "kernel", "make_info",
           "make_subject", "pink_noise"]

log = logging.getLogger(__name__)

MEG_SYSTEMS = {"ctf275": "ctf275", "ctf151": "ctf151", "neuromag306": "neuromag"}
EEG_MONTAGES = ("biosemi32", "biosemi64", "biosemi128", "easycap-M10")

N_ACOUSTIC = 2 + N_BANDS
N_PHONETIC = len(ARTICULATORY)
EMB_DIM = 16
N_LEXICAL = EMB_DIM + 2  # embedding, surprisal, constant (word onset)


def make_info(sensors: str, sfreq: float) -> mne.Info:
    """Measurement info of a sensor system at ``sfreq`` (MEG in T or T/m, EEG in V)."""
    if sensors in MEG_SYSTEMS:
        info = mne.channels.read_meg_canonical_info(MEG_SYSTEMS[sensors])
        picks = mne.pick_types(info, meg=True, ref_meg=False, exclude=[])
        info = mne.pick_info(info, picks)
    elif sensors in EEG_MONTAGES:
        mon = mne.channels.make_standard_montage(sensors)
        info = mne.create_info(mon.ch_names, sfreq, "eeg")
        info.set_montage(mon)
    else:
        raise ConfigError(
            f"unknown sensors {sensors!r}; choose one of {sorted(MEG_SYSTEMS) + list(EEG_MONTAGES)}"
        )
    with info._unlock():
        info["sfreq"] = float(sfreq)
        info["lowpass"] = float(sfreq) / 2
        info["highpass"] = 0.0
        info["line_freq"] = 50.0
    return info


def kernel(peaks: list[tuple[float, float, float]], sfreq: float, latency: float = 1.0,
           length: float = 0.8) -> NDArray[np.float64]:
    """Evoked-response kernel: a sum of Gaussian bumps ``(amplitude, latency_s, width_s)``."""
    t = np.arange(int(length * sfreq)) / sfreq
    k = np.zeros_like(t)
    for a, mu, sd in peaks:
        k += a * np.exp(-0.5 * ((t - mu * latency) / (sd * latency)) ** 2)
    return k


# group-level evoked kernels (peaks near 50 / 100 / 200 ms for the auditory response)
AUDITORY_PEAKS = [(0.8, 0.05, 0.012), (-1.5, 0.10, 0.022), (0.9, 0.19, 0.04)]
PHONETIC_PEAKS = [(1.0, 0.11, 0.03), (-0.5, 0.22, 0.05)]
LEXICAL_PEAKS = [(0.5, 0.25, 0.05), (-1.0, 0.40, 0.08), (0.3, 0.60, 0.08)]


def pink_noise(rng: np.random.Generator, n_series: int, n: int, sfreq: float,
               exponent: float = 1.0, f0: float = 0.5) -> NDArray[np.float64]:
    """Gaussian noise with power spectrum ~ 1 / (f + f0)^exponent, unit variance per series."""
    freqs = np.fft.rfftfreq(n, 1.0 / sfreq)
    shape = 1.0 / (freqs + f0) ** (exponent / 2)
    spec = rng.standard_normal((n_series, len(freqs))) + 1j * rng.standard_normal((n_series, len(freqs)))
    x = np.fft.irfft(spec * shape, n=n, axis=1)
    x /= x.std(axis=1, keepdims=True) + 1e-30
    return x


# ---------------------------------------------------------------------------------- sources
_GROUP_SOURCES: list[tuple[str, tuple[float, float, float], tuple[float, float, float]]] = [
    # (role, position in the brain frame (m), orientation)
    ("auditory", (-0.050, 0.000, -0.005), (0.2, 0.1, 1.0)),
    ("auditory", (-0.046, -0.012, 0.002), (0.1, -0.6, 0.8)),
    ("auditory", (-0.052, 0.010, -0.010), (0.0, 0.7, 0.7)),
    ("auditory", (0.050, 0.000, -0.005), (-0.2, 0.1, 1.0)),
    ("auditory", (0.046, -0.012, 0.002), (-0.1, -0.6, 0.8)),
    ("auditory", (0.052, 0.010, -0.010), (0.0, 0.7, 0.7)),
    ("phonetic", (-0.055, -0.015, -0.012), (0.0, 0.4, 0.9)),
    ("phonetic", (-0.056, 0.012, -0.018), (0.0, -0.5, 0.85)),
    ("phonetic", (-0.050, -0.030, 0.000), (0.1, 0.9, 0.4)),
    ("phonetic", (-0.058, 0.000, -0.025), (0.1, 0.3, -0.9)),
    ("phonetic", (0.055, -0.015, -0.012), (0.0, 0.4, 0.9)),
    ("phonetic", (0.056, 0.012, -0.018), (0.0, -0.5, 0.85)),
    ("phonetic", (0.050, -0.030, 0.000), (-0.1, 0.9, 0.4)),
    ("phonetic", (0.058, 0.000, -0.025), (-0.1, 0.3, -0.9)),
    ("lexical", (-0.055, -0.045, -0.005), (0.0, 0.6, 0.8)),
    ("lexical", (-0.060, -0.010, -0.035), (0.1, 0.9, 0.3)),
    ("lexical", (-0.050, 0.015, -0.040), (0.0, 0.2, 1.0)),
    ("lexical", (-0.048, 0.045, 0.000), (0.2, -0.3, 0.9)),
    ("lexical", (-0.040, 0.050, 0.020), (0.1, 0.9, -0.4)),
    ("lexical", (0.055, -0.045, -0.005), (0.0, 0.6, 0.8)),
    ("alpha", (-0.025, -0.065, 0.010), (0.3, 0.2, 0.9)),
    ("alpha", (0.025, -0.065, 0.010), (-0.3, 0.2, 0.9)),
    ("alpha", (0.000, -0.070, 0.020), (0.9, 0.0, 0.4)),
]

_N_IN = {"auditory": N_ACOUSTIC, "phonetic": N_PHONETIC, "lexical": N_LEXICAL, "alpha": 0}
_ROLE_GAIN = {"auditory": 1.0, "phonetic": 0.8, "lexical": 0.8}


@dataclass
class SourceModel:
    """Signal sources of one subject.

    Attributes
    ----------
    roles : list of str
        ``auditory`` | ``phonetic`` | ``lexical`` | ``alpha`` per source.
    pos, ori : array, shape (n_sources, 3)
    weights : list of array
        Per source, the weights over its role's input features.
    kernels : dict of str -> array
        Evoked kernel per role (subject latency applied).
    """

    roles: list[str]
    pos: NDArray[np.float64]
    ori: NDArray[np.float64]
    weights: list[NDArray[np.float64]]
    kernels: dict[str, NDArray[np.float64]]


@dataclass
class SubjectModel:
    """Everything fixed for a subject: sensors, gains, sources, noise sources."""

    subject: str
    info: mne.Info
    sources: SourceModel
    gain_signal: NDArray[np.float64]  # (n_channels, n_sources)
    gain_noise: NDArray[np.float64]  # (n_channels, n_noise)
    alpha_freq: float
    bad_channels: list[str]
    blink_topo: NDArray[np.float64] | None  # (n_channels,) for EEG


def _unit(v: NDArray[np.float64]) -> NDArray[np.float64]:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _gain(info: mne.Info, r0: NDArray[np.float64], bem: mne.bem.ConductorModel,
          pos: NDArray[np.float64], ori: NDArray[np.float64]) -> NDArray[np.float64]:
    """Fixed-orientation gain matrix (n_channels, n_dipoles) from the sphere forward model."""
    is_meg = "eeg" not in info.get_channel_types()
    src = mne.setup_volume_source_space(pos=dict(rr=pos + r0, nn=ori), verbose="error")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fwd = mne.make_forward_solution(info, trans=None, src=src, bem=bem, meg=is_meg, eeg=not is_meg,
                                        verbose="error", n_jobs=1)
    g = fwd["sol"]["data"].reshape(len(info["ch_names"]), -1, 3)  # free orientation (x, y, z) per dipole
    # sources outside the sphere are dropped by MNE; we only place them well inside
    if g.shape[1] != len(pos):
        raise ConfigError(f"forward model kept {g.shape[1]} of {len(pos)} dipoles; a source lies outside")
    gain = np.einsum("cdk,dk->cd", g, ori)
    if not is_meg:
        gain -= gain.mean(axis=0, keepdims=True)  # average reference
    return gain


def make_subject(subject: str, sensors: str, sfreq: float, seed: int, n_noise: int = 200,
                 bad_channels: int = 1) -> SubjectModel:
    """Sample a subject around the group pattern and compute its forward gains."""
    info = make_info(sensors, sfreq)
    rng = seeded_rng("subject", seed, subject)
    g_rng = seeded_rng("group", seed)
    is_meg = sensors in MEG_SYSTEMS
    if is_meg:
        r0 = np.zeros(3)
        bem = mne.make_sphere_model(r0=r0, head_radius=None, verbose="error")
    else:
        bem = mne.make_sphere_model(r0="auto", head_radius="auto", info=info, verbose="error")
        r0 = np.asarray(bem["r0"], dtype=np.float64)
    roles, pos, ori, weights = [], [], [], []
    for role, p, o in _GROUP_SOURCES:
        roles.append(role)
        pos.append(np.asarray(p) + rng.normal(0, 0.004, 3))
        ori.append(_unit(np.asarray(o, dtype=np.float64) + rng.normal(0, 0.25, 3)))
        n_in = _N_IN[role]
        if n_in:
            group_w = g_rng.standard_normal(n_in)
            w = group_w + 0.35 * rng.standard_normal(n_in)
            if role == "auditory":
                w = np.abs(w)  # envelopes drive auditory cortex positively
            weights.append(w / np.linalg.norm(w) * _ROLE_GAIN[role] * rng.lognormal(0, 0.2))
        else:
            weights.append(np.zeros(0))
    pos_a, ori_a = np.array(pos), np.array(ori)
    latency = float(rng.uniform(0.92, 1.08))
    kernels = {"auditory": kernel(AUDITORY_PEAKS, sfreq, latency),
               "phonetic": kernel(PHONETIC_PEAKS, sfreq, latency),
               "lexical": kernel(LEXICAL_PEAKS, sfreq, latency, length=1.0)}
    sources = SourceModel(roles=roles, pos=pos_a, ori=ori_a, weights=weights, kernels=kernels)
    # background: random dipoles uniformly inside a 7 cm sphere, random orientations
    nrng = seeded_rng("noise-sources", seed, subject)
    u = nrng.standard_normal((n_noise, 3))
    npos = _unit(u) * (0.07 * nrng.random((n_noise, 1)) ** (1 / 3))
    nori = _unit(nrng.standard_normal((n_noise, 3)))
    gain_all = _gain(info, r0, bem, np.vstack([pos_a, npos]), np.vstack([ori_a, nori]))
    gain_signal, gain_noise = gain_all[:, : len(pos_a)], gain_all[:, len(pos_a):]
    bads = list(rng.choice(info["ch_names"], size=bad_channels, replace=False)) if bad_channels else []
    blink = None
    if not is_meg:
        chpos = np.array([c["loc"][:3] for c in info["chs"]]) - r0
        eyes = np.array([[-0.03, 0.09, -0.03], [0.03, 0.09, -0.03]])
        d = np.min(np.linalg.norm(chpos[:, None, :] - eyes[None], axis=2), axis=1)
        blink = np.exp(-d / 0.035)
        blink -= blink.mean()
        blink /= np.abs(blink).max()
    return SubjectModel(subject=subject, info=info, sources=sources, gain_signal=gain_signal,
                        gain_noise=gain_noise, alpha_freq=float(rng.uniform(9.0, 11.0)),
                        bad_channels=[str(b) for b in bads], blink_topo=blink)


# ---------------------------------------------------------------------------------- time courses
def source_activity(sub: SubjectModel, acoustic: NDArray[np.float64], phonetic: NDArray[np.float64],
                    lexical: NDArray[np.float64]) -> NDArray[np.float64]:
    """Signal source time courses ``(n_sources, n)`` from driver matrices at the simulation rate.

    ``acoustic (N_ACOUSTIC, n)``, ``phonetic (N_PHONETIC, n)``, ``lexical (N_LEXICAL, n)`` (impulses at word
    onsets). Alpha sources are zero here (they are noise, see :func:`background`).
    """
    n = acoustic.shape[1]
    drivers = {"auditory": acoustic, "phonetic": phonetic, "lexical": lexical}
    out = np.zeros((len(sub.sources.roles), n))
    for i, role in enumerate(sub.sources.roles):
        if role == "alpha":
            continue
        drive = sub.sources.weights[i] @ drivers[role]
        out[i] = signal.oaconvolve(drive, sub.sources.kernels[role])[:n]
    return out


def background(sub: SubjectModel, n: int, sfreq: float, rng: np.random.Generator, brain_rms: float,
               alpha_rel: float, sensor_rms: float, blink_amp: float, line_rel: float,
               line_freq: float = 50.0) -> NDArray[np.float64]:
    """Noise at the sensors ``(n_channels, n)``: 1/f brain background, alpha bursts, blinks, line, sensor."""
    n_ch = len(sub.info["ch_names"])
    types = np.array(sub.info.get_channel_types())
    ref = types != "grad" if np.any(types != "grad") else np.ones(n_ch, bool)  # level set on mags/EEG
    bg = sub.gain_noise @ pink_noise(rng, sub.gain_noise.shape[1], n, sfreq)
    bg *= brain_rms / (np.median(bg[ref].std(axis=1)) + 1e-30)
    # alpha: narrow-band 10 Hz activity of occipito-parietal sources, gated by slow bursts
    a_idx = [i for i, r in enumerate(sub.sources.roles) if r == "alpha"]
    sos = signal.butter(2, [sub.alpha_freq - 1.0, sub.alpha_freq + 1.0], btype="bandpass", fs=sfreq,
                        output="sos")
    osc = signal.sosfilt(sos, rng.standard_normal((len(a_idx), n)), axis=1)
    gate = pink_noise(rng, 1, n, sfreq, exponent=3.0, f0=0.05)[0]
    gate = 1.0 / (1.0 + np.exp(-2.5 * gate))
    alpha = sub.gain_signal[:, a_idx] @ (osc * gate)
    alpha *= alpha_rel * brain_rms / (np.max(alpha[ref].std(axis=1)) + 1e-30)
    # sensor noise: planar gradiometers (T/m) over a ~2 cm baseline -> 50x the magnetometer level in T
    white = np.where(types == "grad", 50.0, 1.0) * sensor_rms
    out = bg + alpha + white[:, None] * rng.standard_normal((n_ch, n))
    if sub.blink_topo is not None and blink_amp > 0:
        blinks = np.zeros(n)
        n_bl = rng.poisson(n / sfreq * 0.25)
        wlen = int(0.3 * sfreq)
        shape = np.hanning(wlen)
        for t in rng.integers(0, max(1, n - wlen), n_bl):
            blinks[t:t + wlen] += shape * rng.uniform(0.7, 1.3)
        out += blink_amp * sub.blink_topo[:, None] * blinks[None]
    if line_rel > 0 and line_freq < sfreq / 2:
        t = np.arange(n) / sfreq
        pattern = rng.standard_normal(n_ch)
        phase = rng.uniform(0, 2 * np.pi)
        out += line_rel * brain_rms * pattern[:, None] * np.sin(2 * np.pi * line_freq * t + phase)
    for b in sub.bad_channels:
        k = sub.info["ch_names"].index(b)
        out[k] += 8 * brain_rms * (50.0 if types[k] == "grad" else 1.0) * rng.standard_normal(n)
    return out
