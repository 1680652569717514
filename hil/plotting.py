"""PNG figures without pyplot: a plain matplotlib Figure (no GUI backend, no global list of open figures),
written atomically.

matplotlib takes about 0.5 s to import and only the commands that draw need it, so it is imported on the first
figure (the one function-local import here).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
