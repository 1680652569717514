"""Emulated QDevil QDAC-II: 24 DC voltage channels, each with a current sensor, SCPI.

The command table cites the QDAC-II User's Guide (QDevil/Quantum Machines), "SCPI command reference":
SOURce subsystem (RANGe, FILTer, [:DC][:VOLTage][:LEVel], VOLTage:LAST?, VOLTage:SLEW, VOLTage:MODE,
VOLTage:TRIGgered), SENSe subsystem (RANGe, APERture, NPLCycles, DELay, COUNt, NCLearance?, DATA:LAST?,
DATA:POINts?), READ?/FETCh?, SYSTem:ERRor. Replies are lower case as the firmware sends them. The
QDAC-II has no output relay; a level change ramps at the slew rate (the clock books |dV|/slew).
"""

from __future__ import annotations

from sim_backend.emulator.base import EmulatedInstrument
from sim_backend.emulator.scpi import ERROR_QUEUE, Choice, Command, Int, Num, Param, ScpiError, ScpiInstrument, Word
from sim_backend.emulator.smu import ReadingBuffer

RANGE = Choice("LOW", "HIGH", replies={"LOW": "low", "HIGH": "high"})
RANGE_LIMIT_V = {"LOW": 2.0, "HIGH": 10.0}

# QDAC-II User's Guide, "SCPI command reference": SOURce and SENSe subsystems (channel suffix 1..24).
TABLE = [
    Param("SOURce#:RANGe", RANGE, "range", "HIGH"),
    Command("SOURce#:RANGe:LOW:MINimum", "q_low_min", query=True),
    Command("SOURce#:RANGe:LOW:MAXimum", "q_low_max", query=True),
    Command("SOURce#:RANGe:HIGH:MINimum", "q_high_min", query=True),
    Command("SOURce#:RANGe:HIGH:MAXimum", "q_high_max", query=True),
    Param("SOURce#:FILTer", Choice("DC", "MEDium", "HIGH", replies={"DC": "dc", "MED": "med", "HIGH": "high"}),
          "filter", "HIGH"),
    # Only fixed DC levels are emulated: SWEep and LIST (the DC generators) are refused with -224.
    Param("SOURce#[:DC]:VOLTage:MODE", Choice("FIXed", replies={"FIX": "fixed"}), "mode", "FIX"),
    Param("SOURce#[:DC]:VOLTage:SLEW", Num(0.01, 2e7, fmt="g"), "slew", 2e7),
    Param("SOURce#[:DC]:VOLTage:TRIGgered", Num(-10.0, 10.0, fmt="g"), "next_V", 0.0),
    Param("SOURce#[:DC][:VOLTage][:LEVel][:IMMediate][:AMPLitude]", Num(-10.0, 10.0, fmt="g"), "level_V", 0.0),
    Command("SOURce#[:DC]:VOLTage:LAST", "q_last", query=True),
    Command("SOURce#:DC:INITiate", "s_noop", query=False),
    Command("SOURce#:DC:ABORt", "s_noop", query=False),
    Command("SOURce#:ALL:ABORt", "s_noop", query=False),
    Param("SENSe#:RANGe", RANGE, "sense_range", "HIGH"),
    Param("SENSe#:APERture", Num(0.3e-3, 1.0, fmt="g"), "aperture_s", 0.02),
    Param("SENSe#:NPLCycles", Int(1, 100), "nplc", 1),
    Param("SENSe#:DELay", Num(0.0, 1.0, fmt="g"), "delay_s", 0.0),
    Param("SENSe#:COUNt", Int(1, 10000000), "count", 1),
    Command("SENSe#:NCLearance", "q_remaining", query=True),
    Command("SENSe#:DATA:LAST", "q_data_last", query=True),
    Command("SENSe#:DATA:POINts", "q_data_points", query=True),
    Command("SENSe#:ABORt", "s_noop", query=False),
    Command("READ#", "q_read", query=True),
    # OUTPut:TRIGger subsystem: the five external trigger outputs (instrument-wide, suffix 1..5).
    Param("OUTPut:TRIGger#:SOURce", Word(r"hold|bus|int(ernal)?([1-9]|1[0-4])|ext(ernal)?[1-4]"), "trig_source",
          "hold"),
    Param("OUTPut:TRIGger#:WIDTh", Num(1e-6, 1.0, fmt="g"), "trig_width_s", 1e-6),
    Param("OUTPut:TRIGger#:POLarity", Choice("NORMal", "INVerted", replies={"NORM": "norm", "INV": "inv"}),
          "trig_polarity", "NORM"),
    Param("OUTPut:TRIGger#:DELay", Num(0.0, 10.0, fmt="g"), "trig_delay_s", 0.0),
    Command("FETCh#", "q_fetch", query=True),
    Command("ABORt", "s_noop", query=False),
    *ERROR_QUEUE,
]


