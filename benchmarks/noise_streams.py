"""What per-replica noise streams cost: a training step with sigma > 0, counter-based streams against one
torch.Generator per run (the code before them), in the same run.

    python benchmarks/noise_streams.py [--steps 300] [--threads 2] [--samples 1,16] [--replicas 1,16]

The paper's setting (784-1024-10, gamma 500, beta 1, eta 1e-3, T = 5, batch 4, float32) on random images,
sigma = 1e-5 V, for each N (readings per node and phase) and R (replicas). The two ways of drawing alternate in
blocks of --steps / 3 steps so that a change of the machine's load hits both. Prints samples/s summed over the
replicas and the ratio (streams / generator).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import hil  # noqa: F401  (first: sets the process's OpenMP wait policy before torch starts its threads)

# isort: split
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

from hil.core.config import build_config  # noqa: E402
from hil.data import Dataset  # noqa: E402
from hil.trainer import Trainer  # noqa: E402
from sim_backend.crossbar import SimCrossbar  # noqa: E402

PAPER = {"network.hidden": [1024], "network.input_gain": 500.0, "ep.beta": 1.0, "ep.eta": 1e-3,
         "relax.sweeps": 5, "train.batch_size": 4, "noise.sigma": 1e-5}


class OneGenerator:
    """The draws before per-replica streams: one torch.Generator for all the replicas of a run."""

    def __init__(self, seed: int):
        self.gen = torch.Generator().manual_seed(seed)

    def normal(self, shape, replica_dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=self.gen, dtype=dtype)

    def state(self) -> dict:
        return {}


def block(tr: Trainer, data: Dataset, steps: int, start: int) -> float:
    n = len(data.x_train) // 4
    t0 = time.perf_counter()
    for s in range(start, start + steps):
        i = s % n
        tr.step(data.x_train[4 * i:4 * i + 4], data.y_train[4 * i:4 * i + 4])
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300, help="steps timed per way and setting (default 300)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--samples", default="1,16")
    p.add_argument("--replicas", default="1,16")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2000, 784, generator=g)
    y = torch.randint(0, 10, (2000,), generator=g)
    data = Dataset("random", x, y, x[:64], y[:64], 10)
    print(f"machine: {describe()}")
    print(f"setting: 784-1024-10, gamma=500, beta=1, eta=1e-3, T=5, batch 4, float32, sigma=1e-5 V; {a.steps} steps per way")
    for r in (int(v) for v in a.replicas.split(",")):
        for n in (int(v) for v in a.samples.split(",")):
            cfg = build_config({}, {**PAPER, "train.replicas": r, "noise.samples": n})
            nets = {"streams": SimCrossbar.from_config(cfg, 784, 10), "generator": SimCrossbar.from_config(cfg, 784, 10)}
            nets["generator"]._gen = OneGenerator(0)  # type: ignore[assignment]
            trainers = {k: Trainer(cfg, net, data) for k, net in nets.items()}
            for tr in trainers.values():  # warm-up
                block(tr, data, 10, 0)
            spent = dict.fromkeys(trainers, 0.0)
            per_block = max(1, a.steps // 3)
            for b in range(3):
                for k in (("streams", "generator") if b % 2 == 0 else ("generator", "streams")):
                    spent[k] += block(trainers[k], data, per_block, 10 + b * per_block)
            sps = {k: 3 * per_block * 4 * r / t for k, t in spent.items()}
            print(f"R={r:<3d} N={n:<3d} streams {sps['streams']:8.0f} samples/s, one generator "
                  f"{sps['generator']:8.0f} samples/s: {sps['streams'] / sps['generator']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
