"""Emulated Keysight B2902A Precision Source/Measure Unit (two channels), SCPI.

The command table cites the Keysight B2900 Series SCPI Command Reference (B2910-90030), chapter 4
"Subsystem commands": :SOURce (4.x "SOURce Subsystem"), :SENSe, :OUTPut, :TRIGger, :INITiate, :FETCh,
:MEASure, :READ, :FORMat, :SYSTem; *RST values as listed with each command. Channel suffixes 1..2;
a channel list (@n) picks the channel for :INIT/:FETC/:MEAS/:READ.
"""

from __future__ import annotations

from sim_backend.emulator.base import EmulatedInstrument
from sim_backend.emulator.scpi import (
    ERROR_QUEUE,
    Bool,
    Choice,
    Command,
    Int,
    Num,
    Param,
    ScpiError,
    ScpiInstrument,
    channel_list,
)
from sim_backend.emulator.smu import ReadingBuffer, ScpiSourceRanges

ONOFF = Bool()

# B2910-90030, chapter 4: :SOURce, :SENSe, :OUTPut, :TRIGger subsystems.
TABLE = [
    Param("SOURce#:FUNCtion:MODE", Choice("VOLTage", "CURRent"), "source_func", "VOLT"),
    Param("SOURce#:CURRent[:LEVel][:IMMediate][:AMPLitude]", Num(-3.03, 3.03), "level_A", 0.0),
    Param("SOURce#:VOLTage[:LEVel][:IMMediate][:AMPLitude]", Num(-210.0, 210.0), "level_V", 0.0),
    Param("SOURce#:CURRent:RANGe", Num(1e-8, 3.0), "src_range_A", 1e-8),
    Param("SOURce#:CURRent:RANGe:AUTO", ONOFF, "src_auto_A", True),
    Param("SOURce#:VOLTage:RANGe", Num(0.2, 200.0), "src_range_V", 0.2),
    Param("SOURce#:VOLTage:RANGe:AUTO", ONOFF, "src_auto_V", True),
    Param("SENSe#:VOLTage[:DC]:PROTection[:LEVel]", Num(0.0, 210.0), "vlim", 2.0),
    Param("SENSe#:CURRent[:DC]:PROTection[:LEVel]", Num(1e-9, 3.03), "ilim", 1e-4),
    Command("SENSe#:VOLTage[:DC]:PROTection:TRIPped", "q_tripped", query=True),
    Command("SENSe#:CURRent[:DC]:PROTection:TRIPped", "q_tripped", query=True),
    Command("SENSe#:FUNCtion[:ON]", "sense_functions"),
    Param("SENSe#:VOLTage[:DC]:NPLCycles", Num(4e-4, 100.0), "nplc_V", 0.1),
    Param("SENSe#:CURRent[:DC]:NPLCycles", Num(4e-4, 100.0), "nplc_A", 0.1),
    Param("SENSe#:RESistance:NPLCycles", Num(4e-4, 100.0), "nplc_R", 0.1),
    Param("SENSe#:VOLTage[:DC]:RANGe[:UPPer]", Num(0.2, 200.0), "meas_range_V", 0.2),
    Param("SENSe#:VOLTage[:DC]:RANGe:AUTO", ONOFF, "meas_auto_V", True),
    Param("SENSe#:CURRent[:DC]:RANGe[:UPPer]", Num(1e-8, 3.0), "meas_range_A", 1e-4),
    Param("SENSe#:CURRent[:DC]:RANGe:AUTO", ONOFF, "meas_auto_A", True),
    Param("SENSe#:REMote", ONOFF, "remote_sense", False),
    Param("OUTPut#[:STATe]", ONOFF, "output", False),
    Param("OUTPut#:ON:AUTO", ONOFF, "auto_on", True),     # :INIT/:MEAS turn the output on first
    Param("OUTPut#:OFF:AUTO", ONOFF, "auto_off", False),
    Param("TRIGger#[:ALL]:COUNt", Int(1, 100000), "count", 1),
    Param("TRIGger#:ACQuire:COUNt", Int(1, 100000), "count", 1),
    Param("TRIGger#:TRANsient:COUNt", Int(1, 100000), "count", 1),
    Param("FORMat[:DATA]", Choice("ASCii", "REAL"), "format", "ASC"),
    Command("INITiate[:IMMediate][:ALL]", "s_initiate", query=False),
    Command("INITiate[:IMMediate]:ACQuire", "s_initiate", query=False),
    Command("ABORt[:ALL]", "s_noop", query=False),
    Command("FETCh:ARRay[:VOLTage]", "q_fetch_array_volt", query=True),
    Command("FETCh:ARRay:CURRent", "q_fetch_array_curr", query=True),
    Command("FETCh[:SCALar][:VOLTage]", "q_fetch_volt", query=True),
    Command("FETCh[:SCALar]:CURRent", "q_fetch_curr", query=True),
    Command("MEASure[:SCALar][:VOLTage]", "q_meas_volt", query=True),
    Command("MEASure[:SCALar]:CURRent", "q_meas_curr", query=True),
    Command("MEASure[:SCALar]:RESistance", "q_meas_res", query=True),
    Command("READ[:SCALar][:VOLTage]", "q_meas_volt", query=True),
    Command("READ[:SCALar]:CURRent", "q_meas_curr", query=True),
    Command("SYSTem:LFRequency", "q_line_frequency", query=True),
    *ERROR_QUEUE,
]


