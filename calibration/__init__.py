"""Noise characterization, the choice of N, and the critical sigma."""

from calibration.allan import analyse_allan, overlapping_adev
from calibration.critical import find_critical_sigma
from calibration.samples import choose_samples
from calibration.statistics import estimate_noise

__all__ = ["analyse_allan", "overlapping_adev", "find_critical_sigma", "choose_samples", "estimate_noise"]
