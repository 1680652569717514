"""Noise tracking during training: the online sigma estimate, adaptive N, noise schedules and reading accounting.

The trainer hands every measurement's `NodeStats` to a `NoiseTracker`, which

- accumulates the within-state spread of the readings into a running sigma estimate per replica and node
  (hil/core/sigma_estimate.py), with a drift test every K steps;
- with N = 1, asks for one extra reading of a rotating subset of nodes (the spread needs two);
- with `samples: auto`, sets each replica's N every K steps so that sigma/sqrt(N) stays at the target, with
  hysteresis and the Allan N_max cap;
- applies the schedules: the simulated sigma (a step, a ramp) and the effective-noise target (annealing; on the
  simulator with a fixed N it adds read noise, with samples auto it chooses N);
- counts the readings taken and what a fixed N chosen for the worst noise seen would have cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from hil.core.backend import AdjustableNoise, CrossbarBackend, NodeStats, SubsetMeasurable
from hil.core.config import NoiseConfig
from hil.core.sigma_estimate import DriftEvent, SigmaEstimator, noisy_nodes, pair_sums, stats_sums

#: estimate_fraction when unset and N adapts: a quarter of the nodes read twice per step at N = 1
AUTO_ESTIMATE_FRACTION = 0.25
#: N is the smallest with sigma/sqrt(N) <= target * this: an estimate a hair above sigma = 5 target asks 25, not 26
TARGET_SLACK = 1.01


def default_node_names(measured_sizes: Sequence[int]) -> list[str]:
    """hidden1[0], ..., output[k]: the simulator's nodes, in measurement order."""
    names = []
    for layer, size in enumerate(measured_sizes):
        kind = "output" if layer == len(measured_sizes) - 1 else f"hidden{layer + 1}"
        names += [f"{kind}[{i}]" for i in range(size)]
    return names


@dataclass
class ReadingLedger:
    """Readings taken (node readings, per replica) and node-states measured (reading any number of times)."""

    seconds_per_reading: float
    readings: list[int]
    node_states: int = 0
    estimate_readings: list[int] = field(default_factory=list)  # the extra N = 1 readings, included above

    def add(self, states: int, samples: Sequence[int]) -> None:
        self.node_states += states
        self.readings = [r + states * n for r, n in zip(self.readings, samples)]

    def add_extra(self, count: int, used: Sequence[bool]) -> None:
        if not self.estimate_readings:
            self.estimate_readings = [0] * len(self.readings)
        self.readings = [r + count * u for r, u in zip(self.readings, used)]
        self.estimate_readings = [r + count * u for r, u in zip(self.estimate_readings, used)]


@dataclass
class CheckRecord:
    """What a check saw, per replica: the block's sigma, the N in force and the target then."""

    step: int
    sigma_block_V: list[float]
    samples: list[int]
    target_V: float | None

    def to_json(self) -> dict:
        return {"step": self.step, "sigma_block_V": self.sigma_block_V, "samples": self.samples,
                "target_V": self.target_V}


