"""The instrument-backed crossbar: the backend protocol carried out by the lab's instruments.

R = 1, and the batch is handled one sample at a time: for each sample the DACs
clamp gamma*[x, -x] (in bench volts), the nudge currents are set, the bench
settles for settle_time_s, and every hidden and output node is read N times by
its SMU (through its switch route) in one buffered query.

Three parts do the work: the bench assembly (drivers/bench.py: the instruments
opened, configured, driven by node, shut down), the nudge strategy
(drivers/nudge.py: conductance or current mode) and the programmer
(drivers/programming.py: pending sub-tolerance changes and write-verify).

Safety: any error in any step shuts every instrument down (currents and
voltages ramped to 0, outputs off, switches open) before it propagates.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import torch

from drivers.bench import LabBench, make_bench_safe, open_instrument
from drivers.lab import LabConfig, TimingConfig
from drivers.nudge import nudge_strategy
from drivers.programming import Programmed, Programmer
from drivers.session import CommandLog
from hil.core.backend import ConductanceUpdate, NodeStats, input_nodes, input_voltages, node_sizes
from hil.core.config import EPConfig, NetworkConfig

__all__ = ["InstrumentCrossbar", "make_bench_safe", "open_instrument"]

F = TypeVar("F", bound=Callable[..., Any])


def _safe(method: F) -> F:
    """Any exception: shut the bench down first, then let it propagate."""

    @functools.wraps(method)
    def wrapper(self: InstrumentCrossbar, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except BaseException as err:
            self._shutdown_after(err)
            raise

    return cast(F, wrapper)


class InstrumentCrossbar:
    """`hil.core.backend.CrossbarBackend` on a lab bench described by a LabConfig."""

    replicas = 1

    def __init__(self, lab: LabConfig, network: NetworkConfig, ep: EPConfig | None, *,
                 layer_sizes: Sequence[int], dtype: torch.dtype = torch.float32, log: CommandLog | None = None,
                 registry: Path | None = None, sleep: Callable[[float], None] = time.sleep, read_all: bool = True,
                 on_connected: Callable[[], object] | None = None):
        """lab: the bench; network, ep: the run's sections (gain, bias, device range; the nudge's beta and
        centering, which a bench with nudge resistors must match; None: no beta check); layer_sizes: [inputs,
        hidden..., outputs]."""
        if list(layer_sizes[1:-1]) != list(network.hidden):
            raise ValueError(f"network.hidden: {network.hidden} differs from the hidden sizes of layer_sizes "
                             f"{list(layer_sizes)}")
        beta = None if ep is None else ep.beta
        centered = False if ep is None else ep.centered
        lab.check_run(network.input_gain, list(layer_sizes), network.bias, beta, centered)
        p, u = lab.programming, lab.units
        self._lab = lab
        self.layer_sizes: Sequence[int] = list(layer_sizes)
        self.dtype = dtype
        self.measured_sizes = list(layer_sizes)[1:]
        self.input_gain = float(network.input_gain)
        self.vu, self.gu = u.voltage_unit_V, u.conductance_unit_S
        # The trainer's device range (normalized) must sit inside the bench's.
        g_min, g_max = network.g_min, network.g_max
        lo, hi = p.g_min_S / self.gu, p.g_max_S / self.gu
        if g_min < lo - 1e-12 or g_max is None or g_max > hi + 1e-12:
            raise ValueError(f"network.g_min/g_max: the bench's devices span [{lo:.4g}, {hi:.4g}] in normalized siemens "
                             f"(programming.g_min_S/g_max_S over units.conductance_unit_S); set --g-min {lo:.4g} "
                             f"--g-max {hi:.4g} or inside (got {g_min:g}, {g_max})")
        self.sleep = sleep
        self.x: torch.Tensor | None = None
        self.targets: torch.Tensor | None = None
        self.beta = 0.0
        self.y_free: torch.Tensor | None = None
        self.samples_measured = 0
        #: the instruments (drivers/bench.py)
        self.instruments = LabBench(lab, log, registry)
        self.nudger = nudge_strategy(self.instruments, sleep)
        try:
            self.instruments.connect()
            if on_connected is not None:  # every instrument answered: the caller records the run from here on
                on_connected()
            blocks = self.instruments.device_blocks()
            self.programmer = Programmer(blocks, p, self.gu, max(g_min, lo), min(g_max, hi), [])
            # read_all=False (resume trusting the journal): `reconcile` sets the conductances and reads back some
            weights = self.programmer.read_all(self._block_sizes) if read_all else self._empty_conductances()
            self.programmer.weights = weights
            self.programmer.pending = [torch.zeros_like(w) for w in weights]
        except BaseException as err:
            self._shutdown_after(err)
            raise

    def _shutdown_after(self, err: BaseException) -> None:
        """Make the bench safe after an error; the first error stays the one reported."""
        try:
            self.close()
        except Exception as shutdown_err:  # noqa: BLE001
            err.add_note(f"while shutting down after it: {shutdown_err}")

    @property
    def _block_sizes(self) -> list[int]:
        """Node counts per layer as the devices see them: each input drives two rows (+x and -x)."""
        return node_sizes(self.layer_sizes)

    def _empty_conductances(self) -> list[torch.Tensor]:
        sizes = self._block_sizes
        return [torch.zeros(1, sizes[l], sizes[l + 1], dtype=torch.float64) for l in range(len(sizes) - 1)]

    # ---- what callers read -----------------------------------------------------------
    @property
    def lab(self) -> LabConfig:
        """The lab config this bench runs."""
        return self._lab

    @lab.setter
    def lab(self, lab: LabConfig) -> None:
        """The same bench with other programming settings (e.g. a pulse budget for training after a larger one
        for the initial programming); they apply from the next write."""
        if lab.instruments != self._lab.instruments or lab.nodes != self._lab.nodes or lab.devices != self._lab.devices:
            raise ValueError("lab: a connected bench takes only another programming section, not other instruments, "
                             "nodes or devices")
        self._lab = lab
        self.programmer.cfg = lab.programming

    @property
    def timing(self) -> TimingConfig:
        """The bench's reading timing (NPLC, line frequency, overhead per reading)."""
        return self._lab.timing

    @property
    def voltage_unit_V(self) -> float:
        """Bench volts per normalized volt (readings come back in normalized volts)."""
        return self.vu

    @property
    def weights(self) -> list[torch.Tensor]:
        """The conductances the devices hold, as last verified (normalized S, per layer, float64)."""
        return self.programmer.weights

    @property
    def pending(self) -> list[torch.Tensor]:
        """Changes below the write tolerance not yet programmed (normalized S, per layer)."""
        return self.programmer.pending

    @property
    def on_programmed(self) -> Callable[[Programmed], None] | None:
        """Called with each device an update programs, as it is done (journaled at once)."""
        return self.programmer.on_programmed

    @on_programmed.setter
    def on_programmed(self, callback: Callable[[Programmed], None] | None) -> None:
        self.programmer.on_programmed = callback

    @property
    def stats(self) -> dict[str, int]:
        """Pulses, devices programmed and stuck (write-verify that ended off target without moving), samples
        measured: totals so far."""
        return {**self.programmer.stats, "samples_measured": self.samples_measured}

    def programming_stats(self) -> dict[str, int]:
        """Programming totals so far: pulses and stuck devices (`hil.core.backend.Programmable`)."""
        return {"pulses": self.programmer.stats["pulses"], "stuck_devices": self.programmer.stats["stuck"]}

    @property
    def log(self) -> CommandLog:
        """Every command sent and reply received (`hil.core.backend.BenchAccounting`)."""
        return self.instruments.log

    @property
    def round_trips(self) -> int:
        """VISA queries so far (DACs, SMUs, switches); writes need no reply and are not counted."""
        return self.instruments.round_trips

    @property
    def retries(self) -> int:
        """Queries retried after a transient fault (timeout, garbage, dropped connection), all instruments."""
        return self.instruments.retries

    @property
    def closed(self) -> bool:
        """Whether the bench has been shut down (after `close`, or after an error)."""
        return self.instruments.closed

    @property
    def board_transactions(self) -> int:
        """Serial command/reply pairs with the programming boards so far."""
        return self.instruments.board_transactions

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
        if self._lab.nudge_beta is not None:
            self._lab.check_run(self.input_gain, list(self.layer_sizes), False, float(beta))  # the resistors fix beta
        self.targets = targets.detach().to("cpu", torch.float64)
        self.beta = float(beta)

    def relax(self) -> None:
        """The bench settles by itself; measure() waits settle_time_s after each change."""

    def _set_inputs(self, xb: torch.Tensor) -> None:
        """DAC voltages gamma*[x, -x] in bench volts."""
        volts = input_voltages(self.input_gain * xb, self.vu).tolist()  # gamma*x, then to bench volts
        inputs = self._lab.nodes.inputs
        levels = []
        for i, node in enumerate(inputs):
            plus, minus = input_nodes(i, len(inputs))
            levels += [(node.plus, volts[plus]), (node.minus, volts[minus])]
        self.instruments.set_voltages(levels)

    def _read_nodes(self, n: int, nodes: Sequence[int] | None = None) -> torch.Tensor:
        """(n, nodes) readings in normalized volts."""
        return torch.tensor(self.instruments.read_nodes(n, nodes=nodes), dtype=torch.float64).T / self.vu

    @_safe
    def measure(self, n: int) -> torch.Tensor:
        return self._measure(n)

    @_safe
    def measure_nodes(self, n: int, nodes: Sequence[int]) -> torch.Tensor:
        """n readings of some nodes only, each sample's state set again (`hil.core.backend.SubsetMeasurable`)."""
        m = sum(self.measured_sizes)
        if not nodes or any(not 0 <= k < m for k in nodes):
            raise ValueError(f"nodes: indices in 0..{m - 1} (got {list(nodes)})")
        return self._measure(n, sorted(nodes))

    def _measure(self, n: int, nodes: Sequence[int] | None = None) -> torch.Tensor:
        if self.x is None:
            raise RuntimeError("clamp(x) must come before measure()")
        if n < 1:
            raise ValueError(f"n: readings per node must be >= 1 (got {n})")
        out = []
        n_out = self.layer_sizes[-1]
        free = self.targets is None and nodes is None
        for b in range(self.x.shape[0]):
            self._set_inputs(self.x[b])
            targets = None if self.targets is None else self.targets[b]
            y_free = None if self.y_free is None else self.y_free[b]
            self.nudger.apply(targets, y_free, self.beta, n)
            self.sleep(self._lab.timing.settle_time_s)
            out.append(self._read_nodes(n, nodes))
            self.samples_measured += 1
        self.instruments.check_after_measuring()
        readings = torch.stack(out, dim=1).unsqueeze(1)  # (n, 1, B, nodes)
        if free:
            self.y_free = readings[..., -n_out:].mean(0)[0]
        return readings.to(self.dtype)

    def node_names(self) -> list[str]:
        """`hil.core.backend.NamedNodes`: each node's layer, index and channel (and switch route), as the lab
        config names them."""
        names = []
        for step in self.instruments.read_plan:
            layer = "output" if step.layer == self.instruments.output_layer else f"hidden{step.layer + 1}"
            via = f" via {step.route}" if step.route is not None else ""
            names.append(f"{layer}[{step.node}] ({step.smu}{via})")
        return names

    @_safe
    def program(self, update: ConductanceUpdate) -> None:
        if update.biases:
            raise ValueError("update.biases: this bench has no bias current sources")
        self.programmer.program(update.dense_weights())
        self.instruments.check_boards()

    @_safe
    def load_conductances(self, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor] | None = None) -> None:
        """Program every device to the given conductances (normalized S): initialization and resume."""
        self.programmer.load(weights)

    def step_targets(self) -> list[tuple[int, np.ndarray]]:
        """Per layer, the EP update's targets after a step: W + pending (normalized S; journaled per step)."""
        return self.programmer.step_targets()

    @_safe
    def reconcile(self, expected: Sequence[torch.Tensor], pending: Sequence[torch.Tensor] | None = None,
                  devices: list[tuple[int, int, int]] | None = None) -> dict[str, float]:
        """Resume: make the chip hold `expected` (normalized S, per layer). Read back every device (devices=None)
        or only `devices` [(layer, row, col)] (trusting the journal for the rest), reprogram those off by more
        than the write-verify tolerance. Returns what was found: devices checked, off, worst offset before and
        after (S)."""
        return self.programmer.reconcile(expected, self._block_sizes, pending, devices)

    def conductances(self) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        return [w.to(self.dtype) for w in self.programmer.weights], None

    def measure_stats(self, weights: torch.Tensor) -> NodeStats:
        """The N readings of each node come back in one buffered query; reduced to mean and variance here."""
        return NodeStats.from_readings(self.measure(weights.shape[0]), weights)

    def random_state(self) -> dict[str, Any]:
        """A bench's noise is physical: nothing to restore (`hil.core.backend.Resumable`)."""
        return {}

    def load_random_state(self, state: dict[str, Any]) -> None:
        """Nothing to restore on a bench (see `random_state`)."""

    def close(self) -> None:
        """Every instrument to a safe state: currents and voltages ramped to 0, outputs off, switches open."""
        self.instruments.close()
