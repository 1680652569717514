"""Executors of a grid sweep's chunks: in this process (default) or as Ray tasks on a cluster.

A chunk (hil.grid.Chunk) is a group's RunConfig and the (sigma, N, seed) of its replicas; `train_chunk` trains
them as one vectorized SimCrossbar and returns every replica's test accuracy per epoch. Both executors run the
very same function on the very same chunks, so the accuracies do not depend on the executor. Results are
handed to `on_done` as each chunk finishes (in any order), which records them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from hil.core.config import RunConfig
from hil.data import Dataset, load_run_data
from hil.grid import Chunk, GridError
from hil.trainer import Trainer
from sim_backend.crossbar import SimCrossbar, resolve_device

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


@dataclass
class ChunkResult:
    index: int
    test_acc: list[list[float]]  # per replica, per epoch
    diverged: list[bool]


def load_chunk_data(cfg: RunConfig) -> Dataset:
    """The data set of a config on its device and dtype, as `hil.runner.prepare` gives it."""
    return load_run_data(cfg.data, resolve_device(cfg.device), cfg.torch_dtype)


def train_chunk(chunk: Chunk, data: Dataset | None = None, progress: bool = False,
                on_epoch: Callable[[int], None] | None = None) -> ChunkResult:
    """Train a chunk's replicas together (seeded conductances, per-replica sigma and N) for the config's epochs."""
    cfg = RunConfig.model_validate(chunk.config)
    if data is None:
        data = load_chunk_data(cfg)
    net = SimCrossbar.from_config(cfg, data.n_inputs, data.n_classes, sigma=list(chunk.sigmas),
                                  seeds=list(chunk.seeds), replicas=len(chunk.seeds))
    trainer = Trainer(cfg, net, data, samples=list(chunk.samples), progress=progress, halt_on_nonfinite=False)
    accs: list[list[float]] = [[] for _ in chunk.seeds]
    diverged = [False] * len(chunk.seeds)

    def record(m) -> None:
        for r, (acc, bad) in enumerate(zip(m.test_acc, trainer.halted.tolist())):
            accs[r].append(float(acc))
            diverged[r] = bool(bad)
        if on_epoch is not None:
            on_epoch(m.epoch)

    trainer.fit(on_epoch=record)
    return ChunkResult(chunk.index, accs, diverged)


class InProcessExecutor:
    """Chunks one after the other in this process; a data set is loaded once per distinct data config."""

    name = "inprocess"

    def __init__(self, progress: bool = False):
        self.progress = progress  # thread count: this process's share (hil.threads)

    def run(self, chunks: Sequence[Chunk], on_done: Callable[[Chunk, ChunkResult], None]) -> None:
        cache: dict[str, Dataset] = {}
        for chunk in chunks:
            cfg = RunConfig.model_validate(chunk.config)
            key = repr((cfg.data.model_dump(mode="json"), cfg.device, cfg.dtype))
            if key not in cache:
                cache[key] = load_chunk_data(cfg)
            on_done(chunk, train_chunk(chunk, cache[key], self.progress))


def _ray_train_chunk(chunk: Chunk, threads: int) -> ChunkResult:
    """A chunk as a Ray task (its worker process is titled ray::_ray_train_chunk while it runs)."""
    torch.set_num_threads(threads)  # the CPUs the task reserved, no more: tasks share the node
    return train_chunk(chunk)


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

    def run(self, chunks: Sequence[Chunk], on_done: Callable[[Chunk, ChunkResult], None]) -> None:
        ray = self._connect()
        try:
            needs: dict[str, Any] = {"num_cpus": self.threads, "max_retries": self.max_retries}
            if torch.cuda.is_available() and any(str(c.config.get("device", "cpu")) != "cpu" for c in chunks):
                needs["num_gpus"] = self.gpu_fraction  # several chunks share one GPU
            task = ray.remote(_ray_train_chunk).options(**needs)
            pending = {task.remote(c, self.threads): c for c in chunks}
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
