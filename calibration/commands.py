"""`hil characterize`, `hil calibrate`, `hil sweep sigma` and `hil sweep samples`."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import yaml

from calibration.allan import AllanResult, analyse_allan
from calibration.critical import (
    beyond_grid,
    crit_interval,
    critical_from_points,
    critical_from_trials,
    describe_crit,
    sigma_sweep_grid,
)
from calibration.plots import plot_accuracy_vs_sigma, plot_allan, plot_sigma_crit_vs_n
from calibration.samples import BenchTiming, CalibrationError, choose_samples
from calibration.statistics import estimate_noise
from hil.core.config import RunConfig
from hil.executors import IN_PROCESS, ExecutorOptions
from hil.grid_run import finish_sweep, point_trials_csv, run_sweep
from hil.runner import Prepared
from hil.store import RunStore, atomic_write_bytes, atomic_write_text
from hil.sweep import (
    SweepOptions,
    format_summary,
    summarize,
    write_csv,
    write_summary_csv,
    write_trials_csv,
)


class CommandError(ValueError):
    """Bad input to a calibration command; printed as one line."""


class ReadTiming(Protocol):
    nplc: float
    line_frequency_hz: float
    overhead_s: float


@runtime_checkable
class BenchReadout(Protocol):
    """A lab bench (drivers.crossbar.InstrumentCrossbar): its own reading timing, and the volts per normalized volt."""

    @property
    def timing(self) -> ReadTiming: ...

    @property
    def voltage_unit_V(self) -> float: ...


# ---- characterize ---------------------------------------------------------------
def read_held_state(backend, x, readings: int) -> np.ndarray:
    """Clamp one input, settle, and read every hidden/output node `readings` times: (readings, nodes)."""
    backend.clamp(x)
    backend.nudge(None)
    backend.relax()
    return backend.measure(readings)[:, 0, 0, :].detach().cpu().numpy().astype(np.float64)


def node_names(sizes) -> list[str]:
    names = []
    for layer, k in enumerate(sizes):
        tag = "out" if layer == len(sizes) - 1 else f"h{layer + 1}"
        names += [f"{tag}[{i}]" for i in range(k)]
    return names


@dataclass(frozen=True)
class NodeReadout:
    """What `hil characterize` reads: `readings` per node of one held state (>= 2, for a spread), `show` nodes printed."""

    readings: int = 1000
    show: int = 10

    def __post_init__(self) -> None:
        if self.readings < 2:
            raise CommandError(f"--readings: need at least 2 readings per node for a spread (got {self.readings})")
        if self.show < 0:
            raise CommandError(f"--show: a number of nodes >= 0 (got {self.show})")


def characterize_nodes(readout: NodeReadout, cfg: RunConfig, prep: Prepared, store: RunStore) -> int:
    """Read every node of one held state `readout.readings` times; characterize.json, readings.npy, allan.png."""
    readings = readout.readings
    net = prep.backend
    idx = 0
    samples = read_held_state(net, prep.data.x_test[idx:idx + 1], readings)
    est = estimate_noise(samples)
    allan = analyse_allan(samples) if readings >= 8 else None
    names = node_names(net.measured_sizes)
    bench = net if isinstance(net, BenchReadout) else None
    nz = bench.timing if bench is not None else cfg.noise  # a bench's own NPLC, else the simulated one
    aperture = nz.nplc / nz.line_frequency_hz
    print(f"held input: test sample {idx} (label {int(prep.data.y_test[idx])}); {len(names)} nodes read {readings} "
          f"times each at NPLC {nz.nplc:g} ({1e3 * aperture:.3g} ms aperture + {1e3 * nz.overhead_s:.3g} ms overhead)")
    print(f"{'node':>8}  {'mean (V)':>11}  {'sigma (V)':>10}  {'95% interval (V)':>21}  {'lag-1':>6}  {'eff. N':>7}")
    order = list(range(len(names)))
    for i in order[: readout.show]:
        print(f"{names[i]:>8}  {est.mean[i]:>11.5g}  {est.sigma[i]:>10.4g}  [{est.sigma_low[i]:.4g}, {est.sigma_high[i]:.4g}]"
              f"  {est.lag1[i]:>6.3f}  {est.n_eff[i]:>7.0f}")
    if len(names) > readout.show:
        print(f"{'...':>8}  ({len(names) - readout.show} more nodes in characterize.json)")
    print(f"pooled sigma {est.pooled_sigma:.4g} V, 95% interval [{est.pooled_low:.4g}, {est.pooled_high:.4g}] V; "
          f"median lag-1 {np.median(est.lag1):.3f}, median effective N {np.median(est.n_eff):.0f} of {readings}")
    if bench is not None:
        print(f"(bench readings in normalized volts: bench volts / units.voltage_unit_V = {bench.voltage_unit_V:g} V, the unit of "
              "--sigma in training and sweeps)")
    if allan is not None:
        floor = f"{allan.floor:.3g} V" if allan.floor is not None else f"none within {readings} readings"
        nmax = f"{allan.n_max}" if allan.n_max is not None else "not reached (averaging keeps paying)"
        print(f"Allan deviation: white slope {allan.white_slope:.3f} (white noise: -0.5), floor {floor}, N_max {nmax}")
    report = {
        "backend": "lab" if bench is not None else "sim", "lab": str(prep.lab_path) if prep.lab_path else None,
        "readings": readings, "held_test_sample": idx, "nodes": names,
        "timing": {"nplc": nz.nplc, "line_frequency_hz": nz.line_frequency_hz, "aperture_s": aperture,
                   "overhead_s": nz.overhead_s},
        "noise_config": cfg.noise.model_dump() if bench is None else None, "estimate": est.to_json(), "allan": allan.to_json() if allan else None,
        # a bench reads in normalized volts: this many volts each (None: the simulator's volts)
        "voltage_unit_V": bench.voltage_unit_V if bench is not None else None,
    }
    atomic_write_text(store.path / "characterize.json", json.dumps(report, indent=1) + "\n")
    buf = io.BytesIO()
    np.save(buf, samples)  # every reading (readings, nodes), for `hil export` and the user's own analysis
    atomic_write_bytes(store.path / "readings.npy", buf.getvalue())
    if allan is not None:
        plot_allan(store.path / "allan.png", allan, f"{store.path.name}: {len(names)} nodes, pooled")
    store.set_status("completed")
    print(f"saved {store.path / 'characterize.json'}" + (" and allan.png" if allan else ""))
    return 0


# ---- calibrate ------------------------------------------------------------------
def _load_json(path: Path, what: str) -> dict:
    if not Path(path).is_file():
        raise CommandError(f"{what}: file not found: {path}")
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CommandError(f"{what}: {path} is not JSON ({err})") from None
    if not isinstance(data, dict):
        raise CommandError(f"{what}: {path} is not a JSON object")
    return data


def target_from_sweep(run_dir: Path) -> tuple[float, str]:
    crit = _load_json(Path(run_dir) / "critical.json", "--from-sweep")
    try:
        if "per_samples" in crit:  # a `sweep samples` folder: use its N = 1 result
            crit = crit["per_samples"][0]
        s_crit, s_opt = crit.get("sigma_crit_V"), crit.get("sigma_opt_V")
    except (KeyError, IndexError, TypeError, AttributeError) as err:
        raise CommandError(f"--from-sweep: {run_dir}/critical.json is not a sweep's result ({err.__class__.__name__})") from None
    if not s_crit:
        raise CommandError(f"--from-sweep: {run_dir} found no sigma at which training reached the threshold; "
                           "sweep lower sigmas first")
    lowest = min(p["sigma_V"] for p in crit.get("points", [])) if crit.get("points") else None
    if s_opt and 0 < s_opt <= s_crit and lowest is not None and s_opt > lowest:
        return s_opt, (f"Target sigma_opt = {s_opt:.3g} V from {run_dir} (best mean accuracy, above the lowest sigma "
                       f"swept; sigma_crit = {s_crit:.3g} V): noise just below the critical level helped, so more "
                       "readings would cost time and accuracy.")
    if s_opt and 0 < s_opt <= s_crit:
        return s_opt, (f"Target {s_opt:.3g} V from {run_dir}: the best mean accuracy came at the lowest sigma swept "
                       f"(sigma_crit = {s_crit:.3g} V); lower sigmas were not tried, so whether more readings would raise "
                       "accuracy is unknown: sweep lower to find out.")
    return s_crit / 2, (f"Target sigma_crit/2 = {s_crit / 2:.3g} V from {run_dir} (sigma_crit = {s_crit:.3g} V; the best "
                        "accuracy came without noise, so keep a factor 2 of margin).")


def resolve_adaptive_inputs(cfg: RunConfig) -> RunConfig:
    """Fill noise.sigma_target from noise.adapt.target_from_sweep (a `hil sweep sigma` folder, chosen as `hil
    calibrate --from-sweep` chooses) and noise.adapt.n_max from noise.adapt.allan_from (a `hil characterize`
    report's Allan N_max), in place; the run's config.yaml then records the numbers used."""
    noise = cfg.noise
    if noise.adapt.target_from_sweep is not None:
        if noise.sigma_target is not None:
            raise CommandError("--sigma-target and --target-from-sweep: give one of them (the target is one number)")
        target, _ = target_from_sweep(noise.adapt.target_from_sweep)
        noise.sigma_target = target
    if noise.adapt.allan_from is not None and noise.adapt.n_max is None:
        ch = _load_json(noise.adapt.allan_from, "--allan-from")
        allan = ch.get("allan")
        if not isinstance(allan, dict) or "n_max" not in allan:
            raise CommandError(f"--allan-from: {noise.adapt.allan_from} has no Allan analysis (characterize with "
                               "enough readings for one)")
        if allan["n_max"] is not None:  # None: averaging kept paying within the readings taken, no cap
            n_max = int(allan["n_max"])
            noise.adapt.start_samples = min(noise.adapt.start_samples, n_max)
            noise.adapt.n_max = n_max
    return cfg


@dataclass(frozen=True)
class CalibrationRequest:
    """What `hil calibrate` chooses N from: a target (sigma_target V, or a sweep folder's) and the noise of one
    reading (a characterization report, or reading_sigma V), with the bench's timing for the time per update."""

    sigma_target: float | None = None
    from_sweep: Path | None = None
    characterization: Path | None = None
    reading_sigma: float | None = None
    parallel_channels: int = 1  # nodes read at the same time
    centered: bool = False  # three phases per update instead of two
    programming_s: float | None = None  # programming time per update, s
    programming_from: Path | None = None  # or from a pulsed training run's metrics

    def __post_init__(self) -> None:
        if (self.sigma_target is None) == (self.from_sweep is None):
            raise CommandError("give exactly one of --sigma-target V or --from-sweep RUN_DIR")
        if self.parallel_channels < 1:
            raise CommandError(f"--parallel-channels: at least 1 node read at a time (got {self.parallel_channels})")


def calibrate(req: CalibrationRequest, store_factory: Callable[[], RunStore]) -> int:
    """Choose N for the request, then (store_factory: the folder, made only once N is chosen) write
    calibration.json and calibration.yaml."""
    allan, timing, lab = None, None, None
    if req.characterization:
        ch = _load_json(req.characterization, "--characterization")
        lab = ch.get("lab") if isinstance(ch, dict) else None  # a bench's: training with N runs there too
        programming_s = programming_seconds(req.programming_s, req.programming_from)
        try:
            sigma_upper = float(ch["estimate"]["pooled_high"])
            a = ch.get("allan")
            if a:
                allan = AllanResult(np.array(a["lengths"]), np.array(a["adev_V"]), a["white_slope"],
                                    a["white_sigma_V"], a["floor_V"], a["n_max"], a["flicker_var_V2"], a["drift_var_V2"])
            t = ch["timing"]
            timing = BenchTiming(t["aperture_s"], t["overhead_s"], len(ch["nodes"]), req.parallel_channels,
                                 3 if req.centered else 2, programming_s)
            source = f"{req.characterization} (pooled over {len(ch['nodes'])} nodes, {ch['readings']} readings)"
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise CommandError(f"--characterization: {req.characterization} is not a `hil characterize` report "
                               f"({err.__class__.__name__}: {err})") from None
    elif req.reading_sigma is not None:
        if req.programming_s is not None or req.programming_from is not None:
            raise CommandError("--programming-s/--programming-from: the time per update also needs the reading time, "
                               "from --characterization FILE")
        sigma_upper = req.reading_sigma
        source = "--reading-sigma (taken as the upper bound; no Allan analysis, so no floor or N_max check)"
    else:
        raise CommandError("calibrate needs the noise of one reading: --characterization FILE (from hil characterize) "
                           "or --reading-sigma V")
    if req.from_sweep is not None:
        target, target_why = target_from_sweep(req.from_sweep)
    else:
        assert req.sigma_target is not None  # exactly one of them (__post_init__)
        target, target_why = req.sigma_target, f"Target {req.sigma_target:.3g} V given on the command line."
    try:
        choice = choose_samples(sigma_upper, target, allan, timing)
    except CalibrationError as err:
        raise CommandError(str(err)) from None
    store = store_factory()
    reasoning = [f"Noise of one reading from {source}.", target_why, *choice.reasoning]
    print(f"N = {choice.samples} readings per node and state")
    if choice.seconds_per_update is not None:
        print(f"bench time per update: {choice.seconds_per_update:.3g} s")
    for line in reasoning:
        print(f"  - {line}")
    out = choice.to_json() | {"reasoning": reasoning}
    atomic_write_text(store.path / "calibration.json", json.dumps(out, indent=1) + "\n")
    atomic_write_text(store.path / "calibration.yaml", yaml.safe_dump({"noise": {"samples": choice.samples}}))
    store.set_status("completed")
    on_lab = f"--lab {lab} " if lab else ""
    print(f"saved {store.path / 'calibration.json'}; train with it: hil train {on_lab}--config {store.path / 'calibration.yaml'}")
    return 0


def programming_seconds(programming_s: float | None, programming_from: Path | None) -> float:
    """Programming time per update, s: --programming-s, or the last epoch's programming_s_per_update of a
    training run with a pulsed device model (--programming-from RUN_DIR); 0 when neither is given."""
    if programming_s is not None and programming_from is not None:
        raise CommandError("give at most one of --programming-s and --programming-from")
    if programming_s is not None:
        if not (math.isfinite(programming_s) and programming_s >= 0):
            raise CommandError(f"--programming-s: a time >= 0 s (got {programming_s})")
        return float(programming_s)
    if programming_from is None:
        return 0.0
    path = Path(programming_from) / "metrics.jsonl"
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        raise CommandError(f"--programming-from: no readable metrics.jsonl in {programming_from}") from None
    if not rows or "programming_s_per_update" not in rows[-1]:
        raise CommandError(f"--programming-from: {programming_from} has no programming_s_per_update (train with "
                           "a pulsed --device-model)")
    return float(rows[-1]["programming_s_per_update"])


# ---- sweeps -------------------------------------------------------------------------
def sigma_grid(sigmas: Sequence[float] | None, sigma_min: float, sigma_max: float, points: int) -> list[float]:
    """The sigma points of a sweep, ascending: the listed ones, else `points` log-spaced from sigma_min to sigma_max."""
    if sigmas:
        sig = list(sigmas)
    else:
        if not (sigma_min > 0 and sigma_max > sigma_min and points >= 2):
            raise CommandError(f"--sigma-min/--sigma-max/--points: need 0 < min < max and at least 2 points "
                               f"(got {sigma_min}, {sigma_max}, {points})")
        sig = np.geomspace(sigma_min, sigma_max, points).tolist()
    if any(not (s >= 0 and math.isfinite(s)) for s in sig):
        raise CommandError(f"--sigma: read noise must be finite and >= 0 V (got {sig})")
    return sorted(sig)


def sweep_sigma(opts: SweepOptions, sigmas: Sequence[float], cfg: RunConfig, prep: Prepared, store: RunStore,
                executor: ExecutorOptions = IN_PROCESS) -> int:
    """`hil sweep sigma`: opts.trials networks per sigma; the table, sigma_crit and sigma_opt (critical.json)."""
    print(f"sigma sweep: {cfg.data.dataset}, {len(sigmas)} sigma from {sigmas[0]:.3g} to {sigmas[-1]:.3g} V x {opts.trials} "
          f"trials, {cfg.train.epochs} epoch(s), N={cfg.noise.samples}; folder {store.path}", flush=True)
    with store.recording():
        grid = sigma_sweep_grid(cfg, sigmas, opts.trials)
        results = run_sweep(grid, opts, prep.data, executor=executor, folder=store.path, write_trials=point_trials_csv)
        res = critical_from_trials(results, opts.threshold, cfg.noise.initial_samples)
        write_trials_csv(store.path / "trials.csv", res.trials)
        write_summary_csv(store.path / "table.csv", res.points)
        atomic_write_text(store.path / "critical.json", json.dumps(res.to_json(), indent=1) + "\n")
        plot_accuracy_vs_sigma(store.path / "accuracy_vs_sigma.png", {f"N={res.samples}": res.points},
                               f"{store.path.name}", opts.threshold)
    finish_sweep(store)
    print(format_summary(res.points, opts.threshold))
    crit = describe_crit(res.sigma_crit, res.points, opts.threshold)
    ci = res.sigma_crit_interval
    shown_ci = f", 95% CI {ci[0]:.3g}-{ci[1]:.3g} V (bootstrap over trials)" if ci and res.sigma_crit else ""
    print(f"sigma_crit {crit}{shown_ci} (mean accuracy reaches {100 * opts.threshold:g}%), sigma_opt "
          f"{res.sigma_opt:.3g} V (best mean accuracy)")
    print(f"saved table.csv, trials.csv, critical.json and accuracy_vs_sigma.png in {store.path}")
    return 0


def sweep_samples(opts: SweepOptions, sigmas: Sequence[float], ns: Sequence[int], cfg: RunConfig, prep: Prepared, store: RunStore,
                  executor: ExecutorOptions = IN_PROCESS) -> int:
    """`hil sweep samples`: the sigma sweep at every N in ns at once; sigma_crit against N (critical.csv)."""
    print(f"samples sweep: N in {list(ns)}, {len(sigmas)} sigma from {sigmas[0]:.3g} to {sigmas[-1]:.3g} V x {opts.trials} trials, "
          f"{cfg.train.epochs} epoch(s); folder {store.path}", flush=True)
    with store.recording():
        grid = sigma_sweep_grid(cfg, sigmas, opts.trials, ns)
        results = run_sweep(grid, opts, prep.data, executor=executor, folder=store.path, write_trials=point_trials_csv)
        points = summarize(results, opts.threshold)
        per_n, crits, cis = [], [], []
        for n in ns:
            pts = [p for p in points if p.samples == n]
            crit, opt = critical_from_points(pts, opts.threshold)
            crits.append(crit)
            cis.append(crit_interval(results, opts.threshold, n))
            per_n.append({"samples": n, "sigma_crit_V": crit, "sigma_crit_95_V": cis[-1], "sigma_opt_V": opt,
                          "sigma_crit_is_lower_bound": beyond_grid(pts, opts.threshold)})
        base = crits[0]
        lines = [f"{'N':>4}  {'sigma_crit (V)':>14}  {'95% CI (V)':>19}  {'ratio to N=' + str(ns[0]):>12}  {'sqrt(N/N0)':>10}"]
        csv_rows = []
        for n, c, ci in zip(ns, crits, cis):
            ratio = c / base if (c and base) else float("nan")
            csv_rows.append([n, c if c else "", *(ci if ci else ("", "")), ratio, math.sqrt(n / ns[0])])
            shown = (">=" if beyond_grid([p for p in points if p.samples == n], opts.threshold) else "") + f"{c:.4g}" if c else "none"
            shown_ci = f"{ci[0]:.3g}-{ci[1]:.3g}" if ci else "-"
            lines.append(f"{n:>4}  {shown:>14}  {shown_ci:>19}  {ratio:>12.2f}  {math.sqrt(n / ns[0]):>10.2f}")
        write_csv(store.path / "critical.csv", ["samples", "sigma_crit_V", "sigma_crit_lo_V", "sigma_crit_hi_V", "ratio",
                                                "sqrt_ratio"], csv_rows)
        write_trials_csv(store.path / "trials.csv", results)
        write_summary_csv(store.path / "table.csv", points)
        atomic_write_text(store.path / "critical.json",
                          json.dumps({"threshold": opts.threshold, "per_samples": per_n}, indent=1) + "\n")
        plot_sigma_crit_vs_n(store.path / "sigma_crit_vs_N.png", ns, crits, store.path.name)
        plot_accuracy_vs_sigma(store.path / "accuracy_vs_sigma.png",
                               {f"N={n}": [p for p in points if p.samples == n] for n in ns}, store.path.name,
                               opts.threshold)
    finish_sweep(store)
    print(format_summary(points, opts.threshold))
    print("\n".join(lines))
    if any(row["sigma_crit_is_lower_bound"] for row in per_n):
        print(">=: the largest sigma tried still reached the threshold, so sigma_crit lies beyond the grid (raise --sigma-max)")
    print(f"saved critical.csv, table.csv, trials.csv, sigma_crit_vs_N.png and accuracy_vs_sigma.png in {store.path}")
    return 0
