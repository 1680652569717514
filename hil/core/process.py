"""The process: its set-up before torch starts (MKL's reproducible mode, the OpenMP wait policy), and whether a
process recorded in a file (a run's or an emulator's pid) still runs on this host.

`configure_process()` is the set-up. It must run before torch is imported (MKL and OpenMP read their settings
when they start), so every package whose modules import torch calls it first, in its __init__: hil (and so
every `hil ...` command and everything importing hil.core) and sim_backend (a simulator used on its own).
It runs once per process and keeps every value the user set in the environment.
"""

from __future__ import annotations

import os
import time

_configured = False


def configure_process() -> None:
    """Set MKL's reproducible mode and the OpenMP wait policy in the environment, once, before torch starts.

    MKL_CBWR=AUTO,STRICT: MKL's strict conditional-numerical-reproducibility mode, in which a GEMM gives the same
    bits whatever the number of threads or the memory alignment, so a resumed run (a new process, maybe another
    thread count) continues exactly.

    OMP_WAIT_POLICY=PASSIVE (with KMP_BLOCKTIME=0, libiomp's equivalent in an MKL/conda build) when the processes
    running right now already fill the cores, libgomp's default otherwise. torch's pip wheels use GNU libgomp,
    whose idle threads spin up to ~300,000 iterations after every parallel region: on a machine of its own that
    is 18% faster (the paper's network, 2-core Intel Xeon: 1,822 against 1,493 samples/s), but beside other work
    (a test suite, another sweep, a bench run) the spinning burns cores the others need. hil.threads already
    shares the cores among hil processes; the wait policy covers everything else. "Right now" is the kernel's
    count of runnable processes (`runnable_others`): the 1-minute load average lags a job that has just ended by
    a minute, and a run started after it then trained at half speed (issue 22: 1,033-1,125 against 2,046-2,207
    samples/s). benchmarks/shared_machine.py and benchmarks/wait_policy.py measure the effect.
    """
    global _configured
    if _configured:
        return
    _configured = True
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
    if _startup_wait_policy() == "PASSIVE":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        os.environ.setdefault("KMP_BLOCKTIME", "0")


def idle_wait_policy(busy_cores: float, cores: int) -> str | None:
    """OMP_WAIT_POLICY for a process starting while `busy_cores` other processes run: PASSIVE when they fill the
    cores, else None (the default)."""
    return "PASSIVE" if busy_cores >= cores - 0.5 else None


def runnable_others(samples: int = 5, interval_s: float = 0.002) -> float:
    """Processes runnable now besides this one: /proc/stat's procs_running, averaged over `samples` reads
    `interval_s` apart (a few milliseconds in all). OSError where there is no /proc/stat."""
    total = 0
    for i in range(samples):
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("procs_running"):
                    total += int(line.split()[1]) - 1  # this process is running while it reads
                    break
            else:
                raise OSError("/proc/stat has no procs_running line")
        if i + 1 < samples:
            time.sleep(interval_s)
    return total / samples


def _startup_wait_policy() -> str | None:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        return idle_wait_policy(runnable_others(), cores)
    except (OSError, ValueError):  # no /proc (not Linux): the default policy
        return None


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists on this host (signal 0 only asks; nothing is sent)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
