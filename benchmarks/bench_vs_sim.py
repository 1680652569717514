"""Train the same task and seed on the emulated bench (real pyvisa-py / pyserial sessions) and on the simulator.

The task is the lab config's own `run:` section (for examples/lab-emulated.yaml: digits 0 vs 1, 4x4 pixels,
16-8-2, gamma 16, 3 epochs). The simulated run uses the same seed and the emulator's read noise in normalized
volts, so the two differ only by the bench: its physics settled fully, its current-source nudge, write-verify
programming with a finite tolerance, and its devices. Prints both accuracies, VISA round trips and wall time
per training sample, and (with --time-scale 1, real instrument time) the wall time per sample against the
physics bound: the time the emulated instruments themselves need (SMU apertures and overheads and relay
times one after the other, plus the longest DAC's slew ramps, which the DACs run in parallel). For the
programmer it prints the time per update spent programming (write-verify alone, and the whole update with its
journal) against the programmer's own instrument time over the same calls, where its emulator keeps one (the
ArC ONE: pulses, read-outs and serial bytes).

--device-model PRESET gives the emulated bench that pulsed device model (sim_backend/devices); the simulator
then programs through the same model by write-verify with the lab's tolerance, pulse and reversal limits.
With --fit the simulator gets no preset: the bench's devices are characterized first (pulse trains on a
sample of them, as `hil characterize --devices` does) and the simulator uses the fitted device.yaml: the
dry run a user without the preset's numbers would do. --seeds 0,1,2 reports the mean over seeds.

    python benchmarks/bench_vs_sim.py [--lab examples/lab-emulated.yaml] [--epochs 3] [--time-scale 1]
        [--train-limit N --test-limit M]
    python benchmarks/bench_vs_sim.py --device-model capacitor --fit --seeds 0,1,2
    python benchmarks/bench_vs_sim.py --lab examples/lab-emulated-arc1.yaml --time-scale 1 --train-limit 40 \\
        --test-limit 20 --epochs 1      # the ArC ONE programmer's time per update against its physics bound

--programming times the programmer alone: a short training on the lab (its chip programmed to the start at
time scale 0, then every instrument at --time-scale, default 1), each update's programming call timed against
its physics bound: the instrument time of the programmer's own instruments during it (pulses and
conductance reads on the pulse SMU, relay open and close settle times, bias ramps), which the driver waits for
one after the other. For examples/lab-emulated-visa.yaml (the SMU-pulse + switch-matrix programmer):

    python benchmarks/bench_vs_sim.py --programming --lab examples/lab-emulated-visa.yaml [--updates 20]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import hil  # noqa: F401  (before torch: hil sets the OpenMP wait policy that torch's import starts with)

# isort: split
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

from calibration.device_commands import open_boards, sample_devices  # noqa: E402
from calibration.device_fit import apply_pulse_trains, fit_pulse_trains  # noqa: E402
from drivers.lab import load_lab  # noqa: E402
from drivers.session import CommandLog  # noqa: E402
from hil.core.config import load_config  # noqa: E402
from hil.core.devices import resolve_device_model, save_device_model  # noqa: E402
from hil.runner import prepare, train_run  # noqa: E402
from hil.store import RunStore  # noqa: E402
from sim_backend.emulator import EmulatedLab  # noqa: E402


def characterize(lab, registry: Path, out: Path, pulses: int, sample: int, seed: int) -> Path:
    """Pulse trains on `sample` devices of the running emulated bench; the fitted model, written to out."""
    p = lab.programming
    boards, drivers = open_boards(lab, CommandLog(), registry)
    try:
        data = apply_pulse_trains(boards, sample_devices(lab, sample, seed), pulses=pulses, cycles=2,
                                  set_V=p.set.start_V, reset_V=p.reset.start_V, width_s=p.set.width_s, repeats=10,
                                  g_min_S=p.g_min_S, g_max_S=p.g_max_S)
    finally:
        for drv in drivers:
            drv.shutdown()
            drv.close()
    fit = fit_pulse_trains(data, name=f"{lab.name}-fit")
    return save_device_model(fit.model, out, fit={"estimates": fit.to_yaml_tree()})


def device_overrides(lab, model_spec: str) -> dict:
    """The simulator programs like the bench: write-verify with the lab's tolerance, pulse and reversal limits."""
    model = resolve_device_model(model_spec)
    p, gu = lab.programming, lab.units.conductance_unit_S
    step_S = model.dw_min * (p.g_max_S - p.g_min_S) / (model.w_max - model.w_min)
    return {"devices.model": model_spec, "devices.update": "write-verify",
            "devices.tolerance_steps": p.tolerance_S / step_S, "devices.verify_max_pulses": p.max_pulses,
            "devices.verify_max_reversals": p.max_reversals,
            "network.g_min": p.g_min_S / gu, "network.g_max": p.g_max_S / gu}


