"""The instrument-backed crossbar: the backend protocol carried out by the lab's instruments.

R = 1, and the batch is handled one sample at a time: for each sample the DACs
clamp gamma*[x, -x] (in bench volts), the nudge currents are set, the bench
settles for settle_time_s, and every hidden and output node is read N times by
its SMU (through its switch route) in one buffered query.

Nudging, mode "conductance": where the board has nudge resistors, each output
is tied through its resistor (beta = nudge.conductance_S, fixed by hardware) to
a DAC channel set to the target; the crosspoints close for the nudged phase and
open for the free one. Two switch operations per sample, no extra readings.

Nudging, mode "current": a bench without switchable nudge resistors ties an
output to its target by sourcing a current from the output's SMU. A plain
I = beta*(t - y0) (y0: the free-phase reading) equals the conductance nudge
only while beta is small against the conductance G at the node; when it is
not, the output overshoots by (1 + beta/G). With `nudge.iterations` = 2 (the
default) the bench measures G from the response to that first current and
sources I = beta*(t - y0)/(1 + beta/G), the conductance nudge's current, at the
cost of one more reading of the outputs per sample (N readings of each output).

Programming: a conductance change is pulsed in by write-verify only once it
exceeds the write tolerance; smaller changes accumulate until they do.

Safety: any error in any step shuts every instrument down (currents and
voltages ramped to 0, outputs off, switches open) before it propagates.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import torch

from drivers.keithley707b import Keithley707B
from drivers.keithley2450 import Keithley2450
from drivers.keithley2600 import Keithley2600
from drivers.keysight_b2900 import KeysightB2900
from drivers.lab import LabConfig
from drivers.programming import write_verify
from drivers.qdac2 import QDac2
from drivers.session import CommandLog, InstrumentError, VisaSession
from drivers.signals import deferred_interrupts
from drivers.xbar_board import XbarBoard
from hil.core.backend import ConductanceUpdate, NodeStats

SMU_DRIVERS = {"keithley2450": Keithley2450, "keithley2600": Keithley2600, "keysight_b2900": KeysightB2900}


def _safe(method):
    """Any exception: shut the bench down first, then let it propagate."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except BaseException as err:
            self._shutdown_after(err)
            raise

    return wrapper


def open_instrument(lab: LabConfig, name: str, session: VisaSession):
    """The driver of one instrument of the lab config, its session open (not yet identified or reset)."""
    cfg = lab.instruments[name]
    drv = _make_driver(lab, name, session)
    # A fresh session to the same instrument: the fault policy reconnects through it (drivers/retry.py).
    if cfg.kind == "xbar_board":
        drv.reopen = lambda: XbarBoard.open_port(cfg.resource, session.registry, cfg.baudrate, cfg.timeout_ms / 1e3)
    else:
        drv.reopen = lambda: session.open(cfg.resource, timeout_ms=cfg.timeout_ms)
    return drv


def _make_driver(lab: LabConfig, name: str, session: VisaSession):
    cfg, lim = lab.instruments[name], lab.limits.get(name)
    if cfg.kind == "xbar_board":
        port = XbarBoard.open_port(cfg.resource, session.registry, cfg.baudrate, cfg.timeout_ms / 1e3)
        return XbarBoard(name, port, session.log, strict=lab.strict, max_pulse_V=lim.max_pulse_V,
                         max_pulse_width_s=lim.max_pulse_width_s, read_voltage_V=lab.programming.read_voltage_V)
    res = session.open(cfg.resource, timeout_ms=cfg.timeout_ms)
    if cfg.kind == "qdac2":
        return QDac2(name, res, session.log, strict=lab.strict, max_abs_V=lim.max_abs_V)
    if cfg.kind == "keithley707b":
        return Keithley707B(name, res, session.log, strict=lab.strict)
    return SMU_DRIVERS[cfg.kind](name, res, session.log, strict=lab.strict, max_abs_V=lim.max_abs_V,
                                 compliance_A=lim.compliance_A)


