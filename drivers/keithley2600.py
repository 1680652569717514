"""Keithley 2600B-series System SourceMeter (2601B/2602B/2634B/2636B), TSP (Lua) commands.

Reference: Series 2600B Reference Manual (2600BS-901-01), section 7 "TSP command
reference": smuX.source.func, smuX.source.leveli, smuX.source.limitv,
smuX.measure.nplc, smuX.measure.count, smuX.measure.v(), smuX.nvbufferY.clear(),
smuX.source.output, printbuffer(), errorqueue.next(). N readings: set
smuX.measure.count, measure into nvbuffer1, and one printbuffer() returns all N.
One TSP statement per line.
"""

from drivers.session import InstrumentError, TspErrorQueue
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
    }

    def sources_voltage(self, func_reply: str) -> bool:
        """smuX.source.func prints 1 for smuX.OUTPUT_DCVOLTS, 0 for smuX.OUTPUT_DCAMPS."""
        try:
            return float(func_reply) == 1
        except ValueError:
            raise InstrumentError(f"{self.name}: source.func printed {func_reply!r}") from None
    MEASURE_WRITES = ("clear", "trigger")
