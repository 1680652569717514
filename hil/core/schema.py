"""What every typed config of the project shares: the strict base model, the YAML reader and the error formatter.

The run config (hil.core.config), the device models (hil.core.devices) and the lab config (drivers/lab.py) all
build on these, so a typo, an infinite value or a broken file reads the same way whichever file it is in.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


class StrictModel(BaseModel):
    """The base of every config section: unknown keys are an error (a typo is not a silently ignored setting),
    assignments are validated, and inf or NaN is refused (--gamma inf is one error naming the field, not a failed
    run)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def read_yaml(path: Path, what: str = "config file") -> dict[str, Any]:
    """The mapping a YAML file holds; ConfigError naming the file (and the line of a syntax error) otherwise.

    what: how a missing file is named in the error ("config file", "lab config", "device.yaml")."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err.__class__.__name__}: {str(err).splitlines()[0]})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read ({getattr(err, 'strerror', None) or err.__class__.__name__})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return tree


def format_validation_error(err: ValidationError) -> str:
    """One line naming the first offending field, its problem and the value given."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "config"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        return f"{loc}: unknown key"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    field = re.match(r"([a-z_]+): ", msg)
    if field and first["loc"]:  # a section's validator naming its field: data: classes: ... -> data.classes: ...
        loc, msg = f"{loc}.{field.group(1)}", msg[field.end():]
    value = first.get("input")
    shown = "" if isinstance(value, dict) or repr(value) in msg else f" (got {value!r})"
    if not first["loc"] and re.match(r"[\w.\[\]-]+: ", msg):  # a whole-config check that names its field itself
        return f"{msg}{shown}"
    return f"{loc}: {msg}{shown}"
