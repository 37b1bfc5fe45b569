"""Plots and numbers that show whether a dataset looks like real M/EEG: spectrum (1/f slope, alpha peak) and
word-onset evoked responses (peak latencies)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mne
import numpy as np
from numpy.typing import NDArray
from scipy import signal

from neurospeech.data import load_dataset
from neurospeech.errors import DataFormatError

__all__ = ["fit_spectrum", "run_checks"]

log = logging.getLogger(__name__)


def fit_spectrum(freqs: NDArray[np.float64], psd: NDArray[np.float64],
                 fit_range: tuple[float, float] = (2, 40),
                 alpha_band: tuple[float, float] = (7, 14)) -> dict[str, float]:
    """Fit ``log10 psd = a + slope * log10 f`` outside the alpha band; alpha peak relative to the fit.

    Parameters
    ----------
    freqs : array, shape (n_freqs,)
    psd : array, shape (n_freqs,)
        Mean power spectral density over channels.
    """
    sel = (freqs >= fit_range[0]) & (freqs <= fit_range[1])
    sel_fit = sel & ~((freqs >= alpha_band[0]) & (freqs <= alpha_band[1]))
    lf, lp = np.log10(freqs[sel_fit]), np.log10(psd[sel_fit])
    slope, icpt = np.polyfit(lf, lp, 1)
    band = (freqs >= alpha_band[0]) & (freqs <= alpha_band[1])
    pred = 10 ** (icpt + slope * np.log10(freqs[band]))
    ratio = psd[band] / pred
    k = int(np.argmax(ratio))
    return {"slope": float(slope), "alpha_peak_hz": float(freqs[band][k]),
            "alpha_peak_ratio": float(ratio[k])}


def run_checks(root: str | Path, out: str | Path, subject: str | None = None, max_runs: int = 2,
               fmt: str | None = None) -> dict[str, Any]:
    """Write ``psd.png`` and ``evoked.png`` into ``out`` and return the measured numbers.

    ``fmt``: layout of ``root`` (:mod:`neurospeech.data.formats`; None: detected).
    """
    root, out = Path(root), Path(out)
    recs = load_dataset(root, subjects=[subject] if subject else None, fmt=fmt)
    out.mkdir(parents=True, exist_ok=True)
    subject = subject or recs[0].subject
    recs = [r for r in recs if r.subject == subject][:max_runs]
    if not recs:
        raise DataFormatError(f"no runs for subject {subject!r} under {root}")
    psds, epochs_data = [], []
    for rec in recs:  # not empty: sfreq, info and f are set below for the code after the loop
        raw = rec.load_raw()
        good = [c for c in raw.ch_names if c not in raw.info["bads"]]
        raw.pick(good)
        sfreq = raw.info["sfreq"]
        info = raw.info
        x = raw.get_data()
        f, p = signal.welch(x, fs=sfreq, nperseg=int(4 * sfreq), axis=1)
        psds.append(p)
        words = rec.load_events().words()
        # epochs -0.2 .. 0.8 s around word onsets, 0.5-30 Hz band for the evoked view
        sos = signal.butter(2, [0.5, 30], btype="bandpass", fs=sfreq, output="sos")
        xf = signal.sosfiltfilt(sos, x, axis=1)
        i0 = np.round((words.onset - 0.2) * sfreq).astype(int)
        n = int(1.0 * sfreq) + 1
        ok = (i0 >= 0) & (i0 + n <= xf.shape[1])
        ep = np.stack([xf[:, i:i + n] for i in i0[ok]])
        ep -= ep[:, :, : int(0.2 * sfreq)].mean(axis=2, keepdims=True)
        epochs_data.append(ep)
    psd = np.concatenate(psds, axis=0) if len(psds) > 1 else psds[0]
    mean_psd = psd.mean(axis=0)
    fit = fit_spectrum(f, mean_psd)
    is_meg = "eeg" not in info.get_channel_types()
    unit, scale = ("fT", 1e15) if is_meg else ("µV", 1e6)
    # --- PSD plot
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    sel = (f > 0.5) & (f < sfreq / 2 * 0.9)
    ax[0].loglog(f[sel], psd[:, sel].T * scale**2, color="0.7", lw=0.3)
    ax[0].loglog(f[sel], mean_psd[sel] * scale**2, color="k", lw=1.5, label="mean")
    ff = f[(f >= 2) & (f <= 40)]
    ax[0].loglog(ff, 10 ** (np.polyval([fit["slope"], 0], np.log10(ff))) * mean_psd[(f >= 2) & (f <= 40)][0]
                 / (2 ** fit["slope"]) * scale**2, "r--", label=f"1/f fit, slope {fit['slope']:.2f}")
    ax[0].set(xlabel="Hz", ylabel=f"PSD ({unit}²/Hz)", title=f"sub-{subject}: spectra ({len(recs)} runs)")
    ax[0].legend()
    ax[1].plot(f[sel], mean_psd[sel] * scale**2, "k")
    ax[1].set(xlim=(1, 45), yscale="log", xlabel="Hz",
              title=f"alpha peak {fit['alpha_peak_hz']:.1f} Hz, x{fit['alpha_peak_ratio']:.2f} over 1/f")
    fig.tight_layout()
    fig.savefig(out / "psd.png", dpi=110)
    plt.close(fig)
    # --- evoked plot
    ep = np.concatenate(epochs_data)
    evoked = ep.mean(axis=0)  # (C, n)
    t = np.arange(evoked.shape[1]) / sfreq - 0.2
    gfp = evoked.std(axis=0)
    post = (t > 0.02) & (t < 0.7)
    peaks, _ = signal.find_peaks(gfp[post], distance=max(1, int(0.04 * sfreq)))
    order = peaks[np.argsort(gfp[post][peaks])[::-1]][:4]
    peak_times = sorted(float(t[post][k]) for k in order)
    base_sd = float(gfp[t < 0].mean())
    fig, ax = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    ax[0].plot(t, evoked.T * scale, lw=0.4, color="0.4")
    ax[0].set(ylabel=unit, title=f"sub-{subject}: evoked response to {len(ep)} word onsets (0.5-30 Hz)")
    ax[1].plot(t, gfp * scale, "k")
    for pt in peak_times:
        ax[1].axvline(pt, color="r", ls=":")
    ax[1].set(xlabel="s from word onset", ylabel=f"GFP ({unit})",
              title="peaks: " + ", ".join(f"{1000 * p:.0f} ms" for p in peak_times))
    fig.tight_layout()
    fig.savefig(out / "evoked.png", dpi=110)
    plt.close(fig)
    # topography of the strongest peak
    if peak_times:
        k = int(np.argmin(np.abs(t - max(peak_times, key=lambda p: gfp[np.argmin(np.abs(t - p))]))))
        ev = mne.EvokedArray(evoked, info, tmin=-0.2, nave=len(ep), verbose="error")
        fig = ev.plot_topomap(times=[float(t[k])], show=False, colorbar=True)
        fig.savefig(out / "topomap.png", dpi=110)
        plt.close(fig)
    res = {"subject": subject, "runs": len(recs), "psd_slope_2_40hz": round(fit["slope"], 3),
           "alpha_peak_hz": round(fit["alpha_peak_hz"], 2),
           "alpha_peak_ratio": round(fit["alpha_peak_ratio"], 2),
           "n_word_epochs": len(ep), "evoked_peak_ms": [round(1000 * p) for p in peak_times],
           "evoked_peak_gfp_over_baseline": round(float(gfp[post].max()) / base_sd, 2) if base_sd else None,
           "plots": [str(out / "psd.png"), str(out / "evoked.png"), str(out / "topomap.png")]}
    log.info("data-check: %s", res)
    return res
