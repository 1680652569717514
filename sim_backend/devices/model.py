"""A vectorized array of pulsed resistive devices (torch): per-device parameters in siemens, pulse response, noise.

One code path for the simulator (whole weight matrices, R replicas at once) and
the emulated bench (one device per pulse command): `DeviceArray.apply_pulses`
takes a signed pulse count per device. Per-device parameters (the
device-to-device spreads, stuck devices, drift exponents, read noise) are drawn
once, on the CPU in float64 from each replica's seed, so replica r of a batched
run has the same devices as a run of that seed alone, on any torch device.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from hil.core.devices.config import DeviceModelConfig
from hil.core.seeds import seed_stream

_DRAWS = 8  # per device: normals for dw_min, up_down, w_min, w_max, drift nu, read noise; uniforms for stuck, its side


def _device_draws(seeds: Sequence[int], layer: int, m: int, n: int) -> torch.Tensor:
    """(draws, R, m, n) standard normals (the stuck draws are uniform), per replica from its own seed, float64, CPU."""
    out = torch.empty(_DRAWS, len(seeds), m, n, dtype=torch.float64)
    for r, seed in enumerate(seeds):  # once per run, not in the training loop
        gen = torch.Generator().manual_seed(seed_stream(seed, "device_spread", layer))
        out[:6, r] = torch.randn(6, m, n, generator=gen, dtype=torch.float64)
        out[6:, r] = torch.rand(_DRAWS - 6, m, n, generator=gen, dtype=torch.float64)
    # Spreads are normal truncated at 3 standard deviations, so no device's bound crosses to the wrong side.
    return out.clamp_(-3.0, 3.0)


class DeviceArray:
    """R replicas of an (m, n) array of one device type, mapped onto the range [g_min, g_max] S.

    Tensors are (R, m, n): lo_S/hi_S (each device's bounds), the step coefficients, stuck (bool),
    nu (drift exponent), read_sd_S. Conductances passed in and out are in siemens.
    """

    def __init__(self, model: DeviceModelConfig, shape: Sequence[int], *, g_min: float, g_max: float,
                 seeds: Sequence[int] | None = None, layer: int = 0, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        if not model.pulsed:
            raise ValueError(f"devices.model: {model.name!r} is ideal (exact programming); it has no pulse response")
        if not g_max > g_min >= 0:
            raise ValueError(f"device range: need 0 <= g_min < g_max (got {g_min}, {g_max}) S")
        R, m, n = (int(s) for s in shape)
        seeds = list(seeds) if seeds is not None else list(range(R))
        if len(seeds) != R:
            raise ValueError(f"seeds: need one per replica ({R}), got {len(seeds)}")
        self.model = model
        self.shape: tuple[int, ...] = (R, m, n)
        self.device, self.dtype = torch.device(device), dtype
        self.g_min, self.g_max = float(g_min), float(g_max)
        p = model
        unit = (g_max - g_min) / (p.w_max - p.w_min)  # S per normalized unit
        self.unit_S = unit
        self.dw_S = p.dw_min * unit  # the nominal step, S
        self.c2c = p.dw_min_std
        self.write_sd_S = p.write_noise_std * self.dw_S
        xi = _device_draws(seeds, layer, m, n)
        half = 0.5 * (p.w_max - p.w_min)
        dw_i = p.dw_min * (1 + p.dw_min_dtod * xi[0]).clamp_min(0.0)
        ud_i = p.up_down + p.up_down_dtod * xi[1]
        up_i = dw_i * (1 + ud_i).clamp_min(0.0)
        down_i = dw_i * (1 - ud_i).clamp_min(0.0)
        wmin_i = p.w_min + p.w_min_dtod * half * xi[2]
        wmax_i = torch.maximum(p.w_max + p.w_max_dtod * half * xi[3], wmin_i + p.dw_min)
        w_off = p.w_min - g_min / unit  # w = w_off + g / unit
        # Each device's bounds in S; a conductance is never negative.
        lo = (g_min + (wmin_i - p.w_min) * unit).clamp_min(0.0)
        hi = torch.maximum(g_min + (wmax_i - p.w_min) * unit, lo + self.dw_S)
        stuck = xi[6] < p.stuck_fraction
        stuck_high = stuck & (xi[7] < p.stuck_high_share)
        if p.kind in ("constant", "linear", "soft_bounds"):
            # Mean step affine in g: up(g) = up0 + up1 g, down magnitude(g) = dn0 + dn1 g (module doc of config).
            gu = {"constant": 0.0, "linear": p.gamma_up, "soft_bounds": 1.0}[p.kind]
            gd = {"constant": 0.0, "linear": p.gamma_down, "soft_bounds": 1.0}[p.kind]
            wmax_s = wmax_i.clamp_min(0.1 * p.w_max)  # written for w_min < 0 < w_max (checked in the config)
            wmin_s = wmin_i.clamp_max(0.1 * p.w_min)
            up0 = unit * up_i * (1 - gu * w_off / wmax_s)
            up1 = -up_i * gu / wmax_s
            dn0 = unit * down_i * (1 - gd * w_off / wmin_s)
            dn1 = -down_i * gd / wmin_s
            coeffs = [up0, None, dn0, None] if p.kind == "constant" else [up0, up1, dn0, dn1]
        else:  # exp: z = z0 + z1 g; steps scale_up (1 - A_up e^{gamma_up z}), scale_dn (1 - A_down e^{-gamma_down z})
            span = (wmax_i - wmin_i)
            z1 = 2 * p.a / (span * unit)
            z0 = 2 * p.a * w_off / span + p.b
            coeffs = [unit * up_i, unit * down_i, z0, z1]
        scales = (0, 1) if p.kind == "exp" else (0, 1, 2, 3)  # a stuck device does not move
        coeffs = [torch.where(stuck, 0.0, c) if i in scales and c is not None else c for i, c in enumerate(coeffs)]
        # The response parameters side by side per device, (R, m, n, P), so that gathering the pulsed
        # devices' parameters reads one cache line per device; the named tensors are views into it.
        self._stack = torch.stack([lo, hi, *(c for c in coeffs if c is not None)], dim=-1).to(self.device, dtype)
        self._bind(self._stack)
        self.stuck: torch.Tensor | None = stuck.to(self.device)  # None in a subset that needs no write noise (take)
        self.stuck_high: torch.Tensor | None = stuck_high.to(self.device)
        self.nu: torch.Tensor | None = (
            (p.drift_nu * (1 + p.drift_nu_dtod * xi[4]).clamp_min(0.0)).to(self.device, dtype) if p.drift_nu > 0 else None)
        self.read_sd_S: torch.Tensor | None = (
            (p.read_noise_std * self.dw_S * (1 + p.read_noise_dtod * xi[5]).clamp_min(0.0)).to(self.device, dtype)
            if p.read_noise_std > 0 else None)

    def take(self, index: torch.Tensor) -> DeviceArray:
        """The devices at these flat indices (into the (R, m, n) array) as a 1-D array of the same model (CPU)."""
        sub = copy.copy(self)

        at = index.numpy()

        def pick(t):  # numpy's take: the CPU path (a GPU never gathers)
            return None if t is None else torch.from_numpy(np.take(t.reshape(-1).numpy(), at))

        sub._bind(torch.from_numpy(np.take(self._stack.reshape(-1, self._stack.shape[-1]).numpy(), at, axis=0)))
        # only write noise needs to know the stuck devices (their steps are already 0)
        sub.stuck, sub.stuck_high = (pick(self.stuck), pick(self.stuck_high)) if self.write_sd_S > 0 else (None, None)
        sub.nu, sub.read_sd_S = pick(self.nu), pick(self.read_sd_S)
        sub.shape = (int(index.numel()),)
        return sub

    def _bind(self, stack: torch.Tensor) -> None:
        """Name the columns of a parameter stack (..., P): lo_S, hi_S, then the step coefficients."""
        cols = iter(stack.unbind(-1))
        self.lo_S, self.hi_S = next(cols), next(cols)
        # c0, c2 always; c1, c3 (the slopes in g, or the exp model's z coefficients) not for the constant step
        self.c0 = next(cols)
        self.c1: torch.Tensor | None = None if self.model.kind == "constant" else next(cols)
        self.c2 = next(cols)
        self.c3: torch.Tensor | None = None if self.model.kind == "constant" else next(cols)

    # ---- state -----------------------------------------------------------------
    def initial_state(self, g_S: torch.Tensor) -> torch.Tensor:
        """g kept inside each device's bounds, stuck devices at theirs (in place)."""
        if self.stuck is None or self.stuck_high is None:
            raise RuntimeError("initial_state: a subset of devices (take) has no stuck map; use the whole array")
        g_S.clamp_(self.lo_S, self.hi_S)
        return torch.where(self.stuck, torch.where(self.stuck_high, self.hi_S, self.lo_S), g_S, out=g_S)

    # ---- response ----------------------------------------------------------------
    def mean_step(self, g_S: torch.Tensor, up: torch.Tensor | bool) -> torch.Tensor:
        """Signed mean change of one pulse (S) at conductance g: SET where up, RESET elsewhere."""
        up = torch.as_tensor(up, device=g_S.device)
        if self.c1 is None or self.c3 is None:  # constant step
            return torch.where(up, self.c0, -self.c2) + 0 * g_S
        if self.model.kind == "exp":
            p = self.model
            z = self.c2 + self.c3 * g_S
            y_up = (1 - p.A_up * torch.exp(p.gamma_exp_up * z)).clamp_min(0.0) * self.c0
            y_dn = (1 - p.A_down * torch.exp(-p.gamma_exp_down * z)).clamp_min(0.0) * self.c1
            return torch.where(up, y_up, -y_dn)
        c0 = torch.where(up, self.c0, -self.c2)
        c1 = torch.where(up, self.c1, -self.c3)
        return torch.addcmul(c0, c1, g_S)

    def apply_pulses(self, g_S: torch.Tensor, n: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """Conductance after n pulses per device (n signed: + SET, - RESET; 0 leaves a device alone), S.

        The mean of k pulses in one direction is k times the mean step at the state reached halfway,
        g + (k - 1)/2 m(g): exact for one pulse and for the constant step, second order in the change of
        the step otherwise. Cycle-to-cycle noise: each pulse's step is multiplied by (1 + dw_min_std xi),
        so k pulses add noise of std dw_min_std |m| sqrt(k). The result stays inside each device's bounds.
        """
        up = n > 0
        k = n.abs()
        if self.model.kind == "constant":
            size = torch.where(up, self.c0, self.c2)  # |m|
        else:
            m = self.mean_step(g_S, up)
            half = torch.addcmul(g_S, (k - 1).clamp_min_(0.0).mul_(0.5), m).clamp_(self.lo_S, self.hi_S)
            size = self.mean_step(half, up).abs_()
        g = torch.addcmul(g_S, n, size)  # k |m| in the direction of n
        if self.c2c > 0:
            xi = torch.randn(g_S.shape, generator=gen, device=g_S.device, dtype=g_S.dtype)
            g.addcmul_(size.mul_(k.sqrt_()), xi, value=self.c2c)
        return g.clamp_(self.lo_S, self.hi_S)

    def write_noise(self, g_S: torch.Tensor, written: torch.Tensor, gen: torch.Generator | None = None,
                    out: torch.Tensor | None = None) -> torch.Tensor:
        """What the devices conduct: g plus fresh write noise where written (elsewhere `out`'s old value), S."""
        noisy = g_S + self.write_sd_S * torch.randn(g_S.shape, generator=gen, device=g_S.device, dtype=g_S.dtype)
        if self.stuck is not None:  # a stuck device keeps what it holds
            noisy = torch.where(self.stuck, g_S, noisy)
        return torch.where(written, noisy, g_S if out is None else out)

    def read(self, g_S: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """One reading of each device's conductance (read noise per device), S."""
        if self.read_sd_S is None:
            return g_S
        return g_S + self.read_sd_S * torch.randn(g_S.shape, generator=gen, device=g_S.device, dtype=g_S.dtype)

    def drift(self, g_S: torch.Tensor, t_s: torch.Tensor | float) -> torch.Tensor:
        """Conductance t seconds after programming: G ((t + t0)/t0)^(-nu_i) (power law per device), S."""
        if self.nu is None:
            return g_S
        t = torch.as_tensor(t_s, device=g_S.device, dtype=g_S.dtype)
        return g_S * torch.pow((t + self.model.drift_t0_s) / self.model.drift_t0_s, -self.nu)

    @property
    def states(self) -> float:
        return (self.g_max - self.g_min) / self.dw_S

