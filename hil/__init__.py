"""crossbar-hil: train analog resistive crossbars in situ with Equilibrium Propagation."""

import os

# MKL's strict conditional-numerical-reproducibility mode: a GEMM gives the same bits whatever the number of
# threads or the memory alignment, so a resumed run (a new process, maybe another thread count) continues
# exactly. Read by MKL at its first call; a value the user set is kept.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
