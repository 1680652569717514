"""QDevil (Quantum Machines) QDAC-II 24-channel low-noise DAC, SCPI.

Reference: QDAC-II User's Guide, "SCPI commands" (SOURce[n]:RANGe, SOURce[n]:FILTer,
SOURce[n]:VOLTage:MODE FIXed, SOURce[n][:DC][:VOLTage][:LEVel][:IMMediate][:AMPLitude],
SOURce[n]:VOLTage:SLEW, SYSTem:ERRor[:NEXT]?), and QCoDeS's QDAC-II driver.
The QDAC-II has no output relay: "off" is 0 V held, reached through a slew-limited ramp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drivers.retry import InstrumentFault
from drivers.session import Instrument, check_limit, parse_floats, ramp_steps

if TYPE_CHECKING:
    from drivers.instrument_config import DriverSettings


class QDac2(Instrument):
    KIND = "qdac2"
    ROLE = "dac"
    MAX_V = 10.0
    IDN_MATCH = "QDAC-II"
    N_CHANNELS = 24
    CMD = {
        "reset": "*rst",
        "range": "sour{ch}:rang {r}",
        "filter": "sour{ch}:filt {f}",
        "mode": "sour{ch}:volt:mode fix",
        "slew": "sour{ch}:volt:slew {s:.6g}",
        "volt": "sour{ch}:volt {v:.6g}",
        "volt_query": "sour{ch}:volt?",
        "range_query": "sour{ch}:rang?",
    }
    ERROR_QUERY = "syst:err?"

    @classmethod
    def settings(cls, cfg: DriverSettings) -> dict[str, Any]:
        lim = cfg.limits
        return {"max_abs_V": lim.max_abs_V, **({"slew_V_per_s": lim.slew_V_per_s} if lim.slew_V_per_s else {})}

    def __init__(self, *args: Any, max_abs_V: float, slew_V_per_s: float = 1.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.max_abs_V = max_abs_V
        self.slew = slew_V_per_s
        self.level_V: dict[int, float] = {}

    def channel(self, ch: str | int) -> int:
        c = int(ch)
        if not 1 <= c <= self.N_CHANNELS:
            raise ValueError(f"{self.name}: no channel {ch!r} (1..{self.N_CHANNELS})")
        return c

    def configure_channel(self, ch: str | int) -> None:
        c = self.channel(ch)
        rng = "low" if self.max_abs_V <= 2.0 else "high"  # low range: +-2 V, lower noise
        for cmd in (self.CMD["range"].format(ch=c, r=rng), self.CMD["filter"].format(ch=c, f="dc"),
                    self.CMD["mode"].format(ch=c), self.CMD["slew"].format(ch=c, s=self.slew)):
            self.configure(cmd)
        self.set_voltage(c, 0.0)

    def voltage(self, ch: str | int) -> float | None:
        """The level last set on the channel, V (None: never set by this driver)."""
        return self.level_V.get(self.channel(ch))

    def set_voltage(self, ch: str | int, volts: float) -> None:
        """Set a channel's DC voltage, V; refused past the safe limit before anything is sent."""
        c = self.channel(ch)
        check_limit(f"{self.name}/{c} voltage", volts, self.max_abs_V, "V")
        self.level_V[c] = volts  # the intent first: a reconnect during the write reads back against it
        self.write(self.CMD["volt"].format(ch=c, v=volts))

    def reconcile(self, command: str, lost: list[str]) -> None:
        """After a reconnect: a configured channel's range back at its power-on default (high) means a reset (stop);
        a level that reads back wrong (its write lost with the connection) is written again."""
        if not self.level_V:
            return
        first = next(iter(self.level_V))
        rng = "low" if self.max_abs_V <= 2.0 else "high"
        if rng == "low" and self.query(self.CMD["range_query"].format(ch=first)).strip().lower() != "low":
            raise InstrumentFault(self.name, command, f"instrument reset (channel {first} range read back at its "
                                  "power-on default after a reconnect)")
        for c, want in self.level_V.items():
            level = parse_floats(self.query(self.CMD["volt_query"].format(ch=c)))[0]
            if abs(level - want) > 1e-9:
                self.rewrite_after_readback(self.CMD["volt"].format(ch=c, v=want))

    def make_safe(self) -> list[str]:
        """Read every channel's DC level and ramp those not at 0 V down (the QDAC-II has no output relay)."""
        found = []
        for c in range(1, self.N_CHANNELS + 1):
            level = parse_floats(self.query(self.CMD["volt_query"].format(ch=c)))[0]
            if level:
                found.append(f"{self.name}/{c}: {level:.6g} V")
                self.level_V[c] = level
        self.shutdown()
        return found

    def shutdown(self) -> None:
        for c, level in list(self.level_V.items()):
            for step in ramp_steps(level, 0.0, 3 if level else 1):
                self.write(self.CMD["volt"].format(ch=c, v=step))
            self.level_V[c] = 0.0
        # A query at the end: the instrument has acted on every write above, and reports any error.
        self.check_errors("shutdown")