def main() -> int:
    here = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lab", type=Path, default=here / "examples" / "lab-emulated.yaml")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--time-scale", type=float, default=None,
                   help="emulator.time_scale: 1 = real instrument time, 0 = instant (default: the lab's)")
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--device-model", help="a preset for the emulated bench's devices (default: the lab's own)")
    p.add_argument("--fit", action="store_true", help="simulate with the model fitted to the bench, not the preset")
    p.add_argument("--pulses", type=int, default=500, help="--fit: pulses per train (default 500)")
    p.add_argument("--programming", action="store_true", help="time the programmer per update against its bound")
    p.add_argument("--updates", type=int, default=20, help="--programming: training updates timed (default 20)")
    p.add_argument("--sample", type=int, default=16, help="--fit: devices characterized (default 16)")
    a = p.parse_args()
    torch.set_num_threads(1)
    lab = load_lab(a.lab)
    if a.programming:
        with tempfile.TemporaryDirectory(prefix="bench-programming-") as folder:
            return programming_case(lab, a.updates, 1.0 if a.time_scale is None else a.time_scale, Path(folder))
    emulator = {**({"device_model": a.device_model} if a.device_model else {}),
                **({"time_scale": a.time_scale} if a.time_scale is not None else {})}
    lab = lab.model_copy(update={"emulator": lab.emulator.model_copy(update=emulator)})
    if a.fit and lab.emulator.device_model is None:
        p.error("--fit needs a pulsed device model on the bench (--device-model or the lab's emulator.device_model)")
    with tempfile.TemporaryDirectory(prefix="bench-vs-sim-") as folder:  # the run folders go with it
        return compare(a, lab, Path(folder))


def physics_bound_s(lab, emu) -> tuple[float, float]:
    """What the driver must wait for, in emulated instrument seconds: (SMU readings and relays, DAC ramps).

    SMU readings and relay closures happen one after the other; the DACs ramp at their slew rate in parallel with
    each other (the driver syncs them with *OPC?), so the bound counts the longest DAC's ramps.
    """
    kinds = {name: cfg.kind for name, cfg in lab.instruments.items()}
    serial_s = sum(inst.clock.now_s for name, inst in emu.instruments.items() if kinds[name] != "qdac2")
    dac_ramp_s = max((inst.clock.now_s for name, inst in emu.instruments.items() if kinds[name] == "qdac2"),
                     default=0.0)
    return serial_s, dac_ramp_s


def programmer_instruments(lab) -> dict[str, list[str]]:
    """What each programmer drives: a serial board itself; a programmer made of lab instruments its switch, its
    SMUs and its bias sources."""
    out = {name: [name] for name in lab.instruments_of("board")}
    for name, cfg in lab.programmers.items():
        out[name] = list(dict.fromkeys([cfg.switch, *(bus.source.instrument for bus in cfg.buses.values())]))
    return out