class EmulatedB2900(ScpiSourceRanges, ScpiInstrument, EmulatedInstrument):
    KIND = "keysight_b2900"
    IDN = "Keysight Technologies,B2902A,MY51140123,3.4.2011.5100"
    FIRST_CHANNEL = "1"
    TABLE = TABLE
    SUFFIXES = (1, 2)
    NUMBER_FORMAT = "+.6E"
    ERROR_FORMAT = '{code:+d},"{text}"'
    OVERHEAD_S = 0.1e-3   # B2900 spec: ~20 us trigger + ~80 us A/D conversion and transfer per reading
    # B2902A specifications, "Source": ranges 0.2..200 V, 10 nA..3 A; 6.5 digits (resolution ~5e-6 of range)
    SOURCE_RANGES_V = (0.2, 2.0, 20.0, 200.0)
    SOURCE_RANGES_A = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 1.5, 3.0)
    RESOLUTION_V, RESOLUTION_A = 5e-6, 1e-5

    def __init__(self, name, bench, limits=None):
        EmulatedInstrument.__init__(self, name, bench, limits)
        self.results: dict[int, ReadingBuffer] = {}
        ScpiInstrument.__init__(self)
        self.reset()   # power-on state

    def reset_settings(self) -> None:
        super().reset_settings()
        for s in self.SUFFIXES:
            self.state(s).sense = ["VOLT", "CURR"]   # *RST: both functions on

    def reset(self) -> None:
        super().reset()
        self.results = {s: ReadingBuffer() for s in self.SUFFIXES}
        for s in self.SUFFIXES:
            self.push_source(str(s), self.state(s))

    def after_set(self, param, suffix) -> None:
        if param.attr in ("source_func", "level_A", "level_V", "vlim", "ilim", "output", "src_range_A",
                          "src_auto_A", "src_range_V", "src_auto_V"):
            self.push_source(str(suffix), self.state(suffix))

    def check(self, p, suffix, value) -> None:
        st = self.state(suffix)
        if p.attr == "level_A" and not st.src_auto_A and abs(value) > 1.01 * st.src_range_A:
            raise ScpiError(-222, f"{value} A beyond the {st.src_range_A:g} A range")
        if p.attr == "level_V" and not st.src_auto_V and abs(value) > 1.01 * st.src_range_V:
            raise ScpiError(-222, f"{value} V beyond the {st.src_range_V:g} V range")

    def _channels(self, args, suffixes=()) -> list[int]:
        chans = channel_list(args[0]) if args else [self.suffix(list(suffixes))]
        for c in chans:
            if c not in self.SUFFIXES:
                raise ScpiError(-114, f"channel {c}")
        return chans

    def q_tripped(self, suffixes, args, query):
        s = self.suffix(suffixes)
        return "1" if self.state(s).output and self.bench.in_compliance(self.name, str(s)) else "0"

    def sense_functions(self, suffixes, args, query):
        st = self.state(self.suffix(suffixes))
        if query:
            return ",".join(f'"{f}"' for f in st.sense)
        if not args:
            raise ScpiError(-109, "function")
        st.sense = [Choice("VOLTage", "CURRent", "RESistance", quoted=True).parse(a, None) for a in args]

    def _acquire(self, c: int, sense: str) -> list:
        st = self.state(c)
        if not st.output:
            if not st.auto_on:
                raise ScpiError(-200, "output off", text="Execution error; output is off")
            st.output = True   # :OUTPut:ON:AUTO (the *RST state): a measurement turns the output on
            self.push_source(str(c), st)
        st.nplc = {"VOLT": st.nplc_V, "CURR": st.nplc_A, "RES": st.nplc_R}[sense]
        return self.acquire(str(c), st, st.count, sense)

    def s_initiate(self, suffixes, args, query):
        for c in self._channels(args):
            self.results[c].clear()
            self.results[c].extend(self._acquire(c, "VOLT"))   # volts and amps of each reading are kept

    def _fetch(self, args, which: str, last_only: bool) -> str:
        (c,) = self._channels(args)
        buf = self.results[c]
        if not buf.readings:
            raise ScpiError(-230, "no data", text="Data corrupt or stale")
        if which not in self.state(c).sense:
            raise ScpiError(-221, f"{which} is not a sense function")
        values = [r.volts if which == "VOLT" else r.amps for r in buf.readings]
        values = values[-1:] if last_only else values
        return ",".join(format(v, self.NUMBER_FORMAT) for v in values)

    def q_fetch_array_volt(self, suffixes, args, query):
        return self._fetch(args, "VOLT", False)

    def q_fetch_array_curr(self, suffixes, args, query):
        return self._fetch(args, "CURR", False)

    def q_fetch_volt(self, suffixes, args, query):
        return self._fetch(args, "VOLT", True)

    def q_fetch_curr(self, suffixes, args, query):
        return self._fetch(args, "CURR", True)

    def _spot(self, args, suffixes, sense):
        (c,) = self._channels(args, suffixes)
        return ",".join(format(r.value, self.NUMBER_FORMAT) for r in self._acquire(c, sense))

    def q_meas_volt(self, suffixes, args, query):
        return self._spot(args, suffixes, "VOLT")

    def q_meas_curr(self, suffixes, args, query):
        return self._spot(args, suffixes, "CURR")

    def q_meas_res(self, suffixes, args, query):
        (c,) = self._channels(args, suffixes)
        return ",".join(format(r.value, self.NUMBER_FORMAT) for r in self._acquire(c, "RES"))

    def q_line_frequency(self, suffixes, args, query):
        return f"{self.bench.line_frequency_hz:+.0f}"

    def s_noop(self, suffixes, args, query):
        return None

    def outputs(self) -> dict:
        out = {}
        for s in self.SUFFIXES:
            st = self.state(s)
            level = st.level_A if st.source_func == "CURR" else st.level_V
            if st.output or level:
                out[str(s)] = {"on": st.output, "func": st.source_func, "level": level}
        return out
