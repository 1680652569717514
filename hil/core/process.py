"""Whether a process recorded in a file (a run's or an emulator's pid) still runs on this host."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists on this host (signal 0 only asks; nothing is sent)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
