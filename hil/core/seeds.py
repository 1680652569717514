"""Named seed streams: every torch or numpy generator of the project is seeded from (run seed, purpose, index).

Each purpose maps the run's seed to a generator seed of its own, so that the initial conductances, the device
spreads, the pulse noise, the data order and the emulated bench never share random numbers. The formulas are
those the recorded results were made with (multiplier, index step and offset per purpose, below): changing one
changes every seeded result of that purpose, so a new purpose gets a new entry and the old ones stay. (They are
not disjoint: with seed 0, the initial conductances of layer k and the order of epoch k use the same generator
seed k, in different generators and draws; kept, since recorded results depend on both.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Purpose = Literal["init", "device_spread", "device_pulses", "epoch_order", "emulator_chip", "emulator_devices"]


@dataclass(frozen=True)
class SeedStream:
    """seed * multiplier + index * index_step + offset."""

    multiplier: int
    index_step: int
    offset: int

    def __call__(self, seed: int, index: int = 0) -> int:
        return int(seed) * self.multiplier + int(index) * self.index_step + self.offset


STREAMS: dict[str, SeedStream] = {
    # the initial conductances of one replica, index: the layer of devices (0: the inputs')
    "init": SeedStream(1_000_003, 1, 0),
    # a pulsed device model's device-to-device spreads, index: the layer
    "device_spread": SeedStream(1_000_003, 7919, 7919 + 104_729),
    # the cycle-to-cycle noise of pulses and write-verify readings (all layers of a simulator)
    "device_pulses": SeedStream(7777, 0, 12_345),
    # the order of the training samples, index: the epoch
    "epoch_order": SeedStream(100_003, 1, 0),
    # the emulated bench: the fresh chip's conductances and the readings' noise (seed: emulator.seed)
    "emulator_chip": SeedStream(1, 0, 17),
    # the emulated bench's pulsed devices (emulator.device_model), cycle to cycle
    "emulator_devices": SeedStream(1, 0, 29),
}


def seed_stream(seed: int, purpose: Purpose, index: int = 0) -> int:
    """The generator seed of `purpose` (the index-th of its kind: a layer, an epoch) for the run seed `seed`."""
    try:
        stream = STREAMS[purpose]
    except KeyError:
        raise ValueError(f"seed purpose {purpose!r}: one of {', '.join(STREAMS)}") from None
    return stream(seed, index)


def replica_seeds(seed: int, replicas: int) -> list[int]:
    """The seeds of R replicas (or trials) of a run with seed `seed`: seed, seed + 1, ..., seed + R - 1."""
    return [int(seed) + r for r in range(replicas)]
