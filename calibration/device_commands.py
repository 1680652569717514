"""`hil characterize --devices`: pulse trains on a bench's devices, the fitted model in device.yaml, and its plot."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.device_fit import FitError, PulseTrains, apply_pulse_trains, fit_pulse_trains, fitted_trajectories
from drivers.bench import open_instrument
from drivers.pulse_programmer import SmuPulseProgrammer
from drivers.session import CommandLog, VisaSession
from hil.core.backend import node_sizes
from hil.core.devices.store import save_device_model
from hil.plotting import save_figure, subplots


def open_programmer(lab, name: str, session: VisaSession) -> tuple[SmuPulseProgrammer, list]:
    """A programmer made of lab instruments (lab config `programmers:`), connected: it and its instruments."""
    cfg = lab.programmers[name]
    names = dict.fromkeys([cfg.switch, *(bus.source.instrument for bus in cfg.buses.values())])
    insts = {}
    try:
        for inst_name in names:
            drv = open_instrument(lab, inst_name, session)
            insts[inst_name] = drv
            drv.connect()
        prog = SmuPulseProgrammer(lab, name, insts)
        prog.connect()
    except BaseException:
        for drv in insts.values():
            drv.close()
        raise
    return prog, list(insts.values())


def open_boards(lab, log, registry=None) -> tuple[dict, list]:
    """layer -> (connected programmer, row offset, column offset), and the drivers to shut down (a programmer
    made of lab instruments first: it opens its relays before its instruments go down). A board's driver class
    comes from its kind (drivers/registry.py)."""
    drivers: dict = {}
    boards: dict = {}
    extra: list = []
    session = VisaSession(lab.visa_library, log, registry)
    try:
        for blk in lab.devices:
            if blk.board in lab.programmers and blk.board not in drivers:
                prog, insts = open_programmer(lab, blk.board, session)
                drivers[blk.board] = prog
                extra += insts
            elif blk.board not in drivers:
                drv = open_instrument(lab, blk.board, session)
                drivers[blk.board] = drv
                drv.connect()
            boards[blk.layer] = (drivers[blk.board], blk.row_offset, blk.col_offset)
    except BaseException:
        for drv in [*drivers.values(), *extra]:
            drv.close()
        raise
    return boards, [*drivers.values(), *extra]


def sample_devices(lab, count: int, seed: int) -> list[tuple[int, int, int]]:
    """count devices drawn without replacement over every layer's block, (layer, row, col) within the layer."""
    sizes = lab.layer_sizes
    nodes = node_sizes(sizes)
    shapes = [(nodes[l], nodes[l + 1]) for l in range(len(nodes) - 1)]
    every = [(l, i, j) for l, (m, k) in enumerate(shapes) for i in range(m) for j in range(k)]
    if not 3 <= count <= len(every):
        raise FitError(f"--sample: between 3 and the {len(every)} devices of this bench (got {count})")
    pick = np.random.default_rng(seed).choice(len(every), size=count, replace=False)
    return [every[int(p)] for p in sorted(pick)]


def plot_pulse_trains(path: Path, data: PulseTrains, fit, shown: int = 6) -> Path:
    """Conductance against pulse number for some sampled devices: readings (dots) and the fit's mean response."""
    model = fitted_trajectories(data, fit)
    fig, ax = subplots(figsize=(7, 4), dpi=110)
    n_t = data.g_S.shape[1] * data.g_S.shape[2]
    x = np.arange(n_t)
    for k, d in enumerate(range(min(shown, len(data.devices)))):
        color = f"C{k}"
        ax.plot(x, 1e6 * data.g_S[d].ravel(), ".", ms=1.5, color=color, alpha=0.5,
                label=f"device {data.devices[d]}" + (" (stuck)" if fit.stuck[d] else ""))
        if not fit.stuck[d]:
            ax.plot(x, 1e6 * model[d].ravel(), "-", lw=1, color=color)
    ax.set_xlabel(f"pulse number ({data.pulses} SET then {data.pulses} RESET per cycle)")
    ax.set_ylabel("conductance (uS)")
    ax.set_title(f"{len(data.devices)} devices sampled; dots: readings, lines: fitted model", fontsize=9)
    ax.legend(fontsize=6, markerscale=4, loc="lower right")
    return save_figure(fig, path)


@dataclass(frozen=True)
class PulseTrainPlan:
    """`hil characterize --devices`: `sample` devices drawn with `seed`, each given `cycles` of `pulses` SET then
    `pulses` RESET pulses (a reading after each) and `repeats` readings at rest; the fit is named `model_name`."""

    sample: int = 16
    pulses: int = 500
    cycles: int = 3
    repeats: int = 10
    seed: int = 0
    model_name: str | None = None

    def __post_init__(self) -> None:
        for name, least in (("pulses", 1), ("cycles", 1), ("repeats", 2)):
            if getattr(self, name) < least:
                raise FitError(f"--{name}: too small (got {getattr(self, name)}; at least {least})")


def characterize_devices(plan: PulseTrainPlan, lab, store, registry=None) -> int:
    """Pulse trains on a sample of the bench's devices, the fitted device model (device.yaml) and its plot."""
    log = CommandLog(store.path / "commands.jsonl")
    devices = sample_devices(lab, plan.sample, plan.seed)
    p = lab.programming
    print(f"{len(devices)} devices, {plan.cycles} cycles of {plan.pulses} SET ({p.set.start_V:g} V) and "
          f"{plan.pulses} RESET ({p.reset.start_V:g} V) pulses of {p.set.width_s:g} s, a reading after each; "
          f"device range [{p.g_min_S:g}, {p.g_max_S:g}] S", flush=True)
    boards, drivers = open_boards(lab, log, registry)
    try:
        data = apply_pulse_trains(boards, devices, pulses=plan.pulses, cycles=plan.cycles, set_V=p.set.start_V,
                                  reset_V=p.reset.start_V, width_s=p.set.width_s, repeats=plan.repeats,
                                  g_min_S=p.g_min_S, g_max_S=p.g_max_S)
    finally:
        for drv in drivers:
            try:
                drv.shutdown()
            finally:
                drv.close()
    np.savez_compressed(store.path / "pulse_trains.npz", g_S=data.g_S, repeat_S=data.repeat_S,
                        devices=np.asarray(devices), g_min_S=p.g_min_S, g_max_S=p.g_max_S)
    fit = fit_pulse_trains(data, name=plan.model_name or f"{lab.name}-fit")
    print(f"{'parameter':>15}  {'estimate':>11}  {'std. error':>10}   (normalized units: w = -1 .. 1 over the range)")
    for name, e in fit.estimates.items():
        print(f"{name:>15}  {e['value']:>11.4g}  {e['stderr']:>10.2g}")
    out = save_device_model(fit.model, store.path / "device.yaml", fit={
        "estimates": fit.to_yaml_tree(), "device_range_S": [p.g_min_S, p.g_max_S], "devices": [list(d) for d in devices],
        "pulses": plan.pulses, "cycles": plan.cycles,
        "use": "hil train --device-model device.yaml with network.g_min/g_max = the device range / "
               "units.conductance_unit_S"})
    plot_pulse_trains(store.path / "device_fit.png", data, fit)
    (store.path / "device_fit.json").write_text(json.dumps({"estimates": fit.to_yaml_tree()}, indent=1) + "\n")
    store.set_status("completed")
    print(f"saved {out} (use: hil train --device-model {out}), device_fit.png and pulse_trains.npz")
    return 0
