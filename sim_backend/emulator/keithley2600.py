"""Emulated Keithley 2636B System SourceMeter (channels smua, smub), TSP.

The bound objects follow the Series 2600B Reference Manual (2600BS-901-01), section 7 "TSP command
reference": smuX.source.* (func, levelv, leveli, limitv, limiti, output, rangev, rangei, autorangev,
autorangei, compliance), smuX.measure.* (nplc, count, rangev, rangei, autorangev, autorangei, autozero,
v(), i(), iv(), r(), p()), smuX.nvbuffer1/2 (clear(), n, readings, sourcevalues, timestamps, statuses),
smuX.sense, smuX.reset(), status.measurement.instrument.smuX.condition (bit 0 voltage limit, bit 1
current limit), and the constants smuX.OUTPUT_ON/OFF, OUTPUT_DCAMPS/DCVOLTS, SENSE_LOCAL/REMOTE, ...
Ranges and limits are the 2636B's (section 1 specifications: 200 V, 1.5 A DC).

The KIPulse factory script's PulseVMeasureI(smu, bias, level, ton, toff, points) (2600B reference manual,
"KIPulse factory script"): per point the channel sources `bias` for ton, `level` for ton, measures the current
at the end of it (into smuX.nvbuffer1), and returns to `bias` for toff. A channel routed onto a programmer's
crossbar lines (sim_backend/emulator/array.py) pulses those devices for ton.
"""

from __future__ import annotations

from sim_backend.emulator.smu import Reading, ReadingBuffer, SmuChannelPhysics
from sim_backend.emulator.tsp import Bound, TspError, TspInstrument, in_range

MAX_V, MAX_A = 202.0, 1.515
NPLC_RANGE = (0.001, 25.0)


class ChannelState:
    """The settings SmuChannelPhysics reads (see smu.py), at their reset() values."""

    def __init__(self):
        self.source_func, self.level_V, self.level_A = "VOLT", 0.0, 0.0
        self.vlim, self.ilim, self.output = 20.0, 0.1, False
        self.sense_func, self.nplc, self.count = "VOLT", 1.0, 1
        self.rangev, self.rangei, self.autorangev, self.autorangei = 0.2, 1e-7, 1, 1
        self.mrangev, self.mrangei, self.mautorangev, self.mautorangei = 0.2, 1e-7, 1, 1
        self.autozero, self.sense, self.delay, self.mdelay, self.interval = 2, 0, -1, -1, 0.0


class Readings:
    """One column of a buffer, indexed from 1 as in Lua (`smua.nvbuffer1.readings[1]`)."""

    def __init__(self, buf: ReadingBuffer, field: str):
        self._buf, self._field = buf, field

    def __len__(self):
        return len(self._buf.readings)

    def __getitem__(self, k: int):
        if not 1 <= k <= len(self._buf.readings):
            raise IndexError(k)
        r = self._buf.readings[k - 1]
        if self._field == "statuses":
            return 1 if r.compliance else 0
        return {"readings": r.value, "sourcevalues": r.source, "timestamps": r.t_s}[self._field]


class NvBuffer(Bound):
    """smuX.nvbufferY: a dedicated reading buffer."""

    def __init__(self):
        self._buf = ReadingBuffer(60000)
        self.appendmode = 0
        self.collectsourcevalues = 0
        self.collecttimestamps = 0
        self.fillmode = 0
        self.fillcount = 0
        self.timestampresolution = 1e-6

    def clear(self):
        self._buf.clear()

    def add(self, rows: list[Reading]) -> None:
        if self.appendmode:
            self._buf.extend(rows)
        else:
            self._buf.readings = list(rows)

    @property
    def n(self):
        return len(self._buf.readings)

    @property
    def capacity(self):
        return self._buf.capacity

    @property
    def readings(self):
        return Readings(self._buf, "readings")

    @property
    def sourcevalues(self):
        return Readings(self._buf, "sourcevalues")

    @property
    def timestamps(self):
        return Readings(self._buf, "timestamps")

    @property
    def statuses(self):
        return Readings(self._buf, "statuses")

    def __len__(self):
        return self.n

    def __getitem__(self, k):
        return self.readings[k]


def _prop(attr: str, name: str, lo: float, hi: float, kind=float, push: bool = False):
    """An attribute of the channel state, checked against [lo, hi] (1101/1102 outside)."""

    def get(self):
        return getattr(self._st, attr)

    def set(self, value):
        setattr(self._st, attr, kind(in_range(f"smu{self._ch}.{name}", value, lo, hi)))
        if push:
            self._inst.push_source(self._ch, self._st)

    return property(get, set)