class NoiseTracker:
    """One per trainer (see the module docstring). samples: the N each replica starts with."""

    def __init__(self, noise: NoiseConfig, backend: CrossbarBackend, samples: Sequence[int], total_steps: int,
                 seconds_per_reading: float, node_names: Sequence[str] | None = None,
                 simulated: bool = True, device: torch.device | str = "cpu"):
        self.cfg = noise
        self.a = noise.adapt
        self.backend = backend
        self.R = len(samples)
        self.samples = [int(n) for n in samples]
        self.total_steps = max(int(total_steps), 1)
        self.nodes = sum(backend.measured_sizes)
        self.names = list(node_names or default_node_names(backend.measured_sizes))
        self.device = torch.device(device)
        self.estimator = SigmaEstimator(self.R, self.nodes, self.a.drift_alpha, self.device)
        self.ledger = ReadingLedger(seconds_per_reading, [0] * self.R)
        fraction = self.a.estimate_fraction
        if fraction is None:
            fraction = AUTO_ESTIMATE_FRACTION if noise.adaptive else 0.0
        self.pair_count = max(1, round(fraction * self.nodes)) if fraction > 0 else 0
        self.subset = isinstance(backend, SubsetMeasurable)
        self.adjustable: AdjustableNoise | None = backend if simulated and isinstance(backend, AdjustableNoise) else None
        self.history: list[CheckRecord] = []
        self.drift_events: list[DriftEvent] = []
        self.worst_samples = list(self.samples)  # the N the worst sigma seen needed (capped as N is)
        self.sigma_worst = [0.0] * self.R
        self.capped = [False] * self.R
        self._epoch_steps = 0
        self._epoch_sample_sum = [0] * self.R
        self._epoch_events: list[DriftEvent] = []
        self.notices: list[str] = []  # for the runner to print (a cap reached, a noisy node)
        self._named: set[tuple[int, int]] = set()

    # ---- schedules ----------------------------------------------------------------------------------
    def progress(self, step: int) -> float:
        return min(step / max(self.total_steps - 1, 1), 1.0)

    def target(self, step: int) -> float | None:
        """The effective noise to hold at this step, V (None: no target)."""
        if self.cfg.sigma_target is None:
            return None
        return self.cfg.sigma_target * self.cfg.target_schedule.at(self.progress(step))

    def before_step(self, step: int) -> None:
        """Set the simulated read noise for this step: sigma times its schedule, and with a fixed N and a target,
        noise added up to target * sqrt(N) per reading."""
        if self.adjustable is None:
            return
        scheduled = self.cfg.sigma_schedule.kind != "constant"
        inject = self.cfg.sigma_target is not None and not self.cfg.adaptive
        if not (scheduled or inject):
            return
        scale = self.cfg.sigma_schedule.at(self.progress(step))
        floor = None
        target = self.target(step)
        if inject and target is not None:
            floor = target * torch.tensor(self.samples, dtype=torch.float64).sqrt()
        self.adjustable.set_read_noise(scale, floor)

    # ---- readings -------------------------------------------------------------------------------------
    def observe(self, stats_: NodeStats) -> None:
        """One measurement of every node (a phase or an evaluation batch) at the N in force."""
        r, b, m = stats_.mean.shape
        self.ledger.add(b * m, self.samples)
        if any(n >= 2 for n in self.samples):
            ss, dof = stats_sums(stats_, torch.tensor(self.samples))
            self.estimator.add(ss, dof)

    def count_only(self, stats_: NodeStats) -> None:
        """Readings taken (evaluation) that do not enter the estimate."""
        r, b, m = stats_.mean.shape
        self.ledger.add(b * m, self.samples)

    def pair_nodes(self, step: int) -> list[int]:
        """The rotating subset read a second time at N = 1 (empty: no extra reading this step)."""
        if self.pair_count == 0 or not any(n == 1 for n in self.samples):
            return []
        start = (step * self.pair_count) % self.nodes
        return [(start + k) % self.nodes for k in range(self.pair_count)]

    def extra_reading(self, free: NodeStats, step: int) -> None:
        """At N = 1: read the subset once more in the free state and pair it with the free-phase reading."""
        nodes = self.pair_nodes(step)
        if not nodes:
            return
        if isinstance(self.backend, SubsetMeasurable):
            second = self.backend.measure_nodes(1, nodes)[0]
            read = len(nodes)
        else:  # a backend without subset reads reads every node; the count says so
            second = self.backend.measure(1)[0][..., nodes]
            read = self.nodes
        use = torch.tensor([n == 1 for n in self.samples])
        first = free.mean[..., nodes]
        pair = torch.stack([first, second.to(device=first.device, dtype=first.dtype)])
        ss, dof = pair_sums(pair, torch.ones(len(nodes), dtype=torch.bool), use)
        full_ss = torch.zeros(self.R, self.nodes, dtype=torch.float64, device=self.device)
        full_dof = torch.zeros_like(full_ss)
        full_ss[:, nodes] = ss
        full_dof[:, nodes] = dof
        self.estimator.add(full_ss, full_dof)
        self.ledger.add_extra(free.mean.shape[1] * read, use.tolist())

    # ---- every step and every K steps ------------------------------------------------------------------
    def after_step(self, step: int) -> bool:
        """Count the step; every K steps check for drift and (samples auto) choose N. True: N changed."""
        self._epoch_steps += 1
        self._epoch_sample_sum = [s + n for s, n in zip(self._epoch_sample_sum, self.samples)]
        if step % self.a.every_steps != 0:
            return False
        if not self.cfg.adaptive and self.device.type != "cpu":
            return False  # a check reads back to the host; on a GPU only adaptive N is worth that stall

        blk_var, blk_dof = self.estimator.block.pooled()
        events = self.estimator.check(step)
        self.drift_events += events
        self._epoch_events += events
        sigma, _, _ = self.estimator.sigma()
        target = self.target(step)
        self.history.append(CheckRecord(step, [float(v) for v in blk_var.sqrt()], list(self.samples), target))
        for r in range(self.R):
            if math.isfinite(float(sigma[r])):
                self.sigma_worst[r] = max(self.sigma_worst[r], float(sigma[r]))
        if not self.cfg.adaptive or target is None:
            return False
        changed = False
        h = self.a.hysteresis
        for r in range(self.R):
            s = float(sigma[r])
            if not math.isfinite(s):
                continue
            needed = max(1, math.ceil((s / (target * TARGET_SLACK)) ** 2))
            if self.a.n_max is not None and needed > self.a.n_max:
                if not self.capped[r]:
                    self.notices.append(
                        f"adaptive N: replica {r} needs N = {needed} for sigma {s:.3g} V and target {target:.3g} V, "
                        f"above N_max = {self.a.n_max}; N is held at N_max, so the effective noise is "
                        f"{s / math.sqrt(self.a.n_max):.3g} V")
                self.capped[r] = True
                needed = self.a.n_max
            self.worst_samples[r] = max(self.worst_samples[r], needed)
            effective = s / math.sqrt(self.samples[r])
            if abs(effective / target - 1.0) > h and needed != self.samples[r]:
                self.samples[r] = needed
                changed = True
        return changed

    # ---- reports -------------------------------------------------------------------------------------
    def epoch_row(self, step: int) -> dict:
        """The metrics of the epoch just trained (then its sums restart): pooled sigma with its interval, the mean
        N, drift events and noisy nodes; scalars for one replica, lists for several."""
        one = self.R == 1
        pick = (lambda v: v[0]) if one else (lambda v: v)  # noqa: E731
        sums = self.estimator.epoch
        sigma, lo, hi = sums.sigma()
        finite = [math.isfinite(float(v)) for v in sigma]
        row: dict = {}
        if any(finite):
            row.update(sigma_estimate_V=pick([_sig(v) for v in sigma]),
                       sigma_estimate_low_V=pick([_sig(v) for v in lo]),
                       sigma_estimate_high_V=pick([_sig(v) for v in hi]))
        steps = max(self._epoch_steps, 1)
        row["samples"] = pick([round(s / steps, 2) for s in self._epoch_sample_sum])
        target = self.target(step)
        if target is not None:
            row["sigma_target_V"] = float(f"{target:.4g}")
        noisy = noisy_nodes(sums, self.a.noisy_ratio)
        named = [[{"node": self.names[i], "sigma_V": _sig(s), "times_median": round(x, 2)} for i, s, x in per]
                 for per in noisy]
        if any(named):
            row["noisy_nodes"] = pick(named)
            for r, per in enumerate(noisy):
                for i, s, x in per:
                    if (r, i) not in self._named:
                        self._named.add((r, i))
                        who = f"replica {r}: " if not one else ""
                        self.notices.append(f"noisy node: {who}{self.names[i]} reads sigma {s:.3g} V, {x:.1f}x the "
                                            "median node's")
        if self._epoch_events:
            row["drift"] = [e.to_json() for e in self._epoch_events]
        row["readings"] = pick(list(self.ledger.readings))
        sums.clear()
        self._epoch_steps, self._epoch_sample_sum, self._epoch_events = 0, [0] * self.R, []
        return row

    def summary(self) -> dict:
        """For run.json: readings and reading time taken, and those of a fixed N chosen for the worst sigma seen."""
        led = self.ledger
        fixed = [led.node_states * n for n in self.worst_samples]
        out = {
            "readings": led.readings,
            "reading_time_s": [round(r * led.seconds_per_reading, 3) for r in led.readings],
            "worst_sigma_V": [_sig(s) for s in self.sigma_worst],
            "worst_case_samples": self.worst_samples,
            "worst_case_readings": fixed,
            "worst_case_reading_time_s": [round(f * led.seconds_per_reading, 3) for f in fixed],
            "seconds_per_reading": led.seconds_per_reading,
        }
        if self.R == 1:
            out = {k: (v[0] if isinstance(v, list) else v) for k, v in out.items()}
        return out

    # ---- checkpoint ------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"samples": list(self.samples), "estimator": self.estimator.state(),
                "readings": list(self.ledger.readings), "node_states": self.ledger.node_states,
                "worst_samples": list(self.worst_samples), "sigma_worst": list(self.sigma_worst),
                "epoch_steps": self._epoch_steps, "epoch_sample_sum": list(self._epoch_sample_sum)}

    def load_state(self, state: dict) -> None:
        self.samples = [int(n) for n in state["samples"]]
        self.estimator.load_state(state["estimator"])
        self.ledger.readings = [int(r) for r in state["readings"]]
        self.ledger.node_states = int(state["node_states"])
        self.worst_samples = [int(n) for n in state["worst_samples"]]
        self.sigma_worst = [float(s) for s in state["sigma_worst"]]
        self._epoch_steps = int(state["epoch_steps"])
        self._epoch_sample_sum = [int(s) for s in state["epoch_sample_sum"]]


def _sig(v: float | torch.Tensor) -> float:
    """Four significant digits for a JSON row."""
    return float(f"{float(v):.4g}")
