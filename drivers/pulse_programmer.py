"""A programmer made of lab instruments: an SMU's own pulses, routed to one crosspoint by a switch matrix.

The lab config's `programmers.NAME` (drivers/lab.py, PulseProgrammerConfig) wires four buses to the rows of a
switch matrix and lists which matrix column each crossbar line is on. To reach device (row, col) the matrix
connects the selected row to the pulse SMU channel, the selected column to the sense SMU channel (held at
0 V), every other row to the row-bias channel and every other column to the column-bias channel:

    pulse (V on the selected row,   unselected rows at V/2 and columns at V/2 (half scheme), or rows at V/3 and
    its column at 0 V):             columns at 2V/3 (third scheme); the selected device sees V, every device
                                    that shares its row or column V/2 (V/3), the rest 0 (-V/3)
    read (conductance):             the bias channels stay; the sense channel holds the selected column at the row
                                    bias and measures its current, the pulse channel holds the selected row at the
                                    read voltage above it: G = I / V_read, with no sneak path (every other device
                                    of the column has 0 V across it), and no bias change between pulse and read

Safety: amplitude and width come from `limits.NAME` (LimitError beyond, nothing sent); a route that would join
two sources (a line on two buses, or the pulse or sense bus on more than one line) is refused before any relay
moves; `shutdown` opens every relay first, then ramps the sources to 0 V and switches the SMU outputs off (the
bench's own shutdown of each instrument does the same again).

It plays the `board` role (drivers/roles.py: read_conductance, pulse, check_errors), so write-verify,
`hil characterize --devices`, resume reconciliation and the fault policy (each instrument's own) work unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.errors import InstrumentError, LimitError
from drivers.roles import DacDriver, MatrixSwitch, VoltagePulser
from drivers.session import Instrument, check_limit

if TYPE_CHECKING:
    from drivers.lab import LabConfig

#: where the unselected lines sit, as fractions of the pulse amplitude: (rows, columns)
SCHEMES = {"half": (0.5, 0.5), "third": (1 / 3, 2 / 3)}


class RouteError(LimitError):
    """A route that would tie two sources together (refused before any relay moves)."""


class SmuPulseProgrammer:
    """The `board` role carried out by a pulse SMU, a sense SMU, bias channels and a switch matrix."""

    def __init__(self, lab: LabConfig, name: str, instruments: dict[str, Instrument]):
        cfg = lab.programmers[name]
        self.name, self.cfg = name, cfg
        lim = lab.limits[name]
        assert lim.max_pulse_V is not None and lim.max_pulse_width_s is not None  # the lab config requires both
        self.max_pulse_V, self.max_pulse_width_s = lim.max_pulse_V, lim.max_pulse_width_s
        self.read_voltage_V = lab.programming.read_voltage_V
        check_limit(f"{name} read voltage", self.read_voltage_V, 0.2, "V")
        self.instruments = instruments
        self.switch = self._as(cfg.switch, MatrixSwitch)
        self.pulser = self._as(cfg.pulse.source.instrument, VoltagePulser)
        self.sensor = self._as(cfg.sense.source.instrument, VoltagePulser)
        self.bias: dict[str, Instrument] = {}
        for bus in ("bias_rows", "bias_columns"):
            inst = instruments[getattr(cfg, bus).source.instrument]
            if not isinstance(inst, (DacDriver, VoltagePulser)):
                raise TypeError(f"programmers.{name}.{bus}: {type(inst).__name__} can hold no voltage")
            self.bias[bus] = inst
        #: every instrument it drives, once each (error queues, shutdown: the switch first)
        self.drives = list({id(i): i for i in (self.switch, self.pulser, self.sensor, *self.bias.values())}.values())
        #: the matrix row of each bus; the switch column of each line (rows first, then columns)
        self.bus_rows = {bus: b.row for bus, b in cfg.buses.items()}
        self.lines = [*cfg.row_lines, *cfg.column_lines]
        self.writes_unchecked = 0  # pulses since the error queues were last read (the board role's counter)
        self.queries = 0           # pulses and reads: the programmer's transactions
        self.routed: tuple[int, int] | None = None
        self.bias_V: dict[str, float] = {}   # what each bias channel holds, V
        self.level_V: dict[str, float] = {}  # what the pulse and sense channels hold, V

    def _as(self, inst_name: str, protocol: type) -> Instrument:
        inst = self.instruments[inst_name]
        if not isinstance(inst, protocol):
            raise TypeError(f"programmers.{self.name}: {inst_name} ({type(inst).__name__}) cannot serve as a "
                            f"{protocol.__name__} (drivers/roles.py)")
        return inst

    # ---- set-up and the route -------------------------------------------------------------
    def connect(self) -> None:
        """Every relay open; the pulse and sense channels sourcing 0 V, outputs on; the bias channels at 0 V."""
        self.switch.close_exactly([])  # type: ignore[attr-defined]
        cfg = self.cfg
        self.pulser.configure_voltage_source(cfg.pulse.source.channel, cfg.pulse_nplc)  # type: ignore[attr-defined]
        self.sensor.configure_voltage_source(cfg.sense.source.channel, cfg.read_nplc)  # type: ignore[attr-defined]
        for bus, inst in self.bias.items():
            ch = getattr(cfg, bus).source.channel
            if isinstance(inst, VoltagePulser):
                if bus != "bias_columns" or cfg.bias_columns.source != cfg.bias_rows.source:
                    inst.configure_voltage_source(ch, cfg.read_nplc)
            elif isinstance(inst, DacDriver):
                inst.configure_channel(ch)
        self._set_bias(0.0)

    def route_for(self, row: int, col: int) -> list[tuple[str, str]]:
        """(line, bus) for every line: the selected row to the pulse bus, the selected column to the sense bus,
        the others to their bias bus (or floating, hold_unselected false: the control)."""
        n_rows, n_cols = len(self.cfg.row_lines), len(self.cfg.column_lines)
        if not (0 <= row < n_rows and 0 <= col < n_cols):
            raise ValueError(f"{self.name}: no device at row {row}, column {col} (rows 0..{n_rows - 1}, "
                             f"columns 0..{n_cols - 1})")
        pairs = [(self.cfg.row_lines[row], "pulse"), (self.cfg.column_lines[col], "sense")]
        if self.cfg.hold_unselected:
            pairs += [(line, "bias_rows") for r, line in enumerate(self.cfg.row_lines) if r != row]
            pairs += [(line, "bias_columns") for c, line in enumerate(self.cfg.column_lines) if c != col]
        return pairs

    def check_route(self, pairs: list[tuple[str, str]]) -> list[str]:
        """The crosspoints of a route, after checking that it ties no two sources together (RouteError)."""
        source_of = {bus: str(b.source) for bus, b in self.cfg.buses.items()}
        on_line: dict[str, str] = {}
        lines_of: dict[str, list[str]] = {}
        for line, bus in pairs:
            if bus not in source_of:
                raise RouteError(f"{self.name} route: no bus {bus!r} (has {', '.join(source_of)})")
            if line not in self.lines:
                raise RouteError(f"{self.name} route: line {line} is not one of this programmer's lines")
            other = on_line.get(line)
            if other is not None and source_of[other] != source_of[bus]:
                raise RouteError(f"{self.name} route: line {line} on both {other} ({source_of[other]}) and {bus} "
                                 f"({source_of[bus]}) would tie two sources together; no relay was moved")
            on_line[line] = bus
            lines_of.setdefault(bus, []).append(line)
        for bus in ("pulse", "sense"):
            if len(lines_of.get(bus, [])) > 1:
                raise RouteError(f"{self.name} route: the {bus} bus on lines {', '.join(lines_of[bus])} would tie "
                                 "them together through its source; no relay was moved")
        return [self.switch.crosspoint(self.bus_rows[bus], line) for line, bus in pairs]  # type: ignore[attr-defined]

    def apply_route(self, pairs: list[tuple[str, str]]) -> None:
        """Check the route, then close exactly its crosspoints (one exclusiveclose) and wait for the relays."""
        crosspoints = self.check_route(pairs)
        self.routed = None
        self.switch.close_exactly(crosspoints)  # type: ignore[attr-defined]

    def _select(self, row: int, col: int) -> None:
        if self.routed != (row, col):
            self.apply_route(self.route_for(row, col))
            self.routed = (row, col)

    def _bias_levels(self, volts: float) -> dict[str, float]:
        rows_frac, cols_frac = SCHEMES[self.cfg.scheme]
        return {"bias_rows": rows_frac * volts, "bias_columns": cols_frac * volts}

    def _set_bias(self, volts: float) -> None:
        """The bias channels for a pulse of `volts` (the scheme's fractions of it); synced before returning: the
        pulse must not overtake them. They stay there for the reads that follow (see read_conductance)."""
        levels = self._bias_levels(volts)
        changed: dict[int, Instrument] = {}
        for bus, level in levels.items():
            if self.bias_V.get(bus) == level:
                continue
            inst, ch = self.bias[bus], getattr(self.cfg, bus).source.channel
            if isinstance(inst, VoltagePulser):
                inst.source_voltages([(ch, level)])
            elif isinstance(inst, DacDriver):
                inst.set_voltage(ch, level)
            self.bias_V[bus] = level
            changed[id(inst)] = inst
        for inst in changed.values():
            inst.sync()

    def _levels(self, row_V: float, column_V: float) -> list[tuple[str, float]]:
        """The selected row (pulse channel) and column (sense channel) levels, in a safe order: the column first
        when it rises, last when it falls, so the selected device never sees more than the larger of the two
        steps on the way. Returned as (channel, V) for the sense instrument to set in its next exchange when
        both channels are on it; set and synced here otherwise."""
        cfg = self.cfg
        steps = [("sense", cfg.sense.source.channel, column_V), ("pulse", cfg.pulse.source.channel, row_V)]
        if column_V < self.level_V.get("sense", 0.0):
            steps.reverse()
        for bus, _, level in steps:
            self.level_V[bus] = level
        if self.pulser is self.sensor:
            return [(ch, level) for _, ch, level in steps]
        for bus, ch, level in steps:
            inst = self.pulser if bus == "pulse" else self.sensor
            inst.source_voltages([(ch, level)])  # type: ignore[attr-defined]
            inst.sync()
        return []

    # ---- the board role --------------------------------------------------------------------
    def read_conductance(self, row: int, col: int) -> float:
        """G of one device, S: its column (the sense channel) at the row bias, its row the read voltage above it,
        its column's current. Every other device of the column sees 0 V (its row is at the row bias too), so the
        sense channel sees the selected device alone; the bias channels stay where the last pulse left them."""
        self._select(row, col)
        base = self.bias_V.get("bias_rows", 0.0)
        levels = self._levels(base + self.read_voltage_V, base)
        amps = self.sensor.measure_current(self.cfg.sense.source.channel, levels)  # type: ignore[attr-defined]
        self.queries += 1
        # The sense channel holds the column and sinks what the device passes: its own current is -I.
        return -amps / self.read_voltage_V

    def pulse(self, row: int, col: int, volts: float, width_s: float) -> None:
        """One SET (V > 0) or RESET (V < 0) pulse on the selected row, its column at 0 V; refused past the limits
        before anything is sent."""
        check_limit(f"{self.name} pulse amplitude", volts, self.max_pulse_V, "V")
        if not 0 < width_s <= self.max_pulse_width_s:
            raise LimitError(f"{self.name} pulse width: {width_s:.3g} s outside (0, {self.max_pulse_width_s:.3g}] s")
        self._select(row, col)
        # Both selected lines to 0 V, in the pulse's own exchange when one SMU has both; before the bias when the
        # bias moves (a row still at the read level must not meet a bias of the other polarity).
        levels = self._levels(0.0, 0.0)
        if levels and self._bias_levels(volts) != {bus: self.bias_V.get(bus) for bus in ("bias_rows", "bias_columns")}:
            self.pulser.source_voltages(levels)  # type: ignore[attr-defined]
            self.pulser.sync()
            levels = []
        self._set_bias(volts)
        self.writes_unchecked += 1
        self.queries += 1
        # With one SMU for pulse and sense, the read that follows (write-verify reads after every pulse) is the
        # pulse's confirmation: the SMU runs its lines in order. Otherwise the pulse waits for its own reply.
        self.pulser.pulse_voltage(self.cfg.pulse.source.channel, volts, width_s,  # type: ignore[attr-defined]
                                  self.cfg.pulse_off_s, self.cfg.pulse_nplc, levels,
                                  confirm=self.pulser is not self.sensor)
        self.level_V["pulse"] = 0.0  # PulseVMeasureI ends at its bias, 0 V

    def check_errors(self, after: str = "") -> None:
        """The error queue of every instrument the programmer drives (an error there stops the run)."""
        for inst in self.drives:
            inst.check_errors(after or f"{self.name} programming")
        self.writes_unchecked = 0

    def shutdown(self) -> None:
        """Every relay open first (the crossbar cut off), then every source to 0 V and the SMU outputs off."""
        errors = []
        self.routed = None
        for inst in self.drives:
            try:
                inst.shutdown()
            except Exception as err:  # noqa: BLE001 - keep making the others safe
                errors.append(f"{inst.name}: {err}")
        self.bias_V.clear()
        self.level_V.clear()
        if errors:
            raise InstrumentError(f"{self.name}: shutdown incomplete: " + "; ".join(errors))

    def close(self) -> None:
        """The instruments' sessions belong to the bench (or the caller that opened them)."""
