"""Many trainings at once: every (sigma, N, trial) point is one replica of the simulated crossbar.

A trial's seed (initial conductances) is `seed + trial`, the same at every
sigma and N, so the points of a sweep differ only in their noise. Replicas are
trained together in chunks of at most `max_replicas` (set by memory).
`SweepProgress` rewrites trials.csv after every epoch, so a sweep stopped
after hours keeps every epoch it finished.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hil.core.config import ConfigError, RunConfig
from hil.data import Dataset
from hil.intervals import mean_interval, wilson_interval
from hil.journal import StepJournal
from hil.snapshots import StepRecorder
from hil.store import atomic_torch_save, atomic_write_text, load_tensors
from hil.trainer import Trainer
from sim_backend.crossbar import SimCrossbar


@dataclass
class Trial:
    sigma: float
    samples: int
    trial: int
    seed: int
    test_acc: list[float] = field(default_factory=list)  # per epoch
    diverged: bool = False

    @property
    def final(self) -> float:
        return float("nan") if self.diverged or not self.test_acc else self.test_acc[-1]


def replica_bytes(cfg: RunConfig, n_in: int, n_out: int) -> int:
    nodes = [2 * n_in, *cfg.network.hidden, n_out]
    elems = sum(a * b for a, b in zip(nodes[:-1], nodes[1:]))
    return elems * cfg.torch_dtype.itemsize * 2  # weights + a weight-sized margin for transients


def available_bytes(device: torch.device) -> int | None:
    """Memory free for new tensors on `device`: the GPU's free memory, or the host's MemAvailable (None: unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_replicas_fit(cfg: RunConfig, n_in: int, n_out: int, device: torch.device) -> None:
    """Refuse, before allocating, a run whose replicas' conductances cannot fit in the device's free memory."""
    # A training step holds about 4 conductance-sized tensors per replica (measured: 268 kB a replica for the
    # digits' 64-128-10 in float32, R = 4,000): twice replica_bytes.
    per = 2 * replica_bytes(cfg, n_in, n_out)
    need, free = per * cfg.train.replicas, available_bytes(device)
    if free is not None and need > free:
        raise ConfigError(f"train.replicas: {cfg.train.replicas} replicas need about {need / 2**30:.1f} GiB "
                          f"({per / 2**20:.2f} MiB each: the conductances and a step's transients), more than the "
                          f"{free / 2**30:.1f} GiB free on {device}; lower --replicas to at most {max(1, free // per)}")


def default_max_replicas(cfg: RunConfig, n_in: int, n_out: int, device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = free // 2
    else:
        budget = 4 * 2**30
    return max(1, int(budget // replica_bytes(cfg, n_in, n_out)))


CHECKPOINT = "sweep-checkpoint.pt"
SWEEP_COMMAND = "sweep.json"  # the command line a sweep was started with, for `hil sweep resume`


class SweepResumeError(ConfigError):
    """A sweep folder cannot be resumed (no checkpoint, or one from a different sweep)."""


def save_sweep_checkpoint(folder: Path, trials: Sequence[Trial], chunk_start: int, chunk_size: int, epoch: int,
                          trainer: Trainer, snapshot: dict | None = None) -> None:
    """The chunk in training (conductances, RNG, halted replicas) and every trial's accuracies, replaced atomically.

    snapshot: a mid-epoch `Trainer.snapshot()` (epoch: the last finished one) instead of the end-of-epoch state."""
    state = {
        "chunk_start": chunk_start,
        "chunk_size": chunk_size,
        "epoch": epoch,
        "trainer": snapshot if snapshot is not None else trainer.state(epoch),
        "trials": [{"sigma": t.sigma, "samples": t.samples, "seed": t.seed, "test_acc": list(t.test_acc),
                    "diverged": t.diverged} for t in trials],
    }
    atomic_torch_save(Path(folder) / CHECKPOINT, state)


def load_sweep_checkpoint(folder: Path, todo: Sequence[Trial]) -> dict:
    path = Path(folder) / CHECKPOINT
    if not path.is_file():
        raise SweepResumeError(f"resume: {folder} has no {CHECKPOINT} (no epoch of the sweep finished)")
    state = load_tensors(path, "resume")
    saved = [(t["sigma"], t["samples"], t["seed"]) for t in state["trials"]]
    if saved != [(t.sigma, t.samples, t.seed) for t in todo]:
        raise SweepResumeError(f"resume: {path} holds a different sweep ({len(saved)} networks; the points, "
                               "trials or seed differ from the recorded command)")
    return state


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep trains its networks: `trials` per point (seeds seed..seed+trials-1), the final test accuracy
    that counts as converged (`threshold`), networks trained at once (`max_replicas`; None: what memory allows),
    a progress bar, and `resume`: continue from the folder's checkpoint instead of starting afresh."""

    trials: int = 8
    threshold: float = 0.5
    max_replicas: int | None = None
    progress: bool = False
    resume: bool = False


def sweep_recording(opts: SweepOptions, cfg: RunConfig, store) -> dict:
    """run_trials' recording arguments for a sweep command: progress and trials.csv after every epoch, and a
    checkpoint in its folder that `hil sweep resume` continues from."""
    return {"on_epoch": SweepProgress(store.path, cfg.train.epochs), "checkpoint_dir": store.path,
            "resume": opts.resume}


def sweep_table(opts: SweepOptions, sigmas: Sequence[float], cfg: RunConfig, prep, store) -> int:
    """`hil sweep table` (Table I): opts.trials networks per sigma, in the order given; table.csv and trials.csv."""
    points = [(s, cfg.noise.initial_samples) for s in sigmas]
    print(f"Table I: {cfg.data.dataset}, {len(points)} sigma x {opts.trials} trials, {cfg.train.epochs} epoch(s), "
          f"N={cfg.noise.samples}; folder {store.path}", flush=True)
    with store.recording():
        results = run_trials(cfg, prep.data, points, opts.trials, max_replicas=opts.max_replicas,
                             progress=opts.progress, **sweep_recording(opts, cfg, store))
        rows = summarize(results, opts.threshold)
        write_trials_csv(store.path / "trials.csv", results)
        write_summary_csv(store.path / "table.csv", rows)
    finish_sweep(store)
    print(format_summary(rows, opts.threshold))
    print(f"saved {store.path / 'table.csv'} and trials.csv")
    return 0


def finish_sweep(store) -> None:
    """Mark a sweep completed; its per-epoch checkpoint has served (the results are in the CSV files)."""
    (store.path / CHECKPOINT).unlink(missing_ok=True)
    store.set_status("completed")


def run_trials(
    cfg: RunConfig,
    data: Dataset,
    points: Sequence[tuple[float, int]],
    trials: int,
    *,
    max_replicas: int | None = None,
    progress: bool = False,
    on_epoch: Callable[[list[Trial], int, int, int], None] | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
) -> list[Trial]:
    """Train `trials` networks at every (sigma, N) point; returns one Trial per network.

    on_epoch(all_trials, chunk_start, chunk_size, epoch) runs after every epoch of every chunk.
    checkpoint_dir: after every epoch, and every train.checkpoint_every_steps steps / checkpoint_every_s seconds,
    the chunk in training is saved there (sweep-checkpoint.pt), each step journaled (journal.sqlite);
    resume=True continues from that file: finished chunks are not trained again and the chunk in
    training goes on from its last epoch, exactly as it would have (same batches, same noise).
    """
    todo = [Trial(s, n, t, cfg.train.seed + t) for s, n in points for t in range(trials)]
    device = data.x_train.device
    cap = max_replicas or default_max_replicas(cfg, data.n_inputs, data.n_classes, device)
    first, saved = 0, None
    if checkpoint_dir is not None and not resume:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    if resume:
        if checkpoint_dir is None:
            raise SweepResumeError("resume: needs the folder whose checkpoint to continue from")
        saved = load_sweep_checkpoint(checkpoint_dir, todo)
        cap = saved["chunk_size"]  # the chunks must be the ones trained before, whatever memory says now
        for t, st in zip(todo, saved["trials"]):
            t.test_acc, t.diverged = list(st["test_acc"]), bool(st["diverged"])
        first = saved["chunk_start"] + (cap if saved["epoch"] >= cfg.train.epochs else 0)
    # The step journal (journal.sqlite) and snapshot checkpoints every K steps / S seconds, next to the checkpoint.
    journal = StepJournal(Path(checkpoint_dir) / "journal.sqlite") if checkpoint_dir is not None else None
    steps_per_chunk = cfg.train.epochs * -(-len(data.x_train) // cfg.train.batch_size)
    try:
        for start in range(first, len(todo), cap):
            chunk = todo[start:start + cap]
            net = SimCrossbar.from_config(cfg, data.n_inputs, data.n_classes, sigma=[t.sigma for t in chunk],
                                          seeds=[t.seed for t in chunk], replicas=len(chunk))
            trainer = Trainer(cfg, net, data, samples=[t.samples for t in chunk], progress=progress, halt_on_nonfinite=False)
            start_epoch, in_epoch = 1, None
            if saved is not None and start == saved["chunk_start"]:
                start_epoch = trainer.load_state(saved["trainer"]) + 1
                in_epoch = saved["trainer"].get("in_epoch")  # a mid-epoch snapshot: that epoch goes on where it stood
                if in_epoch is not None:
                    start_epoch = int(in_epoch["epoch"])
            hooks = None
            if journal is not None:
                def save(snap, start=start, trainer=trainer):
                    save_sweep_checkpoint(checkpoint_dir, todo, start, cap, int(snap["epoch"]), trainer, snap)

                hooks = StepRecorder(trainer, save, journal, every_steps=cfg.train.checkpoint_every_steps,
                                     every_s=cfg.train.checkpoint_every_s, step_offset=start * steps_per_chunk)

            def record(m, chunk=chunk, start=start, trainer=trainer):
                for t, acc, bad in zip(chunk, m.test_acc, trainer.halted.tolist()):
                    t.test_acc.append(acc)
                    t.diverged = bool(bad)
                if checkpoint_dir is not None:
                    save_sweep_checkpoint(checkpoint_dir, todo, start, cap, m.epoch, trainer)
                    journal.snapshot(start * steps_per_chunk + trainer.step_count - 1, m.epoch + 1, 0)
                if on_epoch:
                    on_epoch(todo, start, len(chunk), m.epoch)

            trainer.fit(start_epoch=start_epoch, on_epoch=record, hooks=hooks, resume=in_epoch)
    finally:
        if journal is not None:
            journal.close()
    return todo


@dataclass
class PointSummary:
    sigma: float
    samples: int
    trials: int
    converged: int
    mean_acc: float
    std_acc: float
    best_acc: float
    mean_best5: float
    mean_interval: tuple[float, float] = (float("nan"), float("nan"))  # 95% Student t, of mean_acc

    @property
    def convergence_rate(self) -> float:
        return self.converged / self.trials if self.trials else float("nan")

    @property
    def rate_interval(self) -> tuple[float, float]:
        """95% Wilson interval of the convergence rate."""
        return wilson_interval(self.converged, self.trials)


def summarize(results: Sequence[Trial], threshold: float) -> list[PointSummary]:
    """Per (sigma, N): convergence rate (final test accuracy >= threshold), mean, best, mean of the five best."""
    out = []
    keys = list(dict.fromkeys((t.sigma, t.samples) for t in results))
    for sigma, n in keys:
        finals = [t.final for t in results if t.sigma == sigma and t.samples == n]
        ok = [f if math.isfinite(f) else 0.0 for f in finals]  # a diverged trial counts as 0 accuracy
        top = sorted(ok, reverse=True)[:5]
        out.append(PointSummary(sigma, n, len(ok), sum(f >= threshold for f in ok), statistics.fmean(ok),
                                statistics.pstdev(ok), max(ok), statistics.fmean(top), mean_interval(ok)))
    return out


def write_csv(path: Path, header: Sequence[str], rows) -> None:
    """A CSV file written whole or not at all (atomic replace)."""
    f = io.StringIO()
    w = csv.writer(f, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(path, f.getvalue())


def write_trials_csv(path: Path, results: Sequence[Trial]) -> None:
    """One row per network. final_test_acc is the last finished epoch's; epochs_done says how many."""
    write_csv(path, ["sigma_V", "samples", "trial", "seed", "diverged", "final_test_acc", "test_acc_per_epoch",
                     "epochs_done"],
              ([t.sigma, t.samples, t.trial, t.seed, int(t.diverged), f"{t.final:.4f}", " ".join(f"{a:.4f}" for a in t.test_acc),
                len(t.test_acc)] for t in results))


class SweepProgress:
    """The on_epoch callback of the sweep commands: trials.csv rewritten, one line printed, after every epoch."""

    MAX_LISTED = 8  # points named one by one in the progress line

    def __init__(self, folder: Path, epochs: int, out=None):
        self.folder, self.epochs, self.out = Path(folder), epochs, out
        self.t0 = time.perf_counter()

    def __call__(self, trials: list[Trial], start: int, size: int, epoch: int) -> None:
        write_trials_csv(self.folder / "trials.csv", trials)
        chunk = trials[start:start + size]
        several_n = len({t.samples for t in trials}) > 1
        points: dict[tuple[float, int], list[float]] = {}
        for t in chunk:
            points.setdefault((t.sigma, t.samples), []).append(0.0 if t.diverged else t.final)
        means = {key: 100 * statistics.fmean(a) for key, a in points.items()}
        if len(means) <= self.MAX_LISTED:
            accs = ", ".join(f"{s:.3g} V{f' N={n}' if several_n else ''} {m:.1f}%" for (s, n), m in means.items())
        else:  # a long grid: the range, the rest is in trials.csv
            accs = f"{min(means.values()):.1f}% to {max(means.values()):.1f}% over {len(means)} points"
        minutes = (time.perf_counter() - self.t0) / 60
        print(f"  epoch {epoch}/{self.epochs}, networks {start + 1}-{start + size} of {len(trials)}: "
              f"mean test accuracy {accs} ({minutes:.1f} min)", file=self.out or sys.stdout, flush=True)


def write_summary_csv(path: Path, rows: Sequence[PointSummary]) -> None:
    """One row per (sigma, N); the _lo/_hi columns bound 95% intervals (Wilson for the rate, Student t for the mean)."""
    write_csv(path, ["sigma_V", "samples", "sigma_eff_V", "trials", "converged", "convergence_rate",
                     "convergence_rate_lo", "convergence_rate_hi", "mean_test_acc", "mean_test_acc_lo",
                     "mean_test_acc_hi", "std_test_acc", "best_test_acc", "mean_best5_test_acc"],
              ([r.sigma, r.samples, r.sigma / math.sqrt(r.samples), r.trials, r.converged, f"{r.convergence_rate:.4f}",
                *(f"{x:.4f}" for x in r.rate_interval), f"{r.mean_acc:.4f}", *(f"{x:.4f}" for x in r.mean_interval),
                f"{r.std_acc:.4f}", f"{r.best_acc:.4f}", f"{r.mean_best5:.4f}"] for r in rows))


def format_summary(rows: Sequence[PointSummary], threshold: float) -> str:
    lines = [f"{'sigma (V)':>10}  {'N':>4}  {'converged':>10}  {'rate':>6}  {'95% CI':>9}  {'mean acc':>8}  "
             f"{'95% CI':>11}  {'best 5':>7}  {'best':>6}"]
    for r in rows:
        (rl, rh), (ml, mh) = r.rate_interval, r.mean_interval
        lines.append(f"{r.sigma:>10.3g}  {r.samples:>4d}  {r.converged:>4d}/{r.trials:<5d}  {100 * r.convergence_rate:>5.0f}%  "
                     f"{100 * rl:>3.0f}-{100 * rh:<3.0f}%  {100 * r.mean_acc:>7.1f}%  {100 * ml:>5.1f}-{100 * mh:<4.1f}%  "
                     f"{100 * r.mean_best5:>6.1f}%  {100 * r.best_acc:>5.1f}%")
    lines.append(f"(converged: final test accuracy >= {100 * threshold:g}%; 95% CI: Wilson for the rate, Student t for "
                 "the mean; best 5: mean of the five best trials)")
    return "\n".join(lines)
