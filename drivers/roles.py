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
class PulseReads(Protocol):
    """A programmer whose pulse reads the device back in the same exchange (the ArC ONE's pulse-and-read):
    write-verify then needs no separate read per pulse."""

    def pulse_read(self, row: int, col: int, volts: float, width_s: float) -> float:
        """Pulse, then the device's conductance, S."""
        ...


ROLE_PROTOCOLS: dict[str, type] = {"dac": DacDriver, "smu": SmuDriver, "switch": SwitchDriver, "board": BoardDriver}
