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
# among hil processes; the wait policy covers everything else. So: PASSIVE when the 1-minute load average
# already reaches the cores at start-up, libgomp's default otherwise. PASSIVE is honoured by libgomp and Intel's
# libiomp; KMP_BLOCKTIME=0 is libiomp's equivalent (an MKL/conda build). Read when the OpenMP runtime starts
# (torch's import), so this must run first: sim_backend imports hil for it. A value the user set is kept.
# benchmarks/shared_machine.py measures the effect.
def idle_wait_policy(load_1min: float, cores: int) -> str | None:
    """OMP_WAIT_POLICY for a process starting at this load: PASSIVE on a busy machine, else None (the default)."""
    return "PASSIVE" if load_1min >= cores - 0.5 else None


def _startup_wait_policy() -> str | None:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        return idle_wait_policy(os.getloadavg()[0], cores)
    except OSError:  # no load average on this system
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
