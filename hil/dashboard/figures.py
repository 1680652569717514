"""Plotly figures of what a run folder holds (hil.runview's views): one function per picture, no drawing by hand.

Large arrays are reduced here, before they reach a browser: a conductance histogram is binned with numpy, and a
heat map larger than MAP_CELLS a side is block-averaged (a 1568-1024 layer becomes 224 x 256 cells).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from hil.runview import mean

MAP_CELLS = 256  # the most cells a heat map shows per side
HIST_BINS = 60
LAYOUT = {"margin": {"l": 55, "r": 15, "t": 40, "b": 45}, "height": 300, "template": "plotly_white",
          "uirevision": "keep"}  # uirevision: a refresh keeps the user's zoom


def _fig(title: str, x: str, y: str, **layout: Any) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title={"text": title, "font": {"size": 14}}, xaxis_title=x, yaxis_title=y, **{**LAYOUT, **layout})
    return fig


def empty(title: str, why: str) -> go.Figure:
    fig = _fig(title, "", "")
    fig.add_annotation(text=why, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pairs = [(int(r["epoch"]), mean(r.get(key))) for r in rows]
    kept = [(e, v) for e, v in pairs if v is not None]
    return [e for e, _ in kept], [v for _, v in kept]


def metric_lines(rows: list[dict[str, Any]], title: str, keys: dict[str, str], y: str, scale: float = 1.0,
                 log_y: bool = False) -> go.Figure:
    """One line per metric key (label: key) over the epochs (the mean over replicas)."""
    fig = _fig(title, "epoch", y, yaxis_type="log" if log_y else "linear")
    if not rows:
        return empty(title, "no epoch finished yet")
    for label, key in keys.items():
        ep, v = _series(rows, key)
        if v:
            fig.add_trace(go.Scatter(x=ep, y=[scale * a for a in v], mode="lines+markers", name=label))
    return fig


def bench_lines(rows: list[dict[str, Any]]) -> go.Figure:
    """A bench run's cost per training sample, per epoch (evaluation included): VISA round trips, programming-board
    transactions and wall milliseconds."""
    title = "bench: per training sample"
    if not rows or "round_trips_per_training_sample" not in rows[-1]:
        return empty(title, "no bench epoch finished yet")
    fig = _fig(title, "epoch", "per training sample", legend={"orientation": "h", "y": -0.3})
    for label, key in (("VISA round trips", "round_trips_per_training_sample"),
                       ("board transactions", "board_transactions_per_training_sample"),
                       ("ms", "ms_per_training_sample")):
        ep, v = _series(rows, key)
        fig.add_trace(go.Scatter(x=ep, y=v, mode="lines+markers", name=label))
    return fig


def fault_bars(faults: list[dict[str, Any]]) -> go.Figure:
    """The command log's faults so far, per instrument, stacked by what was done about them."""
    title = f"faults logged: {len(faults)}"
    if not faults:
        return empty(title, "no fault logged")
    fig = _fig(title, "instrument", "faults", barmode="stack", legend={"orientation": "h", "y": -0.3})
    instruments = sorted({str(f.get("instrument")) for f in faults})
    for action in sorted({str(f.get("action", "")) for f in faults}):
        fig.add_trace(go.Bar(x=instruments, name=action or "?",
                             y=[sum(str(f.get("instrument")) == i and str(f.get("action", "")) == action for f in faults)
                                for i in instruments],
                             hovertext=[", ".join(sorted({str(f.get("fault")) for f in faults
                                                          if str(f.get("instrument")) == i})) for i in instruments]))
    return fig


def conductance_histogram(g: np.ndarray, layer: int, where: str) -> go.Figure:
    """Histogram of a layer's conductances (every replica), binned here."""
    counts, edges = np.histogram(g.ravel(), bins=HIST_BINS)
    fig = _fig(f"layer {layer} conductances ({where})", "conductance (S)", "devices")
    fig.add_trace(go.Bar(x=0.5 * (edges[:-1] + edges[1:]), y=counts, width=np.diff(edges), name=f"layer {layer}"))
    return fig