class EmulatedQDac2(ScpiInstrument, EmulatedInstrument):
    KIND = "qdac2"
    IDN = "QDevil,QDAC-II,12,13-1.57"
    TABLE = TABLE
    SUFFIXES = tuple(range(1, 25))
    NUMBER_FORMAT = "g"
    ERROR_FORMAT = '{code}, "{text}"'
    OVERHEAD_S = 0.1e-3

    def __init__(self, name, bench, limits=None):
        EmulatedInstrument.__init__(self, name, bench, limits)
        self.sensed: dict[int, ReadingBuffer] = {}
        ScpiInstrument.__init__(self)
        self.reset()

    def suffix(self, suffixes):
        if not suffixes or suffixes[0] is None:
            raise ScpiError(-114, "a channel number is required")   # the QDAC-II has no default channel
        return super().suffix(suffixes)

    def reset(self) -> None:
        super().reset()
        self.sensed = {s: ReadingBuffer() for s in self.SUFFIXES}
        for s in self.SUFFIXES:
            self.state(s).last_V = 0.0
            self.bench.set_dac(self.name, str(s), 0.0)

    def check(self, p, suffix, value) -> None:
        st = self.state(suffix)
        if p.attr == "level_V" and abs(value) > RANGE_LIMIT_V[st.range]:
            raise ScpiError(-222, f"{value} V beyond the {st.range.lower()} range")
        if p.attr == "range" and abs(st.level_V) > RANGE_LIMIT_V[value]:
            raise ScpiError(-221, f"{st.level_V} V is outside the {value.lower()} range")

    def after_set(self, param, suffix) -> None:
        if param.attr == "level_V":
            st = self.state(suffix)
            # the ramp runs in the background: only *OPC? waits for it
            self.clock.advance(abs(st.level_V - getattr(st, "last_V", 0.0)) / st.slew, blocking=False)
            st.last_V = st.level_V
            self.bench.set_dac(self.name, str(suffix), st.level_V)

    def q_last(self, suffixes, args, query):
        return format(getattr(self.state(self.suffix(suffixes)), "last_V", 0.0), "g")

    def q_low_min(self, suffixes, args, query):
        return "-2"

    def q_low_max(self, suffixes, args, query):
        return "2"

    def q_high_min(self, suffixes, args, query):
        return "-10"

    def q_high_max(self, suffixes, args, query):
        return "10"

    def s_noop(self, suffixes, args, query):
        return None

    def _sense(self, c: int) -> list[float]:
        """`count` current readings of channel c, A: each takes the aperture (NPLC/line frequency) + overhead."""
        st = self.state(c)
        aperture = st.nplc / self.bench.line_frequency_hz
        amps = self.bench.dac_current(self.name, str(c))
        sd = self.bench.lab.emulator.read_noise_V * 1e-6 / aperture ** 0.5 * 0.02 ** 0.5
        values = (amps + sd * self.bench.rng.standard_normal(st.count)).tolist()
        self.clock.advance(st.count * (aperture + self.OVERHEAD_S))
        self.sensed[c].clear()
        self.sensed[c].readings = values
        return values

    def q_read(self, suffixes, args, query):
        return ",".join(format(v, "g") for v in self._sense(self.suffix(suffixes)))

    def q_fetch(self, suffixes, args, query):
        return ",".join(format(v, "g") for v in self.sensed[self.suffix(suffixes)].readings)

    def q_remaining(self, suffixes, args, query):
        return "0"

    def q_data_last(self, suffixes, args, query):
        values = self.sensed[self.suffix(suffixes)].readings
        return format(values[-1] if values else 0.0, "g")

    def q_data_points(self, suffixes, args, query):
        return str(len(self.sensed[self.suffix(suffixes)].readings))

    def outputs(self) -> dict:
        return {s: {"on": True, "level_V": self.state(s).level_V} for s in self.SUFFIXES if self.state(s).level_V != 0.0}
