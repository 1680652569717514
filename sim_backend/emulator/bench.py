"""The physics behind the emulated instruments: one crossbar, wired as the lab config says."""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

from drivers.lab import ChannelRef
from hil.core.backend import input_nodes, node_sizes
from hil.core.devices import resolve_device_model
from hil.core.seeds import seed_stream
from sim_backend.crossbar import SimCrossbar
from sim_backend.devices import DeviceArray
from sim_backend.emulator.array import CrossbarArray
from sim_backend.emulator.sources import Source, Unknown, solve


class EmulatedBench:
    """Node voltages, injected currents and device conductances of one emulated chip (bench units: V, A, S)."""

    def __init__(self, lab):
        self.lab = lab
        self.lock = threading.RLock()
        u, em = lab.units, lab.emulator
        self.vu, self.gu = u.voltage_unit_V, u.conductance_unit_S
        sizes = lab.layer_sizes
        self.net = SimCrossbar.from_settings(sizes, input_gain=1.0, seeds=[em.seed], bias=True, sweeps=em.settle_sweeps,
                               warm_start=True, dtype=torch.float64)
        self.rng = np.random.default_rng(seed_stream(em.seed, "emulator_chip"))
        # Devices start spread over the lower half of the device range (a fresh chip).
        p = lab.programming
        for W in self.net.weights:
            W.copy_(torch.from_numpy(self.rng.uniform(p.g_min_S, 0.5 * p.g_max_S, size=tuple(W.shape))) / self.gu)
        self._use_device_model(lab)
        self.net.load_conductances(self.net.weights, self.net.biases)
        self.v_in = torch.zeros(1, node_sizes(sizes)[0], dtype=torch.float64)
        self.dirty = True
        # Wiring from the lab config.
        self.dac_to_input: dict[tuple[str, str], int] = {}
        for i, node in enumerate(lab.nodes.inputs):
            self.dac_to_input[node.plus], self.dac_to_input[node.minus] = input_nodes(i, sizes[0])
        self.direct: dict[tuple[str, str], tuple[int, int]] = {}   # smu channel -> (layer, node), no route
        self.routed: dict[tuple[str, str], dict[tuple[str, str], tuple[int, int]]] = {}  # smu -> (switch, xpoint) -> node
        layers = [*lab.nodes.hidden, lab.nodes.outputs]
        self.node_noise_V: dict[tuple[int, int], float] = {}  # emulator.channel_noise_V, by the node it reaches
        for l, layer in enumerate(layers):
            for i, node in enumerate(layer):
                for ref in (node.read, node.route):
                    if ref is not None and str(ref) in lab.emulator.channel_noise_V:
                        self.node_noise_V[(l, i)] = lab.emulator.channel_noise_V[str(ref)]
                smu = node.read
                if node.route:
                    self.routed.setdefault(smu, {})[node.route] = (l, i)
                else:
                    self.direct[smu] = (l, i)
        self.closed_routes: dict[str, set[str]] = {}   # switch name -> closed crosspoints
        self.dac_levels: dict[tuple[str, str], float] = {}
        # Nudge resistors (conductance mode): output i -> (its DAC source, its crosspoint), resistor in normalized S.
        self.nudge_wiring = [(n.nudge_source, n.nudge_route)
                             for n in lab.nodes.outputs] if lab.nudge.mode == "conductance" else []
        self.nudge_g = (lab.nudge.conductance_S or 0.0) / self.gu
        self.sources: dict[tuple[str, str], Source] = {}
        self.fault_currents: dict[tuple[str, str], float] = {}   # injected faults (faults.py), A
        self.compliance: dict[tuple[str, str], bool] = {}
        self.line_frequency_hz = lab.timing.line_frequency_hz
        self.injected: dict[tuple[int, int], float] = {}   # (layer, node) -> A, as solved
        self.solved: dict[tuple[str, str], Unknown] = {}   # SMU channel -> its solved source
        self.floating: dict[tuple[str, str], Source] = {}  # SMU channels on, touching no node
        self.devices: dict[tuple[str, int, int], tuple[int, int, int]] = {}
        for blk in lab.devices:
            m, k = self.net.weights[blk.layer].shape[1:]
            for i in range(m):
                for j in range(k):
                    self.devices[(blk.board, blk.row_offset + i, blk.col_offset + j)] = (blk.layer, i, j)
        self.read_voltage = 0.0
        self.time_s = 0.0
        #: programmers made of lab instruments: their crossbar arrays, and which SMU channel sits on which array
        self.arrays = {name: CrossbarArray(self, name, cfg) for name, cfg in lab.programmers.items()}
        self.array_of: dict[tuple[str, str], CrossbarArray] = {
            bus.source: arr for arr in self.arrays.values() for bus in arr.cfg.buses.values()}
        self.array_switches = {arr.cfg.switch for arr in self.arrays.values()}

    def _use_device_model(self, lab) -> None:
        """emulator.device_model: the simulator's pulsed devices (sim_backend/devices) on [g_min_S, g_max_S]."""
        self.device_arrays: list[DeviceArray] | None = None
        if lab.emulator.device_model is None:
            return
        p = lab.programming
        model = resolve_device_model(lab.emulator.device_model)
        self.device_arrays = [DeviceArray(model, W.shape, g_min=p.g_min_S, g_max=p.g_max_S, seeds=[lab.emulator.seed],
                                          layer=layer, dtype=torch.float64) for layer, W in enumerate(self.net.weights)]
        self.device_held_S = []  # what each device holds, S (what it conducts adds write noise)
        for W, arr in zip(self.net.weights, self.device_arrays):
            g = arr.initial_state(W * self.gu)
            W.copy_(g / self.gu)
            self.device_held_S.append(g)
        self.device_gen = torch.Generator().manual_seed(seed_stream(lab.emulator.seed, "emulator_devices"))

    # ---- wiring ----------------------------------------------------------------
    def nodes_of(self, smu: str, ch: str) -> list[tuple[int, int]]:
        """Nodes this SMU channel touches now: its direct node, or those routed to it by closed crosspoints."""
        key = (smu, ch)
        if key in self.direct:
            return [self.direct[key]]
        return [node for (switch, xpoint), node in self.routed.get(key, {}).items()
                if xpoint in self.closed_routes.get(switch, ())]

    def set_dac(self, dac: str, ch: str, volts: float) -> None:
        with self.lock:
            self.dac_levels[(dac, ch)] = volts
            self.dirty = self.dirty or (dac, ch) not in self.array_of  # a programmer's bias touches no node
            idx = self.dac_to_input.get((dac, ch))
            if idx is not None:
                self.v_in[0, idx] = volts / self.vu
                self.dirty = True

    def set_source(self, smu: str, ch: str, func: str, level: float, limit: float, on: bool) -> None:
        """What an SMU channel forces: func "VOLT" (level V, limit A) or "CURR" (level A, limit V); off: nothing."""
        with self.lock:
            self.sources[(smu, ch)] = Source(func, level, limit, on)
            self.dirty = self.dirty or (smu, ch) not in self.array_of  # a programmer's SMU touches no node

    def set_fault_current(self, smu: str, ch: str, amps: float) -> None:
        """A fault (a shorted or broken device) forces `amps` into the node this SMU channel touches."""
        with self.lock:
            self.fault_currents[(smu, ch)] = amps
            self.dirty = True

    def clear_fault_currents(self, smu: str) -> None:
        with self.lock:
            for key in [k for k in self.fault_currents if k[0] == smu]:
                del self.fault_currents[key]
            self.dirty = True

    def in_compliance(self, smu: str, ch: str) -> bool:
        with self.lock:
            self._settle()
            return self.compliance.get((smu, ch), False)

    def set_routes(self, switch: str, closed: set[str]) -> None:
        with self.lock:
            self.closed_routes[switch] = set(closed)
            self.dirty = self.dirty or switch not in self.array_switches  # a programmer's matrix routes no node

    # ---- physics -----------------------------------------------------------------
    def _relax(self) -> None:
        """Relax the network with the injected currents of self.injected (A) and the inputs and nudges."""
        for b in self.net.biases:
            b.zero_()
        scale = self.gu * self.vu  # normalized current -> A
        for (layer, node), amps in self.injected.items():
            self.net.biases[layer][0, node] += amps / scale
        self.net.clamp_voltages(self.v_in)
        if self.nudge_wiring:
            beta = torch.tensor([self.nudge_g if route[1] in self.closed_routes.get(route[0], set()) else 0.0
                                 for _, route in self.nudge_wiring], dtype=torch.float64)
            target = torch.tensor([[self.dac_levels.get(src, 0.0) / self.vu for src, _ in self.nudge_wiring]],
                                  dtype=torch.float64)
            self.net.nudge(target, beta)
        self.net.relax()

    def node_voltage(self, node: tuple[int, int]) -> float:
        layer, i = node
        return float(self.net.voltages[layer][0, 0, i]) * self.vu

    def _settle(self) -> None:
        """Solve the sources and shorts (see sources.py), then leave the network relaxed at the solution."""
        if not self.dirty:
            return
        unknowns: list[Unknown] = []
        self.compliance = {}
        self.floating = {}
        for key, src in self.sources.items():
            nodes = self.nodes_of(*key)
            if not src.on:
                continue
            if not nodes:
                self.floating[key] = src
                continue
            unknowns.append(Unknown(nodes[0], source=src, key=key))
            unknowns += [Unknown(nodes[0], other=n) for n in nodes[1:]]   # closed crosspoints on one bus short
        self.injected = {}

        faults = [(nodes[0], amps) for key, amps in self.fault_currents.items() if (nodes := self.nodes_of(*key))]

        def settle():
            self.injected = {node: amps for node, amps in faults}
            for u in unknowns:
                self.injected[u.node] = self.injected.get(u.node, 0.0) + u.current_A
                if u.other is not None:
                    self.injected[u.other] = self.injected.get(u.other, 0.0) - u.current_A
            self._relax()

        if faults or any(u.source is None or u.source.func == "VOLT" or u.source.level for u in unknowns):
            solve(unknowns, self.node_voltage, settle)
        else:
            settle()   # only 0 A current sources (voltmeters): nothing to solve
        self.solved = {u.key: u for u in unknowns if u.source is not None and u.key is not None}
        for key, u in self.solved.items():
            self.compliance[key] = u.compliance
        for key, src in self.floating.items():
            # nothing connected: a current source with a level drives the open terminals to its limit
            self.compliance[key] = src.func == "CURR" and src.level != 0
        self.dirty = False

    def dac_current(self, dac: str, ch: str) -> float:
        """Current a DAC channel supplies into its input row, A (0 when it drives no row)."""
        with self.lock:
            idx = self.dac_to_input.get((dac, ch))
            if idx is None:
                return 0.0
            self._settle()
            W, v1 = self.net.weights[0][0, idx], self.net.voltages[0][0, 0]
            return float((W * (self.v_in[0, idx] - v1)).sum()) * self.gu * self.vu

    def measure(self, smu: str, ch: str, n: int, nplc: float) -> tuple[list[float], list[float], bool]:
        """n readings (V, A) of the node this channel touches, with its compliance state.

        Noise: white, read_noise_V/sqrt(NPLC) on volts; on amps, the same relative to a 1 MOhm scale.
        An output that touches no node reads a floating terminal: its sourced voltage (or 0 V at 0 A, or the
        voltage limit when a nonzero current has nowhere to go) and 0 A; an output that is off reads 0 V, 0 A.
        """
        with self.lock:
            key = (smu, ch)
            src = self.sources.get(key)
            arr = self.array_of.get(key)
            if arr is None:
                self._settle()
            on_array = None if arr is None or src is None or not src.on else arr.source_current(ChannelRef(*key))
            sd = self.lab.emulator.read_noise_V
            if src is None or not src.on:   # output relay open: the meter sees its own floating terminals
                v, i = 0.0, 0.0
            elif on_array is not None and src.func == "VOLT":   # routed onto a programmer's crossbar lines
                v, i = src.level, on_array
                self.compliance[key] = abs(i) > src.limit
            elif key in self.floating:
                if src.func == "VOLT":
                    v, i = src.level, 0.0
                else:
                    v, i = (0.0 if src.level == 0 else (src.limit if src.level > 0 else -src.limit)), 0.0
            else:
                u = self.solved[key]
                v, i = self.node_voltage(u.node), u.current_A
                sd = self.node_noise_V.get(u.node, sd)  # a noisier channel or route (emulator.channel_noise_V)
            sd /= math.sqrt(nplc)
            volts = (v + sd * self.rng.standard_normal(n)).tolist()
            amps = (i + 1e-6 * sd * self.rng.standard_normal(n)).tolist()
            self.time_s += n * (nplc / self.line_frequency_hz + self.lab.timing.overhead_s)
            return volts, amps, self.compliance.get(key, False)

    def conductance(self, board: str, row: int, col: int) -> float | None:
        with self.lock:
            dev = self.devices.get((board, row, col))
            if dev is None:
                return None
            layer, i, j = dev
            g = self.net.weights[layer][0, i, j] * self.gu
            if self.device_arrays is not None:  # the device model's read noise
                g = self.device_arrays[layer].take(self._flat(layer, i, j)).read(g.view(1), self.device_gen)
            return float(g)

    def _flat(self, layer: int, i: int, j: int) -> torch.Tensor:
        return torch.tensor([i * self.net.weights[layer].shape[2] + j])

    def _model_pulse(self, layer: int, i: int, j: int, volts: float) -> None:
        """One SET (volts > 0) or RESET of the device model, the same code the simulator pulses with."""
        assert self.device_arrays is not None  # only called with a device model
        idx = self._flat(layer, i, j)
        dev = self.device_arrays[layer].take(idx)
        held = self.device_held_S[layer].view(-1)
        g = dev.apply_pulses(held[idx], torch.tensor([1.0 if volts > 0 else -1.0], dtype=torch.float64),
                             self.device_gen)
        held[idx] = g
        if dev.write_sd_S > 0:
            g = dev.write_noise(g, torch.tensor([True]), self.device_gen)
        self.net.weights[layer][0, i, j] = float(g) / self.gu

    def model_pulses(self, layer: int, idx: torch.Tensor, signs: torch.Tensor) -> None:
        """One SET (sign > 0) or RESET of the device model on each device `idx` (flat) of a layer at once."""
        assert self.device_arrays is not None  # only called with a device model
        dev = self.device_arrays[layer].take(idx)
        held = self.device_held_S[layer].view(-1)
        g = dev.apply_pulses(held[idx], signs.to(torch.float64), self.device_gen)
        held[idx] = g
        if dev.write_sd_S > 0:
            g = dev.write_noise(g, torch.ones_like(g, dtype=torch.bool), self.device_gen)
        self.net.weights[layer][0].view(-1)[idx] = g / self.gu

    def array_pulse(self, smu: str, ch: str, width_s: float) -> int:
        """The SMU channel's present level reaches the crossbar lines it is routed to for width_s: every device
        past its threshold changes (array.py). Returns how many did; 0 when the channel touches no array."""
        with self.lock:
            arr = self.array_of.get((smu, ch))
            return 0 if arr is None else arr.pulse(width_s)

    def pulse(self, board: str, row: int, col: int, volts: float, width_s: float) -> bool:
        """One pulse: over device_threshold_V, one SET/RESET of emulator.device_model when set; otherwise the rate
        model dG = rate*(|V| - Vth)*width, soft-bounded by the range, with cycle-to-cycle spread."""
        with self.lock:
            dev = self.devices.get((board, row, col))
            if dev is None:
                return False
            layer, i, j = dev
            em, p = self.lab.emulator, self.lab.programming
            g = float(self.net.weights[layer][0, i, j]) * self.gu
            over = abs(volts) - em.device_threshold_V
            if over > 0 and self.device_arrays is not None:
                self._model_pulse(layer, i, j, volts)
                self.net.load_conductances(self.net.weights, self.net.biases)
                self.dirty = True
            elif over > 0:
                step = em.device_rate_S_per_V_s * over * width_s * (1 + em.device_spread * self.rng.standard_normal())
                span = p.g_max_S - p.g_min_S
                if volts > 0:
                    g += max(step, 0.0) * (p.g_max_S - g) / span
                else:
                    g -= max(step, 0.0) * (g - p.g_min_S) / span
                g = min(max(g, p.g_min_S), p.g_max_S)
                self.net.weights[layer][0, i, j] = g / self.gu
                self.net.load_conductances(self.net.weights, self.net.biases)
                self.dirty = True
            return True
