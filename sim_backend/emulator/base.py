"""What every emulated instrument has: a name on the bench, the bench, its own clock and fault injector."""

from __future__ import annotations

from sim_backend.emulator.clock import EmulatedClock
from sim_backend.emulator.faults import FAULT_CURRENT_A, FaultInjector


class EmulatedInstrument:
    IDN = ""
    #: the SMU channel a trip_compliance fault hits when none is named (None: not a source-measure unit)
    FIRST_CHANNEL: str | None = None

    def __init__(self, name: str, bench, limits=None):
        self.name, self.bench, self.limits = name, bench, limits
        self.clock = EmulatedClock(bench.lab.emulator.time_scale)
        self.faults = FaultInjector()

    def inject(self, fault) -> None:
        """Act out an `error` or `trip_compliance` fault (see faults.py)."""
        if fault.kind == "error":
            self.queue_error(fault.code)
        elif fault.kind == "trip_compliance":
            ch = fault.channel or self.FIRST_CHANNEL
            if ch is None:
                raise ValueError(f"{self.name}: trip_compliance needs a source-measure unit")
            self.bench.set_fault_current(self.name, ch, FAULT_CURRENT_A)

    def queue_error(self, code: int) -> None:
        """Put an error in the instrument's error queue."""
        raise NotImplementedError

    def power_cycle(self) -> None:
        """Power off and on: every setting and the error queue back to the power-on state."""
        raise NotImplementedError

    def handle(self, line: str) -> str | None:
        """One received line -> the reply line, or None."""
        raise NotImplementedError

    def outputs(self) -> dict:
        """What is on: {channel: state} for every output that is on or not at 0."""
        return {}
