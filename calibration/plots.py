"""PNG figures: Allan deviation, accuracy against sigma (paper Fig. 3), sigma_crit against N (Fig. 4), grid
convergence heat maps (Fig. 5)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hil.plotting import save_figure, subplots


def plot_allan(path: Path, allan, title: str = "") -> Path:
    """Log-log overlapping Allan deviation with the white sigma/sqrt(N) line and the fitted floor."""
    fig, ax = subplots(figsize=(5.2, 3.8), dpi=110)
    m = allan.lengths
    ax.loglog(m, allan.adev, "o-", label="overlapping Allan deviation")
    ax.loglog(m, allan.white_sigma / np.sqrt(m), "--", color="gray", label=r"$\sigma/\sqrt{N}$ (white only)")
    if allan.floor is not None:
        ax.axhline(allan.floor, color="tab:red", lw=1, label=f"floor {allan.floor:.3g} V")
        ax.axvline(allan.n_max, color="tab:red", ls=":", lw=1, label=f"N_max = {allan.n_max}")
    ax.set_xlabel("readings averaged N")
    ax.set_ylabel("deviation (V)")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_accuracy_vs_sigma(path: Path, curves: dict, title: str = "", threshold: float | None = None) -> Path:
    """curves: label -> list of PointSummary. Mean (solid) and best (dashed) test accuracy against sigma, log axis."""
    fig, ax = subplots(figsize=(5.2, 3.8), dpi=110)
    for label, pts in curves.items():
        pts = [p for p in sorted(pts, key=lambda p: p.sigma) if p.sigma > 0]
        s = [p.sigma for p in pts]
        line, = ax.semilogx(s, [100 * p.mean_acc for p in pts], "o-", label=f"{label} mean")
        ax.semilogx(s, [100 * p.best_acc for p in pts], "s--", color=line.get_color(), alpha=0.6, label=f"{label} best")
    if threshold is not None:
        ax.axhline(100 * threshold, color="gray", lw=0.8, ls=":", label=f"threshold {100 * threshold:g}%")
    ax.set_xlabel(r"read noise $\sigma$ (V)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_sigma_crit_vs_n(path: Path, ns: Sequence[int], crits: Sequence[float | None], title: str = "") -> Path:
    """sigma_crit against N, log-log, with the sqrt(N) line through the N = 1 (first) point."""
    fig, ax = subplots(figsize=(5.2, 3.8), dpi=110)
    pts = [(n, c) for n, c in zip(ns, crits) if c]
    if pts:
        ax.loglog([n for n, _ in pts], [c for _, c in pts], "o-", label=r"measured $\sigma_{crit}$")
        n0, c0 = pts[0]
        grid = np.array([min(ns), max(ns)], dtype=float)
        ax.loglog(grid, c0 * np.sqrt(grid / n0), "--", color="gray", label=r"$\sigma_{crit}(1)\sqrt{N}$")
    ax.set_xlabel("readings averaged N")
    ax.set_ylabel(r"critical $\sigma$ (V)")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return save_figure(fig, path)
