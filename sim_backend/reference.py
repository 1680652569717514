"""The plain reference implementation of EP that the fast simulator path (sim_backend.crossbar with
hil.core.ep) is checked against (tests/test_fast_vs_plain.py) and timed against (benchmarks/throughput.py).

Written straight from the equations, as a user would write it first: every sweep recomputes every layer's input
(including the big x_in @ W0) and every node's conductance sum; the update
builds each device's squared voltage drop in both phases and subtracts them.
Vectorized over the batch, R = 1, no caching, no factoring.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hil.core.backend import input_voltages, node_sizes
from sim_backend.crossbar import initial_conductances


class PlainEP:
    """One replica of a ReLU network trained by positive EP, every quantity recomputed from scratch.

    gamma: input gain, V; beta: nudge conductance, S; eta: learning rate; sweeps: T; seed, init_scale, init: the
    same initial conductances as `SimCrossbar` (S); g_min, g_max: the device range, S.
    """

    def __init__(self, layer_sizes: Sequence[int], *, gamma: float, beta: float, eta: float, sweeps: int, seed: int,
                 init_scale: float, init: str = "uniform", g_min: float = 0.0, g_max: float | None = None,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        nodes = node_sizes(layer_sizes)
        self.W = [initial_conductances(nodes[j], nodes[j + 1], [seed], init_scale, j, init)[0].clamp(g_min, g_max)
                  .to(device, dtype) for j in range(len(nodes) - 1)]
        self.gamma, self.beta, self.eta, self.T = gamma, beta, eta, sweeps
        self.g_min, self.g_max = g_min, g_max

    def relax(self, x_in: torch.Tensor, V: list[torch.Tensor], target: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Sweep T times over the layers; V[0] is x_in, V[l] layer l's node voltages (B, nodes), V."""
        W, L = self.W, len(self.W)
        for _ in range(self.T):
            for l in range(1, L + 1):
                below = x_in if l == 1 else V[l - 1]
                num = below @ W[l - 1]
                den = W[l - 1].sum(0)
                if l < L:
                    num = num + V[l + 1] @ W[l].T
                    den = den + W[l].sum(1)
                if l == L and target is not None:
                    num = num + self.beta * target
                    den = den + self.beta
                V[l] = num / den if l == L else torch.relu(num / den)
        return V

    def step(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """One EP update on inputs x (B, inputs) and target voltages t (B, outputs); returns the free outputs."""
        x_in = input_voltages(x, self.gamma)
        zeros = [x_in] + [torch.zeros(x.shape[0], w.shape[1], dtype=x.dtype, device=x.device) for w in self.W]
        free = self.relax(x_in, list(zeros))
        nudged = self.relax(x_in, list(free), t)
        for j, W in enumerate(self.W):
            a0, h0, a1, h1 = free[j], free[j + 1], nudged[j], nudged[j + 1]
            sq0 = (a0.unsqueeze(2) - h0.unsqueeze(1)) ** 2  # (B, m, k): every device's drop, free phase
            sq1 = (a1.unsqueeze(2) - h1.unsqueeze(1)) ** 2
            dW = -self.eta / (2 * self.beta) * (sq1 - sq0).mean(0)
            self.W[j] = (W + dW).clamp(self.g_min, self.g_max)
        return free[-1]
