"""How a simulated update reaches pulsed devices: open-loop pulse counts, or write-verify (closed loop).

`exact` programming (a low-rank change added to every conductance) stays in
SimCrossbar. Here each layer's change dG (S) is turned into pulses:

    pulses        n = the change in nominal steps dw (S), at most max_pulses per device and update.
                  rounding "accumulate" (default): each device keeps the change not yet pulsed in (the
                  controller holds it) and is pulsed once it reaches a step, n = trunc(r/dw), r -= n dw;
                  "stochastic": n = floor(dG/dw + U), U ~ U[0, 1) (unbiased, no memory; a random draw per
                  device and update, so slower on a CPU).
    write-verify  each device whose target (conductance plus its pending change, inside the device range)
                  is more than the tolerance away is read, pulsed one step toward the target, read again...
                  until within tolerance, verify_max_pulses, or more than verify_max_reversals overshoots (as
                  drivers/programming.py's write_verify does on a bench); smaller pending changes accumulate.

The low-rank change is added into the per-device accumulator in place (one GEMM, as the exact path adds
it to the conductances). On the CPU (host_checks) only the devices that get a pulse are then gathered
and pulsed (a small share per step: the cost stays near the exact path's); elsewhere (a GPU, where
reading an index list back would stall the queue) every device goes through the same arithmetic,
masked. Nothing in a step reads a value back to the host on a GPU. Pulse and read counters stay on the
device until `stats()`; programming time per update = pulses * pulse_period_s + reads * verify_read_s
(devices programmed one at a time, as the bench's programming board does).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from hil.core.backend import LowRankDelta
from hil.core.config import DevicesConfig
from hil.core.seeds import seed_stream
from sim_backend.devices.model import DeviceArray


def _take(t: torch.Tensor, sel: torch.Tensor | None) -> torch.Tensor:
    """t's entries at the flat indices sel (CPU: numpy's take, ~2x torch's gather here), or all of t."""
    return t if sel is None else torch.from_numpy(np.take(t.view(-1).numpy(), sel.numpy()))


def _put(t: torch.Tensor, sel: torch.Tensor | None, value: torch.Tensor) -> None:
    if sel is None:
        if value is not t:
            t.copy_(value)
    else:
        t.view(-1).numpy()[sel.numpy()] = value.numpy()


