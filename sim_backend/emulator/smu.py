"""What every emulated source-measure channel shares, whatever its command language: the source
(voltage or current, with its compliance limit), the output relay, the measurement (NPLC, count) and
the reading buffer. The physics lives in the bench (`EmulatedBench.set_source` / `measure`); the
emulated time a reading takes lives in the instrument's clock (`clock.EmulatedClock`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sim_backend.emulator.bench import EmulatedBench
    from sim_backend.emulator.clock import EmulatedClock


@dataclass
class Reading:
    """One buffered reading: volts and amps at the terminals, the source value, compliance, time stamp (s).

    `value` is what the sense function measured (volts for "VOLT", amps for "CURR", ohms for "RES")."""

    volts: float
    amps: float
    source: float
    compliance: bool
    t_s: float
    sense: str = "VOLT"

    @property
    def value(self) -> float:
        if self.sense == "VOLT":
            return self.volts
        if self.sense == "CURR":
            return self.amps
        return self.volts / self.amps if self.amps else 9.91e37   # the instruments' "no number"


@dataclass
class ReadingBuffer:
    """A reading buffer (the 2450's defbuffer1, the 2600B's nvbuffer1, the B2900's result buffer)."""

    capacity: int = 100000
    readings: list[Reading] = field(default_factory=list)

    def clear(self) -> None:
        self.readings = []

    def extend(self, rows: list[Reading]) -> None:
        self.readings = (self.readings + rows)[-self.capacity:]


class SmuChannelPhysics:
    """Mixin for an emulated SMU instrument: `push_source(ch, st)` and `acquire(ch, st, n)`.

    A channel's settings object `st` carries: source_func ("VOLT"/"CURR"), level_V, level_A, vlim (V, the
    compliance while sourcing current), ilim (A, while sourcing voltage), output (bool), sense_func
    ("VOLT"/"CURR"), nplc. The instrument provides self.name, self.bench, self.clock.
    """

    # provided by the EmulatedInstrument this is mixed into
    name: str
    bench: EmulatedBench
    clock: EmulatedClock

    OVERHEAD_S = 1e-3   # per reading beyond the aperture (A/D, autozero, trigger); each manual's timing spec
    #: source ranges (V, A) and the programming resolution as a fraction of the range (each instrument's specs)
    SOURCE_RANGES_V: tuple[float, ...] = (0.2, 2.0, 20.0, 200.0)
    SOURCE_RANGES_A: tuple[float, ...] = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0)
    RESOLUTION_V, RESOLUTION_A = 2.5e-5, 5e-5

    def fixed_range(self, st, func: str) -> float | None:
        """The source range the channel is held on, or None under autorange."""
        return None

    def sourced(self, st, func: str, level: float) -> float:
        """What the source really puts out: the level rounded to its range's resolution (autorange: the
        smallest range that holds the level)."""
        ranges = self.SOURCE_RANGES_V if func == "VOLT" else self.SOURCE_RANGES_A
        rng = self.fixed_range(st, func) or next((r for r in ranges if abs(level) <= r), ranges[-1])
        step = rng * (self.RESOLUTION_V if func == "VOLT" else self.RESOLUTION_A)
        return round(level / step) * step

    def source_delay_s(self, st) -> float:
        """The programmed source delay: the wait between a source change and the next reading, s (0: none).
        Automatic delays are taken as 0 (the emulated node has no capacitance to settle)."""
        return 0.0

    def push_source(self, ch: str, st) -> None:
        """Tell the bench what this channel now forces on its node; the next reading waits the source delay."""
        st.settle_pending = True
        if st.source_func == "VOLT":
            self.bench.set_source(self.name, ch, "VOLT", self.sourced(st, "VOLT", st.level_V), st.ilim, st.output)
        else:
            self.bench.set_source(self.name, ch, "CURR", self.sourced(st, "CURR", st.level_A), st.vlim, st.output)

    def acquire(self, ch: str, st, n: int, sense: str | None = None) -> list[Reading]:
        """n readings of the sense function; each takes NPLC/line frequency plus the instrument's overhead."""
        sense = sense or st.sense_func
        # one reading: the aperture plus the overhead, or the measure interval when that is longer
        each = max(st.nplc / self.bench.line_frequency_hz + self.OVERHEAD_S, getattr(st, "interval", 0.0))
        if getattr(st, "settle_pending", False):
            self.clock.advance(self.source_delay_s(st))
            st.settle_pending = False
        rows = []
        volts, amps, compliance = self.bench.measure(self.name, ch, n, st.nplc)
        t0 = self.clock.now_s
        source = st.level_V if st.source_func == "VOLT" else st.level_A
        for k in range(n):
            rows.append(Reading(volts[k], amps[k], source, compliance, t0 + (k + 1) * each, sense))
        self.clock.advance(n * each)
        return rows


class ScpiSourceRanges(SmuChannelPhysics):
    """The SCPI SMUs' range settings (2450, B2900): :SOURce:<f>:RANGe and :RANGe:AUTO, in their tables' names."""

    def fixed_range(self, st, func: str) -> float | None:
        if func == "VOLT":
            return None if st.src_auto_V else st.src_range_V
        return None if st.src_auto_A else st.src_range_A
