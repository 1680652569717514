"""Choosing N, the readings averaged per node and state, from sigma/sqrt(N)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from calibration.allan import AllanResult


class CalibrationError(ValueError):
    """No N can meet the request; the message says what to change."""


@dataclass
class BenchTiming:
    aperture_s: float
    overhead_s: float
    nodes: int
    parallel_channels: int = 1
    phases: int = 2  # free and nudged (centered EP: 3)
    programming_s: float = 0.0  # programming the update's pulses (pulsed devices), s per update

    def reading_seconds(self, n: int) -> float:
        """phases x N readings x (aperture + overhead) x nodes / parallel channels."""
        return self.phases * n * (self.aperture_s + self.overhead_s) * math.ceil(self.nodes / self.parallel_channels)

    def seconds_per_update(self, n: int) -> float:
        """The readings, plus the time to program the update into the devices."""
        return self.reading_seconds(n) + self.programming_s


@dataclass
class SampleChoice:
    samples: int
    sigma_target: float
    sigma_upper: float
    sigma_eff: float          # expected sigma of the mean of N readings (model, upper bound)
    n_max: int | None
    capped: bool
    seconds_per_update: float | None
    reasoning: list[str]

    def to_json(self) -> dict:
        return asdict(self)


def choose_samples(
    sigma_upper: float,
    sigma_target: float,
    allan: AllanResult | None = None,
    timing: BenchTiming | None = None,
) -> SampleChoice:
    """N = ceil((sigma_upper / sigma_target)^2), capped at N_max, refused below the Allan floor.

    sigma_upper: the upper confidence bound on the sd of one reading, V.
    sigma_target: the effective noise wanted, V (for example the sweep's sigma_opt).
    """
    for name, v in (("sigma_upper", sigma_upper), ("sigma_target", sigma_target)):
        if not (isinstance(v, (int, float)) and math.isfinite(v)) or v <= 0:
            raise CalibrationError(f"{name}: must be a finite voltage > 0 V (got {v})")
    why = [f"One reading has sigma <= {sigma_upper:.3g} V (upper 95% bound); the target is {sigma_target:.3g} V."]
    n = max(1, math.ceil((sigma_upper / sigma_target) ** 2 - 1e-9))
    why.append(f"Averaging N readings divides white noise by sqrt(N): N = ceil(({sigma_upper:.3g}/{sigma_target:.3g})^2) = {n}.")
    floor = allan.floor if allan else None
    n_max = allan.n_max if allan else None
    if floor is not None and sigma_target <= floor:
        raise CalibrationError(
            f"sigma_target: {sigma_target:.3g} V lies below the Allan floor {floor:.3g} V (1/f noise or drift), which no "
            "N removes and a longer NPLC does not lower. Raise what EP reads instead: a larger input gain (gamma) or "
            "beta scales the voltage differences, and so the sigma training tolerates; or lower the floor on the bench "
            "(another range, NPLC a whole number of line cycles against mains pickup, thermal settling against drift)."
        )
    capped = False
    # Expected sigma of the mean of N readings: the white part at its upper bound plus what averaging keeps.
    b = allan.flicker_var if allan else 0.0
    c = allan.drift_var if allan else 0.0
    expected = lambda k: math.sqrt(sigma_upper**2 / k + b + c * k * k)  # noqa: E731
    if b > 0:
        n = max(n, math.ceil(sigma_upper**2 / (sigma_target**2 - b) - 1e-9))
        why.append(f"The 1/f floor adds {math.sqrt(b):.3g} V that averaging keeps: N = ceil(sigma^2/(target^2 - "
                   f"floor^2)) = {n}.")
    if n_max is not None and n > n_max:
        capped = True
        n = n_max
        why.append(f"Capped at N_max = {n_max}: past it the Allan deviation stops falling, so more readings cost time "
                   f"without lowering the noise. Expected sigma at N = {n}: {expected(n):.3g} V, above the target; "
                   "raise the input gain or beta (or lower the bench's floor) to reach it.")
    elif allan is not None:
        limit = f"below N_max = {n_max}" if n_max else "with no Allan floor within the readings taken"
        why.append(f"N = {n} is {limit}; expected sigma of the mean {expected(n):.3g} V.")
    sigma_eff = expected(n)
    seconds = None
    if timing is not None:
        seconds = timing.seconds_per_update(n)
        why.append(f"Bench time per update: {timing.phases} phases x {n} readings x ({timing.aperture_s * 1e3:.3g} ms aperture "
                   f"+ {timing.overhead_s * 1e3:.3g} ms overhead) x {timing.nodes} nodes / {timing.parallel_channels} "
                   f"channel(s) = {timing.reading_seconds(n):.3g} s"
                   + (f", plus {timing.programming_s:.3g} s programming the update's pulses = {seconds:.3g} s."
                      if timing.programming_s else "."))
    return SampleChoice(n, sigma_target, sigma_upper, sigma_eff, n_max, capped, seconds, why)
