"""PNG figures: Allan deviation, accuracy against sigma (paper Fig. 3), sigma_crit against N (Fig. 4), grid
convergence heat maps (Fig. 5)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hil.store import save_figure


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt




def plot_allan(path: Path, allan, title: str = "") -> Path:
    """Log-log overlapping Allan deviation with the white sigma/sqrt(N) line and the fitted floor."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.8), dpi=110)
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
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.8), dpi=110)
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
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.8), dpi=110)
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


def plot_grid_heatmaps(path: Path, rows: Sequence, panel_key: str | None, xy: Sequence[str], threshold: float,
                       title: str = "") -> Path:
    """Convergence rate of a grid sweep as heat maps (paper Fig. 5): one panel per value of panel_key (sigma),
    x and y the two other varied keys (one key: a single row), colour the share of trials that converged.

    rows: hil.grid.CellSummary (cell: (key, value) pairs in --vary order, point: PointSummary)."""
    plt = _plt()
    x_key, y_key = xy[0], (xy[1] if len(xy) > 1 else None)

    def values(key):
        return list(dict.fromkeys(dict(r.cell)[key] for r in rows)) if key is not None else [None]

    panels, xs, ys = values(panel_key), values(x_key), values(y_key)
    fig, axes = plt.subplots(1, len(panels), figsize=(0.6 + 2.2 * len(panels) + 0.5 * len(xs), 1.2 + 0.45 * len(ys) + 1.2),
                             dpi=110, squeeze=False)
    image = None
    for ax, pv in zip(axes[0], panels):
        rate = np.full((len(ys), len(xs)), np.nan)
        for r in rows:
            c = dict(r.cell)
            if panel_key is None or c[panel_key] == pv:
                rate[ys.index(c.get(y_key)) if y_key else 0, xs.index(c[x_key])] = r.point.convergence_rate
        image = ax.imshow(rate, origin="lower", vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (i, j), v in np.ndenumerate(rate):
            if np.isfinite(v):
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if v < 0.5 else "black")
        ax.set_xticks(range(len(xs)), [f"{v:g}" if isinstance(v, float) else str(v) for v in xs], fontsize=7)
        ax.set_yticks(range(len(ys)), [f"{v:g}" if isinstance(v, float) else str(v) for v in ys] if y_key else [],
                      fontsize=7)
        ax.set_xlabel(x_key, fontsize=8)
        if y_key:
            ax.set_ylabel(y_key, fontsize=8)
        ax.set_title(f"{panel_key} = {pv:g}" if panel_key else "", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes[0][-1], label=f"converged (acc >= {100 * threshold:g}%)", shrink=0.9)
    fig.suptitle(title, fontsize=8)
    return save_figure(fig, path)
