"""What every emulated instrument has: a name on the bench, the bench, its own clock and fault injector."""

from __future__ import annotations

from sim_backend.emulator.clock import EmulatedClock


class EmulatedInstrument:
    IDN = ""

    def __init__(self, name: str, bench, limits=None):
        self.name, self.bench, self.limits = name, bench, limits
        self.clock = EmulatedClock(bench.lab.emulator.time_scale)

    def handle(self, line: str) -> str | None:
        """One received line -> the reply line, or None."""
        raise NotImplementedError

    def outputs(self) -> dict:
        """What is on: {channel: state} for every output that is on or not at 0."""
        return {}