class Source(Bound):
    def __init__(self, inst, ch, st):
        self._inst, self._ch, self._st = inst, ch, st

    func = property(lambda s: 1 if s._st.source_func == "VOLT" else 0,
                    lambda s, v: s._set_func(v))
    levelv = _prop("level_V", "source.levelv", -MAX_V, MAX_V, push=True)
    leveli = _prop("level_A", "source.leveli", -MAX_A, MAX_A, push=True)
    limitv = _prop("vlim", "source.limitv", 0.02, MAX_V, push=True)
    limiti = _prop("ilim", "source.limiti", 1e-9, MAX_A, push=True)
    autorangev = _prop("autorangev", "source.autorangev", 0, 1, int, push=True)
    autorangei = _prop("autorangei", "source.autorangei", 0, 1, int, push=True)

    def _set_range(self, attr: str, auto: str, value, ranges) -> None:
        """A range setting picks the smallest range that holds the value and turns autorange off."""
        v = abs(in_range(f"smu{self._ch}.source.{attr}", value, -ranges[-1], ranges[-1]))
        setattr(self._st, attr, next(r for r in ranges if v <= r))
        setattr(self._st, auto, 0)
        self._inst.push_source(self._ch, self._st)

    rangev = property(lambda s: s._st.rangev,
                      lambda s, v: s._set_range("rangev", "autorangev", v, s._inst.SOURCE_RANGES_V))
    rangei = property(lambda s: s._st.rangei,
                      lambda s, v: s._set_range("rangei", "autorangei", v, s._inst.SOURCE_RANGES_A))
    delay = _prop("delay", "source.delay", -1, 1e4)

    def _set_func(self, v):
        v = int(in_range(f"smu{self._ch}.source.func", v, 0, 1))
        self._st.source_func = "VOLT" if v == 1 else "CURR"
        self._inst.push_source(self._ch, self._st)

    @property
    def output(self):
        return 1 if self._st.output else 0

    @output.setter
    def output(self, v):
        v = int(in_range(f"smu{self._ch}.source.output", v, 0, 2))
        self._st.output = v == 1
        self._inst.push_source(self._ch, self._st)

    @property
    def compliance(self):
        return bool(self._st.output and self._inst.bench.in_compliance(self._inst.name, self._ch))


class Measure(Bound):
    def __init__(self, inst, ch, st):
        self._inst, self._ch, self._st = inst, ch, st

    nplc = _prop("nplc", "measure.nplc", *NPLC_RANGE)
    count = _prop("count", "measure.count", 1, 60000, int)
    rangev = _prop("mrangev", "measure.rangev", 0.0, 200.0)
    rangei = _prop("mrangei", "measure.rangei", 0.0, 1.5)
    autorangev = _prop("mautorangev", "measure.autorangev", 0, 1, int)
    autorangei = _prop("mautorangei", "measure.autorangei", 0, 1, int)
    autozero = _prop("autozero", "measure.autozero", 0, 2, int)
    delay = _prop("mdelay", "measure.delay", -1, 1e4)
    interval = _prop("interval", "measure.interval", 0.0, 1.0)

    def _take(self, sense: str, *buffers):
        # with the output off the 2600B still measures (its terminals, through the open output relay)
        rows = self._inst.acquire(self._ch, self._st, self._st.count, sense)
        for b in buffers:
            if isinstance(b, NvBuffer):
                b.add(rows)
        return rows

    def v(self, buf=None):
        return self._take("VOLT", buf)[-1].volts

    def i(self, buf=None):
        return self._take("CURR", buf)[-1].amps

    def r(self, buf=None):
        return self._take("RES", buf)[-1].value

    def p(self, buf=None):
        r = self._take("VOLT", buf)[-1]
        return r.volts * r.amps

    def iv(self, ibuf=None, vbuf=None):
        rows = self._take("CURR")
        if isinstance(ibuf, NvBuffer):
            ibuf.add(rows)
        if isinstance(vbuf, NvBuffer):
            vbuf.add([Reading(r.volts, r.amps, r.source, r.compliance, r.t_s, "VOLT") for r in rows])
        return rows[-1].amps, rows[-1].volts


class Smu(Bound):
    """smua / smub."""

    CONSTANTS = {"OUTPUT_OFF": 0, "OUTPUT_ON": 1, "OUTPUT_HIGH_Z": 2, "OUTPUT_DCAMPS": 0, "OUTPUT_DCVOLTS": 1,
                 "SENSE_LOCAL": 0, "SENSE_REMOTE": 1, "SENSE_CALA": 3, "AUTORANGE_OFF": 0, "AUTORANGE_ON": 1,
                 "AUTOZERO_OFF": 0, "AUTOZERO_ONCE": 1, "AUTOZERO_AUTO": 2, "ENABLE": 1, "DISABLE": 0,
                 "DELAY_OFF": 0, "DELAY_AUTO": -1}

    def __init__(self, inst, ch):
        self._inst, self._ch = inst, ch
        self._st = ChannelState()
        self.source = Source(inst, ch, self._st)
        self.measure = Measure(inst, ch, self._st)
        self.nvbuffer1 = NvBuffer()
        self.nvbuffer2 = NvBuffer()

    sense = _prop("sense", "sense", 0, 3, int)

    def reset(self):
        st = ChannelState()
        self._st.__dict__.update(st.__dict__)
        self.nvbuffer1.clear()
        self.nvbuffer2.clear()
        self._inst.push_source(self._ch, self._st)

    def makebuffer(self, n):
        return NvBuffer()


