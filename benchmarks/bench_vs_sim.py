"""Train the same task and seed on the emulated bench (real pyvisa-py / pyserial sessions) and on the simulator.

The task is the lab config's own `run:` section (for examples/lab-emulated.yaml: digits 0 vs 1, 4x4 pixels,
16-8-2, gamma 16, 3 epochs). The simulated run uses the same seed and the emulator's read noise in normalized
volts, so the two differ only by the bench: its physics settled fully, its current-source nudge, write-verify
programming with a finite tolerance, and a device model. Prints both accuracies, VISA round trips and wall time
per training sample.

    python benchmarks/bench_vs_sim.py [--lab examples/lab-emulated.yaml] [--epochs 3]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

from drivers.lab import load_lab  # noqa: E402
from hil.config import load_config  # noqa: E402
from hil.runner import prepare, train_run  # noqa: E402
from hil.store import RunStore  # noqa: E402
from sim_backend.emulator import EmulatedLab  # noqa: E402


def main() -> int:
    here = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lab", type=Path, default=here / "examples" / "lab-emulated.yaml")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    lab = load_lab(a.lab)
    with tempfile.TemporaryDirectory(prefix="bench-vs-sim-") as folder:  # the run folders go with it
        return compare(a, lab, Path(folder))


def compare(a: argparse.Namespace, lab, tmp: Path) -> int:
    over = {"runs_dir": str(tmp), "train.seed": a.seed, **({"train.epochs": a.epochs} if a.epochs else {})}
    sigma = lab.emulator.read_noise_V / math.sqrt(lab.timing.nplc) / lab.units.voltage_unit_V
    print(f"machine: {describe()}")
    results = {}
    with EmulatedLab(lab) as emu:
        registry = emu.write_registry(tmp / "emulator.json")
        cfg = load_config(None, over, base=lab.run)
        prep = prepare(cfg, a.lab, registry)
        t0 = time.perf_counter()
        hist = train_run(prep, RunStore.create(cfg))
        bench_s = time.perf_counter() - t0
        results["bench"] = hist[-1]
        left_on = emu.outputs()
    cfg = load_config(None, {**over, "noise.sigma": sigma}, base=lab.run)
    prep = prepare(cfg)
    results["sim"] = train_run(prep, RunStore.create(cfg))[-1]
    b, s = results["bench"], results["sim"]
    n = len(prep.data.x_train)
    print(f"\ntask: {cfg.data.dataset} classes {cfg.data.classes}, {cfg.data.image_size}x{cfg.data.image_size} pixels, "
          f"{'-'.join(map(str, lab.layer_sizes))}, {cfg.train.epochs} epochs, seed {a.seed}; simulator sigma {sigma:.3g} V (normalized)")
    print(f"bench test accuracy     {100 * b.test_acc[0]:.1f}%")
    print(f"simulator test accuracy {100 * s.test_acc[0]:.1f}%")
    print(f"difference              {100 * (b.test_acc[0] - s.test_acc[0]):+.1f} points (target: within 3)")
    print(f"bench: {b.extra['round_trips_per_training_sample']:.1f} VISA round trips and "
          f"{b.extra['ms_per_training_sample']:.0f} ms per training sample in the last epoch (evaluation included); "
          f"{bench_s / (n * cfg.train.epochs) * 1e3:.0f} ms per sample over the whole run with initial programming; "
          f"outputs left on after: {left_on or 'none'}")
    return 0 if abs(b.test_acc[0] - s.test_acc[0]) <= 0.03 else 1


if __name__ == "__main__":
    sys.exit(main())
