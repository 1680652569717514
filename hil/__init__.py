"""crossbar-hil: train analog resistive crossbars in situ with Equilibrium Propagation."""

import importlib.metadata

from hil.core.process import configure_process, idle_wait_policy, runnable_others

configure_process()  # MKL's reproducible mode and the OpenMP wait policy, before torch starts (hil/core/process.py)

__all__ = ["configure_process", "idle_wait_policy", "runnable_others", "version"]


def version() -> str:
    """The installed project's version (`hil --version`, exported files)."""
    try:
        return importlib.metadata.version("crossbar-hil")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"
