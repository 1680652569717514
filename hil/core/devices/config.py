"""The parameters of a pulsed resistive device model (pydantic 2, aihwkit-style, typed and documented).

Units: a device model is written in the *normalized* units of its published fit
(aihwkit's convention): conductance spans [w_min, w_max] and one pulse moves it
by about dw_min. A simulation maps [w_min, w_max] affinely onto the device range
[g_min, g_max] in siemens, so one normalized unit is (g_max - g_min)/(w_max - w_min) S.
Noise figures written "relative to dw_min" are multiples of the nominal step.

Response to one SET (up) or RESET (down) pulse, mean step in normalized units
(Gokmen & Vlasov 2016, and the pulsed-device family of aihwkit), per device i:

    ideal        no pulses: a change is programmed exactly (the simulator's `exact` update)
    constant     up_i                                  | down_i
    linear       up_i (1 - gamma_up w / w_max_i)       | down_i (1 - gamma_down w / w_min_i)
    soft_bounds  up_i (1 - w / w_max_i)                | down_i (1 - w / w_min_i)      (linear, gamma = 1)
    exp          up_i max(0, 1 - A_up e^{gamma_up z})  | down_i max(0, 1 - A_down e^{-gamma_down z}),
                 z = 2 a w / (w_max_i - w_min_i) + b

with up_i = dw_min_i (1 + up_down_i), down_i = dw_min_i (1 - up_down_i),
dw_min_i = dw_min (1 + dw_min_dtod xi), up_down_i = up_down + up_down_dtod xi,
w_max_i = w_max + w_max_dtod (w_max - w_min)/2 xi (and w_min_i alike), xi ~ N(0, 1)
drawn once per device. Each pulse's step is multiplied by (1 + dw_min_std xi')
(cycle-to-cycle), then kept inside [w_min_i, w_max_i].
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hil.core.schema import StrictModel

#: write-verify's defaults, the same for the simulated devices (devices.verify_*) and the bench's programming
#: section (programming.max_*): stop a device after this many pulses in one update, or after this many overshoots
WRITE_VERIFY_MAX_PULSES = 30
WRITE_VERIFY_MAX_REVERSALS = 3


class DeviceModelConfig(StrictModel):
    """One pulsed device type: its step response, spreads, defects and noise (normalized units, see module doc)."""

    name: str = Field(default="custom", description="A label for tables and plots.")
    citation: str = Field(default="", description="The publication the parameters were fitted to.")
    kind: Literal["ideal", "constant", "linear", "soft_bounds", "exp"] = Field(
        default="ideal", description="Step response to one pulse (module doc): ideal, constant, linear, soft_bounds, exp.")
    # ---- mean step and range --------------------------------------------------
    dw_min: float = Field(default=1e-3, gt=0, description="Nominal step of one pulse, normalized units "
                          "(at w = 0 for the state-dependent kinds).")
    up_down: float = Field(default=0.0, gt=-1, lt=1, description="Asymmetry: up steps are (1 + up_down) dw_min, "
                           "down steps (1 - up_down) dw_min.")
    w_min: float = Field(default=-1.0, description="Lower bound of the conductance, normalized units (maps to g_min).")
    w_max: float = Field(default=1.0, description="Upper bound, normalized units (maps to g_max).")
    gamma_up: float = Field(default=0.0, ge=0, description="linear: step decrease toward w_max (0: constant).")
    gamma_down: float = Field(default=0.0, ge=0, description="linear: step decrease toward w_min.")
    a: float = Field(default=-0.5, description="exp: scale of z = 2 a w / (w_max - w_min) + b.")
    b: float = Field(default=-0.5, description="exp: offset of z.")
    A_up: float = Field(default=-1.18445, description="exp: amplitude of the up step's exponential term.")
    A_down: float = Field(default=-0.081404, description="exp: amplitude of the down step's exponential term.")
    gamma_exp_up: float = Field(default=5.0, description="exp: rate of the up step's exponential term.")
    gamma_exp_down: float = Field(default=5.0, description="exp: rate of the down step's exponential term.")
    # ---- device-to-device spreads (drawn once per device from the run's seed) ---
    dw_min_dtod: float = Field(default=0.0, ge=0, description="Std of dw_min across devices, relative to dw_min.")
    up_down_dtod: float = Field(default=0.0, ge=0, description="Std of up_down across devices (absolute).")
    w_min_dtod: float = Field(default=0.0, ge=0, description="Std of each device's lower bound, in half-ranges (w_max - w_min)/2.")
    w_max_dtod: float = Field(default=0.0, ge=0, description="Std of each device's upper bound, in half-ranges (w_max - w_min)/2.")
    # ---- cycle-to-cycle and write noise ----------------------------------------
    dw_min_std: float = Field(default=0.0, ge=0, description="Cycle-to-cycle: each pulse's step is multiplied by "
                              "(1 + dw_min_std xi), xi ~ N(0, 1).")
    write_noise_std: float = Field(default=0.0, ge=0, description="Write noise, relative to dw_min: after a device is "
                                   "programmed, what it conducts is its state plus this noise, redrawn at each write.")
    # ---- defects, drift, read noise --------------------------------------------
    stuck_fraction: float = Field(default=0.0, ge=0, le=1, description="Share of devices that do not respond to pulses.")
    stuck_high_share: float = Field(default=0.5, ge=0, le=1, description="Share of the stuck devices stuck at the upper "
                                    "bound (g_max); the others are stuck at the lower bound (g_min).")
    drift_nu: float = Field(default=0.0, ge=0, description="Drift after programming: G(t) = G_0 ((t + t0)/t0)^(-nu), "
                            "t the time since the device was last programmed.")
    drift_nu_dtod: float = Field(default=0.0, ge=0, description="Std of nu across devices, relative to drift_nu.")
    drift_t0_s: float = Field(default=1.0, gt=0, description="t0 of the drift law, s.")
    read_noise_std: float = Field(default=0.0, ge=0, description="Std of one reading of a device's conductance, "
                                  "relative to dw_min (write-verify and characterization read it).")
    read_noise_dtod: float = Field(default=0.0, ge=0, description="Std of read_noise_std across devices, relative.")

    @model_validator(mode="after")
    def _check(self) -> DeviceModelConfig:
        if self.w_max <= self.w_min:
            raise ValueError(f"w_max: must exceed w_min={self.w_min} (got {self.w_max})")
        if self.kind in ("linear", "soft_bounds") and not self.w_min < 0 < self.w_max:
            raise ValueError(f"w_min, w_max: the {self.kind} step is written for bounds either side of 0 "
                             f"(got {self.w_min}, {self.w_max})")
        return self

    @property
    def pulsed(self) -> bool:
        return self.kind != "ideal"

    @property
    def states(self) -> float:
        """Nominal number of levels: (w_max - w_min) / dw_min."""
        return (self.w_max - self.w_min) / self.dw_min