def make_bench_safe(lab: LabConfig, registry: Path | None = None, log: CommandLog | None = None) -> tuple[list[str], list[str]]:
    """Every instrument of the lab, with no reset: read what is on, ramp it to 0, off, switches open.

    For after a crash (the process that set the bench up is gone). Goes on past an instrument that fails.
    Returns (what was found on, the errors), one line each.
    """
    session = VisaSession(lab.visa_library, log or CommandLog(), registry)
    found, errors = [], []
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


class InstrumentCrossbar:
    """`hil.core.backend.CrossbarBackend` on a lab bench described by a LabConfig."""

    replicas = 1

    def __init__(self, lab: LabConfig, *, input_gain: float, layer_sizes, bias: bool = False,
                 g_min: float = 0.0, g_max: float | None = None, beta: float | None = None, centered: bool = False,
                 dtype: torch.dtype = torch.float32, log: CommandLog | None = None,
                 registry: Path | None = None, sleep=time.sleep, read_all: bool = True):
        lab.check_run(input_gain, list(layer_sizes), bias, beta, centered)
        p, u = lab.programming, lab.units
        self.lab = lab
        self.layer_sizes = list(layer_sizes)
        self.dtype = dtype
        self.measured_sizes = self.layer_sizes[1:]
        self.input_gain = float(input_gain)
        self.vu, self.gu = u.voltage_unit_V, u.conductance_unit_S
        # The trainer's device range (normalized) must sit inside the bench's.
        lo, hi = p.g_min_S / self.gu, p.g_max_S / self.gu
        if g_min < lo - 1e-12 or g_max is None or g_max > hi + 1e-12:
            raise ValueError(f"network.g_min/g_max: the bench's devices span [{lo:.4g}, {hi:.4g}] in normalized siemens "
                             f"(programming.g_min_S/g_max_S over units.conductance_unit_S); set --g-min {lo:.4g} "
                             f"--g-max {hi:.4g} or inside (got {g_min:g}, {g_max})")
        self.g_lo, self.g_hi = max(g_min, lo), min(g_max, hi)
        self.tol = p.tolerance_S / self.gu
        self.sleep = sleep
        self.closed = False
        self.session = VisaSession(lab.visa_library, log or CommandLog(), registry)
        self.log = self.session.log
        self.inst: dict[str, object] = {}
        self.boards: dict[str, XbarBoard] = {}
        self.x: torch.Tensor | None = None
        self.targets: torch.Tensor | None = None
        self.beta = 0.0
        self.y_free: torch.Tensor | None = None
        self.nudge_closed = False  # conductance mode: the nudge resistors' crosspoints
        self.stats = {"pulses": 0, "programmed": 0, "stuck": 0, "samples_measured": 0}
        #: called with (layer, row, col, target, verified, pulses) in normalized S as each device is programmed
        self.on_programmed = None
        try:
            self._connect()
            # read_all=False (resume trusting the journal): `reconcile` sets the conductances and reads back some
            self.weights = self._read_all_conductances() if read_all else self._empty_conductances()
            self.pending = [torch.zeros_like(w) for w in self.weights]
        except BaseException as err:
            self._shutdown_after(err)
            raise

    def _shutdown_after(self, err: BaseException) -> None:
        """Make the bench safe after an error; the first error stays the one reported."""
        try:
            self.close()
        except Exception as shutdown_err:  # noqa: BLE001
            if hasattr(err, "add_note"):
                err.add_note(f"while shutting down after it: {shutdown_err}")

    # ---- connection ------------------------------------------------------------------
    def _connect(self) -> None:
        lab, t = self.lab, self.lab.timing
        for name in lab.instruments:
            drv = open_instrument(lab, name, self.session)
            if isinstance(drv, XbarBoard):
                self.boards[name] = drv
            try:
                drv.connect()
            except BaseException:
                drv.close()  # not identified or not reset: not ours to drive, not even to shut down
                raise
            self.inst[name] = drv
        dac_channels = [ref for node in lab.nodes.inputs for ref in (node.plus, node.minus)]
        if lab.nudge.mode == "conductance":
            dac_channels += [node.nudge_source for node in lab.nodes.outputs]
        for ref in dac_channels:
            name, ch = ref.split("/")
            self.inst[name].configure_channel(ch)
        smu_channels = {tuple(n.read.split("/")) for layer in [*lab.nodes.hidden, lab.nodes.outputs] for n in layer}
        for name, ch in sorted(smu_channels):
            self.inst[name].configure_voltmeter(ch, t.nplc)
        self.smu_channels = sorted(smu_channels)
        self.read_plan = []  # (layer, node, smu, channel, switch, route)
        for l, layer in enumerate([*lab.nodes.hidden, lab.nodes.outputs]):
            for i, node in enumerate(layer):
                smu, ch = node.read.split("/")
                sw, route = node.route.split("/", 1) if node.route else (None, None)
                self.read_plan.append((l, i, smu, ch, sw, route))

    def _device_blocks(self):
        for blk in sorted(self.lab.devices, key=lambda b: b.layer):
            yield blk.layer, self.boards[blk.board], blk.row_offset, blk.col_offset

    def _empty_conductances(self) -> list[torch.Tensor]:
        sizes = [2 * self.layer_sizes[0], *self.layer_sizes[1:]]
        return [torch.zeros(1, sizes[l], sizes[l + 1], dtype=torch.float64) for l, *_ in self._device_blocks()]

    def _read_all_conductances(self) -> list[torch.Tensor]:
        sizes = [2 * self.layer_sizes[0], *self.layer_sizes[1:]]
        out = []
        for layer, board, r0, c0 in self._device_blocks():
            m, k = sizes[layer], sizes[layer + 1]
            g = torch.tensor([[board.read_conductance(r0 + i, c0 + j) for j in range(k)] for i in range(m)],
                             dtype=torch.float64)
            out.append((g / self.gu).unsqueeze(0))
        return out

    # ---- the backend protocol ----------------------------------------------------------
    @_safe
    def clamp(self, x: torch.Tensor) -> None:
        x = x.detach().to("cpu", torch.float64)
        if x.dim() == 3:
            x = x[0]
        if x.shape[-1] != self.layer_sizes[0]:
            raise ValueError(f"x: expected {self.layer_sizes[0]} inputs per sample, got {x.shape[-1]}")
        if not bool(((x >= 0) & (x <= 1)).all()):
            raise ValueError("x: bench inputs must lie in [0, 1] (they set DAC voltages up to gamma)")
        self.x = x
        self.y_free = None

    @_safe
    def nudge(self, targets: torch.Tensor | None, beta: float = 0.0) -> None:
        if targets is None:
            self.targets, self.beta = None, 0.0
            return
        if self.y_free is None:
            raise RuntimeError("nudge: measure the free phase first (the current nudge needs its output readings)")
        if self.lab.nudge_beta is not None:
            self.lab.check_run(self.input_gain, self.layer_sizes, False, float(beta))  # the resistors fix beta
        self.targets = targets.detach().to("cpu", torch.float64)
        self.beta = float(beta)

    def relax(self) -> None:
        """The bench settles by itself; measure() waits settle_time_s after each change."""

    def _set_inputs(self, xb: torch.Tensor) -> None:
        """DAC voltages gamma*[x, -x] in bench volts, then *OPC? on each DAC that changed (readings must not overtake)."""
        changed = set()
        for i, node in enumerate(self.lab.nodes.inputs):
            v = float(self.input_gain * xb[i] * self.vu)
            for ref, sign in ((node.plus, 1.0), (node.minus, -1.0)):
                name, ch = ref.split("/")
                dac = self.inst[name]
                if dac.level_V.get(int(ch)) != sign * v:
                    dac.set_voltage(ch, sign * v)
                    changed.add(name)
        for name in sorted(changed):
            self.inst[name].sync()

    def _set_nudge(self, currents: list[float] | None) -> None:
        """Output currents in bench amperes (None: 0 A), then *OPC? on each SMU that changed."""
        changed = set()
        for i, node in enumerate(self.lab.nodes.outputs):
            name, ch = node.nudge.split("/")
            amps = 0.0 if currents is None else currents[i]
            if self.inst[name].level_A.get(ch, 0.0) != amps:
                self.inst[name].source_current(ch, amps)
                changed.add(name)
        for name in sorted(changed):
            self.inst[name].sync()

    def _set_nudge_resistors(self, targets: torch.Tensor | None) -> None:
        """Conductance mode: target voltages on the nudge sources, then the resistors' crosspoints closed (None: opened).

        A crosspoint is only switched when its state changes; the sources are set (and synced) before closing.
        """
        outputs = self.lab.nodes.outputs
        if targets is not None:
            changed = set()
            for node, t in zip(outputs, targets.tolist()):
                name, ch = node.nudge_source.split("/")
                if self.inst[name].level_V.get(int(ch)) != t * self.vu:
                    self.inst[name].set_voltage(ch, t * self.vu)
                    changed.add(name)
            for name in sorted(changed):
                self.inst[name].sync()
        want_closed = targets is not None
        if self.nudge_closed != want_closed:
            by_switch: dict[str, list[str]] = {}
            for node in outputs:
                sw, cross = node.nudge_route.split("/", 1)
                by_switch.setdefault(sw, []).append(cross)
            for sw, crosses in by_switch.items():
                self.inst[sw].set_crosspoints(crosses, closed=want_closed)
            self.nudge_closed = want_closed

    def _nudge_currents(self, b: int, n: int) -> torch.Tensor:
        """Currents (normalized A) that tie the outputs to their targets as a conductance beta would.

        A conductance nudge draws I = beta*(t - y_beta), with y_beta the nudged output. Near the free state the
        output responds linearly, y = y0 + I/G (G: the conductance the node sees), so I = beta*(t - y0)/(1 + beta/G).
        G is measured: inject I1 = beta*(t - y0), read the outputs once more (N readings), G = I1/(y1 - y0).
        Each further iteration re-estimates G from the response to the latest current.
        """
        t, y0 = self.targets[b], self.y_free[b]
        current = self.beta * (t - y0)
        scale = self.gu * self.vu
        for _ in range(self.lab.nudge.iterations - 1):
            self._set_nudge((current * scale).tolist())
            self.sleep(self.lab.timing.settle_time_s)
            dy = self._read_nodes(n, only_outputs=True).mean(0) - y0
            g_eff = torch.where(dy.abs() > 1e-12, current / dy, torch.full_like(dy, math.inf))
            # Only a positive, finite response makes physical sense; otherwise keep the plain current.
            ok = torch.isfinite(g_eff) & (g_eff > 0)
            current = torch.where(ok, self.beta * (t - y0) / (1 + self.beta / g_eff.where(ok, torch.ones_like(g_eff))),
                                  current)
        return current

    def _read_nodes(self, n: int, only_outputs: bool = False) -> torch.Tensor:
        """(n, nodes) readings in normalized volts."""
        cols = []
        for l, i, smu, ch, sw, route in self.read_plan:
            if only_outputs and l != len(self.layer_sizes) - 2:
                continue
            if sw:
                self.inst[sw].route(route)
            cols.append(self.inst[smu].read_voltages(ch, n))
        return torch.tensor(cols, dtype=torch.float64).T / self.vu

    @_safe
    def measure(self, n: int) -> torch.Tensor:
        if self.x is None:
            raise RuntimeError("clamp(x) must come before measure()")
        if n < 1:
            raise ValueError(f"n: readings per node must be >= 1 (got {n})")
        out = []
        n_out = self.layer_sizes[-1]
        scale = self.gu * self.vu  # normalized A -> bench A
        free = self.targets is None
        for b in range(self.x.shape[0]):
            self._set_inputs(self.x[b])
            if self.lab.nudge.mode == "conductance":
                self._set_nudge_resistors(None if free else self.targets[b])
            elif free:
                self._set_nudge(None)
            else:
                self._set_nudge((self._nudge_currents(b, n) * scale).tolist())
            self.sleep(self.lab.timing.settle_time_s)
            reads = self._read_nodes(n)
            out.append(reads)
            self.stats["samples_measured"] += 1
        self._check_after_measuring()
        readings = torch.stack(out, dim=1).unsqueeze(1)  # (n, 1, B, nodes)
        if free:
            self.y_free = readings[..., -n_out:].mean(0)[0]
        return readings.to(self.dtype)

    def _check_after_measuring(self) -> None:
        """Before readings are used: no SMU read in compliance, and no error queued by a write since the last check
        (one query per SMU channel read, one per instrument written to)."""
        for name, ch in self.smu_channels:
            self.inst[name].check_compliance(ch)
        for name, drv in self.inst.items():
            if drv.writes_unchecked and name not in self.boards:
                drv.check_errors()

    @_safe
    def program(self, update: ConductanceUpdate) -> None:
        if update.biases:
            raise ValueError("update.biases: this bench has no bias current sources")
        for layer, (delta, (lyr, board, r0, c0)) in enumerate(zip(update.dense_weights(), self._device_blocks())):
            d = delta.detach().to("cpu", torch.float64)
            if not bool(torch.isfinite(d).all()):
                raise ValueError(f"update layer {layer}: NaN or Inf; nothing programmed")
            W, pend = self.weights[lyr], self.pending[lyr]
            pend += d
            # Kept inside the device range: the EP rule's bound, not a safety clamp.
            target = torch.clamp(W + pend, self.g_lo, self.g_hi)
            due = (target - W).abs() >= self.tol
            with deferred_interrupts() as signals:  # a signal finishes (and journals) the device, then stops
                self._program_due(lyr, board, r0, c0, W, pend, target, due, signals)
        for board in self.boards.values():
            if board.writes_unchecked:  # pulses since the last ERR?
                board.check_errors("programming")

    def _program_due(self, lyr, board, r0, c0, W, pend, target, due, signals) -> None:
        """Write-verify each device due in one layer; `signals.check()` between devices."""
        for _, i, j in torch.nonzero(due[0:1]).tolist():
            res = write_verify(board, r0 + i, c0 + j, float(target[0, i, j]) * self.gu, self.lab.programming,
                               g_now_S=float(W[0, i, j]) * self.gu)
            W[0, i, j] = res.final_S / self.gu
            pend[0, i, j] = 0.0
            self.stats["pulses"] += res.pulses
            self.stats["programmed"] += 1
            self.stats["stuck"] += int(res.stuck)
            if self.on_programmed is not None:  # journaled at once: a stop mid-step keeps what was programmed
                self.on_programmed((lyr, i, j, float(target[0, i, j]), float(W[0, i, j]), res.pulses))
            signals.check()

    @_safe
    def load_conductances(self, weights, biases=None) -> None:
        """Program every device to the given conductances (normalized S): initialization and resume."""
        for lyr, board, r0, c0 in self._device_blocks():
            target = weights[lyr].detach().to("cpu", torch.float64).clamp(self.g_lo, self.g_hi)
            W = self.weights[lyr]
            if tuple(target.shape) != tuple(W.shape):
                raise ValueError(f"weights[{lyr}]: shape {tuple(target.shape)} does not match the bench {tuple(W.shape)}")
            for i in range(W.shape[1]):
                for j in range(W.shape[2]):
                    res = write_verify(board, r0 + i, c0 + j, float(target[0, i, j]) * self.gu, self.lab.programming,
                                       g_now_S=float(W[0, i, j]) * self.gu)
                    W[0, i, j] = res.final_S / self.gu
                    self.stats["pulses"] += res.pulses
                    self.stats["stuck"] += int(res.stuck)
            self.pending[lyr].zero_()

    def step_targets(self) -> list[tuple[int, torch.Tensor]]:
        """Per layer, the EP update's targets after a step: W + pending (normalized S; journaled per step)."""
        return [(l, (self.weights[l] + self.pending[l]).flatten().numpy().copy()) for l in range(len(self.weights))]

    @_safe
    def reconcile(self, expected, pending=None, devices=None) -> dict:
        """Resume: make the chip hold `expected` (normalized S, per layer). Read back every device (devices=None)
        or only `devices` [(layer, row, col)] (trusting the journal for the rest), reprogram those off by more
        than the write-verify tolerance. Returns what was found: devices checked, off, worst offset before and
        after (S)."""
        found = {"checked": 0, "off": 0, "reprogrammed": 0, "max_off_S": 0.0, "max_after_S": 0.0}
        blocks = {lyr: (board, r0, c0) for lyr, board, r0, c0 in self._device_blocks()}
        if devices is None:
            self.weights = self._read_all_conductances()
            devices = [(l, i, j) for l, w in enumerate(self.weights) for i in range(w.shape[1]) for j in range(w.shape[2])]
        else:
            self.weights = [e.detach().to("cpu", torch.float64).clone() for e in expected]
            for l, i, j in devices:
                board, r0, c0 = blocks[l]
                self.weights[l][0, i, j] = board.read_conductance(r0 + i, c0 + j) / self.gu
        for l, i, j in devices:
            want, got = float(expected[l][0, i, j]), float(self.weights[l][0, i, j])
            found["checked"] += 1
            found["max_off_S"] = max(found["max_off_S"], abs(got - want) * self.gu)
            if abs(got - want) > self.tol:
                found["off"] += 1
                board, r0, c0 = blocks[l]
                target = min(max(want, self.g_lo), self.g_hi)
                res = write_verify(board, r0 + i, c0 + j, target * self.gu, self.lab.programming, g_now_S=got * self.gu)
                self.weights[l][0, i, j] = res.final_S / self.gu
                self.stats["pulses"] += res.pulses
                found["reprogrammed"] += 1
            found["max_after_S"] = max(found["max_after_S"], abs(float(self.weights[l][0, i, j]) - want) * self.gu)
        self.pending = ([p.detach().to("cpu", torch.float64).clone() for p in pending] if pending is not None
                        else [torch.zeros_like(w) for w in self.weights])
        return found

    def conductances(self):
        return [w.to(self.dtype) for w in self.weights], None

    def measure_stats(self, weights: torch.Tensor) -> NodeStats:
        """The N readings of each node come back in one buffered query; reduced to mean and variance here."""
        return NodeStats.from_readings(self.measure(weights.shape[0]), weights)

    def random_state(self) -> dict:
        """A bench's noise is physical: nothing to restore (`hil.core.backend.Resumable`)."""
        return {}

    def load_random_state(self, state: dict) -> None:
        """Nothing to restore on a bench (see `random_state`)."""

    @property
    def round_trips(self) -> int:
        """VISA queries so far (DACs, SMUs, switches); writes need no reply and are not counted."""
        return sum(d.queries for name, d in self.inst.items() if name not in self.boards)

    @property
    def retries(self) -> int:
        """Queries retried after a transient fault (timeout, garbage, dropped connection), all instruments."""
        return sum(d.retries for d in self.inst.values())

    @property
    def board_transactions(self) -> int:
        """Serial command/reply pairs with the programming boards so far."""
        return sum(b.queries for b in self.boards.values())

    def close(self) -> None:
        """Every instrument to a safe state: currents and voltages ramped to 0, outputs off, switches open."""
        if self.closed:
            return
        self.closed = True
        errors = []
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

