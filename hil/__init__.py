"""crossbar-hil: train analog resistive crossbars in situ with Equilibrium Propagation."""

import importlib.metadata
import os

# MKL's strict conditional-numerical-reproducibility mode: a GEMM gives the same bits whatever the number of
# threads or the memory alignment, so a resumed run (a new process, maybe another thread count) continues
# exactly. Read by MKL at its first call; a value the user set is kept.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

# On a busy machine idle OpenMP threads sleep instead of spinning. torch's pip wheels use GNU libgomp, whose
# threads spin up to ~300,000 iterations after every parallel region: on a machine of its own that is 18% faster
# (the paper's network, 2-core Intel Xeon: 1,822 against 1,493 samples/s), but beside other work (a test suite,
# another sweep, a bench run) the spinning burns cores the others need. hil.threads already shares the cores
# among hil processes; the wait policy covers everything else. So: PASSIVE when the processes running right now
# already fill the cores, libgomp's default otherwise. "Right now" is the kernel's count of runnable processes
# (/proc/stat procs_running), averaged over a few milliseconds: the 1-minute load average lags a job that has
# just ended by a minute, and a run started after it then trained at half speed (issue 22: 1,033-1,125 against
# 2,046-2,207 samples/s). PASSIVE is honoured by libgomp and Intel's libiomp; KMP_BLOCKTIME=0 is libiomp's
# equivalent (an MKL/conda build). Read when the OpenMP runtime starts (torch's import), so this must run first:
# sim_backend imports hil for it. A value the user set is kept. benchmarks/shared_machine.py and
# benchmarks/wait_policy.py measure the effect.
def idle_wait_policy(busy_cores: float, cores: int) -> str | None:
    """OMP_WAIT_POLICY for a process starting while `busy_cores` other processes run: PASSIVE when they fill the
    cores, else None (the default)."""
    return "PASSIVE" if busy_cores >= cores - 0.5 else None


def runnable_others(samples: int = 5, interval_s: float = 0.002) -> float:
    """Processes runnable now besides this one: /proc/stat's procs_running, averaged over `samples` reads
    `interval_s` apart (a few milliseconds in all). OSError where there is no /proc/stat."""
    import time

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


if _startup_wait_policy() == "PASSIVE":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("KMP_BLOCKTIME", "0")


def version() -> str:
    """The installed project's version (`hil --version`, exported files)."""
    try:
        return importlib.metadata.version("crossbar-hil")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"
