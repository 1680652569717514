"""Keithley 2600B-series System SourceMeter (2601B/2602B/2634B/2636B), TSP (Lua) commands.

Reference: Series 2600B Reference Manual (2600BS-901-01), section 7 "TSP command
reference": smuX.source.func, smuX.source.leveli, smuX.source.limitv,
smuX.measure.nplc, smuX.measure.count, smuX.measure.v(), smuX.nvbufferY.clear(),
smuX.source.output, printbuffer(), errorqueue.next(). N readings: set
smuX.measure.count, measure into nvbuffer1, and one printbuffer() returns all N.
One TSP statement per line.
"""

from drivers.session import TspErrorQueue
from drivers.smu import SourceMeter


class Keithley2600(TspErrorQueue, SourceMeter):
    IDN_MATCH = "MODEL 26"
    CHANNELS = ("a", "b")
    RANGE_V = 200.0
    RANGE_A = 1.5
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
    }
    MEASURE_WRITES = ("clear", "trigger")
