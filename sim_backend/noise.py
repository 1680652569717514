"""Measurement noise of node-voltage readings.

The paper's model: every read is V + sigma*xi with xi ~ N(0, 1), independent
between readings, nodes, samples and replicas. sigma may differ per replica,
so a whole sigma sweep runs as one program.
"""

from __future__ import annotations

from typing import Sequence

import torch


class WhiteReadNoise:
    """White Gaussian read noise of standard deviation sigma (V), per replica."""

    def __init__(self, sigma: float | Sequence[float], replicas: int, device, dtype):
        s = torch.as_tensor(sigma, dtype=torch.float64).flatten()
        if s.numel() == 1:
            s = s.expand(replicas)
        if s.numel() != replicas:
            raise ValueError(f"sigma: need 1 or {replicas} values (one per replica), got {s.numel()}")
        if not torch.isfinite(s).all() or (s < 0).any():
            raise ValueError(f"sigma: must be finite and >= 0 V (got {s.tolist()})")
        self.sigma = s.to(device=device, dtype=dtype)
        self.silent = bool((s == 0).all())

    def sample(self, voltages: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        """n noisy readings of voltages (R, B, nodes) -> (n, R, B, nodes)."""
        if self.silent:
            return voltages.unsqueeze(0).expand(n, *voltages.shape)
        xi = torch.randn((n, *voltages.shape), generator=generator, device=voltages.device, dtype=voltages.dtype)
        return voltages.unsqueeze(0) + self.sigma.view(1, -1, 1, 1) * xi
