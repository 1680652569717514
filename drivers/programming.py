"""Write-verify programming of one device: pulse, read, repeat until G is within tolerance.

Read G at the read voltage; apply a SET (G up) or RESET (G down) pulse; read
again. The amplitude steps up (within the configured bounds, then the width) whenever a pulse covers less than a tenth of the remaining
distance; when G overshoots or moves away, the polarity flips and the
amplitude falls back to its start. Stop when |G - target| <= tolerance, after
`max_reversals` flips, or after `max_pulses` pulses. A device whose G does not
move over the last pulses is reported stuck.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.lab import ProgrammingConfig
from drivers.retry import UnconfirmedWrite


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


def write_verify(board, row: int, col: int, target_S: float, cfg: ProgrammingConfig, g_now_S: float | None = None) -> ProgramResult:
    """Program the device at (row, col) to target_S (inside the device range, else ValueError)."""
    if not cfg.g_min_S <= target_S <= cfg.g_max_S:
        raise ValueError(f"target {target_S:.4g} S outside the device range [{cfg.g_min_S:g}, {cfg.g_max_S:g}] S")
    g = board.read_conductance(row, col) if g_now_S is None else g_now_S
    pulses = reversals = 0
    direction = 1 if target_S > g else -1
    bounds = cfg.set if direction > 0 else cfg.reset
    amp, width = bounds.start_V, bounds.width_s
    unmoved = 0
    while abs(g - target_S) > cfg.tolerance_S and pulses < cfg.max_pulses:
        try:
            board.pulse(row, col, direction * amp, width)
        except UnconfirmedWrite:
            pass  # its reply was lost: whether it was applied shows in the read-back below (never pulsed again blindly)
        pulses += 1
        g_new = board.read_conductance(row, col)
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
