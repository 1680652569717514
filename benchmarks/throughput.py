"""Training throughput of the simulated crossbar against a plain implementation, in the same run.

The paper's setting: 784-1024-10 (1568 input nodes), gamma=500, beta=1,
eta=1e-3, T=5, batch 4, positive EP, sigma=0, float32. Data: Fashion-MNIST
when found (Debian's dataset-fashion-mnist or --data-dir), else uniform random
images of the same size (speed does not depend on the pixels).

    python benchmarks/throughput.py [--threads 2] [--steps 1500] [--plain-steps 60] [--gpu-replicas 1,4,16,64]

Prints samples/s for R = 1 on the CPU (fast and plain, and their ratio) and,
when a CUDA device is present, for each R on it (summed over replicas).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import hil  # noqa: F401  (before torch: hil sets the OpenMP wait policy that torch's import starts with)

# isort: split
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

from hil.core.config import DataConfig, build_config  # noqa: E402
from hil.data import Dataset, DatasetError, load_dataset  # noqa: E402
from hil.trainer import Trainer  # noqa: E402
from sim_backend.crossbar import SimCrossbar  # noqa: E402
from sim_backend.reference import PlainEP  # noqa: E402

PAPER = {"network.hidden": [1024], "network.input_gain": 500.0, "ep.beta": 1.0, "ep.eta": 1e-3,
         "relax.sweeps": 5, "train.batch_size": 4}


def images(n: int, data_dir: str | None):
    try:
        d = load_dataset(DataConfig(dataset="fashion-mnist", data_dir=data_dir, train_limit=n))
        return d, "Fashion-MNIST"
    except DatasetError:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(n, 784, generator=g)
        y = torch.randint(0, 10, (n,), generator=g)
        return Dataset("random", x, y, x[:256], y[:256], 10), "random images"


def time_fast(data, steps: int, replicas: int, device: str) -> float:
    cfg = build_config({}, {**PAPER, "device": device, "train.replicas": replicas})
    net = SimCrossbar.from_config(cfg, 784, 10)
    d = data.to(device)
    tr = Trainer(cfg, net, d, check_every=steps + 1 if device != "cpu" else None)
    n = len(d.x_train) // 4
    for s in range(20):  # warm-up
        tr.step(d.x_train[4 * s:4 * s + 4], d.y_train[4 * s:4 * s + 4])
    if device != "cpu":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for s in range(steps):
        i = s % n
        tr.step(d.x_train[4 * i:4 * i + 4], d.y_train[4 * i:4 * i + 4])
    tr.check_finite()
    if device != "cpu":
        torch.cuda.synchronize()
    return steps * 4 * replicas / (time.perf_counter() - t0)


def time_plain(data, steps: int) -> float:
    cfg = build_config({}, PAPER)
    net = PlainEP([784, 1024, 10], gamma=500.0, beta=1.0, eta=1e-3, sweeps=5, seed=0, init_scale=cfg.network.init_scale)
    x, y = data.x_train, data.y_train
    for s in range(3):
        net.step(x[4 * s:4 * s + 4], torch.nn.functional.one_hot(y[4 * s:4 * s + 4], 10).float())
    t0 = time.perf_counter()
    for s in range(steps):
        net.step(x[4 * s:4 * s + 4], torch.nn.functional.one_hot(y[4 * s:4 * s + 4], 10).float())
    return steps * 4 / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=1500, help="fast-path steps timed per configuration")
    p.add_argument("--plain-steps", type=int, default=60)
    p.add_argument("--gpu-replicas", default="1,2,4,8,16,32,64")
    p.add_argument("--data-dir", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    data, source = images(max(a.steps, a.plain_steps) * 4 + 100, a.data_dir)
    print(f"machine: {describe('cuda' if torch.cuda.is_available() else 'cpu')}")
    print(f"setting: 784-1024-10, gamma=500, beta=1, eta=1e-3, T=5, batch 4, float32, {source}")
    fast = time_fast(data, a.steps, 1, "cpu")
    plain = time_plain(data, a.plain_steps)
    print(f"cpu  R=1  fast  {fast:10.0f} samples/s")
    print(f"cpu  R=1  plain {plain:10.0f} samples/s")
    print(f"cpu  speedup fast/plain: {fast / plain:.1f}x")
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        for r in [int(v) for v in a.gpu_replicas.split(",")]:
            sps = time_fast(data, a.steps, r, "cuda")
            print(f"cuda R={r:<3d} fast {sps:10.0f} samples/s summed over replicas ({sps / r:.0f} per replica)")
    else:
        print("cuda: no device here; GPU figures need a CUDA machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
