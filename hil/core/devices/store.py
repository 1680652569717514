"""device.yaml: a device model (a preset's fields, or a fit with its uncertainties) on disk."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from hil.core.devices.config import DeviceModelConfig
from hil.core.devices.presets import PRESETS
from hil.core.schema import ConfigError, format_validation_error, read_yaml


class DeviceModelError(ConfigError):
    """A device model could not be found or read; the message names it."""


def load_device_model(path: Path) -> DeviceModelConfig:
    """Read device.yaml: the model's fields at the top level or under `model:` (a fit adds `fit:` beside it)."""
    path = Path(path)
    try:
        tree = read_yaml(path, "device.yaml")
    except ConfigError as err:
        raise DeviceModelError(str(err)) from None
    tree = tree.get("model", tree) if "model" in tree else tree
    try:
        return DeviceModelConfig.model_validate(tree)
    except ValidationError as err:
        raise DeviceModelError(f"{path}: {format_validation_error(err)}") from None


def resolve_device_model(spec: str | Path) -> DeviceModelConfig:
    """A preset name (see PRESETS) or the path of a device.yaml."""
    if str(spec) in PRESETS:
        return PRESETS[str(spec)]
    path = Path(spec)
    if not path.is_file():
        raise DeviceModelError(f"{str(spec)!r} is neither a preset ({', '.join(PRESETS)}) "
                               "nor a device.yaml file")
    return load_device_model(path)


def save_device_model(model: DeviceModelConfig, path: Path, fit: dict | None = None) -> Path:
    """Write device.yaml (the model, and a fit's estimates with their uncertainties when given)."""
    tree = {"model": model.model_dump(mode="json")}
    if fit:
        tree["fit"] = fit
    Path(path).write_text(yaml.safe_dump(tree, sort_keys=False))
    return Path(path)