def block_average(a: np.ndarray, cells: int = MAP_CELLS) -> tuple[np.ndarray, int, int]:
    """a (rows, cols) averaged over blocks so neither side exceeds `cells`; returns it and the block sides."""
    rows, cols = a.shape
    br, bc = -(-rows // cells), -(-cols // cells)
    pr, pc = -rows % br, -cols % bc
    padded = np.pad(a, ((0, pr), (0, pc)), constant_values=np.nan)
    return np.nanmean(padded.reshape(padded.shape[0] // br, br, padded.shape[1] // bc, bc), axis=(1, 3)), br, bc


def conductance_map(g: np.ndarray, layer: int, where: str) -> go.Figure:
    """Heat map of replica 0's conductances of a layer: input nodes down, output nodes across."""
    shown, br, bc = block_average(g[0])
    note = "" if br == bc == 1 else f", {br}x{bc} blocks averaged"
    fig = _fig(f"layer {layer} map, replica 0 ({where}{note})", "output node", "input node")
    fig.add_trace(go.Heatmap(z=shown, x0=0, dx=bc, y0=0, dy=br, colorscale="Viridis",
                             colorbar={"title": {"text": "S"}}))
    fig.update_yaxes(autorange="reversed")
    return fig


def sweep_picture(cells: dict[str, Any]) -> go.Figure:
    """A sweep's points as they fill in: a heat map of the convergence rate over two varied keys, else mean
    test accuracy over the one key that varies."""
    title = f"sweep: convergence rate (final test accuracy >= {cells['threshold']:.0%})"
    points = cells["points"]
    if not points:
        return empty(title, "no trial finished yet")
    varying = [k for k in cells["keys"] if len({p["key"][k] for p in points}) > 1]
    if len(varying) >= 2:
        kx, ky = varying[:2]
        xs = sorted({p["key"][kx] for p in points}, key=_num)
        ys = sorted({p["key"][ky] for p in points}, key=_num)
        z = np.full((len(ys), len(xs)), np.nan)
        text = np.full((len(ys), len(xs)), "", dtype=object)
        for p in points:
            i, j = ys.index(p["key"][ky]), xs.index(p["key"][kx])
            z[i, j] = p["convergence_rate"]
            text[i, j] = f"{p['convergence_rate']:.0%} ({p['trials']} trials)"
        fig = _fig(title, kx, ky)
        fig.add_trace(go.Heatmap(z=z, x=xs, y=ys, text=text, texttemplate="%{text}", zmin=0, zmax=1,
                                 colorscale="Viridis", colorbar={"title": {"text": "rate"}}))
        fig.update_xaxes(type="category")
        fig.update_yaxes(type="category")
        return fig
    key = varying[0] if varying else cells["keys"][0]
    pts = sorted(points, key=lambda p: _num(p["key"][key]))
    xs = [_num(p["key"][key]) for p in pts]
    log_x = key.startswith("sigma") and all(isinstance(x, float) and x > 0 for x in xs)
    fig = _fig("sweep: mean final test accuracy", key, "test accuracy (%)", xaxis_type="log" if log_x else "linear")
    fig.add_trace(go.Scatter(x=xs, y=[100 * p["mean_test_acc"] for p in pts],
                             mode="lines+markers", text=[f"{p['trials']} trials" for p in pts], name="mean"))
    return fig


def _num(v: str) -> float | str:
    try:
        return float(v)
    except ValueError:
        return v


def allan_plot(allan: dict[str, Any], unit: str = "V") -> go.Figure:
    """Allan deviation against the averaging length (readings), log-log, with the white-noise line."""
    n = np.asarray(allan["lengths"], dtype=float)
    fig = _fig("Allan deviation", "readings averaged", f"Allan deviation ({unit})", xaxis_type="log", yaxis_type="log")
    fig.add_trace(go.Scatter(x=n, y=allan["adev_V"], mode="lines+markers", name="measured"))
    if allan.get("white_sigma_V"):
        fig.add_trace(go.Scatter(x=n, y=allan["white_sigma_V"] / np.sqrt(n), mode="lines", name="white: sigma/sqrt(n)",
                                 line={"dash": "dash"}))
    if allan.get("floor_V"):
        fig.add_hline(y=allan["floor_V"], line_dash="dot", annotation_text="floor")
    return fig


def node_sigma(nodes: list[str], estimate: dict[str, Any], unit: str = "V") -> go.Figure:
    """Per-node sigma with its interval (characterize.json's estimate)."""
    sigma = np.asarray(estimate["sigma"], dtype=float)
    low = np.asarray(estimate.get("sigma_low", sigma), dtype=float)
    high = np.asarray(estimate.get("sigma_high", sigma), dtype=float)
    level = estimate.get("level", 0.95)
    fig = _fig(f"sigma per node ({level:.0%} interval)", "node", f"sigma ({unit})")
    fig.add_trace(go.Scatter(x=nodes, y=sigma, mode="markers", name="sigma",
                             error_y={"type": "data", "symmetric": False, "array": high - sigma,
                                      "arrayminus": sigma - low}))
    if estimate.get("pooled_sigma"):
        fig.add_hline(y=estimate["pooled_sigma"], line_dash="dash", annotation_text="pooled")
    return fig
