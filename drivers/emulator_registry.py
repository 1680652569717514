"""The emulator registry: the JSON file in which `hil emulate` lists the live addresses of its instruments.

A lab config names an emulated instrument `emulator:NAME`; the drivers resolve NAME through this file, and the
emulator writes it. Both find it the same way (`registry_path`: the path given, else $HIL_EMULATOR_REGISTRY,
else .hil-emulator.json in the working folder) and read it with `read_registry`, so the file's layout is written
down here only: {"lab": name, "pid": the emulator's pid, "host": its host name, "resources": {NAME: address}}.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from hil.core.process import pid_alive

#: the environment variable that points every client, and `hil emulate`, at a registry file
REGISTRY_ENV = "HIL_EMULATOR_REGISTRY"
#: the registry when neither a path nor the environment names one: in the working folder
DEFAULT_REGISTRY = Path(".hil-emulator.json")


class RegistryError(ValueError):
    """The file is not an emulator registry (not JSON, or not its layout)."""


def registry_path(given: Path | str | None = None) -> Path:
    """The registry file: `given`, else $HIL_EMULATOR_REGISTRY, else .hil-emulator.json here."""
    return Path(given or os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY)


@dataclass(frozen=True)
class Registry:
    """What a registry file says."""

    lab: str | None = None
    pid: int | None = None
    host: str | None = None
    resources: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"lab": self.lab, "pid": self.pid, "host": self.host, "resources": self.resources},
                          indent=1) + "\n"

    @property
    def on_this_host(self) -> bool:
        """Written here (a file without a host is taken as written here)."""
        return self.host is None or self.host == socket.gethostname()

    def owner_running(self) -> bool | None:
        """Whether the emulator that wrote it still runs: None where that cannot be told (no pid, another host)."""
        if self.pid is None or not self.on_this_host:
            return None
        return pid_alive(self.pid)


def read_registry(path: Path) -> Registry:
    """The registry at path; OSError where it cannot be read, RegistryError where it is not a registry."""
    text = Path(path).read_text()
    try:
        data = json.loads(text)
        resources = data.get("resources", {})
        pid = data.get("pid")
        if not isinstance(resources, dict):
            raise TypeError("resources")
        return Registry(data.get("lab"), None if pid is None else int(pid), data.get("host"),
                        {str(k): str(v) for k, v in resources.items()})
    except (ValueError, TypeError, AttributeError):
        raise RegistryError(f"{path} is not an emulator registry") from None


def registry_owner(path: Path) -> int | None:
    """The pid of the live emulator on this host that wrote the registry at path, else None (absent or stale)."""
    try:
        reg = read_registry(path)
    except (OSError, RegistryError):
        return None
    return reg.pid if reg.owner_running() else None
