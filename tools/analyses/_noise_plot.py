"""Figure of the noise-limits analysis: RMS error vs N with fits, noise geometry, Fisher information."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .noise_limits import NoiseLimitResult

__all__ = ["plot_result"]

COLORS = {"unshuffled": "tab:blue", "shuffled": "tab:orange", "diagonal": "tab:green"}


def plot_result(res: NoiseLimitResult, path: str | Path) -> Path:
    """Save a PNG: (a) RMS error vs N, 3 settings, bootstrap bands, fitted curves, asymptotes; (b) noise
    variance along the signal direction vs N; (c) bias-corrected linear Fisher information vs N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .noise_limits import model_curve

    geo = res.geometry
    n_panels = 3 if geo else 1
    fig, axes = plt.subplots(1, n_panels, figsize=(5.2 * n_panels, 4.4), squeeze=False)
    ax = axes[0, 0]
    n = res.sizes.astype(np.float64)
    n_fine = np.geomspace(n.min(), n.max() * 4, 200)
    u = res.settings.unit
    for name, color in COLORS.items():
        rms = res.rms(name)
        lo, hi = res.rms_ci(name)
        marker = {"unshuffled": "o", "shuffled": "s", "diagonal": "^"}[name]
        ax.plot(n, rms, marker, color=color, ms=4, mfc="none" if name == "diagonal" else color, label=name)
        ax.fill_between(n, np.maximum(lo, 1e-12), np.maximum(hi, 1e-12), color=color, alpha=0.2, lw=0)
        fit = res.fits[name]
        inside = n_fine <= n.max()
        curve = model_curve(fit, n_fine)
        ax.plot(n_fine[inside], curve[inside], "-", color=color, lw=1.2)
        ax.plot(n_fine[~inside], curve[~inside], ":", color=color, lw=1.2)
        if name != "diagonal" and not fit.at_bound:
            ax.axhline(
                fit.rms_inf,
                color=color,
                ls="--",
                lw=0.8,
                label=f"{name} RMS$_\\infty$={fit.rms_inf:.3g} {u}, N*={fit.n_star:.3g}",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("ensemble size N (features)")
    chance = res.info.get("chance_mse")
    if chance:
        ax.axhline(np.sqrt(chance), color="0.4", ls=":", lw=0.8, label="chance (guessing)")
    if res.info.get("ordinal", True):
        ax.set_ylabel(f"RMS decoding error ({u})")
    else:
        ax.set_ylabel("sqrt(error rate)")
    ax.set_title("Decoding error vs ensemble size")
    ax.axvline(n.max(), color="0.6", lw=0.6)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(True, which="both", alpha=0.2)
    if geo:
        ax = axes[0, 1]
        gs = np.asarray(geo["sizes"], dtype=np.float64)
        for name, color in (("real", COLORS["unshuffled"]), ("shuffled", COLORS["shuffled"])):
            ax.plot(gs, geo["signal_noise_variance"][name], "o-", color=color, ms=4, label=name)
        ax.axhline(1.0, color="0.5", ls="--", lw=0.8, label="mean per-feature noise variance")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("ensemble size N")
        ax.set_ylabel("noise variance along signal direction")
        cos = geo["top_eig_cosine"]
        ax.set_title(
            f"|cos(top noise PC, signal)|: real {cos['real'][0]:.2f}, shuffled {cos['shuffled'][0]:.2f}",
            fontsize=9,
        )
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.2)
        ax = axes[0, 2]
        for name, color in (("real", COLORS["unshuffled"]), ("shuffled", COLORS["shuffled"])):
            fi = np.asarray(geo["fisher"][name], dtype=np.float64)
            ok = np.isfinite(fi)
            ax.plot(gs[ok], fi[ok], "o-", color=color, ms=4, label=name)
        fr = res.fits["unshuffled"]
        ax.axhline(fr.i_inf, color=COLORS["unshuffled"], ls="--", lw=0.8, label="decoder I$_\\infty$ (real)")
        ax.set_xscale("log")
        ax.set_xlabel("ensemble size N")
        ax.set_ylabel(f"bias-corrected linear Fisher info (1/{u}$^2$)")
        ax.set_title("Fisher information, adjacent classes (N < 2T-3)", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.2)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
