"""One instrument's part of the lab config: its connection (InstrumentConfig), its safe limits (ChannelLimits),
and the slice a driver is given (DriverSettings).

A driver sees only its own slice, never the whole lab config: drivers/session.py (the driver base) and
drivers/lab.py (the lab config, which checks the drivers' kinds and ranges) then import each other's types in
one direction only (lab -> here <- session), so they form no cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import Field, field_validator

from drivers.registry import Role, driver_class
from hil.core.schema import StrictModel


class InstrumentConfig(StrictModel):
    """How to reach one instrument, and which driver talks to it."""

    kind: str = Field(description="The driver: a kind some driver class declares (drivers/registry.py)")
    resource: str = Field(description="VISA resource string, pyserial URL, or emulator:NAME (from `hil emulate`).")
    timeout_ms: int = Field(default=5000, ge=1)
    baudrate: int = Field(default=115200, ge=1, description="Serial instruments only.")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        driver_class(kind)  # ValueError naming the known kinds
        return kind

    @property
    def role(self) -> Role:
        role = driver_class(self.kind).ROLE
        assert role is not None  # registration requires it
        return role


class ChannelLimits(StrictModel):
    """An instrument's safe limits: a driver refuses (never clamps) what would pass them."""

    max_abs_V: float | None = Field(default=None, gt=0, description="Largest |V| this instrument may apply or allow, V.")
    compliance_A: float | None = Field(default=None, gt=0, description="Largest |I| it may source, A.")
    max_pulse_V: float | None = Field(default=None, gt=0, description="Programming boards: largest |pulse|, V.")
    max_pulse_width_s: float | None = Field(default=None, gt=0, description="Programming boards: longest pulse, s.")
    slew_V_per_s: float | None = Field(default=None, gt=0, description="DACs: the ramp rate of every level change, "
                                       "V/s (unset: the driver's gentle default, 1 V/s)")


@dataclass(frozen=True)
class DriverSettings:
    """What a driver is given of the lab config (`LabConfig.driver_settings(name)`)."""

    name: str
    instrument: InstrumentConfig
    limits: ChannelLimits = field(default_factory=ChannelLimits)
    #: read the error queue after every configuration write (the lab config's `strict`)
    strict: bool = True
    #: programming boards: the voltage of a conductance reading, V (the lab config's programming.read_voltage_V)
    read_voltage_V: float = 0.1
    #: instrument seconds pass this many times faster on the wall clock: the emulator's time_scale for an emulated
    #: instrument (emulator:NAME), 1 on a real one
    clock_scale: float = 1.0

    @property
    def emulated(self) -> bool:
        """The instrument is one of `hil emulate`'s (its resource is emulator:NAME)."""
        return self.instrument.resource.startswith("emulator:")
