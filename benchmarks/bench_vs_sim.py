"""Train the same task and seed on the emulated bench (real pyvisa-py / pyserial sessions) and on the simulator.

The task is the lab config's own `run:` section (for examples/lab-emulated.yaml: digits 0 vs 1, 4x4 pixels,
16-8-2, gamma 16, 3 epochs). The simulated run uses the same seed and the emulator's read noise in normalized
volts, so the two differ only by the bench: its physics settled fully, its current-source nudge, write-verify
programming with a finite tolerance, and a device model. Prints both accuracies, VISA round trips and wall time
per training sample, and (with --time-scale 1, real instrument time) the wall time per sample against the
physics bound: the time the emulated instruments themselves need (SMU apertures and overheads and relay
times one after the other, plus the longest DAC's slew ramps, which the DACs run in parallel).

    python benchmarks/bench_vs_sim.py [--lab examples/lab-emulated.yaml] [--epochs 3] [--time-scale 1]
        [--train-limit N --test-limit M]
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
    p.add_argument("--time-scale", type=float, default=None,
                   help="emulator.time_scale: 1 = real instrument time, 0 = instant (default: the lab's)")
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--test-limit", type=int, default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    lab = load_lab(a.lab)
    if a.time_scale is not None:
        lab = lab.model_copy(update={"emulator": lab.emulator.model_copy(update={"time_scale": a.time_scale})})
    with tempfile.TemporaryDirectory(prefix="bench-vs-sim-") as folder:  # the run folders go with it
        return compare(a, lab, Path(folder))


def compare(a: argparse.Namespace, lab, tmp: Path) -> int:
    over = {"runs_dir": str(tmp), "train.seed": a.seed, **({"train.epochs": a.epochs} if a.epochs else {}),
            **({"data.train_limit": a.train_limit} if a.train_limit else {}),
            **({"data.test_limit": a.test_limit} if a.test_limit else {})}
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
        # The physics bound: what the driver must wait for. SMU readings and relay closures happen one after the
        # other; the DACs ramp at their slew rate in parallel with each other (the driver syncs them with *OPC?),
        # so the bound counts the longest DAC's ramps.
        kinds = {name: cfg.kind for name, cfg in lab.instruments.items()}
        serial_s = sum(inst.clock.now_s for name, inst in emu.instruments.items() if kinds[name] != "qdac2")
        dac_ramp_s = max((inst.clock.now_s for name, inst in emu.instruments.items() if kinds[name] == "qdac2"),
                         default=0.0)
        instrument_s = serial_s + dac_ramp_s
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
    per = n * cfg.train.epochs
    print(f"time scale {lab.emulator.time_scale:g}: wall {bench_s / per * 1e3:.1f} ms per training sample; physics bound "
          f"(instrument time, x time scale) {instrument_s * lab.emulator.time_scale / per * 1e3:.1f} ms; "
          f"ratio {bench_s / max(instrument_s * lab.emulator.time_scale, 1e-12):.2f} (of the bound: DAC slew ramps "
          f"{dac_ramp_s * lab.emulator.time_scale / per * 1e3:.1f} ms, SMU readings and relays "
          f"{serial_s * lab.emulator.time_scale / per * 1e3:.1f} ms)")
    return 0 if abs(b.test_acc[0] - s.test_acc[0]) <= 0.03 else 1


if __name__ == "__main__":
    sys.exit(main())
