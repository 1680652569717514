"""Keithley 2450 SourceMeter, native SCPI command set.

Reference: Model 2450 Interactive SourceMeter Reference Manual (2450-901-01),
section 6 "SCPI command reference": :SOURce[1]:FUNCtion, :SOURce[1]:CURRent[:LEVel],
:SOURce[1]:CURRent:VLIMit, :SENSe[1]:FUNCtion, :SENSe[1]:VOLTage:NPLCycles,
:SENSe[1]:COUNt, :TRACe:CLEar, :TRACe:TRIGger, :TRACe:DATA?, :OUTPut[1][:STATe],
:SYSTem:ERRor[:NEXT]?. N readings: :SENS:COUN N, then :TRAC:TRIG fills
defbuffer1 and one :TRAC:DATA? returns all N.
"""

from drivers.smu import SourceMeter


class Keithley2450(SourceMeter):
    IDN_MATCH = "MODEL 2450"
    KIND = "keithley2450"
    MAX_V, MAX_A = 210.0, 1.05
    CHANNELS = ("1",)
    CMD = {
        "reset": "*RST",
        "source_current_func": ":SOUR:FUNC CURR",
        "measure_volt_func": ':SENS:FUNC "VOLT"',
        "volt_compliance": ":SOUR:CURR:VLIM {v:.6g}",
        "current_level": ":SOUR:CURR {i:.6g}",
        "nplc": ":SENS:VOLT:NPLC {n:.6g}",
        "output_on": ":OUTP ON",
        "output_off": ":OUTP OFF",
        "count": ":SENS:COUN {n}",
        "clear": ':TRAC:CLE "defbuffer1"',
        "trigger": ':TRAC:TRIG "defbuffer1"',
        "fetch": ':TRAC:DATA? 1, {n}, "defbuffer1", READ',
        # hil safe: what another process left on (queries of the settings above, same manual section)
        "trip_query": ":SOUR:CURR:VLIM:TRIP?",
        "output_query": ":OUTP?",
        "func_query": ":SOUR:FUNC?",
        "current_query": ":SOUR:CURR?",
        "voltage_query": ":SOUR:VOLT?",
        "voltage_level": ":SOUR:VOLT {v:.6g}",
    }
    MEASURE_WRITES = ("clear", "trigger")
