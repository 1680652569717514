"""What the instrument-backed crossbar needs of a source-measure unit, shared by the SMU drivers.

Each node an SMU reads is held by a current source at 0 A (a voltmeter that
draws no current from the network); an SMU that nudges an output sources
beta*(t - y) instead. Voltage compliance guards the node while sourcing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drivers.retry import InstrumentFault
from drivers.session import Instrument, check_limit, parse_floats, parse_state, ramp_steps

if TYPE_CHECKING:
    from drivers.instrument_config import DriverSettings


class SourceMeter(Instrument):
    """Base of the SMU drivers; a subclass declares KIND, MAX_V, MAX_A, its channels and its command table."""

    ROLE = "smu"
    CHANNELS: tuple[str, ...] = ("1",)
    CMD: dict[str, str] = {}

    @classmethod
    def settings(cls, cfg: DriverSettings) -> dict[str, Any]:
        lim = cfg.limits  # the lab config requires both limits of an SMU
        return {"max_abs_V": lim.max_abs_V, "compliance_A": lim.compliance_A}

    def __init__(self, *args: Any, max_abs_V: float, compliance_A: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.max_abs_V = max_abs_V
        self.compliance_A = compliance_A
        self.level_A: dict[str, float] = {}
        self.count: dict[str, int] = {}
        self.want_on: dict[str, bool] = {}  # channels this driver switched, and whether they should be on

    def _cmd(self, key: str, ch: str, **kw: Any) -> str:
        return self.CMD[key].format(ch=ch, **kw)

    def channel(self, ch: str) -> str:
        if ch not in self.CHANNELS:
            raise ValueError(f"{self.name}: no channel {ch!r} (has {', '.join(self.CHANNELS)})")
        return ch

    def configure_voltmeter(self, ch: str, nplc: float) -> None:
        """Source 0 A, measure volts, voltage compliance at the safe limit, NPLC, output on."""
        ch = self.channel(ch)
        for key in ("source_current_func", "measure_volt_func"):
            self.configure(self._cmd(key, ch))
        self.configure(self._cmd("volt_compliance", ch, v=self.max_abs_V))
        self.configure(self._cmd("current_level", ch, i=0.0))
        self.configure(self._cmd("nplc", ch, n=nplc))
        self.configure(self._cmd("output_on", ch))
        self.level_A[ch] = 0.0
        self.want_on[ch] = True

    def current(self, ch: str) -> float:
        """The current last set on the channel, A (0 if never)."""
        return self.level_A.get(ch, 0.0)

    def source_current(self, ch: str, amps: float) -> None:
        """Set the sourced current, A; refused past the compliance limit before anything is sent."""
        ch = self.channel(ch)
        check_limit(f"{self.name}/{ch} current", amps, self.compliance_A, "A")
        self.level_A[ch] = amps  # the intent first: a reconnect during the write reads back against it
        self.write(self._cmd("current_level", ch, i=amps))

    def read_voltages(self, ch: str, n: int) -> list[float]:
        """n buffered readings of the node voltage in one query (one round trip, not n)."""
        ch = self.channel(ch)
        if n < 1:
            raise ValueError(f"n: readings must be >= 1 (got {n})")
        if self.count.get(ch) != n:
            self.write(self._cmd("count", ch, n=n))
            self.count[ch] = n
        for key in self.MEASURE_WRITES:
            self.write(self._cmd(key, ch, n=n))
        values = parse_floats(self.query(self._cmd("fetch", ch, n=n)))
        if len(values) != n:
            raise RuntimeError(f"{self.name}/{ch}: asked for {n} readings, got {len(values)}")
        return values

    MEASURE_WRITES: tuple[str, ...] = ()
    #: CMD key of the query "is the channel in compliance" (1/true: tripped)
    TRIP_QUERY = "trip_query"

    def check_compliance(self, ch: str) -> None:
        """A channel driven into its compliance limit while measuring stops the run (its readings mean nothing)."""
        reply = self.query(self._cmd(self.TRIP_QUERY, ch)).strip().lower()
        if reply in ("1", "true", "+1", "1.00000e+00"):
            cmd = self._cmd(self.TRIP_QUERY, ch)
            self.log.record(self.name, cmd, reply, fault="compliance trip", action="stop")
            raise InstrumentFault(self.name, cmd, f"compliance trip on channel {ch} while measuring")

    def reconcile(self, command: str, lost: list[str]) -> None:
        """Read back each channel this driver switched: an output that should be on but reads off means the SMU
        was reset (stop); a level or output state that reads back wrong is written again; lost measurement
        commands (count, trigger) are sent again (they start a new measurement, they change no source)."""
        for ch, on_wanted in self.want_on.items():
            cmd = self._cmd("output_query", ch)
            on = parse_state(self.query(cmd))
            if on_wanted and not on:
                raise InstrumentFault(self.name, command, f"instrument reset (channel {ch} output read back off "
                                      "after a reconnect: its power-on default)")
            level = parse_floats(self.query(self._cmd("current_query", ch)))[0]
            want = self.level_A.get(ch, 0.0)
            if abs(level - want) > 1e-12 + 1e-6 * abs(want):
                self.rewrite_after_readback(self._cmd("current_level", ch, i=want))
            if on and not on_wanted:
                self.rewrite_after_readback(self._cmd("output_off", ch))
        measuring = [c for c in lost if any(c == self._cmd(k, ch, n=self.count.get(ch, 1))
                                            for ch in self.want_on for k in ("count", *self.MEASURE_WRITES))]
        if measuring:
            for c in lost:
                if c in measuring:
                    self.rewrite_after_readback(c)

    def make_safe(self) -> list[str]:
        """Read each channel's output state, source function and level; ramp the level to 0, output off."""
        found = []
        for ch in self.CHANNELS:
            on = parse_state(self.query(self._cmd("output_query", ch)))
            volts = self.sources_voltage(self.query(self._cmd("func_query", ch)))
            level = parse_floats(self.query(self._cmd("voltage_query" if volts else "current_query", ch)))[0]
            key, unit = ("voltage_level", "V") if volts else ("current_level", "A")
            if on or level:
                found.append(f"{self.name}/{ch}: output {'on' if on else 'off'}, sourcing {level:.6g} {unit}")
            for step in ramp_steps(level, 0.0, 3 if level else 1):
                self.write(self._cmd(key, ch, v=step, i=step))
            self.write(self._cmd("output_off", ch))
            self.level_A[ch] = 0.0
        self.check_errors("make safe")
        return found

    #: replies of func_query that mean "sourcing voltage"
    VOLTAGE_FUNC_REPLIES: tuple[str, ...] = ("VOLT",)

    def sources_voltage(self, func_reply: str) -> bool:
        return func_reply.strip().strip('"').upper().startswith(self.VOLTAGE_FUNC_REPLIES)

    def shutdown(self) -> None:
        """Ramp every sourced current to 0 A, then outputs off."""
        for ch in self.CHANNELS:
            level = self.level_A.get(ch, 0.0)
            for step in ramp_steps(level, 0.0, 3 if level else 1):
                self.write(self._cmd("current_level", ch, i=step))
            self.write(self._cmd("output_off", ch))
            self.level_A[ch] = 0.0
            if ch in self.want_on:
                self.want_on[ch] = False
        # A query at the end: the instrument has acted on every write above, and reports any error.
        self.check_errors("shutdown")
