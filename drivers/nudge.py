"""How a bench ties its outputs to their targets in the nudged phase (`nudge.mode` of the lab config).

Mode "conductance": where the board has nudge resistors, each output is tied through its resistor (beta =
nudge.conductance_S, fixed by hardware) to a DAC channel set to the target; the crosspoints close for the nudged
phase and open for the free one. Two switch operations per sample, no extra readings.

Mode "current": a bench without switchable nudge resistors ties an output to its target by sourcing a current
from the output's SMU. A plain I = beta*(t - y0) (y0: the free-phase reading) equals the conductance nudge only
while beta is small against the conductance G at the node; when it is not, the output overshoots by
(1 + beta/G). With `nudge.iterations` = 2 (the default) the bench measures G from the response to that first
current and sources I = beta*(t - y0)/(1 + beta/G), the conductance nudge's current, at the cost of one more
reading of the outputs per sample (N readings of each output).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch

from drivers.bench import LabBench
from drivers.lab import ChannelRef


class NudgeStrategy(Protocol):
    def apply(self, targets: torch.Tensor | None, y_free: torch.Tensor | None, beta: float, n: int) -> None:
        """Set the nudge for one sample: targets and y_free (the free-phase outputs) in normalized volts; None
        targets: the free phase (no nudge). n: readings per node (an iterative nudge reads the outputs)."""
        ...


def _refs(refs: list[ChannelRef | None], what: str) -> list[ChannelRef]:
    out = [r for r in refs if r is not None]
    if len(out) != len(refs):
        raise ValueError(f"nodes.outputs: every output needs {what}")  # the lab config checks it when it loads
    return out


class ConductanceNudge:
    """Nudge resistors to DAC channels at the targets, connected by switch crosspoints."""

    def __init__(self, bench: LabBench, voltage_unit_V: float):
        outputs = bench.lab.nodes.outputs
        self.bench, self.vu = bench, voltage_unit_V
        self.sources = _refs([node.nudge_source for node in outputs], "a nudge_source")
        self.routes = _refs([node.nudge_route for node in outputs], "a nudge_route")
        self.closed = False  # the nudge resistors' crosspoints

    def apply(self, targets: torch.Tensor | None, y_free: torch.Tensor | None, beta: float, n: int) -> None:
        """Target voltages on the nudge sources, then the resistors' crosspoints closed (None: opened).

        A crosspoint is only switched when its state changes; the sources are set (and synced) before closing.
        """
        if targets is not None:
            self.bench.set_voltages([(ref, t * self.vu) for ref, t in zip(self.sources, targets.tolist())])
        want_closed = targets is not None
        if self.closed != want_closed:
            self.bench.set_crosspoints(self.routes, closed=want_closed)
            self.closed = want_closed


class CurrentNudge:
    """The output SMUs source the current a conductance beta to the target would draw."""

    def __init__(self, bench: LabBench, voltage_unit_V: float, conductance_unit_S: float,
                 sleep: Callable[[float], None]):
        lab = bench.lab
        self.bench, self.vu, self.gu, self.sleep = bench, voltage_unit_V, conductance_unit_S, sleep
        self.smus = _refs([node.nudge for node in lab.nodes.outputs], "an SMU channel to nudge it")
        self.iterations = lab.nudge.iterations
        self.settle_time_s = lab.timing.settle_time_s

    def _set(self, currents: list[float] | None) -> None:
        """Output currents in bench amperes (None: 0 A)."""
        amps = [0.0] * len(self.smus) if currents is None else currents
        self.bench.set_currents(list(zip(self.smus, amps)))

    def apply(self, targets: torch.Tensor | None, y_free: torch.Tensor | None, beta: float, n: int) -> None:
        if targets is None:
            self._set(None)
            return
        if y_free is None:
            raise RuntimeError("nudge: measure the free phase first (the current nudge needs its output readings)")
        self._set((self.currents(targets, y_free, beta, n) * self.gu * self.vu).tolist())

    def currents(self, t: torch.Tensor, y0: torch.Tensor, beta: float, n: int) -> torch.Tensor:
        """Currents (normalized A) that tie the outputs to their targets as a conductance beta would.

        A conductance nudge draws I = beta*(t - y_beta), with y_beta the nudged output. Near the free state the
        output responds linearly, y = y0 + I/G (G: the conductance the node sees), so I = beta*(t - y0)/(1 + beta/G).
        G is measured: inject I1 = beta*(t - y0), read the outputs once more (N readings), G = I1/(y1 - y0).
        Each further iteration re-estimates G from the response to the latest current.
        """
        current = beta * (t - y0)
        scale = self.gu * self.vu
        for _ in range(self.iterations - 1):
            self._set((current * scale).tolist())
            self.sleep(self.settle_time_s)
            reads = torch.tensor(self.bench.read_nodes(n, only_outputs=True), dtype=torch.float64).T / self.vu
            dy = reads.mean(0) - y0
            g_eff = torch.where(dy.abs() > 1e-12, current / dy, torch.full_like(dy, math.inf))
            # Only a positive, finite response makes physical sense; otherwise keep the plain current.
            ok = torch.isfinite(g_eff) & (g_eff > 0)
            current = torch.where(ok, beta * (t - y0) / (1 + beta / g_eff.where(ok, torch.ones_like(g_eff))), current)
        return current


def nudge_strategy(bench: LabBench, sleep: Callable[[float], None]) -> NudgeStrategy:
    """The strategy the lab config's nudge.mode names."""
    u = bench.lab.units
    if bench.lab.nudge.mode == "conductance":
        return ConductanceNudge(bench, u.voltage_unit_V)
    return CurrentNudge(bench, u.voltage_unit_V, u.conductance_unit_S, sleep)
