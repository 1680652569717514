"""crossbar-hil: train analog resistive crossbars in situ with Equilibrium Propagation."""

import os

# MKL's strict conditional-numerical-reproducibility mode: a GEMM gives the same bits whatever the number of
# threads or the memory alignment, so a resumed run (a new process, maybe another thread count) continues
# exactly. Read by MKL at its first call; a value the user set is kept.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

# Idle OpenMP threads sleep instead of spinning. torch's pip wheels use GNU libgomp, whose threads otherwise spin
# up to ~300,000 iterations after every parallel region: harmless alone, but hil processes sharing a machine
# (sweep workers, a sweep beside a bench run, a test suite) then burn each other's cores waiting. PASSIVE is
# honoured by libgomp and by Intel's libiomp; KMP_BLOCKTIME=0 is libiomp's equivalent (an MKL/conda build).
# Read when the OpenMP runtime starts (torch's import), so this must run first: sim_backend imports hil for it.
# A value the user set is kept. benchmarks/shared_machine.py measures the effect.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("KMP_BLOCKTIME", "0")
