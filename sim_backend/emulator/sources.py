"""Source physics: what an SMU channel forces on the node(s) it touches, with its compliance.

An SMU sources a current (its node then sits where the network puts it, unless that exceeds the voltage
compliance: the SMU then holds the node at +-limit and reports compliance) or a voltage (it supplies
whatever current holds the node at the level, unless that exceeds the current compliance). A closed
switch that ties two nodes to one bus shorts them: a current flows between them until they are equal.

The network is solved for these injected currents, one unknown at a time (Gauss-Seidel over the sources
and shorts), each by bracketed root finding on the node voltages the relaxation gives: node voltage is a
monotonic, piecewise-linear function of a current injected into the node (resistors and diodes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Source:
    """One SMU channel's source: func "VOLT" (level V, limit A) or "CURR" (level A, limit V)."""

    func: str
    level: float
    limit: float
    on: bool


@dataclass
class Unknown:
    """An injected current to solve for: into `node` (and out of `other`, for a short)."""

    node: tuple[int, int]
    other: tuple[int, int] | None = None
    source: Source | None = None
    key: tuple[str, str] | None = None   # the SMU channel, for a source
    current_A: float = 0.0
    compliance: bool = False


def root(f: Callable[[float], float], lo: float, hi: float, f_lo: float, f_hi: float, tol: float,
         iters: int = 40) -> float:
    """x in [lo, hi] with f(x) = 0 (Illinois false position); f(lo), f(hi) of opposite sign."""
    side = 0
    for _ in range(iters):
        x = (lo * f_hi - hi * f_lo) / (f_hi - f_lo) if f_hi != f_lo else 0.5 * (lo + hi)
        fx = f(x)
        if abs(fx) <= tol:
            return x
        if (fx > 0) == (f_hi > 0):
            hi, f_hi = x, fx
            if side == -1:
                f_lo *= 0.5
            side = -1
        else:
            lo, f_lo = x, fx
            if side == 1:
                f_hi *= 0.5
            side = 1
    return x


def solve(unknowns: list[Unknown], voltage: Callable[[tuple[int, int]], float],
          settle: Callable[[], None], tol_V: float = 1e-9, short_span_A: float = 2.0, rounds: int = 4) -> None:
    """Set every unknown's current_A (and compliance) so its constraint holds; `settle()` re-relaxes the
    network with the current values of all unknowns, `voltage(node)` reads a node after it."""

    def at(u: Unknown, amps: float) -> None:
        u.current_A = amps
        settle()

    for _ in range(rounds):
        worst = 0.0
        for u in unknowns:
            before = u.current_A
            if u.other is not None:   # a short: V(node) = V(other)
                def short(a: float, u: Unknown = u, o: tuple[int, int] = u.other) -> float:
                    at(u, a)
                    return voltage(u.node) - voltage(o)
                _bracketed(u, short, -short_span_A, short_span_A, tol_V)
            else:
                s = u.source
                assert s is not None  # an unknown is a short or a source
                if s.func == "CURR":
                    u.compliance = False
                    at(u, s.level)
                    v = voltage(u.node)
                    if abs(v) > s.limit:   # compliance: the SMU holds the node at the limit, sourcing or sinking
                        target = s.limit if v > 0 else -s.limit   # whatever current that takes
                        def at_limit(a: float, u: Unknown = u, t: float = target) -> float:
                            at(u, a)
                            return voltage(u.node) - t
                        span = max(abs(s.level), short_span_A)
                        _bracketed(u, at_limit, -span, span, tol_V)
                        u.compliance = True
                else:                      # VOLT: the current that holds the node at the level, within the limit
                    def at_level(a: float, u: Unknown = u, t: float = s.level) -> float:
                        at(u, a)
                        return voltage(u.node) - t
                    u.compliance = not _bracketed(u, at_level, -s.limit, s.limit, tol_V)
            worst = max(worst, abs(u.current_A - before))
        if len(unknowns) <= 1 or worst <= 1e-15:
            break
    settle()


def _bracketed(u: Unknown, f, lo: float, hi: float, tol: float) -> bool:
    """Root of f in [lo, hi]; False (current left at the end nearer the root) when there is none."""
    f_lo, f_hi = f(lo), f(hi)
    if f_lo == 0 or f_hi == 0 or (f_lo < 0) != (f_hi < 0):
        if f_lo == 0:
            u.current_A = lo
        elif f_hi == 0:
            u.current_A = hi
        else:
            u.current_A = root(f, lo, hi, f_lo, f_hi, tol)
        f(u.current_A)
        return True
    u.current_A = lo if abs(f_lo) < abs(f_hi) else hi
    f(u.current_A)
    return False
