"""Keysight B2900A/B/BL-series Precision Source/Measure Units (B2901/B2902/B2911/B2912), SCPI.

Reference: Keysight B2900 SCPI Command Reference (B2910-90030), :SOURce[c]:FUNCtion:MODE,
:SOURce[c]:CURRent[:LEVel][:IMMediate][:AMPLitude], :SENSe[c]:VOLTage[:DC]:PROTection,
:SENSe[c]:FUNCtion, :SENSe[c]:VOLTage:NPLCycles, :TRIGger[c]:COUNt, :INITiate,
:FETCh:ARRay:VOLTage?, :OUTPut[c][:STATe], :SYSTem:ERRor?. N readings: :TRIG:COUN N,
:INIT, then one :FETC:ARR:VOLT? returns all N.
"""

from drivers.smu import SourceMeter


class KeysightB2900(SourceMeter):
    IDN_MATCH = "B29"
    KIND = "keysight_b2900"
    MAX_V, MAX_A = 210.0, 3.0
    CHANNELS = ("1", "2")
    CMD = {
        "reset": "*RST",
        "source_current_func": ":SOUR{ch}:FUNC:MODE CURR",
        "measure_volt_func": ':SENS{ch}:FUNC "VOLT"',
        "volt_compliance": ":SENS{ch}:VOLT:PROT {v:.6g}",
        "current_level": ":SOUR{ch}:CURR {i:.6g}",
        "nplc": ":SENS{ch}:VOLT:NPLC {n:.6g}",
        "output_on": ":OUTP{ch} ON",
        "output_off": ":OUTP{ch} OFF",
        "count": ":TRIG{ch}:COUN {n}",
        "initiate": ":INIT (@{ch})",
        "fetch": ":FETC:ARR:VOLT? (@{ch})",
        # hil safe: what another process left on (queries of the settings above)
        "trip_query": ":SENS{ch}:VOLT:PROT:TRIP?",
        "output_query": ":OUTP{ch}?",
        "func_query": ":SOUR{ch}:FUNC:MODE?",
        "current_query": ":SOUR{ch}:CURR?",
        "voltage_query": ":SOUR{ch}:VOLT?",
        "voltage_level": ":SOUR{ch}:VOLT {v:.6g}",
    }
    MEASURE_WRITES = ("initiate",)