class Condition(Bound):
    """status.measurement.instrument.smuX: condition bit 0 voltage limit, bit 1 current limit."""

    def __init__(self, inst, ch):
        self._inst, self._ch = inst, ch

    @property
    def condition(self):
        smu = self._inst.smus[self._ch]
        if not (smu._st.output and self._inst.bench.in_compliance(self._inst.name, self._ch)):
            return 0
        return 1 if smu._st.source_func == "CURR" else 2


class Status(Bound):
    def __init__(self, inst):
        self.measurement = Bound()
        self.measurement.instrument = Bound()
        for c in inst.CHANNELS:
            setattr(self.measurement.instrument, f"smu{c}", Condition(inst, c))
        self.condition = 0

    def reset(self):
        return None


class Emulated2600(SmuChannelPhysics, TspInstrument):
    KIND = "keithley2600"
    MODEL, SERIAL, VERSION = "2636B", "4123456", "4.0.4"
    FIRST_CHANNEL = "a"
    CHANNELS = ("a", "b")
    OVERHEAD_S = 0.6e-3   # 2600B speed spec: ~1.6 k readings/s at 0.001 PLC beyond the aperture
    # 2636B specifications: source ranges 200 mV..200 V, 100 pA..1.5 A; programming resolution 5 uV on 200 mV
    # (2.5e-5 of the range), 2 pA on 100 nA (2e-5)
    SOURCE_RANGES_V = (0.2, 2.0, 20.0, 200.0)
    SOURCE_RANGES_A = (1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 1.5)
    RESOLUTION_V, RESOLUTION_A = 2.5e-5, 2e-5

    def source_delay_s(self, st) -> float:
        """smuX.source.delay in seconds (DELAY_AUTO -1 and DELAY_OFF 0 add nothing here)."""
        return max(0.0, st.delay)

    def fixed_range(self, st, func):
        if func == "VOLT":
            return None if st.autorangev else st.rangev
        return None if st.autorangei else st.rangei

    def __init__(self, name, bench, limits=None):
        self.smus: dict[str, Smu] = {}
        super().__init__(name, bench, limits)
        self.reset()

    def bind(self, g) -> None:
        self.smus = {c: Smu(self, c) for c in self.CHANNELS}
        for c, smu in self.smus.items():
            g[f"smu{c}"] = smu
        g.status = Status(self)
        g.PulseVMeasureI = self.pulse_v_measure_i

    def pulse_v_measure_i(self, smu, bias, level, ton, toff, points):
        """KIPulse PulseVMeasureI: `points` voltage pulses from bias to level, the current measured at each end."""
        if not isinstance(smu, Smu):
            raise TspError(-286, f"TSP Runtime error; PulseVMeasureI: bad argument #1 (smu expected, got {smu!r})")
        ch, st = smu._ch, smu._st
        bias = in_range("PulseVMeasureI bias", bias, -MAX_V, MAX_V)
        level = in_range("PulseVMeasureI level", level, -MAX_V, MAX_V)
        ton = in_range("PulseVMeasureI ton", ton, 0.0, 1e4)
        toff = in_range("PulseVMeasureI toff", toff, 0.0, 1e4)
        points = int(in_range("PulseVMeasureI points", points, 1, 60000))
        st.source_func = "VOLT"
        rows = []
        for _ in range(points):
            st.level_V = bias
            self.push_source(ch, st)
            self.clock.advance(ton)
            st.level_V = level
            self.push_source(ch, st)
            self.bench.array_pulse(self.name, ch, ton)
            self.clock.advance(ton)
            rows += self.acquire(ch, st, 1, "CURR")
            st.level_V = bias
            self.push_source(ch, st)
            self.clock.advance(toff)
        smu.nvbuffer1.add(rows)

    def reset(self) -> None:
        for smu in self.smus.values():
            smu.reset()

    def outputs(self) -> dict:
        out = {}
        for c, smu in self.smus.items():
            st = smu._st
            level = st.level_A if st.source_func == "CURR" else st.level_V
            if st.output or level:
                out[c] = {"on": st.output, "func": st.source_func, "level": level}
        return out
