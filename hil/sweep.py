"""What a sweep is made of and gives: trials (one network each), their summary per (sigma, N) point with 95%
intervals, the CSV tables, the sweep's settings, and how many replicas fit in memory.

A trial's seed (initial conductances) is `seed + trial`, the same at every sigma and N, so the points of a
sweep differ only in their noise. The engine that trains them is hil.grid_run (every sweep is a grid).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hil.core.backend import node_sizes
from hil.core.config import ConfigError, RunConfig
from hil.intervals import mean_interval, wilson_interval
from hil.store import atomic_write_text


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
    nodes = node_sizes([n_in, *cfg.network.hidden, n_out])
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


def epoch_line(chunk: Sequence[Trial], first: int, total: int, epoch: int, epochs: int, minutes: float,
               max_listed: int = 8, group: str = "") -> str:
    """The progress line after an epoch of a chunk (networks first+1.. of total; group: the grid cell's other
    settings, if any): mean test accuracy per point, named one by one up to max_listed points, else their range
    (the rest is in trials.csv)."""
    several_n = len({t.samples for t in chunk}) > 1
    points: dict[tuple[float, int], list[float]] = {}
    for t in chunk:
        points.setdefault((t.sigma, t.samples), []).append(0.0 if t.diverged else t.final)
    means = {key: 100 * statistics.fmean(a) for key, a in points.items()}
    if len(means) <= max_listed:
        accs = ", ".join(f"{s:.3g} V{f' N={n}' if several_n else ''} {m:.1f}%" for (s, n), m in means.items())
    else:
        accs = f"{min(means.values()):.1f}% to {max(means.values()):.1f}% over {len(means)} points"
    return (f"  epoch {epoch}/{epochs}, networks {first + 1}-{first + len(chunk)} of {total}"
            f"{f' ({group})' if group else ''}: "
            f"mean test accuracy {accs} ({minutes:.1f} min)")


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
