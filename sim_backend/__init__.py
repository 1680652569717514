"""The simulated crossbar, its noise model and the emulated lab instruments."""

import hil  # noqa: F401 - sets MKL's reproducible mode before any torch computation (see hil/__init__.py)
