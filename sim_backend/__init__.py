"""The simulated crossbar, its noise model and the emulated lab instruments."""

from hil.core.process import configure_process

configure_process()  # MKL's reproducible mode and the OpenMP wait policy, before torch starts (hil/core/process.py)
