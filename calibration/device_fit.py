"""Device characterization: pulse trains through a programming board, and a fit of the pulsed-device model.

Data (`PulseTrains`): for each sampled device, `repeats` readings of its conductance (read noise), then
`cycles` times: K SET pulses, then K RESET pulses, the conductance read after every pulse. K should take a
device from one bound to the other (several hundred pulses for most presets), so the bounds are seen.

Fit (`fit_pulse_trains`), per device, in the normalized units of the device range [g_min_S, g_max_S] of the
lab (w = -1 at g_min_S, +1 at g_max_S; `hil.core.devices.config`):

  bounds         the median of the last readings of the SET (RESET) trains, where the device saturated (its
                 last steps under 0.3 of a typical step; devices that did not saturate are left out of the bounds);
  mean step      least squares of the step against the conductance, per direction, over the readings
                 more than two steps from the bounds: step = a + b g, the linear-step model (constant:
                 b = 0; soft bounds: the step vanishes at the bound, gamma = 1);
  step size, asymmetry   from the up and down steps at w = 0: dw = (up + down)/2, up_down = (up - down)/(up + down);
  nonlinearity   gamma_up = -b_up w_max / up(0), gamma_down = b_down w_min / down(0) (dimensionless);
  cycle-to-cycle the residual variance of the steps, less twice the read-noise variance (two readings per
                 step), relative to the squared mean step, pooled over the devices' points;
  stuck          devices whose readings span less than 5 read-noise deviations (excluded from the rest).

Across devices: nominal values are means, device-to-device spreads standard deviations (dw_min_dtod relative,
bounds in half-ranges), each with its standard error (sd/sqrt(n) for a mean, sd/sqrt(2(n-1)) for an sd,
the binomial error for the stuck fraction, c2c/sqrt(2 points) for the pooled cycle-to-cycle spread).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from calibration.commands import CommandError
from drivers.roles import PulseReads
from hil.core.devices.config import DeviceModelConfig


@dataclass
class PulseTrains:
    devices: list[tuple[int, int, int]]  # (layer, row, col) in the network's device map
    g_S: np.ndarray  # (devices, cycles, 2K + 1): start, after each of K SET pulses, after each of K RESET pulses
    repeat_S: np.ndarray  # (devices, repeats): readings at rest
    g_min_S: float
    g_max_S: float

    @property
    def pulses(self) -> int:
        return (self.g_S.shape[2] - 1) // 2


def apply_pulse_trains(boards, devices, *, pulses: int, cycles: int, set_V: float, reset_V: float, width_s: float,
                       repeats: int, g_min_S: float, g_max_S: float, progress=None) -> PulseTrains:
    """Drive the trains. boards: layer -> (board driver with pulse/read_conductance, row offset, column offset)."""
    D, K = len(devices), pulses
    g = np.empty((D, cycles, 2 * K + 1))
    rep = np.empty((D, repeats))
    for d, (layer, i, j) in enumerate(devices):
        board, r0, c0 = boards[layer]
        row, col = r0 + i, c0 + j
        rep[d] = [board.read_conductance(row, col) for _ in range(repeats)]
        for c in range(cycles):
            g[d, c, 0] = board.read_conductance(row, col)
            for t in range(2 * K):
                volts = set_V if t < K else -reset_V
                if isinstance(board, PulseReads):  # the reading comes with the pulse (the ArC ONE)
                    g[d, c, t + 1] = board.pulse_read(row, col, volts, width_s)
                else:
                    board.pulse(row, col, volts, width_s)
                    g[d, c, t + 1] = board.read_conductance(row, col)
        if progress:
            progress(d + 1, D)
    return PulseTrains(list(devices), g, rep, g_min_S, g_max_S)


@dataclass
class DeviceFit:
    model: DeviceModelConfig
    estimates: dict  # name -> {"value", "stderr"} (normalized units unless the name says otherwise)
    per_device: dict  # name -> array over the devices that respond
    stuck: np.ndarray  # (devices,) bool

    def to_yaml_tree(self) -> dict:
        return {name: {"value": float(v["value"]), "stderr": float(v["stderr"])} for name, v in self.estimates.items()}


class FitError(CommandError):
    """The data cannot support the fit; the message says what to change."""


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares y = a + b x."""
    A = np.stack([np.ones_like(x), x], axis=1)
    (a, b), *_ = np.linalg.lstsq(A, y, rcond=None)
    return float(a), float(b)


