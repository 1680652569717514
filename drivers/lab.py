"""The lab config: one YAML file describes the bench (instruments, node map, device map, limits, timing).

Code never hard-codes an address or a channel: the node map says which DAC
channel drives each input node, which SMU channel (through which switch route)
reads each hidden and output node, and which SMU nudges each output; the
device map places each layer's conductances on a crossbar board. Channel
references are "instrument/channel", e.g. "dac1/3", "smu_out/a", "switch/1A01".

Units: the trainer works in normalized volts and siemens. The bench applies
voltage_unit_V volts per normalized volt and conductance_unit_S siemens per
normalized siemens, so the same eta, beta and sigma mean the same thing in the
simulator and on the bench. Currents scale by their product.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from drivers.instrument_config import ChannelLimits, DriverSettings, InstrumentConfig
from drivers.registry import Role, driver_class
from hil.core.backend import node_sizes
from hil.core.devices.config import WRITE_VERIFY_MAX_PULSES, WRITE_VERIFY_MAX_REVERSALS
from hil.core.devices.store import resolve_device_model
from hil.core.mains import LINE_FREQUENCIES_HZ, check_line_frequency
from hil.core.schema import ConfigError, StrictModel, format_validation_error, read_yaml


class ChannelRef(NamedTuple):
    """One channel of one instrument, "instrument/channel" in the lab config (parsed once, when it loads)."""

    instrument: str
    channel: str

    def __str__(self) -> str:
        return f"{self.instrument}/{self.channel}"

    @classmethod
    def parse(cls, value: Any) -> ChannelRef:
        if isinstance(value, ChannelRef):
            return value
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not instrument/channel")
        name, sep, ch = value.partition("/")
        if not (sep and name and ch):
            raise ValueError(f"{value!r} is not instrument/channel")
        return cls(name, ch)


#: a lab-config field holding "instrument/channel": a ChannelRef in the model, the string again when dumped
Ref = Annotated[ChannelRef, PlainValidator(ChannelRef.parse), PlainSerializer(str, return_type=str),
                WithJsonSchema({"type": "string", "pattern": "^[^/]+/.+$"})]


class InputNode(StrictModel):
    plus: Ref = Field(description="DAC channel applying +gamma*x, e.g. dac1/1")
    minus: Ref = Field(description="DAC channel applying -gamma*x")


class ReadNode(StrictModel):
    read: Ref = Field(description="SMU channel that reads this node, e.g. smu_hidden/1")
    route: Ref | None = Field(default=None, description="Switch crosspoint to close first, e.g. switch/1A01")
    nudge: Ref | None = Field(default=None, description="Outputs, current mode: the SMU channel that sources the nudge")
    nudge_source: Ref | None = Field(default=None, description="Outputs, conductance mode: the DAC channel at the target")
    nudge_route: Ref | None = Field(default=None, description="Outputs, conductance mode: the crosspoint that connects "
                                    "the node through the nudge resistor to its source")


class NodeMap(StrictModel):
    inputs: list[InputNode]
    hidden: list[list[ReadNode]] = Field(description="One list per hidden layer")
    outputs: list[ReadNode]


class DeviceBlock(StrictModel):
    layer: int = Field(ge=0, description="0: inputs to first hidden layer, 1: next, ...")
    board: str
    row_offset: int = Field(default=0, ge=0, description="Lower-layer node i sits on row row_offset + i")
    col_offset: int = Field(default=0, ge=0, description="Upper-layer node j sits on column col_offset + j")


class PulseBounds(StrictModel):
    start_V: float = Field(gt=0, description="First pulse amplitude, V (sign set by SET/RESET)")
    max_V: float = Field(gt=0, description="Largest amplitude the stepping may reach, V")
    step_V: float = Field(default=0.05, gt=0)
    width_s: float = Field(default=1e-6, gt=0)
    max_width_s: float = Field(default=1e-5, gt=0)

    @model_validator(mode="after")
    def _order(self) -> PulseBounds:
        if self.max_V < self.start_V or self.max_width_s < self.width_s:
            raise ValueError("max_V/max_width_s must not be below start_V/width_s")
        return self


class ProgrammingConfig(StrictModel):
    read_voltage_V: float = Field(default=0.1, gt=0, le=0.2, description="Read voltage for G, V (read-disturb safe)")
    set: PulseBounds = PulseBounds(start_V=1.0, max_V=1.5)
    reset: PulseBounds = PulseBounds(start_V=1.0, max_V=1.5)
    tolerance_S: float = Field(default=1e-6, gt=0, description="Write-verify stops when |G - target| <= this, S")
    max_pulses: int = Field(default=WRITE_VERIFY_MAX_PULSES, ge=1, description="Most pulses per device and write")
    max_reversals: int = Field(default=WRITE_VERIFY_MAX_REVERSALS, ge=0, description="Stop after this many polarity flips")
    g_min_S: float = Field(default=1e-6, ge=0, description="Device range, S: targets are kept inside it")
    g_max_S: float = Field(default=1e-4, gt=0)


class UnitsConfig(StrictModel):
    voltage_unit_V: float = Field(gt=0, description="Bench volts per normalized volt")
    conductance_unit_S: float = Field(gt=0, description="Bench siemens per normalized siemens")
    read_disturb_V: float = Field(default=0.2, gt=0, description="Largest voltage across any device while measuring, V")


class TimingConfig(StrictModel):
    settle_time_s: float = Field(default=0.0, ge=0, description="Wait after changing inputs or nudges, s")
    nplc: float = Field(default=1.0, gt=0, description="SMU integration time, power-line cycles")
    line_frequency_hz: float = Field(default=50.0, description="Mains frequency, Hz: "
                                     + " or ".join(f"{hz:g}" for hz in LINE_FREQUENCIES_HZ))
    overhead_s: float = Field(default=1e-3, ge=0, description="Per reading beyond the aperture, s (for time estimates)")

    @field_validator("line_frequency_hz")
    @classmethod
    def _mains(cls, hz: float) -> float:
        return check_line_frequency(hz)


class NudgeConfig(StrictModel):
    mode: Literal["current", "conductance"] = Field(
        default="current",
        description="current: the output's SMU sources the current a conductance beta to the target would draw. "
        "conductance: a resistor on the board ties the output to a DAC channel at the target (beta is fixed by it).",
    )
    conductance_S: float | None = Field(default=None, gt=0, description="Conductance mode: the nudge resistor, S")
    iterations: int = Field(default=2, ge=1, description="1: I = beta*(t - y_free) (exact only for beta << the node's "
                            "conductance); 2+: measure the node's response and correct I (one more reading of the "
                            "outputs per iteration)")


class BusConfig(StrictModel):
    source: Ref = Field(description="The channel that drives this bus, e.g. smu_pulse/a or dac_bias/1")
    row: str = Field(min_length=1, description="The switch-matrix row (bus) it is wired to, e.g. A")


class PulseProgrammerConfig(StrictModel):
    """A programmer made of lab instruments (drivers/pulse_programmer.py): the switch matrix connects each line of
    the crossbar to one of four buses. The pulse SMU channel drives the selected row (pulses, and the read
    voltage), the sense SMU channel holds the selected column at 0 V and measures its current, DAC (or SMU)
    channels hold every unselected line at the bias of the scheme."""

    switch: str = Field(description="The switch matrix (a keithley707b) that routes the lines")
    pulse: BusConfig = Field(description="SMU channel that pulses the selected row and applies the read voltage")
    sense: BusConfig = Field(description="SMU channel that holds the selected column at 0 V and measures its current")
    bias_rows: BusConfig = Field(description="Channel holding the unselected rows: V/2 (half) or V/3 (third), V")
    bias_columns: BusConfig = Field(description="Channel holding the unselected columns: V/2 (half) or 2V/3 (third), V")
    scheme: Literal["half", "third"] = Field(default="half", description="half: unselected lines at V/2, so "
                                             "half-selected devices see V/2; third: rows at V/3, columns at 2V/3, "
                                             "every unselected device sees V/3")
    hold_unselected: bool = Field(default=True, description="False: unselected lines float (a control that shows "
                                  "disturb and sneak currents; never for training)")
    row_lines: list[str] = Field(min_length=1, description="The switch column of each crossbar row, in row order, "
                                 "slot:column (1:01 is slot 1, column 01)")
    column_lines: list[str] = Field(min_length=1, description="The switch column of each crossbar column, in order")
    pulse_nplc: float = Field(default=0.001, gt=0, description="Aperture of the current reading at the end of "
                              "each pulse, power-line cycles")
    read_nplc: float = Field(default=0.01, gt=0, description="Aperture of a conductance reading, power-line cycles")
    pulse_off_s: float = Field(default=0.0, ge=0, description="Time at the bias after each pulse, s")

    @property
    def buses(self) -> dict[str, BusConfig]:
        return {"pulse": self.pulse, "sense": self.sense, "bias_rows": self.bias_rows,
                "bias_columns": self.bias_columns}

    @model_validator(mode="after")
    def _wiring(self) -> PulseProgrammerConfig:
        lines = self.row_lines + self.column_lines
        dup = sorted({x for x in lines if lines.count(x) > 1})
        if dup:
            raise ValueError(f"row_lines/column_lines: {', '.join(dup)} named twice (each line has its own switch column)")
        by_row: dict[str, tuple[str, ChannelRef]] = {}
        for name, bus in self.buses.items():
            other = by_row.get(bus.row)
            if other is not None and other[1] != bus.source:
                raise ValueError(f"{name}.row: switch row {bus.row} already carries {other[0]} ({other[1]}); two "
                                 f"sources on one bus would be tied together")
            by_row[bus.row] = (name, bus.source)
        if self.pulse.source == self.sense.source:
            raise ValueError("sense.source: must be another SMU channel than pulse.source")
        if self.scheme == "third" and self.bias_rows.source == self.bias_columns.source:
            raise ValueError("bias_columns.source: the third scheme holds rows at V/3 and columns at 2V/3, so it needs "
                             "two channels")
        return self


class FaultConfig(StrictModel):
    """One injected fault of an emulated instrument (sim_backend/emulator/faults.py describes each kind)."""

    kind: Literal["drop", "delay", "garbage", "error", "trip_compliance", "power_cycle", "lose_reply"]
    after: int = Field(default=0, ge=0, description="Commands the instrument handles normally before the fault")
    match: str | None = Field(default=None, description="Only a command matching this regex (search) triggers it")
    count: int = Field(default=1, ge=1, description="How many times it fires")
    delay_s: float = Field(default=0.0, ge=0, description="delay: wall seconds the reply is held back")
    code: int = Field(default=-200, description="error: the code queued (its text is the standard one)")
    channel: str | None = Field(default=None, description="trip_compliance: the SMU channel (default: the first)")

    @field_validator("match")
    @classmethod
    def _regex(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"not a regular expression ({err})") from None
        return pattern


class EmulatorConfig(StrictModel):
    """How `hil emulate` simulates this bench (ignored on a real one)."""

    seed: int = 0
    read_noise_V: float = Field(default=2e-6, ge=0, description="White noise of one SMU reading at 1 PLC, V")
    channel_noise_V: dict[str, float] = Field(
        default_factory=dict,
        description="Read noise at 1 PLC, V, of the node a channel carries, in place of read_noise_V: keys are a "
        "node's read channel or its switch route (\"switch/1A03\": a bad contact on that crosspoint)")
    settle_sweeps: int = Field(default=40, ge=1, description="Relaxation sweeps the emulated physics uses")
    device_rate_S_per_V_s: float = Field(default=5.0, gt=0, description="dG per (V over threshold) per s of pulse, S")
    device_threshold_V: float = Field(default=0.8, ge=0)
    device_spread: float = Field(default=0.05, ge=0, description="Cycle-to-cycle relative spread of dG")
    time_scale: float = Field(default=0.01, ge=0, description="Wall seconds per emulated instrument second "
                              "(1: real time, 0: instant; the default keeps tests fast)")
    faults: dict[str, list[FaultConfig]] = Field(default_factory=dict, description="Faults to inject, per instrument")
    device_model: str | None = Field(
        default=None,
        description="The emulated devices' model: a preset (reram-es, ecram, ...; see sim_backend/devices) or a "
        "device.yaml, mapped onto [programming.g_min_S, g_max_S]; each pulse over device_threshold_V is one SET or "
        "RESET of the model (amplitude and width beyond it do not matter). None: the rate model above.",
    )

    @field_validator("device_model")
    @classmethod
    def _known_model(cls, spec: str | None) -> str | None:
        if spec is not None:
            if not resolve_device_model(spec).pulsed:
                raise ValueError(f"{spec!r} is not a pulsed device model; leave device_model out for the rate model")
        return spec


class LabConfig(StrictModel):
    name: str = "lab"
    visa_library: str = Field(default="@py", description="@py (pyvisa-py), @ivi (NI-VISA etc.) or @sim")
    strict: bool = Field(default=True, description="Read the error queue after every configuration write")
    instruments: dict[str, InstrumentConfig]
    limits: dict[str, ChannelLimits]
    units: UnitsConfig
    timing: TimingConfig = TimingConfig()
    nudge: NudgeConfig = NudgeConfig()
    nodes: NodeMap
    devices: list[DeviceBlock]
    programmers: dict[str, PulseProgrammerConfig] = Field(
        default_factory=dict, description="Programmers made of the lab's instruments (SMU pulses routed by a "
        "switch matrix); a device block's board may name one")
    programming: ProgrammingConfig = ProgrammingConfig()
    emulator: EmulatorConfig = EmulatorConfig()
    run: dict[str, Any] = Field(default_factory=dict, description="Run-config defaults that fit this bench (network size, "
                      "gamma, device range...), applied beneath --config files and flags")

    @model_validator(mode="after")
    def _check(self) -> LabConfig:
        for name, inst in self.instruments.items():
            drv, role = driver_class(inst.kind), inst.role
            lim = self.limits.get(name)
            if role in ("dac", "smu") and (lim is None or lim.max_abs_V is None):
                raise ValueError(f"limits.{name}.max_abs_V: every source needs a safe voltage limit")
            if role == "smu" and (lim is None or lim.compliance_A is None):
                raise ValueError(f"limits.{name}.compliance_A: every SMU needs a current limit")
            if lim and lim.max_abs_V and drv.MAX_V and lim.max_abs_V > drv.MAX_V:
                raise ValueError(f"limits.{name}.max_abs_V: {lim.max_abs_V:g} V is beyond what a {inst.kind} "
                                 f"can do (+-{drv.MAX_V:g} V)")
            if lim and lim.compliance_A and drv.MAX_A and lim.compliance_A > drv.MAX_A:
                raise ValueError(f"limits.{name}.compliance_A: {lim.compliance_A:g} A is beyond a {inst.kind} "
                                 f"(+-{drv.MAX_A:g} A)")
            if role == "board":
                if lim is None or lim.max_pulse_V is None or lim.max_pulse_width_s is None:
                    raise ValueError(f"limits.{name}: a programming board needs max_pulse_V and max_pulse_width_s")
                if drv.MAX_V is not None and lim.max_pulse_V > drv.MAX_V:
                    raise ValueError(f"limits.{name}.max_pulse_V: {lim.max_pulse_V:g} V is beyond the board "
                                     f"(+-{drv.MAX_V:g} V)")
                for pol in ("set", "reset"):
                    pb = getattr(self.programming, pol)
                    if pb.max_V > lim.max_pulse_V or pb.max_width_s > lim.max_pulse_width_s:
                        raise ValueError(f"programming.{pol}: pulses up to {pb.max_V:g} V / {pb.max_width_s:g} s "
                                         f"exceed limits.{name} ({lim.max_pulse_V:g} V / {lim.max_pulse_width_s:g} s)")
        for key in self.limits:
            if key not in self.instruments and key not in self.programmers:
                raise ValueError(f"limits.{key}: no such instrument")
        for name in self.programmers:
            if name in self.instruments:
                raise ValueError(f"programmers.{name}: an instrument has that name already")
            self._check_programmer(name)
        for key in self.emulator.faults:
            if key not in self.instruments:
                raise ValueError(f"emulator.faults.{key}: no such instrument")
        carried = {str(ref) for layer in self.read_layers for node in layer for ref in (node.read, node.route) if ref}
        for key, sd in self.emulator.channel_noise_V.items():
            if key not in carried:
                raise ValueError(f"emulator.channel_noise_V.{key}: no node is read through this channel or route")
            if not sd >= 0:
                raise ValueError(f"emulator.channel_noise_V.{key}: a noise >= 0 V (got {sd})")
        self._check_refs()
        return self

    def _ref(self, ref: ChannelRef, role: Role, where: str) -> ChannelRef:
        if ref.instrument not in self.instruments:
            raise ValueError(f"{where}: no instrument {ref.instrument!r}")
        inst = self.instruments[ref.instrument]
        if inst.role != role:
            raise ValueError(f"{where}: {ref.instrument} is a {inst.kind}, not a {role}")
        return ref

    def _check_refs(self) -> None:
        seen: dict[ChannelRef, str] = {}
        for i, inp in enumerate(self.nodes.inputs):
            for side in ("plus", "minus"):
                ref = self._ref(getattr(inp, side), "dac", f"nodes.inputs[{i}].{side}")
                if ref in seen:
                    raise ValueError(f"nodes.inputs[{i}].{side}: {ref} already drives {seen[ref]}")
                seen[ref] = f"nodes.inputs[{i}].{side}"
        layers = self.read_layers
        for l, layer in enumerate(layers):
            tag = "outputs" if l == len(layers) - 1 else f"hidden[{l}]"
            for i, node in enumerate(layer):
                self._ref(node.read, "smu", f"nodes.{tag}[{i}].read")
                if node.route:
                    self._ref(node.route, "switch", f"nodes.{tag}[{i}].route")
                if node.nudge:
                    self._ref(node.nudge, "smu", f"nodes.{tag}[{i}].nudge")
                    if node.nudge != node.read:
                        raise ValueError(f"nodes.{tag}[{i}].nudge: must be the SMU channel that reads the node "
                                         f"({node.read}): it sources the current and measures the voltage")
        if self.nudge.mode == "current":
            for i, node in enumerate(self.nodes.outputs):
                if not node.nudge:
                    raise ValueError(f"nodes.outputs[{i}].nudge: every output needs an SMU channel to nudge it")
        else:
            if self.nudge.conductance_S is None:
                raise ValueError("nudge.conductance_S: conductance mode needs the nudge resistor's value")
            read_switches = {n.route.instrument for layer in layers for n in layer if n.route}
            for i, node in enumerate(self.nodes.outputs):
                if not (node.nudge_source and node.nudge_route):
                    raise ValueError(f"nodes.outputs[{i}]: conductance mode needs nudge_source (a DAC channel) and "
                                     "nudge_route (the crosspoint to the resistor)")
                self._ref(node.nudge_source, "dac", f"nodes.outputs[{i}].nudge_source")
                if node.nudge_source in seen:
                    raise ValueError(f"nodes.outputs[{i}].nudge_source: {node.nudge_source} already drives "
                                     f"{seen[node.nudge_source]}")
                sw = self._ref(node.nudge_route, "switch", f"nodes.outputs[{i}].nudge_route").instrument
                if sw in read_switches:
                    # exclusiveclose for reading would open the nudge crosspoints mid-phase
                    raise ValueError(f"nodes.outputs[{i}].nudge_route: {sw} also routes nodes for reading; use a "
                                     "separate switch (or card) for the nudge resistors")
        for i, blk in enumerate(self.devices):
            if blk.board in self.programmers:
                continue
            if blk.board not in self.instruments or self.instruments[blk.board].role != "board":
                raise ValueError(f"devices[{i}].board: {blk.board!r} is not a programming board")
        layers_mapped = sorted(b.layer for b in self.devices)
        if layers_mapped != list(range(len(self.nodes.hidden) + 1)):
            raise ValueError(f"devices: need exactly one block per layer 0..{len(self.nodes.hidden)} (got {layers_mapped})")
        self._check_device_lines()

    def _check_device_lines(self) -> None:
        """Each block inside its programmer's word and bit lines (LINE_RANGE), and no crosspoint in two blocks."""
        sizes = node_sizes(self.layer_sizes)
        spans: dict[str, list[tuple[int, range, range]]] = {}
        for i, blk in enumerate(self.devices):
            rows = range(blk.row_offset, blk.row_offset + sizes[blk.layer])
            cols = range(blk.col_offset, blk.col_offset + sizes[blk.layer + 1])
            # a programmer made of lab instruments has the lines its config lists (checked in _check_programmer)
            kind = "" if blk.board in self.programmers else self.instruments[blk.board].kind
            lines = driver_class(kind).LINE_RANGE if kind else None
            if lines is not None:
                lo, hi = lines
                for what, span in (("rows (word lines)", rows), ("columns (bit lines)", cols)):
                    if span[0] < lo or span[-1] > hi:
                        raise ValueError(f"devices[{i}]: layer {blk.layer} needs {what} {span[0]}..{span[-1]} on "
                                         f"{blk.board}, a {kind} with lines {lo}..{hi}")
            for j, other_rows, other_cols in spans.get(blk.board, []):
                if set(rows) & set(other_rows) and set(cols) & set(other_cols):
                    raise ValueError(f"devices[{i}]: layer {blk.layer} overlaps devices[{j}] on {blk.board}")
            spans.setdefault(blk.board, []).append((i, rows, cols))

    def _check_programmer(self, name: str) -> None:
        """Its instruments exist in their roles, its limits hold every pulse and bias, its lines cover its devices."""
        prog = self.programmers[name]
        where = f"programmers.{name}"
        if prog.switch not in self.instruments or self.instruments[prog.switch].role != "switch":
            raise ValueError(f"{where}.switch: {prog.switch!r} is not a switch matrix of this lab")
        for bus in ("pulse", "sense"):
            self._ref(getattr(prog, bus).source, "smu", f"{where}.{bus}.source")
        lim = self.limits.get(name)
        if lim is None or lim.max_pulse_V is None or lim.max_pulse_width_s is None:
            raise ValueError(f"limits.{name}: a programmer needs max_pulse_V and max_pulse_width_s")
        for pol in ("set", "reset"):
            pb = getattr(self.programming, pol)
            if pb.max_V > lim.max_pulse_V or pb.max_width_s > lim.max_pulse_width_s:
                raise ValueError(f"programming.{pol}: pulses up to {pb.max_V:g} V / {pb.max_width_s:g} s "
                                 f"exceed limits.{name} ({lim.max_pulse_V:g} V / {lim.max_pulse_width_s:g} s)")
        pulse_lim = self.limits[prog.pulse.source.instrument].max_abs_V
        assert pulse_lim is not None  # every SMU has one
        if lim.max_pulse_V > pulse_lim:
            raise ValueError(f"limits.{name}.max_pulse_V: {lim.max_pulse_V:g} V is past "
                             f"limits.{prog.pulse.source.instrument}.max_abs_V ({pulse_lim:g} V), which pulses it")
        bias = {"bias_rows": 0.5, "bias_columns": 0.5} if prog.scheme == "half" else {"bias_rows": 1 / 3,
                                                                                     "bias_columns": 2 / 3}
        for bus, frac in bias.items():
            ref = getattr(prog, bus).source
            inst = self.instruments.get(ref.instrument)
            if inst is None or inst.role not in ("dac", "smu"):
                raise ValueError(f"{where}.{bus}.source: {ref.instrument!r} is not a DAC or SMU of this lab")
            held = self.limits[ref.instrument].max_abs_V
            assert held is not None  # every source has one
            if frac * lim.max_pulse_V > held:
                raise ValueError(f"{where}.{bus}.source: holding {frac * lim.max_pulse_V:.3g} V (the bias of a "
                                 f"{lim.max_pulse_V:g} V pulse) is past limits.{ref.instrument}.max_abs_V={held:g} V")
        for i, blk in enumerate(self.devices):
            if blk.board != name:
                continue
            m, k = node_sizes(self.layer_sizes)[blk.layer:blk.layer + 2]
            if blk.row_offset + m > len(prog.row_lines) or blk.col_offset + k > len(prog.column_lines):
                raise ValueError(f"devices[{i}]: rows {blk.row_offset}..{blk.row_offset + m - 1} and columns "
                                 f"{blk.col_offset}..{blk.col_offset + k - 1} need lines {where} does not list "
                                 f"({len(prog.row_lines)} rows, {len(prog.column_lines)} columns)")

    # ---- derived -----------------------------------------------------------------
    @property
    def read_layers(self) -> list[list[ReadNode]]:
        """The nodes the SMUs read, per layer: the hidden layers, then the outputs."""
        return [*self.nodes.hidden, self.nodes.outputs]

    def driver_settings(self, name: str) -> DriverSettings:
        """Instrument `name`'s own slice of this lab config: all its driver is given."""
        inst = self.instruments[name]
        return DriverSettings(name, inst, self.limits.get(name) or ChannelLimits(), self.strict,
                              self.programming.read_voltage_V,
                              self.emulator.time_scale if inst.resource.startswith("emulator:") else 1.0)

    def instruments_of(self, role: Role) -> list[str]:
        """The names of the instruments that play `role`, in lab-config order."""
        return [name for name, inst in self.instruments.items() if inst.role == role]

    @property
    def layer_sizes(self) -> list[int]:
        """Logical sizes [inputs, hidden..., outputs] this bench implements."""
        return [len(self.nodes.inputs), *(len(h) for h in self.nodes.hidden), len(self.nodes.outputs)]

    @property
    def nudge_beta(self) -> float | None:
        """Conductance mode: the beta the resistors impose, in normalized siemens."""
        if self.nudge.mode != "conductance":
            return None
        assert self.nudge.conductance_S is not None  # checked when the config loads
        return self.nudge.conductance_S / self.units.conductance_unit_S

    def check_run(self, gamma: float, layer_sizes: list[int], bias: bool, beta: float | None = None,
                  centered: bool = False) -> None:
        """Refuse a run this bench cannot carry out safely, before anything is sent."""
        hw = self.nudge_beta
        if hw is not None and beta is not None:
            if centered:
                raise ConfigError("ep.centered: nudge resistors cannot make the -beta phase; use nudge.mode current")
            if abs(beta - hw) > 1e-9 * hw:
                raise ConfigError(f"ep.beta: this bench nudges through fixed resistors of {hw:.6g} normalized S "
                                  f"(nudge.conductance_S / units.conductance_unit_S); set --beta {hw:.6g} (got {beta:g})")
        if list(layer_sizes) != self.layer_sizes:
            raise ConfigError(f"lab nodes: the bench implements {'-'.join(map(str, self.layer_sizes))}, the run asks for "
                              f"{'-'.join(map(str, layer_sizes))} (set --hidden and the dataset's --classes/--image-size)")
        if bias:
            raise ConfigError("network.bias: this bench has no bias current sources in its lab config")
        u = self.units
        v_in = gamma * u.voltage_unit_V
        for node in self.nodes.inputs:
            for side in ("plus", "minus"):
                name = getattr(node, side).instrument
                limit = self.limits[name].max_abs_V
                assert limit is not None  # every DAC has one (checked when the config loads)
                if v_in > limit:
                    raise ConfigError(f"network.input_gain: gamma={gamma:g} puts {v_in:.4g} V on {getattr(node, side)}, "
                                      f"past limits.{name}.max_abs_V={limit:g} V (largest gamma: {limit / u.voltage_unit_V:.4g})")
        drop = 2 * v_in  # every node voltage lies within +-gamma (Millman), so no device sees more than 2 gamma
        if drop > u.read_disturb_V:
            raise ConfigError(f"network.input_gain: gamma={gamma:g} allows {drop:.4g} V across a device while measuring, past "
                              f"units.read_disturb_V={u.read_disturb_V:g} V (largest gamma: "
                              f"{u.read_disturb_V / (2 * u.voltage_unit_V):.4g})")


def load_lab(path: Path) -> LabConfig:
    """Load and check a lab config; errors name the file and the field."""
    path = Path(path)
    tree = read_yaml(path, "lab config")
    try:
        return LabConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(f"{path.name}: {format_validation_error(err)}") from None
