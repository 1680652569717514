"""Executors of a sweep's chunks: in this process (default) or as Ray tasks on a cluster.

A chunk (hil.grid.Chunk) is a group's RunConfig and the (sigma, N, seed) of its replicas; `train_chunk` trains
them as one vectorized SimCrossbar and returns every replica's test accuracy per epoch. Both executors run the
very same function on the very same chunks, so the accuracies do not depend on the executor. Results are
handed to `on_done` as each chunk finishes (in any order), which records them.

With the sweep's folder, a chunk in training keeps a snapshot (chunk-<k>.pt in sweep-chunks/) after every
epoch and every train.checkpoint_every_steps steps / checkpoint_every_s seconds, and journals each step in
journal.sqlite; `train_chunk` on a chunk with a snapshot goes on from it, exactly as it would have (same
batches, same noise). So a sweep killed in the middle of a long chunk, or a Ray worker killed mid-task,
loses at most the steps since the last snapshot.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hil.core.config import RunConfig
from hil.data import Dataset, load_run_data
from hil.grid import Chunk, GridError
from hil.journal import StepJournal
from hil.snapshots import StepRecorder
from hil.store import atomic_torch_save, load_tensors
from hil.trainer import Trainer
from sim_backend.crossbar import SimCrossbar, resolve_device

#: Where the chunks in training keep their snapshots, inside a sweep's folder.
CHUNK_SNAPSHOTS = "sweep-chunks"

EXECUTORS = ("inprocess", "ray")


@dataclass(frozen=True)
class ExecutorOptions:
    """Where a sweep's chunks train: `name` inprocess (here, one after the other) or ray (each chunk a task).

    Ray only: `address` of a running cluster (None: start a local one of `num_cpus` CPUs, default all), `threads`
    CPU threads (and reserved CPUs) per task, `gpu_fraction` of a GPU a chunk reserves with CUDA, `max_retries`
    of a chunk whose worker died."""

    name: str = "inprocess"
    address: str | None = None
    num_cpus: int | None = None
    threads: int = 1
    gpu_fraction: float = 0.25
    max_retries: int = 3


#: The default: chunks one after the other in this process.
IN_PROCESS = ExecutorOptions()


@dataclass
class ChunkResult:
    index: int
    test_acc: list[list[float]]  # per replica, per epoch
    diverged: list[bool]


#: on_epoch(chunk, epoch, test_acc so far per replica, diverged per replica): after each epoch of a chunk.
EpochHook = Callable[[Chunk, int, list[list[float]], list[bool]], None]


def load_chunk_data(cfg: RunConfig) -> Dataset:
    """The data set of a config on its device and dtype, as `hil.runner.prepare` gives it."""
    return load_run_data(cfg.data, resolve_device(cfg.device), cfg.torch_dtype)


def data_key(cfg: RunConfig) -> str:
    """Configs with equal keys train on the same tensors."""
    return repr((cfg.data.model_dump(mode="json"), cfg.device, cfg.dtype))


def chunk_snapshot_path(folder: Path, index: int) -> Path:
    return Path(folder) / CHUNK_SNAPSHOTS / f"chunk-{index:05d}.pt"


def chunk_identity(chunk: Chunk) -> dict[str, Any]:
    """What a snapshot must match to be this chunk's: its index and its replicas' sigma, N and seed."""
    return {"index": chunk.index, "sigmas": [float(s) for s in chunk.sigmas], "samples": [int(n) for n in chunk.samples],
            "seeds": [int(s) for s in chunk.seeds]}


def save_chunk_snapshot(folder: Path, chunk: Chunk, state: dict, test_acc: Sequence[Sequence[float]],
                        diverged: Sequence[bool]) -> None:
    """A chunk's snapshot: the trainer's state (`Trainer.state` or, mid-epoch, `Trainer.snapshot`) and every
    replica's test accuracy per finished epoch; replaced atomically."""
    path = chunk_snapshot_path(folder, chunk.index)
    path.parent.mkdir(exist_ok=True)
    atomic_torch_save(path, {"chunk": chunk_identity(chunk), "trainer": state,
                             "test_acc": [list(map(float, a)) for a in test_acc], "diverged": [bool(d) for d in diverged]})


