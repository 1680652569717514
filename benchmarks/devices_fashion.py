"""One epoch of Fashion-MNIST in the paper's setting for the ideal device and each preset (a table in docs/results.md).

784-1024-10, gamma=500 V, beta=1 S, eta=1e-3, T=5, batch 4, sigma=0, float32, seed 0; the devices span
[0, --g-max] S (the initial conductances lie in [0, 0.7/sqrt(1568)] = [0, 0.0177] S). ideal: exact
programming; the presets: `pulses` (open loop, accumulated sub-step changes). Prints a markdown table:
test accuracy, training samples/s, pulses per update and the bench programming time per update it implies.

    python benchmarks/devices_fashion.py [--g-max 0.05] [--train-limit N] [--models ideal,ecram]
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
from train_fashion import PAPER  # noqa: E402

from hil.core.config import build_config  # noqa: E402
from hil.core.devices import PRESETS  # noqa: E402
from hil.runner import prepare  # noqa: E402
from hil.trainer import Trainer  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--g-max", type=float, default=0.05)
    p.add_argument("--models", default=",".join(PRESETS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--data-dir", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"machine: {describe()}")
    print(f"setting: 784-1024-10, gamma=500, beta=1, eta=1e-3, T=5, batch 4, sigma=0, float32, seed 0, "
          f"devices on [0, {a.g_max:g}] S, one epoch", flush=True)
    rows = []
    for name in a.models.split(","):
        over = dict(PAPER, **{"network.g_max": a.g_max, "devices.model": name, "data.data_dir": a.data_dir,
                             "data.train_limit": a.train_limit})
        prep = prepare(build_config({}, over))
        tr = Trainer(prep.cfg, prep.backend, prep.data)
        acc, _, seconds = tr.train_epoch(1)
        test_acc, _ = tr.evaluate(prep.data.x_test, prep.data.y_test)
        stats = prep.backend.programming_stats()
        n = len(prep.data.x_train)
        model = PRESETS[name]
        states = "exact" if not model.pulsed else f"{model.states:,.0f}"
        rows.append((name, model.kind, states, 100 * test_acc[0], n / seconds, stats.get("pulses_per_update"),
                     stats.get("programming_s_per_update")))
        print(f"{name}: test {100 * test_acc[0]:.2f}%, {n / seconds:.0f} samples/s, {stats}", flush=True)
        time.sleep(0)
    print("\n| device | model | states | test accuracy | samples/s | pulses per update | programming s per update |")
    print("|---|---|---|---|---|---|---|")
    for name, kind, states, acc, sps, pulses, prog in rows:
        print(f"| {name} | {kind} | {states} | {acc:.2f}% | {sps:,.0f} | "
              f"{'-' if pulses is None else f'{pulses:,.0f}'} | {'-' if prog is None else f'{prog:.3g}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
