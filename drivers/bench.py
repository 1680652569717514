"""Bench assembly: the lab config's instruments opened, connected and configured, read and driven by node, and
brought to a safe state at the end (or after a crash, `make_bench_safe`).

Which driver opens an instrument comes from its kind (drivers/registry.py); what the bench asks of it from its
role (drivers/roles.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from drivers.lab import ChannelRef, LabConfig
from drivers.programming import BoardBlock
from drivers.pulse_programmer import SmuPulseProgrammer
from drivers.registry import driver_class
from drivers.roles import ROLE_PROTOCOLS, BoardDriver, DacDriver, SmuDriver, SwitchDriver
from drivers.session import CommandLog, Instrument, InstrumentError, VisaSession, resolve_resource


class ReadStep(NamedTuple):
    """One node read: its layer among the read layers (hidden..., outputs), its index, its SMU channel and the
    crosspoint routed to it first (None: wired directly)."""

    layer: int
    node: int
    smu: ChannelRef
    route: ChannelRef | None


def open_instrument(lab: LabConfig, name: str, session: VisaSession) -> Instrument:
    """The driver of one instrument of the lab config, its connection open (not yet identified or reset)."""
    drv = driver_class(lab.instruments[name].kind).from_settings(lab.driver_settings(name), session)
    role = lab.instruments[name].role
    if not isinstance(drv, ROLE_PROTOCOLS[role]):
        drv.close()
        raise TypeError(f"{type(drv).__qualname__} declares ROLE {role!r} but lacks what a {role} must do "
                        f"({ROLE_PROTOCOLS[role].__name__}, drivers/roles.py)")
    return drv


def make_bench_safe(lab: LabConfig, registry: Path | None = None,
                    log: CommandLog | None = None) -> tuple[list[str], list[str]]:
    """Every instrument of the lab, with no reset: read what is on, ramp it to 0, off, switches open.

    For after a crash (the process that set the bench up is gone). Goes on past an instrument that fails.
    Returns (what was found on, the errors), one line each.
    """
    emulated = [c.resource for c in lab.instruments.values() if c.resource.startswith("emulator:")]
    if emulated:  # a missing emulator registry is one error, not one per instrument
        resolve_resource(emulated[0], registry)
    session = VisaSession(lab.visa_library, log or CommandLog(), registry)
    found: list[str] = []
    errors: list[str] = []
    try:
        for name in lab.instruments:
            drv = None
            try:
                drv = open_instrument(lab, name, session)
                drv.identify()
                try:
                    found += drv.make_safe()
                except Exception as err:  # noqa: BLE001 - its state unread: still 0 and off, without a ramp
                    drv.shutdown()
                    found.append(f"{name}: state unreadable ({err}); set to 0 and off without a ramp")
            except Exception as err:  # noqa: BLE001 - make the others safe too, then report
                errors.append(f"{name}: {err}")
            finally:
                if drv is not None:
                    drv.close()
    finally:
        session.close()
    return found, errors


class LabBench:
    """The lab's instruments, connected and configured (bench units: V, A, S); `close` makes them safe."""

    def __init__(self, lab: LabConfig, log: CommandLog | None = None, registry: Path | None = None):
        self.lab = lab
        self.closed = False
        self.session = VisaSession(lab.visa_library, log or CommandLog(), registry)
        self.inst: dict[str, Instrument] = {}
        self.dacs: dict[str, DacDriver] = {}
        self.smus: dict[str, SmuDriver] = {}
        self.switches: dict[str, SwitchDriver] = {}
        self.boards: dict[str, BoardDriver] = {}
        #: programmers made of the lab's instruments (lab config `programmers:`); each is one of the boards too
        self.programmers: dict[str, SmuPulseProgrammer] = {}
        reads = lab.read_layers
        #: every node the SMUs read, in order: hidden layers, then outputs
        self.read_plan = [ReadStep(l, i, node.read, node.route) for l, layer in enumerate(reads)
                          for i, node in enumerate(layer)]
        #: the SMU channels that read nodes (each checked for compliance after measuring)
        self.smu_channels = sorted({step.smu for step in self.read_plan})
        self.output_layer = len(reads) - 1

    @property
    def log(self) -> CommandLog:
        return self.session.log

    def connect(self) -> None:
        """Open, identify and reset every instrument; configure the DAC channels and the SMUs' voltmeters."""
        lab = self.lab
        role_dicts: dict[str, dict] = {"dac": self.dacs, "smu": self.smus, "switch": self.switches,
                                       "board": self.boards}
        for name in lab.instruments:
            drv = open_instrument(lab, name, self.session)
            try:
                drv.connect()
            except BaseException:
                drv.close()  # not identified or not reset: not ours to drive, not even to shut down
                raise
            self.inst[name] = drv
            role_dicts[lab.instruments[name].role][name] = drv
        dac_channels = [ref for node in lab.nodes.inputs for ref in (node.plus, node.minus)]
        if lab.nudge.mode == "conductance":
            dac_channels += [node.nudge_source for node in lab.nodes.outputs if node.nudge_source]
        for ref in dac_channels:
            self.dacs[ref.instrument].configure_channel(ref.channel)
        for ref in self.smu_channels:
            self.smus[ref.instrument].configure_voltmeter(ref.channel, lab.timing.nplc)
        for name in lab.programmers:
            prog = SmuPulseProgrammer(lab, name, self.inst)
            self.programmers[name] = prog
            self.boards[name] = prog
            prog.connect()

    def device_blocks(self) -> list[BoardBlock]:
        """Each layer's block of devices, by layer."""
        return [BoardBlock(blk.layer, self.boards[blk.board], blk.row_offset, blk.col_offset)
                for blk in sorted(self.lab.devices, key=lambda b: b.layer)]

    # ---- driving and reading nodes (bench units) ---------------------------------------------
    def set_voltages(self, levels: list[tuple[ChannelRef, float]]) -> None:
        """DAC channels to these voltages, V; then *OPC? on each DAC that changed (readings must not overtake).
        A channel already at its level is not written again."""
        changed = set()
        for ref, volts in levels:
            dac = self.dacs[ref.instrument]
            if dac.voltage(ref.channel) != volts:
                dac.set_voltage(ref.channel, volts)
                changed.add(ref.instrument)
        for name in sorted(changed):
            self.dacs[name].sync()

    def set_currents(self, levels: list[tuple[ChannelRef, float]]) -> None:
        """SMU channels to these currents, A; then *OPC? on each SMU that changed."""
        changed = set()
        for ref, amps in levels:
            smu = self.smus[ref.instrument]
            if smu.current(ref.channel) != amps:
                smu.source_current(ref.channel, amps)
                changed.add(ref.instrument)
        for name in sorted(changed):
            self.smus[name].sync()

    def set_crosspoints(self, refs: list[ChannelRef], closed: bool) -> None:
        """Close (or open) these crosspoints, one command batch per switch."""
        by_switch: dict[str, list[str]] = {}
        for ref in refs:
            by_switch.setdefault(ref.instrument, []).append(ref.channel)
        for sw, crosses in by_switch.items():
            self.switches[sw].set_crosspoints(crosses, closed=closed)

    def read_nodes(self, n: int, only_outputs: bool = False, nodes: Sequence[int] | None = None) -> list[list[float]]:
        """n readings of every node (or only the outputs, or only `nodes`: indices into read_plan), per node, V."""
        cols = []
        chosen = None if nodes is None else set(nodes)
        for k, step in enumerate(self.read_plan):
            if only_outputs and step.layer != self.output_layer:
                continue
            if chosen is not None and k not in chosen:
                continue
            if step.route is not None:
                self.switches[step.route.instrument].route(step.route.channel)
            cols.append(self.smus[step.smu.instrument].read_voltages(step.smu.channel, n))
        return cols

    def check_after_measuring(self) -> None:
        """Before readings are used: no SMU read in compliance, and no error queued by a write since the last check
        (one query per SMU channel read, one per instrument written to)."""
        for ref in self.smu_channels:
            self.smus[ref.instrument].check_compliance(ref.channel)
        for name, drv in self.inst.items():
            if drv.writes_unchecked and name not in self.boards:
                drv.check_errors()

    def check_boards(self) -> None:
        """Pulses since the last ERR? of each board: read its error queue."""
        for board in self.boards.values():
            if board.writes_unchecked:
                board.check_errors("programming")

    # ---- accounting ------------------------------------------------------------------------------
    @property
    def round_trips(self) -> int:
        """VISA queries so far (DACs, SMUs, switches); writes need no reply and are not counted."""
        return sum(d.queries for name, d in self.inst.items() if name not in self.boards)

    @property
    def programmer_transactions(self) -> int:
        """Pulses and conductance reads by the programmers made of lab instruments (their VISA round trips are
        in round_trips)."""
        return sum(p.queries for p in self.programmers.values())

    @property
    def retries(self) -> int:
        """Queries retried after a transient fault (timeout, garbage, dropped connection), all instruments."""
        return sum(d.retries for d in self.inst.values())

    @property
    def board_transactions(self) -> int:
        """Serial command/reply pairs with the programming boards so far."""
        return (sum(self.inst[name].queries for name in self.boards if name in self.inst)
                + self.programmer_transactions)

    # ---- shutdown --------------------------------------------------------------------------------
    def close(self) -> None:
        """Every instrument to a safe state: currents and voltages ramped to 0, outputs off, switches open."""
        if self.closed:
            return
        self.closed = True
        errors = []
        for name, prog in self.programmers.items():  # relays open before the sources go down
            try:
                prog.shutdown()
            except Exception as err:  # noqa: BLE001 - keep making the other instruments safe
                errors.append(f"{name}: {err}")
        for name, drv in self.inst.items():
            try:
                drv.shutdown()
            except Exception as err:  # noqa: BLE001 - keep making the other instruments safe
                errors.append(f"{name}: {err}")
        for drv in self.inst.values():
            drv.close()
        self.session.close()
        if errors:
            raise InstrumentError("shutdown incomplete: " + "; ".join(errors))