def programming_case(lab, updates: int, time_scale: float, tmp: Path) -> int:
    """Each update's programming call: wall time against the instrument time of the programmer's instruments."""
    lab0 = lab.model_copy(update={"emulator": lab.emulator.model_copy(update={"time_scale": 0.0})})
    lab_file = tmp / "lab.yaml"
    lab_file.write_text(yaml.safe_dump(lab0.model_dump(mode="json"), sort_keys=False))
    progs = programmer_instruments(lab)
    names = sorted({n for insts in progs.values() for n in insts})
    print(f"machine: {describe()}")
    print(f"programmer(s) {'; '.join(p + ' (' + ', '.join(i) + ')' for p, i in progs.items())}; time scale {time_scale:g}; "
          f"{updates} training updates of {lab.name}", flush=True)
    rows: list[tuple[float, dict[str, float], int]] = []
    with EmulatedLab(lab0) as emu:
        registry = emu.write_registry(tmp / "emulator.json")
        batch = lab.run.get("train", {}).get("batch_size", 4)
        cfg = load_config(None, {"runs_dir": str(tmp), "train.epochs": 1, "data.train_limit": updates * batch,
                                 "data.test_limit": 4}, base=lab.run)
        prep = prepare(cfg, lab_file, registry)  # the chip programmed to the start, instantly
        for inst in emu.instruments.values():
            inst.clock.time_scale = time_scale
        backend = prep.backend
        program = backend.program
        pulses = backend.programmer.stats

        def timed(update):
            before = {n: emu.instruments[n].clock.now_s for n in names}
            n0 = pulses["pulses"]
            t0 = time.perf_counter()
            program(update)
            wall = time.perf_counter() - t0
            rows.append((wall, {n: emu.instruments[n].clock.now_s - before[n] for n in names}, pulses["pulses"] - n0))

        backend.program = timed
        train_run(prep, RunStore.create(cfg.runs_dir, cfg.name, cfg), out=open(tmp / "train.log", "w"))
    wall = sum(r[0] for r in rows)
    per_inst = {n: sum(r[1][n] for r in rows) for n in names}
    bound = sum(per_inst.values()) * time_scale
    n_pulses = sum(r[2] for r in rows)
    kinds = {n: lab.instruments[n].kind for n in names}
    parts = ", ".join(f"{n} ({kinds[n]}) {1e3 * per_inst[n] * time_scale / len(rows):.1f} ms" for n in names)
    print(f"{len(rows)} updates, {n_pulses / len(rows):.1f} pulses per update: wall {1e3 * wall / len(rows):.1f} ms per "
          f"update; physics bound {1e3 * bound / len(rows):.1f} ms ({parts}); ratio {wall / max(bound, 1e-12):.2f}")
    return 0


class ProgrammerTiming:
    """Wall time per update spent programming (the backend's `program`), against the programmers' own instrument
    time over the same calls (the emulated clocks of the instruments in the board role: pulses, read-outs and
    serial bytes at the protocol's rate; drivers/arc1.py, sim_backend/emulator/arc1.py)."""

    def __init__(self, backend, lab, emu):
        names = sorted({n for insts in programmer_instruments(lab).values() for n in insts})
        self.clocks = [emu.instruments[name].clock for name in names]
        self.kinds = sorted({lab.instruments[name].kind for name in names})
        self.wall_s = self.instrument_s = self.write_verify_s = 0.0
        self.updates = self.exchanges = 0
        program, write = backend.program, backend.programmer.write

        def timed_write(*args):  # one device's write-verify: the programmer's exchanges alone
            t0 = time.perf_counter()
            try:
                return write(*args)
            finally:
                self.write_verify_s += time.perf_counter() - t0

        backend.programmer.write = timed_write

        def timed(update):
            c0, t0, x0 = sum(c.now_s for c in self.clocks), time.perf_counter(), backend.board_transactions
            program(update)
            self.wall_s += time.perf_counter() - t0
            self.instrument_s += sum(c.now_s for c in self.clocks) - c0
            self.exchanges += backend.board_transactions - x0
            self.updates += 1

        backend.program = timed

    def line(self, scale: float) -> str:
        n = max(self.updates, 1)
        per, wv = self.wall_s / n, self.write_verify_s / n
        bound = self.instrument_s * scale / n
        if bound == 0:
            return f"  programmer {', '.join(self.kinds)}: {1e3 * per:.1f} ms per update (no timing model in its emulator)"
        return (f"  programmer {', '.join(self.kinds)}, time scale {scale:g}, {self.updates} updates: physics bound "
                f"(pulses, read-outs, serial bytes) {1e3 * bound:.1f} ms per update; write-verify {1e3 * wv:.1f} ms "
                f"(ratio {wv / bound:.2f}); the whole update with its journal {1e3 * per:.1f} ms (ratio {per / bound:.2f}); "
                f"{self.exchanges / n:.0f} exchanges per update, {1e3 * self.instrument_s * scale / max(self.exchanges, 1):.2f} "
                f"ms of instrument time each")


