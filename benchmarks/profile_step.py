"""Where the time of one training step goes: tensor operations per step, and on CUDA the costliest kernels.

    python benchmarks/profile_step.py [--replicas 1,64] [--steps 20] [--device cpu|cuda]

The paper's setting (784-1024-10, gamma 500, T 5, batch 4, float32, random
images). For each R it prints wall ms per step and the tensor operations the
step dispatches (views excluded: each of the others is a kernel launch on a
GPU, so at small R this count, not arithmetic, bounds a GPU's speed), grouped
by the line of our code that issued them. On CUDA it adds the ten kernels with
the most device time (torch.profiler).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import hil  # noqa: F401  (before torch: hil sets the OpenMP wait policy that torch's import starts with)

# isort: split
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402
from throughput import PAPER  # noqa: E402

from hil.core.config import build_config  # noqa: E402
from hil.data import Dataset  # noqa: E402
from hil.trainer import Trainer  # noqa: E402
from sim_backend.crossbar import SimCrossbar  # noqa: E402

ROOT = str(Path(__file__).resolve().parents[1]) + "/"
# Operations that only reinterpret memory: no kernel on any device.
VIEWS = {"view", "_unsafe_view", "transpose", "t", "unsqueeze", "squeeze", "slice", "select", "expand", "permute",
         "as_strided", "split", "split_with_sizes", "unbind", "alias", "detach", "reshape", "lift_fresh"}


class OpCounter(TorchDispatchMode):
    """Counts dispatched non-view operations by (name, issuing line of this repository)."""

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in VIEWS:
            ours = [f for f in traceback.extract_stack()
                    if f.filename.startswith(ROOT) and not f.filename.startswith(ROOT + "benchmarks/")]
            where = f"{ours[-1].filename[len(ROOT):]}:{ours[-1].lineno}" if ours else "?"
            self.counts[(name, where)] += 1
        return func(*args, **(kwargs or {}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", default="1,64")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dev = a.device
    cuda = dev.startswith("cuda")
    print(f"machine: {describe(dev)}")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4 * (a.steps + 20), 784, generator=g)
    y = torch.randint(0, 10, (len(x),), generator=g)
    data = Dataset("random", x, y, x[:64], y[:64], 10).to(dev)
    for r in [int(v) for v in a.replicas.split(",")]:
        cfg = build_config({}, {**PAPER, "device": dev, "train.replicas": r})
        tr = Trainer(cfg, SimCrossbar.from_config(cfg, 784, 10), data, check_every=10**9)
        xs, ys = data.x_train, data.y_train

        def steps(first: int, n: int, tr: Trainer = tr, xs: torch.Tensor = xs, ys: torch.Tensor = ys) -> None:
            for s in range(first, first + n):
                tr.step(xs[4 * s:4 * s + 4], ys[4 * s:4 * s + 4])

        steps(0, 10)  # warm-up
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        steps(10, a.steps)
        if cuda:
            torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) / a.steps
        with OpCounter() as ops:
            steps(10, 2)
        per_step = {k: v / 2 for k, v in ops.counts.items()}
        print(f"R={r}: {wall * 1e3:.3f} ms/step, {4 * r / wall:,.0f} samples/s, "
              f"{sum(per_step.values()):.0f} tensor operations per step (views excluded)")
        by_line = Counter()
        for (name, where), v in per_step.items():
            by_line[f"{where} {name}"] += v
        for what, v in sorted(by_line.items(), key=lambda kv: -kv[1])[:12]:
            print(f"   {v:5.1f}  {what}")
        if cuda:
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                steps(10, a.steps)
                torch.cuda.synchronize()
            kernels: Counter = Counter()
            launches: Counter = Counter()
            for e in prof.events():
                if e.device_type == torch.autograd.DeviceType.CUDA:
                    kernels[e.name[:90]] += e.device_time_total
                    launches[e.name[:90]] += 1
            busy = sum(kernels.values()) / a.steps / 1e3
            print(f"   device: {sum(launches.values()) / a.steps:.0f} kernels/step, busy {busy:.3f} ms/step "
                  f"of {wall * 1e3:.3f} ms wall")
            for name, us in kernels.most_common(10):
                print(f"   {us / a.steps / 1e3:8.4f} ms  {launches[name] / a.steps:5.1f}x  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
