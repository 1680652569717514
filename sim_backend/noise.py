"""Measurement noise of node-voltage readings.

The paper's model (the default): every read is V + sigma*xi, xi ~ N(0, 1),
independent between readings, nodes, samples and replicas. sigma may differ
per replica, so a whole sigma sweep runs as one program. Each replica draws
its xi from its own stream (sim_backend/streams.py), so its readings do not
depend on which replicas share its run.

A bench adds what averaging cannot remove. `ReadNoise` models, per reading:

- white noise of sd sigma/sqrt(NPLC): sigma is the sd at 1 power-line cycle,
  and integrating longer averages it down;
- flicker (1/f) noise, whose overlapping Allan deviation is flat at
  `flicker_floor_V` whatever the averaging length;
- a slow linear drift of `drift_V_per_s`;

and a simulated clock that advances by aperture + overhead per reading
(aperture = NPLC / line frequency), so repeated readings are correlated the way
a real instrument's are.

Flicker noise is a sum of Ornstein-Uhlenbeck processes with time constants two
per decade from the reading period to 1e6 readings: each contributes a
Lorentzian, and equal variances on a log-spaced grid sum to S(f) = h/f
between the corners (h = s^2 / ln r for spacing ratio r), whose Allan variance
is 2 ln2 h. So s^2 = floor^2 * ln r / (2 ln 2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from hil.core.backend import NodeStats
from hil.core.config import NoiseConfig
from hil.core.mains import check_line_frequency
from sim_backend.streams import ReplicaStreams


def _per_replica(value: float | Sequence[float] | torch.Tensor, replicas: int, name: str) -> torch.Tensor:
    s = torch.as_tensor(value, dtype=torch.float64).flatten()
    if s.numel() == 1:
        s = s.expand(replicas)
    if s.numel() != replicas:
        raise ValueError(f"{name}: need 1 or {replicas} values (one per replica), got {s.numel()}")
    if not torch.isfinite(s).all() or (s < 0).any():
        raise ValueError(f"{name}: must be finite and >= 0 (got {s.tolist()})")
    return s


class WhiteReadNoise:
    """White Gaussian read noise of standard deviation sigma (V), per replica."""

    def __init__(self, sigma: float | Sequence[float] | torch.Tensor, replicas: int, device: torch.device | str,
                 dtype: torch.dtype):
        s = _per_replica(sigma, replicas, "sigma")
        self.sigma = s.to(device=device, dtype=dtype)
        self.silent = bool((s == 0).all())
        self.time_s = 0.0
        self.base_sigma = self.sigma.clone()  # as constructed: `rescale` multiplies this one

    def rescale(self, scale: float, floor_V: torch.Tensor | None = None) -> None:
        """sigma = max(base_sigma * scale, floor_V): a schedule over training (noise.sigma_schedule), and noise
        added up to an effective-noise target (floor_V, per replica, V per reading)."""
        if not (math.isfinite(scale) and scale >= 0):
            raise ValueError(f"scale: must be finite and >= 0 (got {scale})")
        sigma = self.base_sigma * scale
        if floor_V is not None:
            sigma = torch.maximum(sigma, floor_V.to(sigma.device, sigma.dtype))
        self.sigma = sigma
        self.silent = bool((sigma == 0).all()) and self._quiet_otherwise()

    def _quiet_otherwise(self) -> bool:
        """No noise besides the white: readings are exact when sigma is 0."""
        return True

    def sample(self, voltages: torch.Tensor, n: int, generator: ReplicaStreams) -> torch.Tensor:
        """n noisy readings of voltages (R, B, nodes) -> (n, R, B, nodes)."""
        if self.silent:
            return voltages.unsqueeze(0).expand(n, *voltages.shape)
        return voltages.unsqueeze(0) + self.deviations(voltages, n, generator)

    def deviations(self, voltages: torch.Tensor, n: int, generator: ReplicaStreams) -> torch.Tensor:
        """What n readings add to voltages (R, B, nodes): (n, R, B, nodes), V."""
        xi = generator.normal((n, *voltages.shape), replica_dim=1, dtype=voltages.dtype)
        return self.sigma.view(1, -1, 1, 1) * xi

    #: Readings generated at once by `stats`, in values (16 MiB in float32): memory does not grow with N.
    CHUNK_ELEMENTS = 1 << 22

    def stats(self, voltages: torch.Tensor, weights: torch.Tensor, generator: ReplicaStreams) -> NodeStats:
        """Mean and variance of weighted readings (weights (n, R), see `hil.core.ep.reading_weights`), taken in chunks
        of readings so that memory stays bounded (about CHUNK_ELEMENTS values) whatever n is."""
        if self.silent:
            return NodeStats(voltages)
        n, r = weights.shape
        chunk = max(1, self.CHUNK_ELEMENTS // max(voltages.numel(), 1))
        s1 = s2 = torch.zeros(())  # replaced by the first chunk's sums (n >= 1)
        for k0 in range(0, n, chunk):  # a loop over reading chunks (time), not over nodes
            e = self.deviations(voltages, min(chunk, n - k0), generator)
            w = weights[k0:k0 + chunk].to(voltages.dtype).view(-1, r, 1, 1)
            we = w * e
            a, b = we.sum(0), (we * e).sum(0)
            s1, s2 = (a, b) if k0 == 0 else (s1 + a, s2 + b)
        # Deviations from the noiseless voltage: the variance is not a small difference of large squares.
        return NodeStats(voltages + s1, s2 - s1 * s1 if n > 1 else None)

    def state(self) -> dict:
        """The simulated clock (s), for a checkpoint."""
        return {"clock_s": self.time_s}

    def load_state(self, state: dict) -> None:
        self.time_s = float(state.get("clock_s", 0.0))


class ReadNoise(WhiteReadNoise):
    """White (1/sqrt(NPLC)) + flicker + drift read noise with a simulated clock."""

    POLES_PER_DECADE = 2
    DECADES = 6

    def __init__(
        self,
        sigma: float | Sequence[float] | torch.Tensor,
        replicas: int,
        device: torch.device | str,
        dtype: torch.dtype,
        *,
        nplc: float = 1.0,
        line_frequency_hz: float = 50.0,
        overhead_s: float = 1e-3,
        flicker_floor_V: float = 0.0,
        drift_V_per_s: float = 0.0,
    ):
        if not nplc > 0:
            raise ValueError(f"nplc: integration time must be > 0 power-line cycles (got {nplc})")
        try:
            check_line_frequency(line_frequency_hz)
        except ValueError as err:
            raise ValueError(f"line_frequency_hz: {err} (got {line_frequency_hz})") from None
        if overhead_s < 0 or flicker_floor_V < 0:
            raise ValueError("overhead_s and flicker_floor_V: must be >= 0")
        super().__init__(_per_replica(sigma, replicas, "sigma") / math.sqrt(nplc), replicas, device, dtype)
        self.nplc, self.line_frequency_hz, self.overhead_s = nplc, line_frequency_hz, overhead_s
        self.aperture_s = nplc / line_frequency_hz
        self.period_s = self.aperture_s + overhead_s
        self.flicker_floor_V = float(flicker_floor_V)
        self.drift_V_per_s = float(drift_V_per_s)
        n_poles = self.POLES_PER_DECADE * self.DECADES + 1
        r = 10 ** (1 / self.POLES_PER_DECADE)
        self.tau_s = self.period_s * torch.logspace(0, self.DECADES, n_poles, dtype=torch.float64)
        self.pole_sd = self.flicker_floor_V * math.sqrt(math.log(r) / (2 * math.log(2)))
        self._state: torch.Tensor | None = None  # (poles, R, B, nodes)
        self.silent = self.silent and self.flicker_floor_V == 0 and self.drift_V_per_s == 0

    def _quiet_otherwise(self) -> bool:
        return self.flicker_floor_V == 0 and self.drift_V_per_s == 0

    @classmethod
    def from_config(cls, noise: NoiseConfig, replicas: int, device: torch.device | str, dtype: torch.dtype, *,
                    sigma: float | Sequence[float] | None = None) -> ReadNoise:
        """The read noise a NoiseConfig describes; sigma (V, one value or one per replica) replaces noise.sigma."""
        return cls(noise.sigma if sigma is None else sigma, replicas, device, dtype, nplc=noise.nplc,
                   line_frequency_hz=noise.line_frequency_hz, overhead_s=noise.overhead_s,
                   flicker_floor_V=noise.flicker_floor_V, drift_V_per_s=noise.drift_V_per_s)

    def sample(self, voltages: torch.Tensor, n: int, generator: ReplicaStreams) -> torch.Tensor:
        if self.silent:
            self.time_s += self.period_s * n
        return super().sample(voltages, n, generator)

    def stats(self, voltages: torch.Tensor, weights: torch.Tensor, generator: ReplicaStreams) -> NodeStats:
        if self.silent:
            self.time_s += self.period_s * weights.shape[0]
        return super().stats(voltages, weights, generator)

    def deviations(self, voltages: torch.Tensor, n: int, generator: ReplicaStreams) -> torch.Tensor:
        white = super().deviations(voltages, n, generator)
        start_s = self.time_s
        self.time_s = start_s + self.period_s * n  # the clock at the end of the last reading
        if not (self.drift_V_per_s or self.flicker_floor_V):
            return white
        extra = torch.zeros_like(white)
        if self.drift_V_per_s:
            times = start_s + self.period_s * torch.arange(1, n + 1, dtype=torch.float64)  # end of each reading
            extra += (self.drift_V_per_s * times).to(white.dtype).view(n, 1, 1, 1)
        if self.flicker_floor_V:
            extra += self._flicker(voltages, n, generator)
        return white + extra

    def state(self) -> dict:
        """The clock and the 1/f processes' state: a resumed run reads the noise an uninterrupted one would."""
        return {**super().state(), "flicker": None if self._state is None else self._state.cpu().clone()}

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        f = state.get("flicker")
        self._state = None if f is None else f.to(self.sigma.device, self.sigma.dtype)

    def _flicker(self, voltages: torch.Tensor, n: int, generator: ReplicaStreams) -> torch.Tensor:
        poles = len(self.tau_s)
        shape = (poles, *voltages.shape)
        a = torch.exp(-self.period_s / self.tau_s).to(voltages.dtype).to(voltages.device).view(-1, 1, 1, 1)
        kick = (self.pole_sd * torch.sqrt(1 - a**2))
        if self._state is None or self._state.shape != shape:
            # Start from the stationary distribution (a new batch shape is a new set of channels).
            self._state = self.pole_sd * generator.normal(shape, replica_dim=1, dtype=voltages.dtype)
        out = torch.empty((n, *voltages.shape), device=voltages.device, dtype=voltages.dtype)
        xi = generator.normal((n, *shape), replica_dim=2, dtype=voltages.dtype)
        s = self._state
        for k in range(n):  # a loop over time (readings are sequential), not over nodes
            s = a * s + kick * xi[k]
            out[k] = s.sum(0)
        self._state = s
        return out
