"""Write-verify programming of one device: pulse, read, repeat until G is within tolerance.

Read G at the read voltage; apply a SET (G up) or RESET (G down) pulse; read
again. The amplitude steps up (within the configured bounds, then the width) whenever a pulse covers less than a tenth of the remaining
distance; when G overshoots or moves away, the polarity flips and the
amplitude falls back to its start. Stop when |G - target| <= tolerance, after
`max_reversals` flips, or after `max_pulses` pulses. A device whose G does not
move over the last pulses is reported stuck.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from drivers.lab import ProgrammingConfig
from drivers.retry import UnconfirmedWrite
from drivers.roles import BoardDriver, PulseReads
from drivers.signals import Deferred, deferred_interrupts


@dataclass
class ProgramResult:
    row: int
    col: int
    target_S: float
    final_S: float
    pulses: int
    reversals: int
    stuck: bool

    @property
    def error_S(self) -> float:
        return self.final_S - self.target_S


def write_verify(board: BoardDriver, row: int, col: int, target_S: float, cfg: ProgrammingConfig, g_now_S: float | None = None) -> ProgramResult:
    """Program the device at (row, col) to target_S (inside the device range, else ValueError)."""
    if not cfg.g_min_S <= target_S <= cfg.g_max_S:
        raise ValueError(f"target {target_S:.4g} S outside the device range [{cfg.g_min_S:g}, {cfg.g_max_S:g}] S")
    g = board.read_conductance(row, col) if g_now_S is None else g_now_S
    pulses = reversals = 0
    direction = 1 if target_S > g else -1
    bounds = cfg.set if direction > 0 else cfg.reset
    amp, width = bounds.start_V, bounds.width_s
    unmoved = 0
    reader = board if isinstance(board, PulseReads) else None  # its pulse returns the verify reading
    while abs(g - target_S) > cfg.tolerance_S and pulses < cfg.max_pulses:
        g_read: float | None = None
        try:
            if reader is not None:
                g_read = reader.pulse_read(row, col, direction * amp, width)
            else:
                board.pulse(row, col, direction * amp, width)
        except UnconfirmedWrite:
            pass  # its reply was lost: whether it was applied shows in the read-back below (never pulsed again blindly)
        pulses += 1
        g_new = board.read_conductance(row, col) if g_read is None else g_read
        unmoved = unmoved + 1 if abs(g_new - g) < 0.1 * cfg.tolerance_S else 0
        new_direction = 1 if target_S > g_new else -1
        if abs(g_new - target_S) <= cfg.tolerance_S:
            g = g_new
            break
        if new_direction != direction:  # overshoot: flip polarity, restart gently
            reversals += 1
            if reversals > cfg.max_reversals:
                g = g_new
                break
            direction = new_direction
            bounds = cfg.set if direction > 0 else cfg.reset
            amp, width = bounds.start_V, bounds.width_s
        elif abs(g - target_S) - abs(g_new - target_S) < 0.1 * abs(g - target_S):
            # slow (under a tenth of the way per pulse) or not approaching: push harder, then longer
            if amp + bounds.step_V <= bounds.max_V:
                amp += bounds.step_V
            elif width * 2 <= bounds.max_width_s:
                width *= 2
        g = g_new
    stuck = abs(g - target_S) > cfg.tolerance_S and unmoved >= 3
    return ProgramResult(row, col, target_S, g, pulses, reversals, stuck)


class BoardBlock(NamedTuple):
    """One layer's devices on a programming board: lower-layer node i on row row_offset + i, upper j on column
    col_offset + j."""

    layer: int
    board: BoardDriver
    row_offset: int
    col_offset: int


class Programmed(NamedTuple):
    """One device programmed by an update, in normalized siemens (journaled as it is done)."""

    layer: int
    row: int
    col: int
    target: float
    verified: float
    pulses: int


class Programmer:
    """The conductances a bench holds (normalized S, per layer, as last verified) and the changes not yet
    programmed: a change is pulsed in by write-verify only once it reaches the write tolerance; smaller ones
    accumulate in `pending` until they do. Targets stay inside the device range [g_lo, g_hi]."""

    def __init__(self, blocks: Sequence[BoardBlock], cfg: ProgrammingConfig, conductance_unit_S: float,
                 g_lo: float, g_hi: float, weights: list[torch.Tensor]):
        self.blocks = {b.layer: b for b in blocks}
        self.cfg, self.gu = cfg, conductance_unit_S
        self.g_lo, self.g_hi = g_lo, g_hi
        self.weights = weights
        self.pending = [torch.zeros_like(w) for w in weights]
        self.stats = {"pulses": 0, "programmed": 0, "stuck": 0}
        #: called with each device an update programs, as it is done
        self.on_programmed: Callable[[Programmed], None] | None = None

    @property
    def tol(self) -> float:
        """The write-verify tolerance, normalized S."""
        return self.cfg.tolerance_S / self.gu

    def write(self, layer: int, i: int, j: int, target: float) -> ProgramResult:
        """Write-verify one device to `target` (normalized S) from what it holds; record what it reached."""
        b = self.blocks[layer]
        W = self.weights[layer]
        res = write_verify(b.board, b.row_offset + i, b.col_offset + j, target * self.gu, self.cfg,
                           g_now_S=float(W[0, i, j]) * self.gu)
        W[0, i, j] = res.final_S / self.gu
        self.stats["pulses"] += res.pulses
        self.stats["stuck"] += int(res.stuck)
        return res

    def program(self, deltas: Sequence[torch.Tensor]) -> None:
        """Add one update (per layer, normalized S) to the pending changes and program every device whose target
        is off by the tolerance or more. A signal finishes (and journals) the device, then stops."""
        for layer, delta in zip(sorted(self.blocks), deltas):
            d = delta.detach().to("cpu", torch.float64)
            if not bool(torch.isfinite(d).all()):
                raise ValueError(f"update layer {layer}: NaN or Inf; nothing programmed")
            W, pend = self.weights[layer], self.pending[layer]
            pend += d
            # Kept inside the device range: the EP rule's bound, not a safety clamp.
            target = torch.clamp(W + pend, self.g_lo, self.g_hi)
            due = (target - W).abs() >= self.tol
            with deferred_interrupts() as signals:
                self._program_due(layer, target, due, signals)

    def _program_due(self, layer: int, target: torch.Tensor, due: torch.Tensor, signals: Deferred) -> None:
        """Write-verify each device due in one layer; `signals.check()` between devices."""
        for _, i, j in torch.nonzero(due[0:1]).tolist():
            t = float(target[0, i, j])
            res = self.write(layer, i, j, t)
            self.pending[layer][0, i, j] = 0.0
            self.stats["programmed"] += 1
            if self.on_programmed is not None:  # journaled at once: a stop mid-step keeps what was programmed
                self.on_programmed(Programmed(layer, i, j, t, float(self.weights[layer][0, i, j]), res.pulses))
            signals.check()

    def load(self, weights: Sequence[torch.Tensor]) -> None:
        """Program every device to the given conductances (normalized S): initialization and resume."""
        for layer in sorted(self.blocks):
            target = weights[layer].detach().to("cpu", torch.float64).clamp(self.g_lo, self.g_hi)
            W = self.weights[layer]
            if tuple(target.shape) != tuple(W.shape):
                raise ValueError(f"weights[{layer}]: shape {tuple(target.shape)} does not match the bench "
                                 f"{tuple(W.shape)}")
            for i in range(W.shape[1]):
                for j in range(W.shape[2]):
                    self.write(layer, i, j, float(target[0, i, j]))
            self.pending[layer].zero_()

    def step_targets(self) -> list[tuple[int, np.ndarray]]:
        """Per layer, the EP update's targets after a step: W + pending (normalized S; journaled per step)."""
        return [(l, (self.weights[l] + self.pending[l]).flatten().numpy().copy()) for l in range(len(self.weights))]

    def read(self, layer: int, i: int, j: int) -> float:
        """Read one device back, normalized S."""
        b = self.blocks[layer]
        return b.board.read_conductance(b.row_offset + i, b.col_offset + j) / self.gu

    def read_all(self, sizes: Sequence[int]) -> list[torch.Tensor]:
        """Every device read back (sizes: the node counts per layer, the inputs doubled), normalized S."""
        out = []
        for layer in sorted(self.blocks):
            m, k = sizes[layer], sizes[layer + 1]
            g = torch.tensor([[self.read(layer, i, j) for j in range(k)] for i in range(m)], dtype=torch.float64)
            out.append(g.unsqueeze(0))
        return out

    def reconcile(self, expected: Sequence[torch.Tensor], sizes: Sequence[int],
                  pending: Sequence[torch.Tensor] | None = None,
                  devices: list[tuple[int, int, int]] | None = None) -> dict[str, float]:
        """Make the chip hold `expected` (normalized S, per layer): read back every device (devices=None) or only
        `devices` [(layer, row, col)] (trusting the journal for the rest), reprogram those off by more than the
        tolerance. Returns devices checked, off, reprogrammed, worst offset before and after (S)."""
        found: dict[str, float] = {"checked": 0, "off": 0, "reprogrammed": 0, "max_off_S": 0.0, "max_after_S": 0.0}
        if devices is None:
            self.weights = self.read_all(sizes)
            devices = [(l, i, j) for l, w in enumerate(self.weights)
                       for i in range(w.shape[1]) for j in range(w.shape[2])]
        else:
            self.weights = [e.detach().to("cpu", torch.float64).clone() for e in expected]
            for l, i, j in devices:
                self.weights[l][0, i, j] = self.read(l, i, j)
        for l, i, j in devices:
            want, got = float(expected[l][0, i, j]), float(self.weights[l][0, i, j])
            found["checked"] += 1
            found["max_off_S"] = max(found["max_off_S"], abs(got - want) * self.gu)
            if abs(got - want) > self.tol:
                found["off"] += 1
                self.write(l, i, j, min(max(want, self.g_lo), self.g_hi))
                found["reprogrammed"] += 1
            found["max_after_S"] = max(found["max_after_S"], abs(float(self.weights[l][0, i, j]) - want) * self.gu)
        self.pending = ([p.detach().to("cpu", torch.float64).clone() for p in pending] if pending is not None
                        else [torch.zeros_like(w) for w in self.weights])
        return found
