"""`hil characterize` (the node noise of a held state, or with --devices the devices' pulse response) and
`hil calibrate` (N for a target sigma)."""

from __future__ import annotations

import argparse
from pathlib import Path

from calibration.commands import CalibrationRequest, NodeReadout, calibrate, characterize_nodes
from calibration.device_commands import PulseTrainPlan, characterize_devices, sample_devices
from drivers.lab import load_lab
from hil.cli.options import TRAINING_ONLY, UsageError, add_run_options
from hil.cli.setup import setup_run
from hil.core.config import RunConfig
from hil.store import RunStore


def cmd_characterize(args: argparse.Namespace) -> int:
    if args.devices:
        return _characterize_devices(args)

    def check(cfg: RunConfig) -> None:
        n = cfg.noise
        if args.lab is None and n.sigma == 0 and n.flicker_floor_V == 0 and n.drift_V_per_s == 0:
            raise UsageError("the simulated bench has no noise to characterize: give --sigma (white, V at 1 PLC), "
                             "--flicker or --drift")

    readout = NodeReadout(readings=args.readings, show=args.show)  # checked before anything is written
    cfg, prep, store = setup_run(args, "characterize", check)
    try:
        with store.recording():
            return characterize_nodes(readout, cfg, prep, store)
    finally:
        prep.backend.close()


def _characterize_devices(args: argparse.Namespace) -> int:
    if args.lab is None:
        raise UsageError("--devices: characterizes a bench's devices through its programming board; give --lab "
                         "LAB.yaml (for an emulated bench, start `hil emulate --lab LAB.yaml` first)")
    plan = PulseTrainPlan(sample=args.sample, pulses=args.pulses, cycles=args.cycles, repeats=args.repeats,
                          seed=args.seed or 0, model_name=args.model_name)
    lab = load_lab(args.lab)
    sample_devices(lab, plan.sample, plan.seed)  # a --sample the bench cannot give is refused before any folder
    store = RunStore.create(args.runs_dir, args.name or "devices")
    with store.recording():
        return characterize_devices(plan, lab, store)


def cmd_calibrate(args: argparse.Namespace) -> int:
    req = CalibrationRequest(sigma_target=args.sigma_target, from_sweep=args.from_sweep,
                             characterization=args.characterization, reading_sigma=args.reading_sigma,
                             parallel_channels=args.parallel_channels, centered=args.centered,
                             programming_s=args.programming_s, programming_from=args.programming_from)
    return calibrate(req, lambda: RunStore.create(args.runs_dir, args.name or "calibrate"))


def add_characterize_parsers(sub) -> None:
    ch = sub.add_parser("characterize", help="read every node of a held state many times: sigma, correlation, Allan deviation",
                        description="Hold one clamped input, read every hidden and output node --readings times, and "
                        "report per node sigma with its 95% interval, lag-1 correlation, effective N, and the "
                        "Allan floor and N_max. Writes characterize.json and allan.png. With --devices: pulse "
                        "trains on the bench's devices and the fitted device model (device.yaml).")
    ch.add_argument("--lab", type=Path, metavar="LAB.yaml", help="characterize the bench this lab config describes")
    ch.add_argument("--readings", type=int, default=1000, help="readings per node (default 1000)")
    ch.add_argument("--show", type=int, default=10, help="nodes printed in the table (all are saved)")
    dv = ch.add_argument_group("devices (--devices: the resistive devices instead of the node noise)")
    dv.add_argument("--devices", action="store_true",
                    help="apply SET/RESET pulse trains to a sample of the bench's devices through its programming "
                    "board, fit the pulsed-device model, write device.yaml (for --device-model) and device_fit.png")
    dv.add_argument("--sample", type=int, default=16, help="devices sampled, drawn with --seed (default 16)")
    dv.add_argument("--pulses", type=int, default=500, help="K: SET pulses, then K RESET pulses, per cycle; enough "
                    "to cross the range (default 500)")
    dv.add_argument("--cycles", type=int, default=3, help="cycles of K SET + K RESET pulses (default 3)")
    dv.add_argument("--repeats", type=int, default=10, help="readings at rest per device, for its read noise (default 10)")
    dv.add_argument("--model-name", help="name written into device.yaml (default: LAB-fit)")
    add_run_options(ch, exclude=TRAINING_ONLY)
    ch.set_defaults(func=cmd_characterize)

    cb = sub.add_parser("calibrate", help="choose N, the readings per node, for a target effective sigma",
                        description="N = ceil((sigma_upper/sigma_target)^2), capped at N_max and refused below the Allan "
                        "floor. Writes calibration.json and calibration.yaml (use: hil train --config calibration.yaml).")
    cb.add_argument("--sigma-target", type=float, help="effective noise wanted, V")
    cb.add_argument("--from-sweep", type=Path, metavar="RUN_DIR", help="target from a `hil sweep sigma` folder")
    cb.add_argument("--characterization", type=Path, metavar="JSON", help="characterize.json from `hil characterize`")
    cb.add_argument("--reading-sigma", type=float, help="sigma of one reading, V (instead of --characterization)")
    cb.add_argument("--parallel-channels", type=int, default=1, help="nodes read at the same time (default 1)")
    cb.add_argument("--centered", action="store_true", help="centered EP: three phases per update")
    cb.add_argument("--programming-s", type=float, help="time to program one update into the devices, s (added to "
                    "the time per update)")
    cb.add_argument("--programming-from", type=Path, metavar="RUN_DIR", help="take the programming time per update "
                    "from a run trained with a pulsed --device-model (its metrics' programming_s_per_update)")
    cb.add_argument("--name", help="run folder suffix (default calibrate)")
    cb.add_argument("--runs-dir", type=Path, help="where run folders go (default ./runs)")
    cb.set_defaults(func=cmd_calibrate)

