"""The emulated instruments, one module each; each class declares the lab-config kind it emulates (`KIND`).

SCPI instruments share the engine in scpi.py and are command tables (keithley2450.py, keysight_b2900.py,
qdac2.py); TSP instruments run a real Lua state (tsp.py) with their objects bound (keithley2600.py,
keithley707b.py); the serial board speaks its own line protocol (xbar_board.py). The registry
(`base.EMULATED`, `base.emulated_class`) finds every module of this package by itself: a new emulated
instrument is a new module with a class that declares its KIND.
"""

from sim_backend.emulator.base import EMULATED, emulated_class

__all__ = ["EMULATED", "emulated_class"]
