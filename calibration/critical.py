"""The critical sigma: the largest read noise at which EP still learns, found on the simulated backend.

sigma_crit depends on the input gain, the conductance scale and beta (they set the
voltage differences EP reads), so find it with the settings the bench will use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hil.core.config import RunConfig, build_config, merge_trees
from hil.data import Dataset
from hil.executors import IN_PROCESS, ExecutorOptions
from hil.grid import Grid
from hil.grid_run import run_sweep
from hil.runner import prepare
from hil.sweep import PointSummary, SweepOptions, Trial, summarize


@dataclass
class CriticalSigma:
    samples: int
    threshold: float
    points: list[PointSummary]
    sigma_crit: float | None   # largest sigma whose mean accuracy reaches the threshold (interpolated in log sigma)
    sigma_opt: float | None    # sigma with the best mean accuracy
    trials: list[Trial]

    @property
    def sigma_crit_interval(self) -> tuple[float, float] | None:
        """95% bootstrap interval of sigma_crit over the trials (see `crit_interval`)."""
        return crit_interval(self.trials, self.threshold, self.samples)

    @property
    def beyond_grid(self) -> bool:
        """The largest sigma tried still reached the threshold: sigma_crit is only a lower bound."""
        return beyond_grid(self.points, self.threshold)

    def to_json(self) -> dict:
        return {"samples": self.samples, "threshold": self.threshold, "sigma_crit_V": self.sigma_crit,
                "sigma_crit_95_V": self.sigma_crit_interval, "sigma_opt_V": self.sigma_opt,
                "sigma_crit_is_lower_bound": self.beyond_grid,
                "points": [{"sigma_V": p.sigma, "mean_acc": p.mean_acc, "mean_acc_95": p.mean_interval,
                            "best_acc": p.best_acc, "convergence_rate": p.convergence_rate,
                            "convergence_rate_95": p.rate_interval, "trials": p.trials} for p in self.points]}


def crossing(points: Sequence[PointSummary], threshold: float) -> float | None:
    """Largest sigma at which the mean accuracy still reaches threshold, interpolating log(sigma) to the crossing."""
    pts = sorted(points, key=lambda p: p.sigma)
    last_ok = None
    for i, p in enumerate(pts):
        if p.mean_acc >= threshold:
            last_ok = i
    if last_ok is None:
        return None
    if last_ok == len(pts) - 1:
        return pts[-1].sigma  # never fell below: sigma_crit is at least the largest sigma tried
    lo, hi = pts[last_ok], pts[last_ok + 1]
    f = (lo.mean_acc - threshold) / (lo.mean_acc - hi.mean_acc)
    if lo.sigma <= 0:  # no log scale from 0 V: interpolate linearly
        return f * hi.sigma
    return math.exp(math.log(lo.sigma) + f * (math.log(hi.sigma) - math.log(lo.sigma)))


def crit_interval(trials: Sequence[Trial], threshold: float, samples: int | None = None, boot: int = 2000,
                  seed: int = 0) -> tuple[float, float] | None:
    """95% bootstrap interval of sigma_crit (percentiles of `boot` resamples; None: fewer than 2 trials per sigma).

    Trial k has the same seed at every sigma, so whole trials are resampled (a paired bootstrap); a resample whose
    mean accuracy never reaches the threshold counts as sigma_crit = 0, one that reaches it at every sigma as the
    largest sigma (a lower bound, as `crossing` returns)."""
    mine = [t for t in trials if samples is None or t.samples == samples]
    sigmas = sorted({t.sigma for t in mine})
    per = {s: {t.trial: (t.final if math.isfinite(t.final) else 0.0) for t in mine if t.sigma == s} for s in sigmas}
    common = sorted(set.intersection(*(set(v) for v in per.values()))) if per else []
    if len(common) < 2:
        return None
    acc = np.array([[per[s][k] for k in common] for s in sigmas])  # (sigmas, trials)
    pick = np.random.default_rng(seed).integers(0, len(common), size=(boot, len(common)))
    means = acc[:, pick].mean(axis=2).T  # (boot, sigmas)
    crits = []
    for row in means:  # a loop over resamples (host statistics), not over the simulator's nodes
        pts = [PointSummary(s, samples or 1, len(common), 0, float(m), 0.0, 0.0, 0.0) for s, m in zip(sigmas, row)]
        c = crossing(pts, threshold)
        crits.append(0.0 if c is None else c)
    lo, hi = np.percentile(crits, [2.5, 97.5])
    return float(lo), float(hi)


def beyond_grid(points: Sequence[PointSummary], threshold: float) -> bool:
    """True when the largest sigma tried still reaches threshold (sigma_crit lies at or beyond the grid's end)."""
    return bool(points) and max(points, key=lambda p: p.sigma).mean_acc >= threshold


def describe_crit(crit: float | None, points: Sequence[PointSummary], threshold: float) -> str:
    """sigma_crit in words: a value, a lower bound past the grid, or none."""
    if crit is None:
        return "none (no sigma reached the threshold)"
    if beyond_grid(points, threshold):
        return f">= {crit:.3g} V (beyond the grid: the largest sigma tried still reached the threshold; sweep higher)"
    return f"{crit:.3g} V"


def critical_from_points(points: Sequence[PointSummary], threshold: float):
    crit = crossing(points, threshold)
    best = max(points, key=lambda p: p.mean_acc) if points else None
    return crit, (best.sigma if best else None)


def with_lab_settings(cfg: RunConfig, lab) -> RunConfig:
    """The run config with the bench's own settings (its `run:` section) beneath what the caller set explicitly."""
    mine = cfg.model_dump(mode="json", exclude_unset=True)
    for dotted in cfg._sized_to_data:  # sized to the data, not chosen: the bench's own value wins
        section, key = dotted.split(".")
        mine.get(section, {}).pop(key, None)
    return build_config(merge_trees(lab.run, mine))


def sigma_sweep_grid(cfg: RunConfig, sigmas: Sequence[float], trials: int,
                     samples: Sequence[int] | None = None) -> Grid:
    """The grid of a sigma sweep: `trials` networks at every sigma (and every N of `samples`; default the config's
    N), trained as replicas; N outermost, so the trials run N by N, sigma by sigma."""
    vary: dict[str, list] = {"noise.samples": list(samples)} if samples else {}
    return Grid(cfg, vary | {"noise.sigma": list(sigmas)}, trials)


def critical_from_trials(trials: Sequence[Trial], threshold: float, samples: int) -> CriticalSigma:
    """sigma_crit and sigma_opt of the trials at N = samples."""
    mine = [t for t in trials if t.samples == samples]
    points = summarize(mine, threshold)
    crit, opt = critical_from_points(points, threshold)
    return CriticalSigma(samples, threshold, points, crit, opt, list(mine))


def find_critical_sigma(
    cfg: RunConfig,
    sigmas: Sequence[float],
    trials: int,
    threshold: float,
    samples: int | None = None,
    *,
    data: Dataset | None = None,
    lab=None,
    max_replicas: int | None = None,
    progress: bool = False,
    executor: ExecutorOptions = IN_PROCESS,
) -> CriticalSigma:
    """Train `trials` networks per sigma (as replicas at once) on the simulator and locate sigma_crit and sigma_opt.

    sigmas are in normalized volts (a bench's readings divided by its voltage_unit_V). With `lab`, the bench's
    settings (input gain, network, device range: its lab config's `run:` section) fill in whatever cfg leaves
    unset, so the result applies to that bench. data: loaded from cfg.data when not given. executor: where the
    chunks train (hil.executors; default here). `hil sweep sigma` trains the same grid with a folder to resume.
    """
    if lab is not None:
        cfg = with_lab_settings(cfg, lab)
    if data is None:
        data = prepare(cfg).data
    if not sigmas:
        raise ValueError("sigmas: give at least one read-noise value")
    if any(not (s >= 0 and math.isfinite(s)) for s in sigmas):
        raise ValueError(f"sigmas: must be finite and >= 0 V (got {list(sigmas)})")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold: an accuracy in (0, 1] (got {threshold})")
    n = samples or cfg.noise.initial_samples
    grid = sigma_sweep_grid(cfg, sigmas, trials, [n] if samples else None)
    results = run_sweep(grid, SweepOptions(trials, threshold, max_replicas, progress), data, executor=executor)
    return critical_from_trials(results, threshold, n)