def fit_pulse_trains(data: PulseTrains, name: str = "fitted", citation: str = "") -> DeviceFit:
    g, K = data.g_S, data.pulses
    unit = (data.g_max_S - data.g_min_S) / 2.0  # S per normalized unit (w = -1 .. 1 over the range)
    g0 = data.g_min_S + unit  # w = 0
    read_sd = data.repeat_S.std(axis=1, ddof=1)
    span = g.reshape(len(g), -1).max(axis=1) - g.reshape(len(g), -1).min(axis=1)
    stuck = span < 5 * read_sd + 1e-6 * unit
    live = np.flatnonzero(~stuck)
    if len(live) < 3:
        raise FitError(f"only {len(live)} of {len(g)} sampled devices respond to pulses; sample more (--sample)")
    tail = max(3, K // 50)
    lists: dict[str, list[float]] = {k: [] for k in ("dw_min", "up_down", "w_min", "w_max", "slope_up", "slope_down")}
    c2c_num, c2c_den = 0.0, 0
    for d in live:
        steps = np.diff(g[d], axis=1)  # (cycles, 2K)
        typical = float(np.median(np.abs(steps[:, : max(K // 4, 1)])))
        # A train saturated when its last steps are small against a typical one: its last readings are the bound.
        top_ok = abs(float(steps[:, K - tail:K].mean())) < 0.3 * typical
        bottom_ok = abs(float(steps[:, 2 * K - tail:].mean())) < 0.3 * typical
        hi = float(np.median(g[d, :, K - tail:K + 1]))
        lo = float(np.median(g[d, :, 2 * K + 1 - tail:]))
        up_x, up_y = g[d, :, :K].ravel(), steps[:, :K].ravel()
        dn_x, dn_y = g[d, :, K:2 * K].ravel(), steps[:, K:].ravel()
        keep_up = up_x < hi - 2 * typical
        keep_dn = dn_x > lo + 2 * typical
        if keep_up.sum() < 5 or keep_dn.sum() < 5 or hi - lo < 10 * typical:
            raise FitError(f"device {data.devices[d]}: its trains span only {(hi - lo) / max(typical, 1e-30):.1f} "
                           "steps; raise --pulses or check the pulse amplitude")
        au, bu = _line(up_x[keep_up], up_y[keep_up])
        ad, bd = _line(dn_x[keep_dn], dn_y[keep_dn])
        up0, dn0 = au + bu * g0, -(ad + bd * g0)
        if up0 <= 0 or dn0 <= 0:
            raise FitError(f"device {data.devices[d]}: no net SET or RESET step at mid-range (SET {up0:.3g} S, "
                           f"RESET {-dn0:.3g} S)")
        lists["dw_min"].append((up0 + dn0) / 2 / unit)
        lists["up_down"].append((up0 - dn0) / (up0 + dn0))
        lists["w_min"].append(-1 + (lo - data.g_min_S) / unit if bottom_ok else np.nan)
        lists["w_max"].append(-1 + (hi - data.g_min_S) / unit if top_ok else np.nan)
        lists["slope_up"].append(-bu * unit / up0)  # gamma_up / w_max
        lists["slope_down"].append(bd * unit / dn0)  # gamma_down / w_min
        for x, y, keep, a, b in ((up_x, up_y, keep_up, au, bu), (dn_x, dn_y, keep_dn, ad, bd)):
            fitted = a + b * x[keep]
            c2c_num += float(np.sum(((y[keep] - fitted) ** 2 - 2 * read_sd[d] ** 2) / fitted ** 2))
            c2c_den += int(keep.sum())
    per = {k: np.asarray(v) for k, v in lists.items()}
    n = len(live)
    for side in ("w_min", "w_max"):
        seen = np.isfinite(per[side])
        if seen.sum() < 3:
            raise FitError(f"only {seen.sum()} of the {n} devices reached their "
                           f"{'upper' if side == 'w_max' else 'lower'} bound within the trains, and the fit needs 3; "
                           "raise --pulses so the trains cross the whole range")
    # gamma from each device's slope and bound (the mean bound where its train did not saturate)
    per["gamma_up"] = per["slope_up"] * np.where(np.isfinite(per["w_max"]), per["w_max"], np.nanmean(per["w_max"]))
    per["gamma_down"] = per["slope_down"] * np.where(np.isfinite(per["w_min"]), per["w_min"], np.nanmean(per["w_min"]))
    del per["slope_up"], per["slope_down"]

    def mean(v):
        v = v[np.isfinite(v)]
        return {"value": float(v.mean()), "stderr": float(v.std(ddof=1) / math.sqrt(len(v)))}

    def spread(v, scale=1.0):
        v = v[np.isfinite(v)]
        sd = float(v.std(ddof=1)) / scale
        return {"value": sd, "stderr": sd / math.sqrt(2 * (len(v) - 1))}

    est = {k: mean(per[k]) for k in per}
    half = (est["w_max"]["value"] - est["w_min"]["value"]) / 2
    dw = est["dw_min"]["value"]
    est["dw_min_dtod"] = spread(per["dw_min"], dw)
    est["up_down_dtod"] = spread(per["up_down"])
    est["w_min_dtod"] = spread(per["w_min"], half)
    est["w_max_dtod"] = spread(per["w_max"], half)
    c2c = math.sqrt(max(c2c_num / max(c2c_den, 1), 0.0))
    est["dw_min_std"] = {"value": c2c, "stderr": c2c / math.sqrt(2 * max(c2c_den, 1))}
    p_stuck = float(stuck.mean())
    est["stuck_fraction"] = {"value": p_stuck, "stderr": math.sqrt(max(p_stuck * (1 - p_stuck), 1 / len(g)) / len(g))}
    mid = 0.5 * (data.g_min_S + data.g_max_S)
    high = float((g[stuck, 0, 0] > mid).mean()) if stuck.any() else 0.5
    est["read_noise_S"] = {"value": float(np.sqrt(np.mean(read_sd[live] ** 2))), "stderr": 0.0}
    est["read_noise_S"]["stderr"] = est["read_noise_S"]["value"] / math.sqrt(2 * n * (data.repeat_S.shape[1] - 1))
    w_min, w_max = est["w_min"]["value"], est["w_max"]["value"]
    if not w_min < 0 < w_max:
        raise FitError(f"fitted bounds {w_min:.3g} .. {w_max:.3g} (normalized) do not straddle mid-range; "
                       "check programming.g_min_S and g_max_S against the devices")
    model = DeviceModelConfig(
        name=name, citation=citation or "fitted by `hil characterize --devices`", kind="linear",
        dw_min=dw, up_down=float(np.clip(est["up_down"]["value"], -0.99, 0.99)), w_min=w_min, w_max=w_max,
        gamma_up=max(est["gamma_up"]["value"], 0.0), gamma_down=max(est["gamma_down"]["value"], 0.0),
        dw_min_dtod=est["dw_min_dtod"]["value"], up_down_dtod=est["up_down_dtod"]["value"],
        w_min_dtod=est["w_min_dtod"]["value"], w_max_dtod=est["w_max_dtod"]["value"], dw_min_std=c2c,
        stuck_fraction=p_stuck, stuck_high_share=high,
        read_noise_std=est["read_noise_S"]["value"] / (dw * unit))
    return DeviceFit(model, est, per, stuck)


def fitted_trajectories(data: PulseTrains, fit: DeviceFit) -> np.ndarray:
    """The fit's mean response to the same trains from each cycle's first reading, S (devices, cycles, 2K+1)."""
    K, unit = data.pulses, (data.g_max_S - data.g_min_S) / 2.0
    out = np.full(data.g_S.shape, np.nan)
    live = np.flatnonzero(~fit.stuck)
    p = fit.per_device
    for k, d in enumerate(live):
        up = p["dw_min"][k] * (1 + p["up_down"][k])
        dn = p["dw_min"][k] * (1 - p["up_down"][k])
        w_lo = p["w_min"][k] if np.isfinite(p["w_min"][k]) else fit.model.w_min
        w_hi = p["w_max"][k] if np.isfinite(p["w_max"][k]) else fit.model.w_max
        w = -1 + (data.g_S[d, :, 0] - data.g_min_S) / unit
        out[d, :, 0] = data.g_S[d, :, 0]
        for t in range(2 * K):
            if t < K:
                w = w + up * (1 - p["gamma_up"][k] * w / w_hi)
            else:
                w = w - dn * (1 - p["gamma_down"][k] * w / w_lo)
            w = np.clip(w, w_lo, w_hi)
            out[d, :, t + 1] = data.g_min_S + (w + 1) * unit
    return out