def compare(a: argparse.Namespace, lab, tmp: Path) -> int:
    # A device with a fixed step needs up to range/step pulses to reach a far target: the bench's initial
    # programming (from the fresh chip's states to the seeded start, which the simulator sets exactly) gets that
    # budget; training updates keep the lab's own max_pulses, on the bench and in the dry run alike.
    init_budget = (int(1.2 * resolve_device_model(lab.emulator.device_model).states) if lab.emulator.device_model
                   else lab.programming.max_pulses)
    seeds = [int(s) for s in a.seeds.split(",")]
    sigma = lab.emulator.read_noise_V / math.sqrt(lab.timing.nplc) / lab.units.voltage_unit_V
    print(f"machine: {describe()}")
    print(f"bench devices: {lab.emulator.device_model or 'the emulator rate model'}; simulator devices: "
          f"{'fitted to the bench' if a.fit else (lab.emulator.device_model or 'ideal (exact)')}", flush=True)
    rows = []
    for seed in seeds:
        over = {"runs_dir": str(tmp), "train.seed": seed, **({"train.epochs": a.epochs} if a.epochs else {}),
                **({"data.train_limit": a.train_limit} if a.train_limit else {}),
                **({"data.test_limit": a.test_limit} if a.test_limit else {})}
        sim_over = {**over, "noise.sigma": sigma}
        lab_s = lab.model_copy(update={"emulator": lab.emulator.model_copy(update={"seed": seed})})
        with EmulatedLab(lab_s) as emu:
            registry = emu.write_registry(tmp / "emulator.json")
            if a.fit:
                path = characterize(lab_s, registry, tmp / f"device-{seed}.yaml", a.pulses, a.sample, seed)
                sim_over.update(device_overrides(lab_s, str(path)))
            elif lab_s.emulator.device_model:
                sim_over.update(device_overrides(lab_s, lab_s.emulator.device_model))
            cfg = load_config(None, over, base=lab_s.run)
            lab_file = tmp / f"lab-{seed}.yaml"  # the lab as adjusted here (device model, seed, initial budget)
            budget = max(lab.programming.max_pulses, init_budget)
            lab_init = lab_s.model_copy(update={"programming": lab_s.programming.model_copy(update={"max_pulses": budget})})
            lab_file.write_text(yaml.safe_dump(lab_init.model_dump(mode="json"), sort_keys=False))
            prep = prepare(cfg, lab_file, registry)  # programs the seeded start with the initial budget
            prep.backend.lab = lab_s  # then trains with the lab's own write-verify limits
            programming = ProgrammerTiming(prep.backend, lab_s, emu)
            t0 = time.perf_counter()
            bench = train_run(prep, RunStore.create(cfg.runs_dir, cfg.name, cfg))[-1]
            bench_s = time.perf_counter() - t0
            left_on = emu.outputs()
            serial_s, dac_ramp_s = physics_bound_s(lab_s, emu)
        cfg = load_config(None, sim_over, base=lab.run)
        prep = prepare(cfg)
        sim = train_run(prep, RunStore.create(cfg.runs_dir, cfg.name, cfg))[-1]
        per = len(prep.data.x_train) * cfg.train.epochs
        rows.append((seed, bench.test_acc[0], sim.test_acc[0], bench, sim, bench_s / per, left_on,
                     serial_s / per, dac_ramp_s / per, programming))
    print(f"\ntask: {cfg.data.dataset} classes {cfg.data.classes}, {cfg.data.image_size}x{cfg.data.image_size} pixels, "
          f"{'-'.join(map(str, lab.layer_sizes))}, {cfg.train.epochs} epochs; simulator sigma {sigma:.3g} V (normalized)")
    scale = lab.emulator.time_scale
    for seed, b, s, bench, sim, per_sample, left_on, serial, ramps, programming in rows:
        print(f"seed {seed}: bench {100 * b:.1f}%, simulator {100 * s:.1f}% ({100 * (b - s):+.1f} points); bench "
              f"{bench.extra['round_trips_per_training_sample']:.1f} VISA round trips, "
              f"{bench.extra['ms_per_training_sample']:.0f} ms per training sample in the last epoch, {1e3 * per_sample:.0f} "
              f"ms over the run with initial programming; simulator {sim.extra.get('pulses_per_update', 0):.0f} pulses "
              f"per update; outputs left on after: {left_on or 'none'}")
        bound = (serial + ramps) * scale
        print(f"  time scale {scale:g}: wall {1e3 * per_sample:.1f} ms per training sample; physics bound (instrument "
              f"time, x time scale) {1e3 * bound:.1f} ms; ratio {per_sample / max(bound, 1e-12):.2f} (of the bound: DAC "
              f"slew ramps {1e3 * ramps * scale:.1f} ms, SMU readings and relays {1e3 * serial * scale:.1f} ms)")
        print(programming.line(scale))
    mb = sum(r[1] for r in rows) / len(rows)
    ms = sum(r[2] for r in rows) / len(rows)
    print(f"mean over {len(rows)} seed(s): bench {100 * mb:.1f}%, simulator {100 * ms:.1f}%, difference "
          f"{100 * (mb - ms):+.1f} points (target: within 3)")
    return 0 if abs(mb - ms) <= 0.03 else 1


if __name__ == "__main__":
    sys.exit(main())
