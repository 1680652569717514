"""Instrument drivers (pyvisa, pyserial) and the instrument-backed crossbar."""

from hil.core.process import configure_process

configure_process()  # MKL's reproducible mode and the OpenMP wait policy, before torch starts (hil/core/process.py)
