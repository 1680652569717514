"""An emulated lab: TCP servers on 127.0.0.1 that speak the instruments' own command sets.

One simulated crossbar sits behind them (`bench.EmulatedBench`): DAC voltages clamp
the inputs, SMU readings return node voltages from the physics with NPLC-dependent
noise, programming pulses change conductances through a device model, and the
switch matrix routes nodes to SMUs. Start it with `hil emulate --lab LAB.yaml`.
"""

from sim_backend.emulator.lab import EmulatedLab

__all__ = ["EmulatedLab"]
