"""Crossbar-array physics of a programmer made of lab instruments (the lab config's `programmers:`).

The crossbar is a grid of lines: every device joins one row line and one column line. The switch matrix
connects each line to a bus (the pulse SMU, the sense SMU, a bias channel) or to nothing (the line floats).
A line on a bus sits at its source's level; floating lines settle where Kirchhoff's current law puts them
(one linear solve over the floating lines, through the devices' conductances). So:

- a pulse reaches the selected device at V and every device that shares its row or column at what the other
  line of that device holds: V/2 in the half scheme, V/3 in the third scheme, whatever the network gives when
  the lines float. Every device whose voltage passes the threshold changes through the device model (the rate
  model or emulator.device_model, as the serial board's pulses do); below it nothing changes.
- the current an SMU channel measures is what flows from its line(s) through the devices: the selected
  device alone when every other line is held, plus the sneak paths through unselected devices when they float.

Bench units throughout (V, A, S). The bench lock is held by the caller (EmulatedBench).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from drivers.lab import ChannelRef, PulseProgrammerConfig
from drivers.registry import driver_class

if TYPE_CHECKING:
    from sim_backend.emulator.bench import EmulatedBench

LEAK_S = 1e-15  # a floating line with no device to anything held settles at 0 V instead of a singular solve


class CrossbarArray:
    """One programmer's lines, buses and devices."""

    def __init__(self, bench: EmulatedBench, name: str, cfg: PulseProgrammerConfig):
        self.bench, self.name, self.cfg = bench, name, cfg
        lab = bench.lab
        self.n_rows, self.n_cols = len(cfg.row_lines), len(cfg.column_lines)
        switch_cls = driver_class(lab.instruments[cfg.switch].kind)
        lines = [*cfg.row_lines, *cfg.column_lines]
        #: crosspoint name -> (line index, bus name); buses that share a matrix row share a source (lab.py checks)
        self.crosspoints: dict[str, tuple[int, str]] = {
            switch_cls.crosspoint(bus.row, line): (k, bus_name)  # type: ignore[attr-defined]
            for k, line in enumerate(lines) for bus_name, bus in cfg.buses.items()}
        self.sources: dict[str, ChannelRef] = {bus_name: bus.source for bus_name, bus in cfg.buses.items()}
        self.smu_bus = {bus_name: lab.instruments[bus.source.instrument].role == "smu"
                        for bus_name, bus in cfg.buses.items()}
        #: the layer blocks on this array: (layer, first row, first column, rows, columns)
        self.blocks = []
        for blk in lab.devices:
            if blk.board == name:
                m, k = bench.net.weights[blk.layer].shape[1:]
                self.blocks.append((blk.layer, blk.row_offset, blk.col_offset, m, k))
        #: where a device sits (a device at 0 S is still a device: a pulse may raise it)
        self.present = torch.zeros(self.n_rows, self.n_cols, dtype=torch.bool)
        for _, r0, c0, m, k in self.blocks:
            self.present[r0:r0 + m, c0:c0 + k] = True

    # ---- the state of the lines -------------------------------------------------------------
    def conductances(self, reading: bool = False) -> torch.Tensor:
        """(rows, columns) device conductances, S; 0 where no device sits. reading: as a read sees them, with the
        device model's read noise (emulator.device_model), as the serial board's READ has."""
        G = torch.zeros(self.n_rows, self.n_cols, dtype=torch.float64)
        bench = self.bench
        for layer, r0, c0, m, k in self.blocks:
            g = bench.net.weights[layer][0] * bench.gu
            if reading and bench.device_arrays is not None:
                g = bench.device_arrays[layer].read(g.unsqueeze(0), bench.device_gen)[0]
            G[r0:r0 + m, c0:c0 + k] = g
        return G

    def _bus_level(self, bus: str) -> float | None:
        """The voltage a bus holds, V; None when its source is off (the bus floats with its lines)."""
        ref = self.sources[bus]
        if self.smu_bus[bus]:
            src = self.bench.sources.get(ref)
            return src.level if src is not None and src.on and src.func == "VOLT" else None
        return self.bench.dac_levels.get(ref, 0.0)  # a DAC has no output relay: it always holds its level

    def line_buses(self) -> dict[int, str]:
        """line index -> the bus the closed crosspoints connect it to."""
        closed = self.bench.closed_routes.get(self.cfg.switch, set())
        return {hit[0]: hit[1] for xp in closed if (hit := self.crosspoints.get(xp)) is not None}

    def line_voltages(self, G: torch.Tensor) -> torch.Tensor:
        """Every line's voltage (rows first, then columns), V: held lines at their bus, floating ones solved."""
        n = self.n_rows + self.n_cols
        levels = {bus: self._bus_level(bus) for bus in self.sources}
        fixed_list = [float("nan")] * n
        for line, bus in self.line_buses().items():
            level = levels[bus]
            if level is not None:
                fixed_list[line] = level
        fixed = torch.tensor(fixed_list, dtype=torch.float64)
        held = ~torch.isnan(fixed)
        V = torch.where(held, fixed, torch.zeros_like(fixed))
        free = ~held
        if bool(free.any()):
            # Laplacian of the bipartite network: rows to columns through G
            L = torch.zeros(n, n, dtype=torch.float64)
            L[:self.n_rows, self.n_rows:] = -G
            L[self.n_rows:, :self.n_rows] = -G.T
            L += torch.diag(-L.sum(1) + LEAK_S)
            A = L[free][:, free]
            b = -(L[free][:, held] @ V[held])
            V[free] = torch.linalg.solve(A, b)
        return V

    def device_voltages(self, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, columns) voltage across every device (row line minus column line), V, and the line voltages."""
        V = self.line_voltages(G)
        return V[:self.n_rows, None] - V[None, self.n_rows:], V

    def source_current(self, ref: ChannelRef) -> float | None:
        """The current the channel drives into the line(s) it is connected to, A (None: it touches no line)."""
        lines = [line for line, bus in self.line_buses().items() if self.sources[bus] == ref]
        if not lines:
            return None
        G = self.conductances(reading=True)
        Vd, _ = self.device_voltages(G)
        I = G * Vd  # row -> column current through each device
        out_of_line = torch.cat([I.sum(1), -I.sum(0)])  # what leaves each line through its devices
        return float(out_of_line[lines].sum())

    # ---- a pulse ------------------------------------------------------------------------------
    def pulse(self, width_s: float) -> int:
        """The lines as they are now, for width_s: every device past the threshold changes. Returns how many."""
        bench, em, p = self.bench, self.bench.lab.emulator, self.bench.lab.programming
        G = self.conductances()
        Vd, _ = self.device_voltages(G)
        over = Vd.abs() - em.device_threshold_V
        hit = (over > 0) & self.present
        n_hit = int(hit.sum())
        if n_hit == 0:
            return 0  # nothing past the threshold: nothing changes
        if bench.device_arrays is not None:
            for layer, r0, c0, m, k in self.blocks:
                sub = hit[r0:r0 + m, c0:c0 + k]
                if bool(sub.any()):
                    idx = torch.nonzero(sub.flatten()).flatten()
                    signs = torch.sign(Vd[r0:r0 + m, c0:c0 + k].flatten()[idx])
                    bench.model_pulses(layer, idx, signs)
        else:
            # the serial board's rate model (bench.pulse), on every device past the threshold at once
            g, v = G[hit], Vd[hit]
            spread = torch.from_numpy(bench.rng.standard_normal(n_hit))
            step = (em.device_rate_S_per_V_s * over[hit] * width_s * (1 + em.device_spread * spread)).clamp(min=0)
            span = p.g_max_S - p.g_min_S
            g_new = torch.where(v > 0, g + step * (p.g_max_S - g) / span, g - step * (g - p.g_min_S) / span)
            G_new = G.clone()
            G_new[hit] = g_new.clamp(p.g_min_S, p.g_max_S)
            for layer, r0, c0, m, k in self.blocks:  # only the devices hit: the others keep their exact values
                W = bench.net.weights[layer][0]
                W.copy_(torch.where(hit[r0:r0 + m, c0:c0 + k], G_new[r0:r0 + m, c0:c0 + k] / bench.gu, W))
        bench.net.load_conductances(bench.net.weights, bench.net.biases)
        bench.dirty = True
        return n_hit
