"""Pulsed resistive devices in simulation: the vectorized array and its programming (configs: hil.core.devices)."""

from sim_backend.devices.model import DeviceArray

__all__ = ["DeviceArray"]
