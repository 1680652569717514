"""Keithley 2600B-series System SourceMeter (2601B/2602B/2634B/2636B), TSP (Lua) commands.

Reference: Series 2600B Reference Manual (2600BS-901-01), section 7 "TSP command
reference": smuX.source.func, smuX.source.leveli, smuX.source.limitv,
smuX.measure.nplc, smuX.measure.count, smuX.measure.v(), smuX.nvbufferY.clear(),
smuX.source.output, printbuffer(), errorqueue.next(). N readings: set
smuX.measure.count, measure into nvbuffer1, and one printbuffer() returns all N.
One TSP statement per line.

As a programmer's pulser (drivers/pulse_programmer.py): smuX.source.func = smuX.OUTPUT_DCVOLTS,
smuX.source.limiti, smuX.source.levelv, smuX.measure.i(), and the KIPulse factory script's
PulseVMeasureI(smu, bias, level, ton, toff, points) ("KIPulse factory script" in the reference manual): bias for
ton, level for ton, the current measured at its end into smuX.nvbuffer1, bias again for toff.
"""

from typing import Any

from drivers.session import InstrumentError, TspErrorQueue, check_limit, parse_floats, ramp_steps
from drivers.smu import SourceMeter


class Keithley2600(TspErrorQueue, SourceMeter):
    IDN_MATCH = "MODEL 26"
    KIND = "keithley2600"
    MAX_V, MAX_A = 200.0, 1.5
    CHANNELS = ("a", "b")
    CMD = {
        "reset": "reset()",
        "source_current_func": "smu{ch}.source.func = smu{ch}.OUTPUT_DCAMPS",
        "measure_volt_func": "display.smu{ch}.measure.func = display.MEASURE_DCVOLTS",
        "volt_compliance": "smu{ch}.source.limitv = {v:.6g}",
        "current_level": "smu{ch}.source.leveli = {i:.6g}",
        "nplc": "smu{ch}.measure.nplc = {n:.6g}",
        "output_on": "smu{ch}.source.output = smu{ch}.OUTPUT_ON",
        "output_off": "smu{ch}.source.output = smu{ch}.OUTPUT_OFF",
        "count": "smu{ch}.measure.count = {n}",
        "clear": "smu{ch}.nvbuffer1.clear()",
        "trigger": "smu{ch}.measure.v(smu{ch}.nvbuffer1)",
        "fetch": "printbuffer(1, {n}, smu{ch}.nvbuffer1.readings)",
        # hil safe: what another process left on (the attributes above, read with print())
        "trip_query": "print(smu{ch}.source.compliance)",
        "output_query": "print(smu{ch}.source.output)",
        "func_query": "print(smu{ch}.source.func)",
        "current_query": "print(smu{ch}.source.leveli)",
        "voltage_query": "print(smu{ch}.source.levelv)",
        "voltage_level": "smu{ch}.source.levelv = {v:.6g}",
        # a programmer's pulser and sense channel
        "source_volt_func": "smu{ch}.source.func = smu{ch}.OUTPUT_DCVOLTS",
        "current_compliance": "smu{ch}.source.limiti = {i:.6g}",
        # a TSP line may hold several statements: levels ("voltage_level") go in front of a pulse or a reading
        "pulse": "PulseVMeasureI(smu{ch}, 0, {v:.6g}, {w:.6g}, {off:.6g}, 1)",
        "pulse_current": "printbuffer(1, 1, smu{ch}.nvbuffer1.readings)",
        "measure_current": "print(smu{ch}.measure.i())",
    }

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.level_V: dict[str, float] = {}  # channels sourcing voltage, and their level

    def configure_voltage_source(self, ch: str, nplc: float) -> None:
        """Source 0 V, current compliance at the safe limit, NPLC for its current readings, output on."""
        ch = self.channel(ch)
        self.configure(self._cmd("source_volt_func", ch))
        self.configure(self._cmd("current_compliance", ch, i=self.compliance_A))
        self.configure(self._cmd("voltage_level", ch, v=0.0))
        self.configure(self._cmd("nplc", ch, n=nplc))
        self.configure(self._cmd("output_on", ch))
        self.level_V[ch] = 0.0
        self.level_A[ch] = 0.0
        self.want_on[ch] = True

    def source_voltage(self, ch: str, volts: float) -> None:
        """Hold the channel at `volts`; refused past the safe limit before anything is sent."""
        ch = self.channel(ch)
        check_limit(f"{self.name}/{ch} voltage", volts, self.max_abs_V, "V")
        if self.level_V.get(ch) == volts:
            return
        self.level_V[ch] = volts  # the intent first: a reconnect during the write reads back against it
        self.write(self._cmd("voltage_level", ch, v=volts))

    def _levels_prefix(self, levels: list[tuple[str, float]]) -> str:
        """The statements that set these channels' voltages, in order (checked against the limit first)."""
        out = []
        for ch, volts in levels:
            ch = self.channel(ch)
            check_limit(f"{self.name}/{ch} voltage", volts, self.max_abs_V, "V")
            if self.level_V.get(ch) != volts:
                self.level_V[ch] = volts  # the intent first: a reconnect reads back against it
                out.append(self._cmd("voltage_level", ch, v=volts) + " ")
        return "".join(out)

    def source_voltages(self, levels: list[tuple[str, float]]) -> None:
        """Set these channels' voltages, in order, in one write (nothing sent when all are there already)."""
        prefix = self._levels_prefix(levels)
        if prefix:
            self.write(prefix.strip())

    def pulse_voltage(self, ch: str, volts: float, width_s: float, off_s: float, nplc: float,
                      levels: list[tuple[str, float]] | None = None, confirm: bool = True) -> float | None:
        """One PulseVMeasureI pulse from 0 V to `volts` for width_s, then off_s at 0 V; `levels` are set first, in
        the same line. confirm: wait for the current at its end (A); otherwise send it as a write, confirmed by
        the reply to the caller's next query (the 2600B runs its lines in order). A pulse changes devices: it is
        never sent again blindly (a lost reply raises UnconfirmedWrite, a reconnect re-sends no lost pulse)."""
        ch = self.channel(ch)
        check_limit(f"{self.name}/{ch} pulse", volts, self.max_abs_V, "V")
        prefix = self._levels_prefix(levels or [])
        self.level_V[ch] = 0.0  # PulseVMeasureI leaves the channel at its bias
        command = prefix + self._cmd("pulse", ch, v=volts, w=width_s, off=off_s)
        if not confirm:
            self.write(command)
            return None
        self.last_write = command
        return parse_floats(self.query(command + " " + self._cmd("pulse_current", ch), idempotent=False))[0]

    def measure_current(self, ch: str, levels: list[tuple[str, float]] | None = None) -> float:
        """One current reading of the channel, A; `levels` are set first, in the same exchange (repeating it
        sets the same levels again: a lost reply is retried)."""
        ch = self.channel(ch)
        return parse_floats(self.query(self._levels_prefix(levels or []) + self._cmd("measure_current", ch)))[0]

    def reconcile(self, command: str, lost: list[str]) -> None:
        """The SMU's read-back (outputs, currents), then each voltage level this driver set."""
        super().reconcile(command, lost)
        for ch, want in self.level_V.items():
            level = parse_floats(self.query(self._cmd("voltage_query", ch)))[0]
            if abs(level - want) > 1e-9 + 1e-6 * abs(want):
                self.rewrite_after_readback(self._cmd("voltage_level", ch, v=want))

    def shutdown(self) -> None:
        """Voltage levels ramped to 0 V, then currents to 0 A and every output off."""
        for ch, level in list(self.level_V.items()):
            for step in ramp_steps(level, 0.0, 3 if level else 1):
                self.write(self._cmd("voltage_level", ch, v=step))
            self.level_V[ch] = 0.0
        super().shutdown()

    def sources_voltage(self, func_reply: str) -> bool:
        """smuX.source.func prints 1 for smuX.OUTPUT_DCVOLTS, 0 for smuX.OUTPUT_DCAMPS."""
        try:
            return float(func_reply) == 1
        except ValueError:
            raise InstrumentError(f"{self.name}: source.func printed {func_reply!r}") from None
    MEASURE_WRITES = ("clear", "trigger")
