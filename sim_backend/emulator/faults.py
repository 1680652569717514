"""Fault injection for the emulated instruments: what goes wrong on a real bench, on demand.

Faults come from the lab config (`emulator.faults: {instrument: [{kind: ..., after: N, match: REGEX}]}`) or
from a test (`EmulatedLab.inject(name, kind, ...)`). Each waits until `after` commands have been handled
(counting only commands that match `match`, if given), then fires on the next one, `count` times:

    drop             the connection closes instead of handling the command (a cable pulled, a crashed LAN stack)
    delay            the command is handled, its reply held back `delay_s` wall seconds (past the client's timeout)
    garbage          the command is handled, its reply replaced by bytes that are no valid reply
    error            `code` is queued in the error queue (as if the command had failed), then it is handled
    trip_compliance  a fault current into the SMU channel's node drives the source into its compliance limit
    power_cycle      the instrument resets to its power-on state and the connection closes
    lose_reply       the command is handled and its reply never sent (a lost serial line)
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

KINDS = ("drop", "delay", "garbage", "error", "trip_compliance", "power_cycle", "lose_reply")
GARBAGE = "\x15#?\x7f;ERR\x00"
FAULT_CURRENT_A = 1.0   # what a shorted DUT forces into the node: beyond any compliance


@dataclass
class Fault:
    kind: str
    after: int = 0
    match: str | None = None
    count: int = 1
    delay_s: float = 0.0
    code: int = -200
    channel: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"fault kind: {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.after < 0 or self.count < 1 or self.delay_s < 0:
            raise ValueError(f"fault {self.kind}: after >= 0, count >= 1 and delay_s >= 0 "
                             f"(got {self.after}, {self.count}, {self.delay_s})")
        self._re = re.compile(self.match) if self.match else None


class FaultInjector:
    """The pending faults of one instrument; `next(line)` returns the fault that fires on this command."""

    def __init__(self, faults=()):
        self.pending: list[Fault] = [f if isinstance(f, Fault) else Fault(**f) for f in faults]
        self.fired: list[tuple[str, str]] = []   # (kind, command) for tests and logs
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self.pending.append(fault)

    def next(self, line: str) -> Fault | None:
        with self._lock:
            for f in self.pending:
                if f._re is not None and not f._re.search(line):
                    continue
                if f.after > 0:
                    f.after -= 1
                    continue
                f.count -= 1
                if f.count == 0:
                    self.pending.remove(f)
                self.fired.append((f.kind, line))
                return f
        return None
