"""What the bench needs of an instrument in each role (the `ROLE` a driver class declares, drivers/registry.py).

A driver that declares a role must provide these methods; the bench checks it when it opens the instrument.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class DacDriver(Protocol):
    """Clamps input nodes (and, in conductance mode, holds the nudge resistors' far ends) at a voltage."""

    def configure_channel(self, ch: str) -> None: ...

    def voltage(self, ch: str) -> float | None:
        """The level last set on the channel, V (None: never set by this driver)."""
        ...

    def set_voltage(self, ch: str, volts: float) -> None: ...

    def sync(self) -> None: ...


@runtime_checkable
class SmuDriver(Protocol):
    """Reads node voltages as a 0 A current source; sources the nudge current of an output."""

    def configure_voltmeter(self, ch: str, nplc: float) -> None: ...

    def current(self, ch: str) -> float:
        """The current last set on the channel, A (0 if never)."""
        ...

    def source_current(self, ch: str, amps: float) -> None: ...

    def read_voltages(self, ch: str, n: int) -> list[float]: ...

    def check_compliance(self, ch: str) -> None: ...

    def sync(self) -> None: ...


@runtime_checkable
class SwitchDriver(Protocol):
    """Routes a node to its SMU (one crosspoint closed) and connects the nudge resistors."""

    def route(self, channel: str) -> None: ...

    def set_crosspoints(self, channels: list[str], closed: bool) -> None: ...


@runtime_checkable
class BoardDriver(Protocol):
    """Reads and pulses the crossbar's devices."""

    writes_unchecked: int

    def read_conductance(self, row: int, col: int) -> float: ...

    def pulse(self, row: int, col: int, volts: float, width_s: float) -> None: ...

    def check_errors(self, after: str = "") -> None: ...


@runtime_checkable
class MatrixSwitch(Protocol):
    """A switch matrix that routes a programmer's buses to crossbar lines (drivers/pulse_programmer.py)."""

    @staticmethod
    def crosspoint(bus: str, line: str) -> str: ...

    def close_exactly(self, channels: list[str]) -> None: ...

    def shutdown(self) -> None: ...


@runtime_checkable
class VoltagePulser(Protocol):
    """An SMU channel that sources voltage, pulses it with its own pulse function, and measures current."""

    def configure_voltage_source(self, ch: str, nplc: float) -> None: ...

    def source_voltage(self, ch: str, volts: float) -> None: ...

    def source_voltages(self, levels: list[tuple[str, float]]) -> None:
        """Set these channels' voltages, in order, in one write."""
        ...

    def pulse_voltage(self, ch: str, volts: float, width_s: float, off_s: float, nplc: float,
                      levels: list[tuple[str, float]] | None = None, confirm: bool = True) -> float | None:
        """One pulse from 0 V to `volts` for `width_s` (after setting `levels`, channel and V, in the same
        exchange); the current at its end, A (confirm), or None (sent as a write, confirmed by the next query)."""
        ...

    def measure_current(self, ch: str, levels: list[tuple[str, float]] | None = None) -> float:
        """One current reading (after setting `levels` in the same exchange), A."""
        ...


@runtime_checkable
class PulseReads(Protocol):
    """A programmer whose pulse reads the device back in the same exchange (the ArC ONE's pulse-and-read):
    write-verify then needs no separate read per pulse."""

    def pulse_read(self, row: int, col: int, volts: float, width_s: float) -> float:
        """Pulse, then the device's conductance, S."""
        ...


ROLE_PROTOCOLS: dict[str, type] = {"dac": DacDriver, "smu": SmuDriver, "switch": SwitchDriver, "board": BoardDriver}
