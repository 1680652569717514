"""The sweep engine: a grid's chunks trained on an executor, each recorded as it finishes; and the sweeps built
on it (`hil sweep table` here, `hil sweep grid`, and sigma and samples in calibration.commands).

Every sweep is a grid (hil.grid): Table I, the sigma and the samples sweeps vary noise.sigma (and noise.samples),
which the simulator varies per replica. The folder's sweep-checkpoint.pt holds the chunk plan and every
finished chunk's accuracies (written before the first chunk starts); a chunk in training keeps its own
snapshot (hil.executors). So `hil sweep resume` trains only the chunks not finished, the one that was in
training from its last snapshot, whichever executor ran the rest. Results do not depend on the executor or
the chunking: the same seeds, each replica's own noise stream, the same code.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import torch

from hil.core.config import RunConfig
from hil.data import Dataset
from hil.executors import (
    CHUNK_SNAPSHOTS,
    IN_PROCESS,
    ChunkResult,
    ExecutorOptions,
    chunk_snapshot_path,
    make_executor,
    save_chunk_snapshot,
)
from hil.grid import (
    ETA_EFF,
    Chunk,
    Grid,
    GridError,
    GridTrial,
    check_vary,
    format_grid_summary,
    heatmap_axes,
    summarize_cells,
    write_grid_table_csv,
    write_grid_trials_csv,
)
from hil.plotting import plot_grid_heatmaps
from hil.runner import Prepared
from hil.store import RunStore, atomic_torch_save, atomic_write_text, load_tensors
from hil.sweep import (
    CHECKPOINT,
    SweepOptions,
    SweepResumeError,
    default_max_replicas,
    epoch_line,
    format_summary,
    summarize,
    write_summary_csv,
    write_trials_csv,
)
from sim_backend.crossbar import resolve_device

GRID_KIND = "grid"

#: Writes a sweep's trials.csv (path, grid): the grid's own columns, or the sigma sweeps' (hil.sweep.write_trials_csv).
TrialsWriter = Callable[[Path, Grid], None]


def grid_trials_csv(path: Path, grid: Grid) -> None:
    write_grid_trials_csv(path, grid.keys, grid.trials)


def point_trials_csv(path: Path, grid: Grid) -> None:
    write_trials_csv(path, grid.trials)


def plan_chunks(grid: Grid, max_replicas: int | None, n_in: int, n_out: int) -> list[Chunk]:
    """Chunks of at most max_replicas (default: what memory allows for each group's network) replicas."""
    caps = [max_replicas or default_max_replicas(cfg, n_in, n_out, resolve_device(cfg.device)) for cfg in grid.configs]
    if any(torch.device(resolve_device(c.device)).type == "cuda" for c in grid.configs) and max_replicas is None:
        caps = [min(caps)] * len(caps)  # free GPU memory varies: one cap, recorded in the checkpoint, for all
    return grid.chunks(caps)


class GridRecorder:
    """Records a sweep as it trains: each epoch's accuracies into the trials and trials.csv with a progress line
    (in-process), each finished chunk into the checkpoint. folder None: in memory only, nothing printed."""

    def __init__(self, folder: Path | None, grid: Grid, chunks: Sequence[Chunk],
                 write_trials: TrialsWriter = grid_trials_csv, out=None):
        self.folder, self.grid, self.chunks, self.out = folder, grid, list(chunks), out
        self.write_trials = write_trials
        self.done: dict[int, dict[str, Any]] = {}
        self.t0 = time.perf_counter()

    def state(self) -> dict[str, Any]:
        return {"kind": GRID_KIND, "signature": [list(s) for s in self.grid.signature()],
                "chunks": [list(c.trials) for c in self.chunks], "done": {str(k): v for k, v in self.done.items()}}

    def save(self) -> None:
        if self.folder is not None:
            atomic_torch_save(self.folder / CHECKPOINT, self.state())

    def save_trials(self) -> None:
        if self.folder is not None:
            self.write_trials(self.folder / "trials.csv", self.grid)

    def _print(self, line: str) -> None:
        if self.folder is not None:
            print(line, file=self.out or sys.stdout, flush=True)

    def _set(self, chunk: Chunk, accs: Sequence[Sequence[float]], diverged: Sequence[bool]) -> None:
        for i, acc, bad in zip(chunk.trials, accs, diverged):
            t = self.grid.trials[i]
            t.test_acc, t.diverged = [float(a) for a in acc], bool(bad)

    def apply(self, chunk: Chunk, accs: Sequence[Sequence[float]], diverged: Sequence[bool]) -> None:
        self._set(chunk, accs, diverged)
        self.done[chunk.index] = {"test_acc": [list(map(float, a)) for a in accs], "diverged": [bool(b) for b in diverged]}

    def epoch_done(self, chunk: Chunk, epoch: int, accs: Sequence[Sequence[float]], diverged: Sequence[bool]) -> None:
        """After each epoch of a chunk trained here: trials.csv keeps every finished epoch, one progress line."""
        self._set(chunk, accs, diverged)
        self.save_trials()
        mine = [self.grid.trials[i] for i in chunk.trials]
        self._print(epoch_line(mine, chunk.trials[0], len(self.grid.trials), epoch,
                               self.grid.configs[chunk.group].train.epochs, self.minutes(), group=self.group(chunk)))

    def group(self, chunk: Chunk) -> str:
        """The chunk's varied settings besides sigma and N (empty for a sweep of sigma and N only)."""
        return ", ".join(f"{k}={v}" for k, v in self.grid.groups[chunk.group])

    def minutes(self) -> float:
        return (time.perf_counter() - self.t0) / 60

    def __call__(self, chunk: Chunk, result: ChunkResult) -> None:
        """A chunk finished: recorded in the checkpoint, its snapshot then dropped (the checkpoint has it all)."""
        self.apply(chunk, result.test_acc, result.diverged)
        self.save_trials()
        self.save()
        if self.folder is not None:
            chunk_snapshot_path(self.folder, chunk.index).unlink(missing_ok=True)
        finals = [0.0 if bad else acc[-1] for acc, bad in zip(result.test_acc, result.diverged)]
        group = self.group(chunk) or "base config"
        self._print(f"  chunk {len(self.done)}/{len(self.chunks)} done ({group}; {len(chunk.trials)} networks): mean "
                    f"final test accuracy {100 * statistics.fmean(finals):.1f}% ({self.minutes():.1f} min)")


def resume_recorder(folder: Path, grid: Grid, write_trials: TrialsWriter = grid_trials_csv) -> GridRecorder:
    """The recorder of an interrupted sweep: its chunk plan and finished chunks, checked against the grid."""
    path = Path(folder) / CHECKPOINT
    if not path.is_file():
        raise SweepResumeError(f"resume: {folder} has no {CHECKPOINT} (start the sweep again)")
    state = load_tensors(path, "resume")
    if "chunk_start" in state:
        return _from_one_chunk_checkpoint(state, Path(folder), grid, write_trials)
    if state.get("kind") != GRID_KIND or state.get("signature") != [list(s) for s in grid.signature()]:
        raise SweepResumeError(f"resume: {path} holds a different sweep (the cells, trials or seed "
                               "differ from the recorded command)")
    chunks = []
    for k, idx in enumerate(state["chunks"]):
        gi = grid.group_of[idx[0]]
        chunks.append(Chunk(k, gi, grid.configs[gi].model_dump(mode="json"), list(idx),
                            [grid.trials[i].sigma for i in idx], [grid.trials[i].samples for i in idx],
                            [grid.trials[i].seed for i in idx]))
    rec = GridRecorder(Path(folder), grid, chunks, write_trials)
    for key, res in state["done"].items():
        rec.apply(chunks[int(key)], res["test_acc"], res["diverged"])
    for chunk in chunks:  # a chunk stopped in training: its finished epochs stay in trials.csv meanwhile
        snapshot = chunk_snapshot_path(folder, chunk.index)
        if chunk.index not in rec.done and snapshot.is_file():
            saved = load_tensors(snapshot, "resume")
            rec._set(chunk, saved["test_acc"], saved["diverged"])
    return rec


def _from_one_chunk_checkpoint(state: dict, folder: Path, grid: Grid, write_trials: TrialsWriter) -> GridRecorder:
    """A checkpoint of the table, sigma and samples sweeps before they were grids (their chunk in training and every
    trial's accuracies in one file): the same chunks, those before it done, it given its snapshot, so a sweep
    started by an earlier version resumes with this one."""
    saved = state["trials"]
    if [(t["sigma"], t["samples"], t["seed"]) for t in saved] != [(t.sigma, t.samples, t.seed) for t in grid.trials]:
        raise SweepResumeError(f"resume: {folder / CHECKPOINT} holds a different sweep (the points, trials or seed "
                               "differ from the recorded command)")
    chunks = grid.chunks([int(state["chunk_size"])] * len(grid.configs))
    rec = GridRecorder(folder, grid, chunks, write_trials)
    start, finished = int(state["chunk_start"]), int(state["epoch"]) >= grid.configs[0].train.epochs
    for chunk in chunks:
        mine = [saved[i] for i in chunk.trials]
        accs, diverged = [t["test_acc"] for t in mine], [t["diverged"] for t in mine]
        if chunk.trials[0] < start or (chunk.trials[0] == start and finished):
            rec.apply(chunk, accs, diverged)
        elif chunk.trials[0] == start:
            save_chunk_snapshot(folder, chunk, state["trainer"], accs, diverged)
    rec.save()
    return rec


def run_sweep(grid: Grid, opts: SweepOptions, data: Dataset, *, executor: ExecutorOptions = IN_PROCESS,
              folder: Path | None = None, write_trials: TrialsWriter = grid_trials_csv,
              announce: Callable[[int, int, str], None] | None = None) -> list[GridTrial]:
    """Train every network of the grid (data: the base config's data set, loaded) and return the trials with
    their accuracies per epoch. folder: the sweep's folder, where the checkpoint, the chunks' snapshots, the
    step journal and trials.csv are kept as it trains; opts.resume: go on from them. announce(chunks, chunks
    to train, executor name): called once the plan is known, before training."""
    runner = make_executor(executor, progress=opts.progress)
    runner.offer(grid.base, data)
    if opts.resume:
        if folder is None:
            raise SweepResumeError("resume: needs the folder whose checkpoint to continue from")
        rec = resume_recorder(folder, grid, write_trials)
    else:
        rec = GridRecorder(folder, grid, plan_chunks(grid, opts.max_replicas, data.n_inputs, data.n_classes),
                           write_trials)
        rec.save()  # the plan first: an interrupted sweep resumes even before its first chunk finished
    todo = [c for c in rec.chunks if c.index not in rec.done]
    if announce is not None:
        announce(len(rec.chunks), len(todo), runner.name)
    rec.save_trials()
    runner.run(todo, rec, folder=folder, on_epoch=rec.epoch_done)
    return grid.trials


def finish_sweep(store: RunStore) -> None:
    """Mark a sweep completed; its checkpoint and snapshots have served (the results are in the CSV files)."""
    (store.path / CHECKPOINT).unlink(missing_ok=True)
    shutil.rmtree(store.path / CHUNK_SNAPSHOTS, ignore_errors=True)
    store.set_status("completed")


def sweep_table(opts: SweepOptions, sigmas: Sequence[float], cfg: RunConfig, prep: Prepared, store: RunStore,
                executor: ExecutorOptions = IN_PROCESS) -> int:
    """`hil sweep table` (Table I): opts.trials networks per sigma, in the order given; table.csv and trials.csv."""
    grid = Grid(cfg, {"noise.sigma": list(sigmas)}, opts.trials)
    print(f"Table I: {cfg.data.dataset}, {len(sigmas)} sigma x {opts.trials} trials, {cfg.train.epochs} epoch(s), "
          f"N={cfg.noise.samples}; folder {store.path}", flush=True)
    with store.recording():
        results = run_sweep(grid, opts, prep.data, executor=executor, folder=store.path, write_trials=point_trials_csv)
        rows = summarize(results, opts.threshold)
        write_trials_csv(store.path / "trials.csv", results)
        write_summary_csv(store.path / "table.csv", rows)
    finish_sweep(store)
    print(format_summary(rows, opts.threshold))
    print(f"saved {store.path / 'table.csv'} and trials.csv")
    return 0


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


def run_grid_sweep(grid: Grid, opts: SweepOptions, executor: ExecutorOptions, cfg: RunConfig, prep: Prepared,
                   store: RunStore) -> int:
    """The body of `hil sweep grid` once the folder exists: the grid's chunks on the executor, the table."""
    dataset = "datasets varied" if "data.dataset" in grid.vary else cfg.data.dataset
    epochs = "epochs varied" if "train.epochs" in grid.vary else f"{cfg.train.epochs} epoch(s)"

    def announce(chunks: int, todo: int, executor_name: str) -> None:
        print(f"grid sweep: {dataset}, {len({t.cell for t in grid.trials})} cells x {opts.trials} trials = "
              f"{len(grid.trials)} networks in {chunks} chunks ({todo} to train) on the {executor_name} executor, "
              f"{epochs}; folder {store.path}", flush=True)

    with store.recording():
        run_sweep(grid, opts, prep.data, executor=executor, folder=store.path, announce=announce)
        rows = summarize_cells(grid.trials, opts.threshold)
        write_grid_trials_csv(store.path / "trials.csv", grid.keys, grid.trials)
        write_grid_table_csv(store.path / "table.csv", grid.keys, rows)
        atomic_write_text(store.path / "grid.json", json.dumps(
            {"vary": {k: v for k, v in grid.vary.items()}, "trials": opts.trials, "threshold": opts.threshold,
             "executor": executor.name}, indent=1) + "\n")
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
