"""`hil sweep grid`: train a --vary grid's chunks on an executor, recording each chunk as it finishes.

The folder's sweep-checkpoint.pt holds the chunk plan and every finished chunk's accuracies (written before
the first chunk starts), so `hil sweep resume` trains only the chunks not finished, whichever executor ran
the rest. Results do not depend on the executor: the same chunks, the same seeds, the same code.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import torch

from hil.core.config import RunConfig
from hil.executors import ChunkResult, ExecutorOptions, make_executor
from hil.grid import (
    ETA_EFF,
    Chunk,
    Grid,
    GridError,
    check_vary,
    format_grid_summary,
    heatmap_axes,
    summarize_cells,
    write_grid_table_csv,
    write_grid_trials_csv,
)
from hil.plotting import plot_grid_heatmaps
from hil.store import atomic_torch_save, atomic_write_text, load_tensors
from hil.sweep import CHECKPOINT, SweepOptions, SweepResumeError, default_max_replicas, finish_sweep
from sim_backend.crossbar import resolve_device

GRID_KIND = "grid"


def plan_chunks(grid: Grid, max_replicas: int | None, n_in: int, n_out: int) -> list[Chunk]:
    """Chunks of at most max_replicas (default: what memory allows for each group's network) replicas."""
    caps = [max_replicas or default_max_replicas(cfg, n_in, n_out, resolve_device(cfg.device)) for cfg in grid.configs]
    if any(torch.device(resolve_device(c.device)).type == "cuda" for c in grid.configs) and max_replicas is None:
        caps = [min(caps)] * len(caps)  # free GPU memory varies: one cap, recorded in the checkpoint, for all
    return grid.chunks(caps)


class GridRecorder:
    """Records finished chunks: accuracies into the trials, trials.csv, the checkpoint, one progress line."""

    def __init__(self, folder: Path, grid: Grid, chunks: Sequence[Chunk], out=None):
        self.folder, self.grid, self.chunks, self.out = Path(folder), grid, list(chunks), out
        self.done: dict[int, dict[str, Any]] = {}
        self.t0 = time.perf_counter()

    def state(self) -> dict[str, Any]:
        return {"kind": GRID_KIND, "signature": [list(s) for s in self.grid.signature()],
                "chunks": [list(c.trials) for c in self.chunks], "done": {str(k): v for k, v in self.done.items()}}

    def save(self) -> None:
        atomic_torch_save(self.folder / CHECKPOINT, self.state())

    def apply(self, chunk: Chunk, accs: Sequence[Sequence[float]], diverged: Sequence[bool]) -> None:
        for i, acc, bad in zip(chunk.trials, accs, diverged):
            t = self.grid.trials[i]
            t.test_acc, t.diverged = [float(a) for a in acc], bool(bad)
        self.done[chunk.index] = {"test_acc": [list(map(float, a)) for a in accs], "diverged": [bool(b) for b in diverged]}

    def __call__(self, chunk: Chunk, result: ChunkResult) -> None:
        self.apply(chunk, result.test_acc, result.diverged)
        write_grid_trials_csv(self.folder / "trials.csv", self.grid.keys, self.grid.trials)
        self.save()
        finals = [0.0 if bad else acc[-1] for acc, bad in zip(result.test_acc, result.diverged)]
        group = ", ".join(f"{k}={v}" for k, v in self.grid.groups[chunk.group]) or "base config"
        minutes = (time.perf_counter() - self.t0) / 60
        print(f"  chunk {len(self.done)}/{len(self.chunks)} done ({group}; {len(chunk.trials)} networks): mean final "
              f"test accuracy {100 * statistics.fmean(finals):.1f}% ({minutes:.1f} min)",
              file=self.out or sys.stdout, flush=True)


def resume_recorder(folder: Path, grid: Grid) -> GridRecorder:
    """The recorder of an interrupted grid sweep: its chunk plan and finished chunks, checked against the grid."""
    state = load_tensors(Path(folder) / CHECKPOINT, "resume")
    if state.get("kind") != GRID_KIND or state.get("signature") != [list(s) for s in grid.signature()]:
        raise SweepResumeError(f"resume: {folder / CHECKPOINT} holds a different sweep (the cells, trials or seed "
                               "differ from the recorded command)")
    chunks = []
    for k, idx in enumerate(state["chunks"]):
        gi = grid.group_of[idx[0]]
        chunks.append(Chunk(k, gi, grid.configs[gi].model_dump(mode="json"), list(idx),
                            [grid.trials[i].sigma for i in idx], [grid.trials[i].samples for i in idx],
                            [grid.trials[i].seed for i in idx]))
    rec = GridRecorder(folder, grid, chunks)
    for key, res in state["done"].items():
        rec.apply(chunks[int(key)], res["test_acc"], res["diverged"])
    return rec


def build_grid(cfg: RunConfig, vary: Sequence[tuple[str, list[Any]]], sigmas: Sequence[float] | None, trials: int,
               given: Collection[str] = ()) -> Grid:
    """The grid of `hil sweep grid` over its base config, every cell validated: the --vary pairs, the --sigma
    values (the heat maps' panels), `trials` networks per cell; given: the dotted keys also set by a flag or
    --set (a varied key among them is refused: which value wins would be a guess)."""
    varied = check_vary(vary)
    if sigmas:
        if "noise.sigma" in varied:
            raise GridError("--sigma and --vary noise.sigma: both list the read noise; give one")
        if any(not (s >= 0) for s in sigmas):
            raise GridError(f"--sigma: read noise must be >= 0 V (got {list(sigmas)})")
        varied = {"noise.sigma": sorted(sigmas)} | varied  # sigma first: the heat maps' panels
    if not varied:
        raise GridError("sweep grid: nothing varied; give --vary KEY=V1,V2,... (and/or --sigma)")
    clash = [k for k in varied if k in given or (k == ETA_EFF and "ep.eta" in given)]
    if clash:
        raise GridError(f"--vary {clash[0]}: also set by a flag, --set or (for eta_eff) --eta; give it once")
    return Grid(cfg, varied, trials)


def run_grid_sweep(grid: Grid, opts: SweepOptions, executor_opts: ExecutorOptions, cfg: RunConfig, prep,
                   store) -> int:
    """The body of `hil sweep grid` once the folder exists: the grid's chunks on the executor, the table."""
    data = prep.data
    executor = make_executor(executor_opts, progress=opts.progress)
    with store.recording():
        if opts.resume:
            rec = resume_recorder(store.path, grid)
        else:
            rec = GridRecorder(store.path, grid, plan_chunks(grid, opts.max_replicas, data.n_inputs, data.n_classes))
            rec.save()  # the plan first: an interrupted sweep resumes even before its first chunk finished
        todo = [c for c in rec.chunks if c.index not in rec.done]
        dataset = "datasets varied" if "data.dataset" in grid.vary else cfg.data.dataset
        epochs = "epochs varied" if "train.epochs" in grid.vary else f"{cfg.train.epochs} epoch(s)"
        print(f"grid sweep: {dataset}, {len({t.cell for t in grid.trials})} cells x {opts.trials} trials = "
              f"{len(grid.trials)} networks in {len(rec.chunks)} chunks ({len(todo)} to train) on the "
              f"{executor.name} executor, {epochs}; folder {store.path}", flush=True)
        write_grid_trials_csv(store.path / "trials.csv", grid.keys, grid.trials)
        executor.run(todo, rec)
        rows = summarize_cells(grid.trials, opts.threshold)
        write_grid_trials_csv(store.path / "trials.csv", grid.keys, grid.trials)
        write_grid_table_csv(store.path / "table.csv", grid.keys, rows)
        atomic_write_text(store.path / "grid.json", json.dumps(
            {"vary": {k: v for k, v in grid.vary.items()}, "trials": opts.trials, "threshold": opts.threshold,
             "executor": executor_opts.name}, indent=1) + "\n")
        axes = heatmap_axes(grid.keys)
        if axes is not None:
            panel, xy = axes
            plot_grid_heatmaps(store.path / "convergence_heatmap.png", rows, panel, xy, opts.threshold,
                               store.path.name)
    finish_sweep(store)
    print(format_grid_summary(grid.keys, rows, opts.threshold))
    shown = "convergence_heatmap.png, " if axes is not None else ""
    others = len([k for k in grid.keys if k != "noise.sigma"])
    print(f"saved {shown}table.csv and trials.csv in {store.path}" +
          ("" if axes is not None else f" (no heat map: it shows at most two varied keys besides noise.sigma, here {others})"))
    return 0