class PulseProgrammer:
    """Programs R replicas of a layered crossbar's conductances through a pulsed device model."""

    def __init__(self, devices: DevicesConfig, weights: Sequence[torch.Tensor], *, g_min: float, g_max: float,
                 seeds: Sequence[int], seed: int = 0, host_checks: bool = False):
        """devices: the model, update mode and limits; weights: the conductances (S) the devices start at, on
        [g_min, g_max] S; seeds: one per replica (device-to-device variation); seed: the write-noise generator's."""
        model, mode, rounding = devices.resolved(), devices.update, devices.rounding
        if mode not in ("pulses", "write-verify"):
            raise ValueError(f"devices.update: {mode!r} is not a pulsed mode (pulses, write-verify)")
        self.mode, self.rounding = mode, rounding
        self.max_pulses, self.verify_max_pulses = devices.max_pulses, devices.verify_max_pulses
        self.verify_max_reversals = devices.verify_max_reversals
        self.pulse_period_s, self.verify_read_s = devices.pulse_period_s, devices.verify_read_s
        self.g_min, self.g_max = float(g_min), float(g_max)
        self.host_checks = host_checks
        W0 = weights[0]
        self.arrays = [DeviceArray(model, W.shape, g_min=g_min, g_max=g_max, seeds=seeds, layer=j, device=W.device,
                                   dtype=W.dtype) for j, W in enumerate(weights)]
        for W, arr in zip(weights, self.arrays):  # stuck devices at their bound, the others inside theirs
            arr.initial_state(W)
        self.per_replica = [W[0].numel() for W in weights]
        self.dw_S = self.arrays[0].dw_S
        self.tol_S = devices.tolerance_steps * self.dw_S
        # What the devices hold, when what they conduct differs from it (write noise): kept apart.
        self.hidden = [W.clone() for W in weights] if model.write_noise_std > 0 else None
        # Drift (model.drift_nu > 0): what each device conducted right after its last write, and when that was
        # (s, on the simulator's clock); what it conducts now, drifted, goes into the conductances at each update.
        self.drifting = model.drift_nu > 0
        self.written = [W.clone() for W in weights] if self.drifting else None
        self.t_prog = [torch.zeros_like(W) for W in weights] if self.drifting else None
        self._now = 0.0
        stochastic = mode == "pulses" and rounding == "stochastic"
        self.change = [torch.empty_like(W) for W in weights] if stochastic else None  # dense dG, S
        # Change not yet programmed: in nominal steps (pulses), in S (write-verify).
        self.residual = None if stochastic else [torch.zeros_like(W) for W in weights]
        self._scratch: list = [None] * len(weights)
        self.gen = torch.Generator(device=W0.device)
        self.gen.manual_seed(seed_stream(seed, "device_pulses"))
        R = W0.shape[0]
        self._pulses, self._reads, self._err_sum, self._err_n = (
            torch.zeros(R, dtype=torch.float64, device=W0.device) for _ in range(4))
        self._updates = 0

    # ---- helpers -----------------------------------------------------------------
    def _select(self, j: int, x: torch.Tensor, at_least: float) -> torch.Tensor | None:
        """Flat indices where |x| >= at_least (CPU), or None: every device, masked (GPU, no host read).

        The CPU path's hot spot (a scan of every device for the few that get a pulse), in numpy on
        preallocated buffers: a fresh weight-sized temporary per step costs page faults, and numpy's
        flatnonzero is about 3x faster than torch.nonzero here.
        """
        if not self.host_checks:
            return None
        flat = x.view(-1).numpy()
        if self._scratch[j] is None:
            self._scratch[j] = (np.empty_like(flat), np.empty(flat.size, dtype=bool))
        mag, hit = self._scratch[j]
        np.greater_equal(np.abs(flat, out=mag), at_least, out=hit)
        return torch.from_numpy(np.flatnonzero(hit))

    def _count(self, j: int, acc: torch.Tensor, values: torch.Tensor, sel: torch.Tensor | None) -> None:
        """acc (R,) += values summed per replica."""
        if sel is None:
            acc += values.sum((1, 2), dtype=torch.float64)
        elif acc.numel() == 1:
            acc += values.sum(dtype=torch.float64)
        else:
            acc.index_add_(0, sel // self.per_replica[j], values.to(torch.float64))

    @staticmethod
    def _add(out: torch.Tensor, delta, per_S: float = 1.0) -> torch.Tensor:
        """out += delta * per_S (a LowRankDelta through one GEMM in place)."""
        if isinstance(delta, LowRankDelta):
            return out.baddbmm_(delta.left.transpose(1, 2).to(out.dtype), delta.right.to(out.dtype),
                                alpha=delta.scale * per_S)
        return out.add_(delta.to(out.dtype), alpha=per_S)

    # ---- programming ------------------------------------------------------------
    def program(self, weights: Sequence[torch.Tensor], deltas, now_s: float = 0.0) -> None:
        """Apply one update (a LowRankDelta or dense change per layer, S) to the conductances in place.

        now_s: the time of the update on the simulator's clock, s (drift only).
        """
        self._now = float(now_s)
        for j, (W_now, delta) in enumerate(zip(weights, deltas)):
            W = self.written[j] if self.written is not None else W_now  # drifting: what was written
            if self.mode == "write-verify":
                self._write_verify(j, W, delta)
            elif self.residual is not None:
                r = self._add(self.residual[j], delta, 1 / self.dw_S)  # in steps
                sel = self._select(j, r, 1.0)
                rv = _take(r, sel)
                n = torch.trunc(rv).clamp_(-self.max_pulses, self.max_pulses)
                _put(r, sel, (rv - n).clamp_(-1.0, 1.0))  # beyond the cap: dropped
                self._pulse(j, W, sel, n)
            elif self.change is not None:  # stochastic rounding
                d = self._add(self.change[j].zero_(), delta, 1 / self.dw_S)  # in steps
                d.add_(torch.rand(d.shape, generator=self.gen, device=d.device, dtype=d.dtype)).floor_()
                n_all = d.clamp_(-self.max_pulses, self.max_pulses)
                sel = self._select(j, n_all, 1.0)
                self._pulse(j, W, sel, _take(n_all, sel))
            if self.t_prog is not None:  # drift: G(t) = G_written ((t + t0)/t0)^-nu, t since each device's last write
                W_now.copy_(self.arrays[j].drift(W, (self._now - self.t_prog[j]).clamp_min_(0.0)))
        self._updates += 1

    def _stamp(self, j: int, sel: torch.Tensor | None, written: torch.Tensor) -> None:
        """Drift: the devices written now restart their clock."""
        if self.t_prog is not None:
            _put(self.t_prog[j], sel, torch.where(written, self._now, _take(self.t_prog[j], sel)))

    def _pulse(self, j: int, W: torch.Tensor, sel: torch.Tensor | None, n: torch.Tensor) -> None:
        """n pulses into the devices sel (all: None); W gets what they conduct."""
        arr = self.arrays[j] if sel is None else self.arrays[j].take(sel)
        G = W if self.hidden is None else self.hidden[j]
        g = arr.apply_pulses(_take(G, sel), n, self.gen)
        _put(G, sel, g)
        if self.hidden is not None:
            _put(W, sel, arr.write_noise(g, n != 0, self.gen, out=_take(W, sel)))
        self._count(j, self._pulses, n.abs(), sel)
        self._stamp(j, sel, n != 0)

    def _write_verify(self, j: int, W: torch.Tensor, delta) -> None:
        if self.residual is None:
            raise RuntimeError("write-verify: no residual kept (the programmer was built for stochastic pulses)")
        pend = self._add(self.residual[j], delta)
        sel = self._select(j, pend, self.tol_S)  # only these can be due (the clamp only shortens)
        arr = self.arrays[j] if sel is None else self.arrays[j].take(sel)
        G = W if self.hidden is None else self.hidden[j]
        w, g, p = _take(W, sel).clone(), _take(G, sel).clone(), _take(pend, sel)
        target = (w + p).clamp_(self.g_min, self.g_max)
        due = (target - w).abs() > self.tol_S
        _put(pend, sel, torch.where(due, 0.0, p))
        programmed = due.clone()
        last = torch.zeros_like(w)  # direction of each device's previous pulse
        flips = torch.zeros_like(w)  # polarity reversals (overshoots) so far
        for _ in range(self.verify_max_pulses):
            err = target - arr.read(w, self.gen)
            self._count(j, self._reads, due, sel)
            direction = torch.sign(err)
            due &= err.abs() > self.tol_S
            flips += (due & (direction * last < 0)).to(flips.dtype)
            due &= flips <= self.verify_max_reversals
            if self.host_checks and not bool(due.any()):
                break
            n = torch.where(due, direction, 0.0)
            last = torch.where(due, direction, last)
            g = arr.apply_pulses(g, n, self.gen)
            w = arr.write_noise(g, due, self.gen, out=w) if self.hidden is not None else g
            self._count(j, self._pulses, due, sel)
        _put(G, sel, g)
        if self.hidden is not None:
            _put(W, sel, w)
        self._count(j, self._err_sum, torch.where(programmed, (w - target).abs(), 0.0), sel)
        self._count(j, self._err_n, programmed, sel)
        self._stamp(j, sel, programmed)

    #: per-device tensors the next updates depend on: sub-step changes not yet programmed, what the devices hold
    #: under their write noise, and (drift) what they conducted right after their last write and when
    STATE = ("residual", "hidden", "written", "t_prog")

    def state(self) -> dict:
        """What the next updates depend on besides the conductances, for a checkpoint (with the rounding generator)."""
        copy = lambda ts: None if ts is None else [t.detach().cpu().clone() for t in ts]  # noqa: E731
        return {"generator": self.gen.get_state(), **{k: copy(getattr(self, k)) for k in self.STATE}}

    def load_state(self, state: dict) -> None:
        self.gen.set_state(state["generator"])
        for key in self.STATE:
            mine, saved = getattr(self, key), state.get(key)
            if mine is not None and saved is not None:
                for t, s in zip(mine, saved):
                    t.copy_(s)

    def stats(self, reset: bool = True) -> dict:
        """Pulses per update and programming time per update (mean over replicas), since the last reset."""
        u = max(self._updates, 1)
        pulses = float(self._pulses.mean()) / u
        reads = float(self._reads.mean()) / u
        out = {"pulses_per_update": round(pulses, 2),
               "programming_s_per_update": pulses * self.pulse_period_s + reads * self.verify_read_s}
        if self.mode == "write-verify":
            out["verify_reads_per_update"] = round(reads, 2)
            out["verify_residual_S"] = float(self._err_sum.sum() / self._err_n.sum().clamp_min(1))
        if reset:
            for t in (self._pulses, self._reads, self._err_sum, self._err_n):
                t.zero_()
            self._updates = 0
        return out
