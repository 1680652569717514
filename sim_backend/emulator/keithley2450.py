"""Emulated Keithley 2450 SourceMeter, SCPI command set (*LANG SCPI).

The command table cites the Model 2450 Interactive SourceMeter Reference Manual (2450-901-01):
section 6 "SCPI command reference" (subsections :OUTPut, :READ?, :MEASure?, :FETCh?, :SENSe1, :SOURce1,
:SYSTem, :TRACe, :ROUTe) and section 11 (status model: questionable summary bit 3 when the source is
in its limit). Defaults are the *RST values the manual lists with each command.
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
    Text,
    parse_number,
)
from sim_backend.emulator.smu import Reading, ReadingBuffer, ScpiSourceRanges

ONOFF = Bool()

# 2450-901-01, section 6: :SOURce[1] and :SENSe[1] subsystems, :OUTPut[1], :ROUTe.
TABLE = [
    Param("SOURce#:FUNCtion[:MODE]", Choice("VOLTage", "CURRent"), "source_func", "VOLT"),
    Param("SOURce#:CURRent[:LEVel][:IMMediate][:AMPLitude]", Num(-1.05, 1.05), "level_A", 0.0),
    Param("SOURce#:VOLTage[:LEVel][:IMMediate][:AMPLitude]", Num(-210.0, 210.0), "level_V", 0.0),
    Param("SOURce#:CURRent:VLIMit[:LEVel]", Num(0.02, 210.0), "vlim", 21.0),
    Param("SOURce#:VOLTage:ILIMit[:LEVel]", Num(1e-9, 1.05), "ilim", 1.05e-4),
    Command("SOURce#:CURRent:VLIMit[:LEVel]:TRIPped", "q_tripped", query=True),
    Command("SOURce#:VOLTage:ILIMit[:LEVel]:TRIPped", "q_tripped", query=True),
    Param("SOURce#:CURRent:RANGe", Num(1e-8, 1.0), "src_range_A", 1e-8),
    Param("SOURce#:CURRent:RANGe:AUTO", ONOFF, "src_auto_A", True),
    Param("SOURce#:VOLTage:RANGe", Num(0.02, 200.0), "src_range_V", 0.02),
    Param("SOURce#:VOLTage:RANGe:AUTO", ONOFF, "src_auto_V", True),
    Param("SOURce#:CURRent:DELay", Num(0.0, 1e4), "src_delay_A", 0.0),
    Param("SOURce#:CURRent:DELay:AUTO", ONOFF, "src_delay_auto_A", True),
    Param("SOURce#:VOLTage:DELay", Num(0.0, 1e4), "src_delay_V", 0.0),
    Param("SOURce#:VOLTage:DELay:AUTO", ONOFF, "src_delay_auto_V", True),
    Param("SOURce#:CURRent:DELay:USER#", Num(0.0, 1e4), "src_user_delay_A", 0.0),
    Param("SOURce#:VOLTage:DELay:USER#", Num(0.0, 1e4), "src_user_delay_V", 0.0),
    Param("SOURce#:CURRent:READ:BACK", ONOFF, "readback_A", True),
    Param("SOURce#:VOLTage:READ:BACK", ONOFF, "readback_V", True),
    Param("SOURce#:CURRent:HIGH:CAPacitance", ONOFF, "highc_A", False),
    Param("SOURce#:VOLTage:HIGH:CAPacitance", ONOFF, "highc_V", False),
    Param("SENSe#:FUNCtion[:ON]", Choice("VOLTage[:DC]", "CURRent[:DC]", "RESistance", quoted=True,
                                         replies={"VOLT": "VOLT:DC", "CURR": "CURR:DC"}), "sense_func", "CURR"),
    Param("SENSe#:VOLTage[:DC]:NPLCycles", Num(0.01, 10.0), "nplc_V", 1.0),
    Param("SENSe#:CURRent[:DC]:NPLCycles", Num(0.01, 10.0), "nplc_A", 1.0),
    Param("SENSe#:RESistance:NPLCycles", Num(0.01, 10.0), "nplc_R", 1.0),
    Param("SENSe#:VOLTage[:DC]:RANGe[:UPPer]", Num(0.02, 200.0), "meas_range_V", 0.02),
    Param("SENSe#:VOLTage[:DC]:RANGe:AUTO", ONOFF, "meas_auto_V", True),
    Param("SENSe#:CURRent[:DC]:RANGe[:UPPer]", Num(1e-8, 1.0), "meas_range_A", 1e-4),
    Param("SENSe#:CURRent[:DC]:RANGe:AUTO", ONOFF, "meas_auto_A", True),
    Param("SENSe#:RESistance:RANGe[:UPPer]", Num(20.0, 200e6), "meas_range_R", 200e6),
    Param("SENSe#:RESistance:RANGe:AUTO", ONOFF, "meas_auto_R", True),
    Param("SENSe#:VOLTage[:DC]:RSENse", ONOFF, "rsense_V", False),
    Param("SENSe#:CURRent[:DC]:RSENse", ONOFF, "rsense_A", False),
    Param("SENSe#:RESistance:RSENse", ONOFF, "rsense_R", False),
    Param("SENSe#:VOLTage[:DC]:AZERo[:STATe]", ONOFF, "azero_V", True),
    Param("SENSe#:CURRent[:DC]:AZERo[:STATe]", ONOFF, "azero_A", True),
    Param("SENSe#:RESistance:AZERo[:STATe]", ONOFF, "azero_R", True),
    Param("SENSe#:VOLTage[:DC]:AVERage[:STATe]", ONOFF, "aver_V", False),
    Param("SENSe#:VOLTage[:DC]:AVERage:TCONtrol", Choice("REPeat", "MOVing"), "aver_tcon_V", "REP"),
    Param("SENSe#:VOLTage[:DC]:AVERage:COUNt", Int(1, 100), "aver_count_V", 10),
    Param("SENSe#:CURRent[:DC]:AVERage[:STATe]", ONOFF, "aver_A", False),
    Param("SENSe#:CURRent[:DC]:AVERage:TCONtrol", Choice("REPeat", "MOVing"), "aver_tcon_A", "REP"),
    Param("SENSe#:CURRent[:DC]:AVERage:COUNt", Int(1, 100), "aver_count_A", 10),
    Param("SENSe#:VOLTage[:DC]:DELay:USER#", Num(0.0, 1e4), "user_delay_V", 0.0),
    Param("SENSe#:CURRent[:DC]:DELay:USER#", Num(0.0, 1e4), "user_delay_A", 0.0),
    Param("SENSe#:COUNt", Int(1, 300000), "count", 1),
    Command("SENSe#:AZERo:ONCE", "s_noop", query=False),
    Param("OUTPut#[:STATe]", ONOFF, "output", False),
    Param("OUTPut#:CURRent:SMODe", Choice("NORMal", "HIMPedance", "ZERO", "GUARd"), "smode_A", "NORM"),
    Param("OUTPut#:VOLTage:SMODe", Choice("NORMal", "HIMPedance", "ZERO", "GUARd"), "smode_V", "NORM"),
    Param("ROUTe:TERMinals", Choice("FRONt", "REAR"), "terminals", "FRON"),
    # :READ?, :MEASure?, :FETCh?, :INITiate, :ABORt (section 6, "Measure and trigger commands").
    Command("READ", "q_read", query=True),
    Command("MEASure:VOLTage[:DC]", "q_meas_volt", query=True),
    Command("MEASure:CURRent[:DC]", "q_meas_curr", query=True),
    Command("MEASure[:ALL]", "q_read", query=True),
    Command("FETCh", "q_fetch", query=True),
    Command("INITiate[:IMMediate]", "s_initiate", query=False),
    # :SOURce[1]:SWEep:<function>:LINear start, stop, points[, delay, count, range, failAbort, dual, "buffer"]
    Command("SOURce#:SWEep:CURRent:LINear", "s_sweep_current", query=False),
    Command("SOURce#:SWEep:VOLTage:LINear", "s_sweep_voltage", query=False),
    Command("ABORt", "s_noop", query=False),
    # :TRACe subsystem (reading buffers).
    Command("TRACe:CLEar", "s_trace_clear", query=False),
    Command("TRACe:TRIGger", "s_trace_trigger", query=False),
    Command("TRACe:DATA", "q_trace_data", query=True),
    Command("TRACe:POINts", "trace_points"),
    Command("TRACe:ACTual", "q_trace_actual", query=True),
    Command("TRACe:ACTual:STARt", "q_trace_start", query=True),
    Command("TRACe:ACTual:END", "q_trace_actual", query=True),
    Command("TRACe:MAKE", "s_trace_make", query=False),
    Command("TRACe:DELete", "s_trace_delete", query=False),
    Command("TRACe:STATistics:AVERage", "q_stat_average", query=True),
    Command("TRACe:STATistics:MAXimum", "q_stat_max", query=True),
    Command("TRACe:STATistics:MINimum", "q_stat_min", query=True),
    Command("TRACe:STATistics:STDDev", "q_stat_stddev", query=True),
    # :SYSTem and :STATus (sections 6 and 11).
    Command("SYSTem:LFRequency", "q_line_frequency", query=True),
    Command("SYSTem:CLEar", "s_clear_log", query=False),
    Command("SYSTem:BEEPer[:IMMediate]", "s_noop", query=False),
    Command("STATus:CLEar", "s_clear_log", query=False),
    Command("STATus:PRESet", "s_noop", query=False),
    Command("STATus:QUEStionable[:EVENt]", "q_questionable", query=True),
    Command("STATus:QUEStionable:CONDition", "q_questionable", query=True),
    *ERROR_QUEUE,
]

#: :TRACe:DATA? / :FETCh? buffer elements (2450-901-01, ":TRACe:DATA?" table of bufferElements).
ELEMENTS = {"READING": "value", "READ": "value", "SOURCE": "source", "SOUR": "source", "RELATIVE": "rel",
            "REL": "rel", "SECONDS": "t_s", "SEC": "t_s", "STATUS": "status", "STAT": "status",
            "SOURSTATUS": "status", "SOURSTAT": "status", "UNIT": "unit", "SOURUNIT": "sourunit",
            "FRACTIONAL": "frac", "FRAC": "frac"}


class Emulated2450(ScpiSourceRanges, ScpiInstrument, EmulatedInstrument):
    KIND = "keithley2450"
    IDN = "KEITHLEY INSTRUMENTS,MODEL 2450,04412345,1.7.12b"
    FIRST_CHANNEL = "1"
    TABLE = TABLE
    SUFFIXES = (1,)
    NUMBER_FORMAT = ".6E"
    OVERHEAD_S = 0.35e-3   # 2450 reading rate spec: ~3100 readings/s at 0.01 PLC, i.e. ~0.3 ms/reading beyond aperture
    # 2450 specifications, "Voltage/Current source": ranges and programming resolution (500 nV on 20 mV,
    # 500 fA on 10 nA: 2.5e-5 and 5e-5 of the range)
    SOURCE_RANGES_V = (0.02, 0.2, 2.0, 20.0, 200.0)
    SOURCE_RANGES_A = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0)

    def source_delay_s(self, st) -> float:
        """:SOURce[1]:<function>:DELay, when :DELay:AUTO is OFF."""
        if st.source_func == "VOLT":
            return 0.0 if st.src_delay_auto_V else st.src_delay_V
        return 0.0 if st.src_delay_auto_A else st.src_delay_A

    def __init__(self, name, bench, limits=None):
        EmulatedInstrument.__init__(self, name, bench, limits)
        self.buffers: dict[str, ReadingBuffer] = {}
        ScpiInstrument.__init__(self)
        self.language = "SCPI"
        self.reset()   # power-on state

    # ---- settings and physics ----
    def reset(self) -> None:
        super().reset()
        self.sweep: tuple[str, list[float], int, str] | None = None
        self.buffers = {"defbuffer1": ReadingBuffer(100000), "defbuffer2": ReadingBuffer(10)}
        self.push_source("1", self.state(1))

    def after_set(self, param, suffix) -> None:
        if param.attr in ("source_func", "level_A", "level_V", "vlim", "ilim", "output", "src_range_A",
                          "src_auto_A", "src_range_V", "src_auto_V"):
            self.push_source("1", self.state(suffix))

    def check(self, p, suffix, value) -> None:
        """Source level within the fixed source range (section 6, :SOURce[1]:<function>:RANGe)."""
        st = self.state(suffix)
        if p.attr == "level_A" and not st.src_auto_A and abs(value) > 1.05 * st.src_range_A:
            raise ScpiError(-222, f"{value} A beyond the {st.src_range_A:g} A range")
        if p.attr == "level_V" and not st.src_auto_V and abs(value) > 1.05 * st.src_range_V:
            raise ScpiError(-222, f"{value} V beyond the {st.src_range_V:g} V range")

    def device_status_bits(self) -> int:
        return 8 if self.tripped() else 0   # questionable summary bit (section 11)

    def tripped(self) -> bool:
        st = self.state(1)
        return bool(st.output and self.bench.in_compliance(self.name, "1"))

    def q_tripped(self, suffixes, args, query):
        return "1" if self.tripped() else "0"

    def q_questionable(self, suffixes, args, query):
        return "8" if self.tripped() else "0"

    def extra_common(self, key, args):
        if key == "*LANG?":
            return self.language
        if key == "*LANG":
            if len(args) != 1 or args[0].upper() not in ("SCPI", "TSP", "SCPI2400"):
                raise ScpiError(-224, ",".join(args))
            self.language_next = args[0].upper()   # takes effect after a power cycle
            return None
        if key == "*TRG":
            return None
        return NotImplemented

    # ---- measurements ----
    def sense_nplc(self, st) -> float:
        return {"VOLT": st.nplc_V, "CURR": st.nplc_A, "RES": st.nplc_R}[st.sense_func]

    def measure_into(self, buffer: str, sense: str | None = None) -> list[Reading]:
        st = self.state(1)
        if not st.output:
            raise ScpiError(-200, "output off", text="Execution error; output is off")   # 2450 error 5076
        st.nplc = self.sense_nplc(st)
        rows = self.acquire("1", st, st.count, sense or st.sense_func)
        self.buffer(buffer).extend(rows)
        return rows

    def buffer(self, name: str) -> ReadingBuffer:
        if name not in self.buffers:
            raise ScpiError(-224, name, text="Illegal parameter value; reading buffer not found")
        return self.buffers[name]

    def _buffer_arg(self, args, i=0) -> str:
        return Text().parse(args[i], None) if len(args) > i else "defbuffer1"

    def _elements(self, rows: list[Reading], elements: list[str]) -> str:
        out = []
        for r in rows:
            for el in elements or ["READING"]:
                key = ELEMENTS.get(el.strip().upper())
                if key is None:
                    raise ScpiError(-224, el)
                if key == "value":
                    out.append(f"{r.value:.6E}")
                elif key == "source":
                    out.append(f"{r.source:.6E}")
                elif key in ("t_s", "rel"):
                    out.append(f"{r.t_s - (rows[0].t_s if key == 'rel' else 0.0):.6f}")
                elif key == "frac":
                    out.append(f"{r.t_s % 1:.6f}")
                elif key == "status":
                    out.append("8" if r.compliance else "0")
                elif key == "unit":
                    out.append({"VOLT": "Volt DC", "CURR": "Amp DC", "RES": "Ohm"}[self.state(1).sense_func])
                else:
                    out.append("Amp DC" if self.state(1).source_func == "CURR" else "Volt DC")
        return ",".join(out)

    def q_read(self, suffixes, args, query):
        rows = self.measure_into(self._buffer_arg(args))
        return self._elements(rows[-1:], args[1:])

    def q_meas_volt(self, suffixes, args, query):
        self.state(1).sense_func = "VOLT"
        return self.q_read(suffixes, args, query)

    def q_meas_curr(self, suffixes, args, query):
        self.state(1).sense_func = "CURR"
        return self.q_read(suffixes, args, query)

    def q_fetch(self, suffixes, args, query):
        buf = self.buffer(self._buffer_arg(args))
        if not buf.readings:
            raise ScpiError(-230, "empty buffer", text="Data corrupt or stale")
        return self._elements(buf.readings[-1:], args[1:])

    def s_initiate(self, suffixes, args, query):
        """Run the trigger model: the configured sweep (one reading per point), else `count` readings."""
        if self.sweep is None:
            self.measure_into("defbuffer1")
            return
        func, points, count, buffer = self.sweep
        st = self.state(1)
        if func != st.source_func:
            raise ScpiError(-221, "the sweep's function is not the source function")
        saved, st.count = st.count, 1
        try:
            for _ in range(count):
                for level in points:
                    setattr(st, "level_A" if func == "CURR" else "level_V", level)
                    self.push_source("1", st)
                    self.measure_into(buffer)
        finally:
            st.count = saved

    def _sweep(self, func: str, args: list[str]) -> None:
        if len(args) < 3:
            raise ScpiError(-109, "start, stop, points")
        start, stop = parse_number(args[0]), parse_number(args[1])
        n = int(Int(2, 1000000).parse(args[2], 2))
        count = int(Int(1, 268435455).parse(args[4], 1)) if len(args) > 4 else 1
        buffer = Text().parse(args[8], None) if len(args) > 8 else "defbuffer1"
        level = Num(-1.05, 1.05) if func == "CURR" else Num(-210.0, 210.0)
        for v in (start, stop):
            level.parse(repr(v), 0.0)
        self.buffer(buffer)
        self.sweep = (func, [start + (stop - start) * k / (n - 1) for k in range(n)], count, buffer)
        self.state(1).output = True   # the sweep's trigger model turns the output on (section 6, :SWEep)
        self.push_source("1", self.state(1))

    def s_sweep_current(self, suffixes, args, query):
        self._sweep("CURR", args)

    def s_sweep_voltage(self, suffixes, args, query):
        self._sweep("VOLT", args)

    def s_noop(self, suffixes, args, query):
        return None

    def s_clear_log(self, suffixes, args, query):
        self.errors.clear()

    def s_trace_clear(self, suffixes, args, query):
        self.buffer(self._buffer_arg(args)).clear()

    def s_trace_trigger(self, suffixes, args, query):
        self.measure_into(self._buffer_arg(args))

    def q_trace_data(self, suffixes, args, query):
        if len(args) < 2:
            raise ScpiError(-109, "start and end index")
        first, last = int(parse_number(args[0])), int(parse_number(args[1]))
        buf = self.buffer(self._buffer_arg(args, 2))
        if not 1 <= first <= last <= len(buf.readings):
            raise ScpiError(-222, f"{first}..{last} of {len(buf.readings)} readings")
        return self._elements(buf.readings[first - 1:last], args[3:])

    def trace_points(self, suffixes, args, query):
        if query:
            return str(self.buffer(self._buffer_arg(args)).capacity)
        if not args:
            raise ScpiError(-109, "size")
        size = int(Int(1, 11000000).parse(args[0], 100000))
        self.buffer(self._buffer_arg(args, 1)).capacity = size

    def q_trace_actual(self, suffixes, args, query):
        return str(len(self.buffer(self._buffer_arg(args)).readings))

    def q_trace_start(self, suffixes, args, query):
        return "1" if self.buffer(self._buffer_arg(args)).readings else "0"

    def s_trace_make(self, suffixes, args, query):
        if len(args) < 2:
            raise ScpiError(-109, "name and size")
        name = Text().parse(args[0], None)
        if name in self.buffers:
            raise ScpiError(-221, name)
        self.buffers[name] = ReadingBuffer(int(Int(1, 11000000).parse(args[1], 0)))

    def s_trace_delete(self, suffixes, args, query):
        name = self._buffer_arg(args)
        if name in ("defbuffer1", "defbuffer2"):
            raise ScpiError(-221, name)
        self.buffer(name)
        del self.buffers[name]

    def _stat(self, args, fn) -> str:
        values = [r.value for r in self.buffer(self._buffer_arg(args)).readings]
        if not values:
            return "9.910000E+37"   # the manual's "not a number"
        return f"{fn(values):.6E}"

    def q_stat_average(self, suffixes, args, query):
        return self._stat(args, lambda v: sum(v) / len(v))

    def q_stat_max(self, suffixes, args, query):
        return self._stat(args, max)

    def q_stat_min(self, suffixes, args, query):
        return self._stat(args, min)

    def q_stat_stddev(self, suffixes, args, query):
        return self._stat(args, lambda v: (sum((x - sum(v) / len(v)) ** 2 for x in v) / max(len(v) - 1, 1)) ** 0.5)

    def q_line_frequency(self, suffixes, args, query):
        return f"{self.bench.line_frequency_hz:g}"

    def outputs(self) -> dict:
        st = self.state(1)
        level = st.level_A if st.source_func == "CURR" else st.level_V
        return {"1": {"on": st.output, "func": st.source_func, "level": level}} if (st.output or level) else {}
