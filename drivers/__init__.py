"""Instrument drivers (pyvisa, pyserial) and the instrument-backed crossbar."""
