"""A CPU thread budget shared by the hil processes on one machine.

torch sizes its thread pool to every core, so three `hil train` runs (or a sweep beside a bench run and a test
suite) on a 2-core machine run six or more busy threads on two cores, and each loses far more than a fair
share to preemption. Here each hil process that computes registers itself (a pid file in a per-user folder)
and uses max(1, cores // live hil processes) threads, re-checked while it trains (`rebalance`, throttled),
so the processes together keep the machine about full without oversubscribing it. A pid file whose process is
gone (killed, crashed) is ignored and removed. A thread count the user chose wins: OMP_NUM_THREADS in the
environment, or `--threads N`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from hil.core.process import pid_alive

#: Overrides the registry folder (tests use a folder of their own).
DIR_ENV = "HIL_THREADS_DIR"
#: Seconds between two looks at the registry from `rebalance` (a directory listing: cheap, but not per step).
RECHECK_S = 1.0


def registry_dir() -> Path:
    """The per-user folder of pid files: one hil process per file."""
    given = os.environ.get(DIR_ENV)
    return Path(given) if given else Path(tempfile.gettempdir()) / f"hil-threads-{os.getuid()}"


def machine_cores() -> int:
    """Cores this process may run on (its CPU affinity, which a container or taskset may narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def user_threads() -> int | None:
    """The thread count the user set in the environment (OMP_NUM_THREADS), else None.

    torch reads OMP_NUM_THREADS itself at import, so then the budget leaves the thread count alone.
    """
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not text:
        return None
    try:
        n = int(text.split(",")[0])  # OpenMP allows a list per nesting level; the first is the outer one
    except ValueError:
        return None  # torch ignores a value it cannot parse too
    return n if n >= 1 else None


def fair_share(cores: int, processes: int) -> int:
    """Threads per process when `processes` hil processes share `cores` cores (at least 1)."""
    return max(1, cores // max(1, processes))


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc), so a pid reused by another process is told
    apart from the one that registered; '' where /proc is not readable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the name in parentheses may hold spaces


class ThreadBudget:
    """One process's place in the registry and the thread count it is due."""

    def __init__(self, folder: Path | None = None, cores: int | None = None, pid: int | None = None,
                 explicit: int | None = None):
        self.folder = Path(folder) if folder is not None else registry_dir()
        self.cores = cores or machine_cores()
        self.pid = os.getpid() if pid is None else pid
        if explicit is not None and explicit < 1:
            raise ValueError(f"--threads: at least 1 thread (got {explicit})")
        self.explicit = explicit
        self._checked = 0.0

    @property
    def path(self) -> Path:
        return self.folder / f"{self.pid}.pid"

    def register(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(_start_time(self.pid))
        tmp.replace(self.path)  # atomic: another process never reads a half-written file

    def unregister(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError:  # never registered (an unwritable folder)
            pass

    def live_processes(self) -> list[int]:
        """Pids of the registered hil processes that still run (this one included once registered);
        the files of those that are gone are removed."""
        live = []
        try:
            entries = list(self.folder.glob("*.pid"))
        except OSError:
            return []
        for f in entries:
            try:
                pid, token = int(f.stem), f.read_text().strip()
            except (OSError, ValueError):
                continue  # removed meanwhile, or not ours
            if pid_alive(pid) and (not token or _start_time(pid) in ("", token)):
                live.append(pid)
            else:
                f.unlink(missing_ok=True)
        return sorted(live)

    def threads(self) -> int:
        """The threads this process should use now: the user's choice, else its fair share."""
        if self.explicit is not None:
            return self.explicit
        env = user_threads()
        if env is not None:
            return env
        live = self.live_processes()
        return fair_share(self.cores, len(live) + (self.pid not in live))  # this one, even if it could not register

    def apply(self) -> int:
        """Set torch's intra-op thread count to `threads()` (only when it changes); returns the count in use.

        With OMP_NUM_THREADS set (and no --threads) the count torch took from it is left alone."""
        self._checked = time.monotonic()
        if self.explicit is None and user_threads() is not None:
            return torch.get_num_threads()
        n = self.threads()
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        return n

    def rebalance(self) -> None:
        """`apply`, at most once every RECHECK_S seconds: cheap enough to call every training step."""
        if time.monotonic() - self._checked >= RECHECK_S:
            self.apply()


_active: ThreadBudget | None = None


@contextmanager
def shared_budget(explicit: int | None = None, folder: Path | None = None) -> Iterator[ThreadBudget]:
    """Register this process for the duration, use its share of the cores, and restore the thread count after.

    explicit: `--threads N`, which wins over everything. OMP_NUM_THREADS set: the count is left as torch set it,
    but the process still registers, so the others leave room for it.
    """
    global _active
    if _active is not None:  # a command run from inside another (e.g. `hil sweep resume`): one registration,
        if explicit is not None:  # but the inner command's recorded --threads applies
            _active.explicit = explicit
            _active.apply()
        yield _active
        return
    budget = ThreadBudget(folder, explicit=explicit)
    before = torch.get_num_threads()
    try:
        budget.register()
    except OSError as err:  # an unwritable temp folder: share by what the others registered, and say so
        print(f"hil: note: cannot register in {budget.folder} ({err.strerror or err}); other hil processes will "
              "not leave room for this one", file=sys.stderr)
    _active = budget
    try:
        budget.apply()
        yield budget
    finally:
        _active = None
        budget.unregister()
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def rebalance() -> None:
    """Re-check this process's share while it trains (called from the training loop); nothing outside a budget."""
    if _active is not None:
        _active.rebalance()
