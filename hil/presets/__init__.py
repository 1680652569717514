"""Named run configurations that ship with hil (`--preset NAME`): one YAML file each, in this folder.

A preset sits beneath everything else: a lab's run: section, --config files and flags override it.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from hil.core.config import ConfigError


def preset_names() -> list[str]:
    """The presets that ship with this installation, sorted."""
    return sorted(p.name[:-len(".yaml")] for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """The config tree of preset `name`; one ConfigError listing the presets for an unknown name."""
    names = preset_names()
    if name not in names:
        raise ConfigError(f"--preset: no preset {name!r} (presets: {', '.join(names)})")
    tree = yaml.safe_load(resources.files(__name__).joinpath(f"{name}.yaml").read_text())
    if not isinstance(tree, dict):  # shipped files: a broken one is a packaging bug, said plainly
        raise ConfigError(f"--preset {name}: its file is not a mapping of config keys")
    return tree
