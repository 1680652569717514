"""Device-model configs: the typed parameters of a resistive device, its presets and device.yaml on disk."""

from hil.core.devices.config import DeviceModelConfig
from hil.core.devices.presets import PRESETS
from hil.core.devices.store import DeviceModelError, load_device_model, resolve_device_model, save_device_model

__all__ = ["DeviceModelConfig", "DeviceModelError", "PRESETS", "load_device_model", "resolve_device_model",
           "save_device_model"]
