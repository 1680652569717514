"""Pulsed resistive device models shared by the simulator and the emulated bench."""

from sim_backend.devices.config import DeviceModelConfig
from sim_backend.devices.model import DeviceArray
from sim_backend.devices.presets import PRESETS
from sim_backend.devices.store import load_device_model, resolve_device_model, save_device_model

__all__ = ["DeviceArray", "DeviceModelConfig", "PRESETS", "load_device_model", "resolve_device_model",
           "save_device_model"]
