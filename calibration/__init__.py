"""Noise characterization, the choice of N, and the critical sigma."""

# ruff: noqa: E402 - the process set-up runs before the modules below import numpy and torch
from hil.core.process import configure_process

configure_process()  # MKL's reproducible mode and the OpenMP wait policy, before torch starts (hil/core/process.py)

from calibration.allan import analyse_allan, overlapping_adev
from calibration.critical import find_critical_sigma
from calibration.samples import choose_samples
from calibration.statistics import estimate_noise

__all__ = ["analyse_allan", "overlapping_adev", "find_critical_sigma", "choose_samples", "estimate_noise"]
