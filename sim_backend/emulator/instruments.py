"""The emulated instruments by lab-config kind.

SCPI instruments share the engine in scpi.py and are command tables (keithley2450.py, keysight_b2900.py,
qdac2.py); TSP instruments run a real Lua state (tsp.py) with their objects bound (keithley2600.py,
keithley707b.py); the serial board speaks its own line protocol (xbar_board.py).
"""

from sim_backend.emulator.keithley707b import Emulated707B
from sim_backend.emulator.keithley2450 import Emulated2450
from sim_backend.emulator.keithley2600 import Emulated2600
from sim_backend.emulator.keysight_b2900 import EmulatedB2900
from sim_backend.emulator.qdac2 import EmulatedQDac2
from sim_backend.emulator.xbar_board import EmulatedXbarBoard

EMULATED = {
    "keithley2450": Emulated2450,
    "keithley2600": Emulated2600,
    "keysight_b2900": EmulatedB2900,
    "qdac2": EmulatedQDac2,
    "keithley707b": Emulated707B,
    "xbar_board": EmulatedXbarBoard,
}
