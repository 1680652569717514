"""What every emulated instrument has: a name on the bench, the bench, its own clock and fault injector.

An emulated instrument class declares the lab-config kind it emulates (`KIND`); that registers it, and the
emulated lab starts the class registered for each instrument's kind (`emulated_class`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from drivers.registry import KindRegistry
from sim_backend.emulator.clock import EmulatedClock
from sim_backend.emulator.faults import FAULT_CURRENT_A, FaultInjector

if TYPE_CHECKING:
    from drivers.instrument_config import ChannelLimits
    from sim_backend.emulator.bench import EmulatedBench


class EmulatedInstrument:
    IDN = ""
    #: the SMU channel a trip_compliance fault hits when none is named (None: not a source-measure unit)
    FIRST_CHANNEL: str | None = None
    #: the lab-config kind this class emulates; declaring it registers the class
    KIND: ClassVar[str | None] = None
    #: the address its driver opens, given the TCP port it listens on (a serial driver takes a socket:// URL)
    RESOURCE: ClassVar[str] = "TCPIP0::127.0.0.1::{port}::SOCKET"
    #: what follows each reply (a binary protocol's replies carry their own framing: b"")
    REPLY_TERMINATOR: ClassVar[bytes] = b"\n"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("KIND")
        if kind is not None:
            EMULATED.register(kind, cls)

    def __init__(self, name: str, bench: EmulatedBench, limits: ChannelLimits | None = None):
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

    def framer(self) -> Callable[[str], str | None]:
        """For one connection: received line -> the complete command it ends, or None while a command spans more
        lines (faults and `handle` see whole commands). Line protocols: every line is a command."""
        return lambda line: line

    def handle(self, line: str) -> str | bytes | None:
        """One received line -> the reply line, or None."""
        raise NotImplementedError

    def outputs(self) -> dict:
        """What is on: {channel: state} for every output that is on or not at 0."""
        return {}


#: every emulated instrument class that declares a KIND
EMULATED: KindRegistry[type[EmulatedInstrument]] = KindRegistry("emulated instrument", "sim_backend.emulator")


def emulated_class(kind: str) -> type[EmulatedInstrument]:
    """The emulated instrument of a lab-config kind (ValueError naming the known kinds if none declares it)."""
    return EMULATED.lookup(kind)
