"""Plots of the geometry analysis (matplotlib, Agg): 3-D planes and time courses."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_planes", "plot_time_resolved"]

_COLOURS = ["#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _figure_module():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_planes(
    panels: dict[str, dict], path: str | Path, context_names: tuple[str, str] = ("context 0", "context 1")
) -> Path:
    """Draw the two contexts' quadrilaterals in the 3-D PCA space, one panel per named time.

    Parameters
    ----------
    panels : dict name -> result of ``PlaneGeometry.to_dict()`` (needs ``points_3d``, ``theta``, ``psi``)
    path : output image (png)
    """
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    plt = _figure_module()
    n = len(panels)
    fig = plt.figure(figsize=(5 * n, 4.8))
    for i, (name, g) in enumerate(panels.items()):
        ax = fig.add_subplot(1, n, i + 1, projection="3d")
        pts = np.asarray(g["points_3d"], dtype=float)
        nb = len(pts) // 2
        for c, (edge, face) in enumerate((("k", "#bbbbbb"), ("k", "#ffd27f"))):
            q = pts[c * nb : (c + 1) * nb]
            ax.add_collection3d(Poly3DCollection([q], alpha=0.35, facecolor=face, edgecolor=edge))
            ax.scatter(
                q[:, 0],
                q[:, 1],
                q[:, 2],
                c=_COLOURS[:nb],
                s=60,
                marker="o" if c == 0 else "^",
                depthshade=False,
                label=context_names[c],
            )
        lim = np.abs(pts).max() * 1.1 or 1.0
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), zlim=(-lim, lim), xlabel="PC1", ylabel="PC2", zlabel="PC3")
        th = g.get("theta")
        ps = g.get("psi")
        th_s = "nan" if th is None else f"{th:.0f}"
        ps_s = "nan" if ps is None else f"{ps:.0f}"
        ax.set_title(f"{name}: theta={th_s} deg, psi={ps_s} deg")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_time_resolved(
    series: dict[str, dict], path: str | Path, markers: dict[str, float] | None = None
) -> Path:
    """theta(t), psi(t) and AI(t) panels; ``series`` maps a labelling name to :func:`time_resolved` output."""
    plt = _figure_module()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, tr in series.items():
        t = np.arange(len(tr["theta"]))
        axes[0].plot(t, tr["theta"], marker="o", label=name)
        axes[1].plot(t, tr["psi"], marker="o", label=name)
        axes[2].plot(t, tr["ai_d2"], marker="o", label=f"{name} d=2")
        axes[2].plot(t, tr["ai_d3"], ls="--", label=f"{name} d=3")
    for ax, lab in zip(axes, ("theta (deg)", "psi (deg)", "alignment index"), strict=True):
        ax.set_xlabel("time step")
        ax.set_ylabel(lab)
        for mname, mt in (markers or {}).items():
            ax.axvline(mt, color="grey", ls=":")
            ax.text(mt, ax.get_ylim()[1], mname, fontsize=7, va="top")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
