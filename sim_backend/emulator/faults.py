"""Fault injection for the emulated instruments: what goes wrong on a real bench, on demand.

Faults come from the lab config (`emulator.faults: {instrument: [{kind: ..., after: N, match: REGEX}]}`) or
from a test (`EmulatedLab.inject(name, kind, ...)`), both checked by one schema, the lab config's FaultConfig
(drivers/lab.py). Each waits until `after` commands have been handled
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
from dataclasses import dataclass, field

from drivers.lab import FaultConfig

GARBAGE = "\x15#?\x7f;ERR\x00"
FAULT_CURRENT_A = 1.0   # what a shorted DUT forces into the node: beyond any compliance


@dataclass
class PendingFault:
    """A fault waiting to fire: its configuration (the lab config's FaultConfig, the one schema of a fault) and
    the commands still to let through (`after`) and the times it still fires (`count`), counted down."""

    config: FaultConfig
    after: int = field(init=False)
    count: int = field(init=False)

    def __post_init__(self) -> None:
        self.after, self.count = self.config.after, self.config.count
        self._re = re.compile(self.config.match) if self.config.match else None

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def delay_s(self) -> float:
        return self.config.delay_s

    @property
    def code(self) -> int:
        return self.config.code

    @property
    def channel(self) -> str | None:
        return self.config.channel

    def matches(self, line: str) -> bool:
        return self._re is None or self._re.search(line) is not None


class FaultInjector:
    """The pending faults of one instrument; `next(line)` returns the fault that fires on this command."""

    def __init__(self, faults: list[FaultConfig] | tuple[FaultConfig, ...] = ()):
        self.pending: list[PendingFault] = [PendingFault(f) for f in faults]
        self.fired: list[tuple[str, str]] = []   # (kind, command) for tests and logs
        self._lock = threading.Lock()

    def add(self, fault: FaultConfig) -> PendingFault:
        pending = PendingFault(fault)
        with self._lock:
            self.pending.append(pending)
        return pending

    def next(self, line: str) -> PendingFault | None:
        with self._lock:
            for f in self.pending:
                if not f.matches(line):
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