def train_chunk(chunk: Chunk, data: Dataset | None = None, progress: bool = False,
                on_epoch: EpochHook | None = None, folder: Path | None = None) -> ChunkResult:
    """Train a chunk's replicas together (seeded conductances, per-replica sigma and N) for the config's epochs.

    folder: the sweep's folder: snapshots and the step journal there, and a snapshot found there resumed."""
    cfg = RunConfig.model_validate(chunk.config)
    if data is None:
        data = load_chunk_data(cfg)
    net = SimCrossbar.from_config(cfg, data.n_inputs, data.n_classes, sigma=list(chunk.sigmas),
                                  seeds=list(chunk.seeds), replicas=len(chunk.seeds))
    trainer = Trainer(cfg, net, data, samples=list(chunk.samples), progress=progress, halt_on_nonfinite=False)
    accs: list[list[float]] = [[] for _ in chunk.seeds]
    diverged = [False] * len(chunk.seeds)
    start_epoch, in_epoch, hooks, journal = 1, None, None, None
    if folder is not None:
        path = chunk_snapshot_path(folder, chunk.index)
        if path.is_file():
            saved = load_tensors(path, "resume")
            if saved.get("chunk") != chunk_identity(chunk):
                raise GridError(f"resume: {path} holds another chunk's snapshot (the sweep's plan changed)")
            start_epoch = trainer.load_state(saved["trainer"]) + 1
            in_epoch = saved["trainer"].get("in_epoch")  # a mid-epoch snapshot: that epoch goes on where it stood
            if in_epoch is not None:
                start_epoch = int(in_epoch["epoch"])
            accs, diverged = [list(map(float, a)) for a in saved["test_acc"]], [bool(d) for d in saved["diverged"]]

        def save(state: dict) -> None:
            save_chunk_snapshot(folder, chunk, state, accs, diverged)

        # Each chunk's steps numbered apart in the one journal of the sweep.
        steps_per_chunk = cfg.train.epochs * -(-len(data.x_train) // cfg.train.batch_size)
        journal = StepJournal(Path(folder) / "journal.sqlite")
        hooks = StepRecorder(trainer, save, journal, every_steps=cfg.train.checkpoint_every_steps,
                             every_s=cfg.train.checkpoint_every_s, step_offset=chunk.index * steps_per_chunk)

    def record(m) -> None:
        for r, (acc, bad) in enumerate(zip(m.test_acc, trainer.halted.tolist())):
            accs[r].append(float(acc))
            diverged[r] = bool(bad)
        if hooks is not None:
            save(trainer.state(m.epoch))
            hooks.epoch_checkpoint(m.epoch)
        if on_epoch is not None:
            on_epoch(chunk, m.epoch, accs, diverged)

    try:
        trainer.fit(start_epoch=start_epoch, on_epoch=record, hooks=hooks, resume=in_epoch)
    finally:
        if journal is not None:
            journal.close()
    return ChunkResult(chunk.index, accs, diverged)


class InProcessExecutor:
    """Chunks one after the other in this process; a data set is loaded once per distinct data config (`offer`
    hands it one already loaded). on_epoch: after each epoch of each chunk (only here: a Ray task reports at its end)."""

    name = "inprocess"

    def __init__(self, progress: bool = False):
        self.progress = progress  # thread count: this process's share (hil.threads)
        self.cache: dict[str, Dataset] = {}

    def offer(self, cfg: RunConfig, data: Dataset) -> None:
        self.cache[data_key(cfg)] = data

    def run(self, chunks: Sequence[Chunk], on_done: Callable[[Chunk, ChunkResult], None], *,
            folder: Path | None = None, on_epoch: EpochHook | None = None) -> None:
        for chunk in chunks:
            cfg = RunConfig.model_validate(chunk.config)
            key = data_key(cfg)
            if key not in self.cache:
                self.cache[key] = load_chunk_data(cfg)
            on_done(chunk, train_chunk(chunk, self.cache[key], self.progress, on_epoch, folder))


def _ray_train_chunk(chunk: Chunk, threads: int, folder: str | None) -> ChunkResult:
    """A chunk as a Ray task (its worker process is titled ray::_ray_train_chunk while it runs). Where the
    worker sees the sweep's folder (this machine, or a shared file system) it snapshots there, so a retried
    task goes on from the killed one's last snapshot; elsewhere a retry trains the chunk from its start."""
    torch.set_num_threads(threads)  # the CPUs the task reserved, no more: tasks share the node
    here = Path(folder) if folder is not None and Path(folder).is_dir() else None
    return train_chunk(chunk, folder=here)


class RayExecutor:
    """Each chunk a Ray task (num_cpus = threads, a GPU fraction when CUDA is there), retried if its worker dies.

    address: an existing cluster (`ray start --head` printed it); None: a local one with num_cpus CPUs.
    Ray is imported only here: it is an optional heavy dependency (pip install 'crossbar-hil[cluster]').
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, threads: int = 1,
                 gpu_fraction: float = 0.25, max_retries: int = 3):
        self.address, self.num_cpus, self.threads = address, num_cpus, threads
        self.gpu_fraction, self.max_retries = gpu_fraction, max_retries

    def _connect(self):
        try:
            import ray  # optional: only a Ray sweep needs it
        except ImportError:
            raise RuntimeError("--executor ray: Ray is not installed (pip install 'crossbar-hil[cluster]')") from None
        init: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": False}
        if self.address:
            init["address"] = self.address
        else:
            init["num_cpus"] = self.num_cpus or os.cpu_count() or 1
            init["include_dashboard"] = False
        ray.init(**init)
        return ray

    def offer(self, cfg: RunConfig, data: Dataset) -> None:
        """Nothing to keep: each task loads its data set in its worker."""

    def run(self, chunks: Sequence[Chunk], on_done: Callable[[Chunk, ChunkResult], None], *,
            folder: Path | None = None, on_epoch: EpochHook | None = None) -> None:
        ray = self._connect()
        try:
            needs: dict[str, Any] = {"num_cpus": self.threads, "max_retries": self.max_retries}
            if torch.cuda.is_available() and any(str(c.config.get("device", "cpu")) != "cpu" for c in chunks):
                needs["num_gpus"] = self.gpu_fraction  # several chunks share one GPU
            task = ray.remote(_ray_train_chunk).options(**needs)
            shared = str(Path(folder).resolve()) if folder is not None else None
            pending = {task.remote(c, self.threads, shared): c for c in chunks}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                chunk = pending.pop(ready[0])
                on_done(chunk, ray.get(ready[0]))  # streamed: recorded as each task finishes
        finally:
            ray.shutdown()  # disconnect (and stop the local cluster if this call started one)


def make_executor(opts: ExecutorOptions, progress: bool = False):
    if opts.name == "inprocess":
        if opts.address is not None:
            raise GridError("--address: only with --executor ray")
        return InProcessExecutor(progress=progress)
    if opts.name == "ray":
        if opts.threads < 1 or opts.max_retries < 0 or not 0 < opts.gpu_fraction <= 1:
            raise GridError(f"--threads >= 1, --max-retries >= 0, --gpu-fraction in (0, 1] "
                             f"(got {opts.threads}, {opts.max_retries}, {opts.gpu_fraction})")
        return RayExecutor(opts.address, opts.num_cpus, opts.threads, opts.gpu_fraction, opts.max_retries)
    raise GridError(f"--executor: one of {', '.join(EXECUTORS)} (got {opts.name!r})")
