"""PNG figures without pyplot: a plain matplotlib Figure (no GUI backend, no global list of open figures),
written atomically.

matplotlib takes about 0.5 s to import and only the commands that draw need it, so it is imported on the first
figure (the one function-local import here).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def subplots(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    """A new figure and its axes (one Axes, or an array of them), as pyplot.subplots; kwargs: figsize, dpi,
    sharex/sharey... (those of Figure go to the figure, the rest to Figure.subplots)."""
    from matplotlib.figure import Figure  # optional-speed: ~0.5 s, only when a figure is drawn (see module doc)

    fig_keys = {"figsize", "dpi", "facecolor", "edgecolor", "layout"}
    fig = Figure(**{k: v for k, v in kwargs.items() if k in fig_keys})
    axes: Axes | Any = fig.subplots(nrows, ncols, **{k: v for k, v in kwargs.items() if k not in fig_keys})
    return fig, axes


def save_figure(fig: Figure, path: Path) -> Path:
    """Lay out and write a figure atomically (a reader never sees half a PNG)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.tight_layout()
    fig.savefig(tmp)
    os.replace(tmp, path)
    return path


def tick(value) -> str:
    """A heat map's tick label: 0.001 as 0.001, a layer list (64, 32) as [64,32]."""
    if isinstance(value, tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def plot_grid_heatmaps(path: Path, rows: Sequence, panel_key: str | None, xy: Sequence[str], threshold: float,
                       title: str = "") -> Path:
    """Convergence rate of a grid sweep as heat maps (paper Fig. 5): one panel per value of panel_key (sigma),
    x and y the two other varied keys (one key: a single row), colour the share of trials that converged.

    rows: hil.grid.CellSummary (cell: (key, value) pairs in --vary order, point: PointSummary)."""
    x_key, y_key = xy[0], (xy[1] if len(xy) > 1 else None)

    def values(key):
        return list(dict.fromkeys(dict(r.cell)[key] for r in rows)) if key is not None else [None]

    panels, xs, ys = values(panel_key), values(x_key), values(y_key)
    fig, axes = subplots(1, len(panels), figsize=(0.6 + 2.2 * len(panels) + 0.5 * len(xs), 1.2 + 0.45 * len(ys) + 1.2),
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
        ax.set_xticks(range(len(xs)), [tick(v) for v in xs], fontsize=7)
        ax.set_yticks(range(len(ys)), [tick(v) for v in ys] if y_key else [], fontsize=7)
        ax.set_xlabel(x_key, fontsize=8)
        if y_key:
            ax.set_ylabel(y_key, fontsize=8)
        ax.set_title(f"{panel_key} = {pv:g}" if panel_key else "", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes[0][-1], label=f"converged (acc >= {100 * threshold:g}%)", shrink=0.9)
    fig.suptitle(title, fontsize=8)
    return save_figure(fig, path)
