"""`hil sweep table|sigma|samples|grid|resume`: many networks trained at once over read noise, N or any config
fields, and a stopped sweep continued from its folder."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from calibration.commands import sigma_grid, sweep_samples, sweep_sigma
from hil.cli.options import StoreOnce, UsageError, add_run_options, int_list, overrides_from
from hil.cli.setup import setup_run
from hil.core.config import RunConfig
from hil.executors import EXECUTORS, ExecutorOptions
from hil.grid import Grid, GridError, parse_vary
from hil.grid_run import build_grid, run_grid_sweep, sweep_table
from hil.runner import Prepared, describe_network, prepare
from hil.store import RunStore, atomic_write_text
from hil.sweep import CHECKPOINT, SWEEP_COMMAND, SweepOptions
from hil.threads import shared_budget

#: Fields a sweep sets per network itself, per sweep kind (from its --sigma points, --samples-list, the
#: chunking), which a --set would not reach. A grid varies sigma only when asked (its own check refuses a clash).
SWEEP_SETS = {"sigma": {"noise.sigma": "--sigma", "train.replicas": "--max-replicas"},
              "table": {"noise.sigma": "--sigma", "train.replicas": "--max-replicas"},
              "samples": {"noise.sigma": "--sigma", "noise.samples": "--samples-list", "train.replicas": "--max-replicas"},
              "grid": {"train.replicas": "--max-replicas"}}


def _check_sweep(args: argparse.Namespace) -> None:
    sigmas = getattr(args, "sigmas", None) or []
    twice = sorted({s for s in sigmas if sigmas.count(s) > 1})
    if twice:  # the same networks trained twice would count twice in the convergence rate
        raise UsageError(f"--sigma: {', '.join(f'{s:g}' for s in twice)} given twice; give each value once")
    samples = getattr(args, "samples_list", None) or []
    if len(set(samples)) != len(samples):
        raise UsageError(f"--samples-list: a value is given twice ({','.join(map(str, samples))})")
    sets = SWEEP_SETS.get(getattr(args, "sweep_kind", ""), {})
    for key, _ in getattr(args, "set_pairs", []):
        if key in sets:
            raise UsageError(f"--set {key}: the sweep sets it per network ({sets[key]})")
    if args.trials < 1:
        raise UsageError(f"--trials: need at least 1 (got {args.trials})")
    if not 0 < args.threshold <= 1:
        raise UsageError(f"--threshold: an accuracy in (0, 1] (got {args.threshold})")
    if args.max_replicas is not None and args.max_replicas < 1:
        raise UsageError(f"--max-replicas: at least 1 network at once (got {args.max_replicas})")
    if any(n < 1 for n in getattr(args, "samples_list", [1])):
        raise UsageError(f"--samples-list: N values >= 1 (got {args.samples_list})")


def _sweep_setup(args: argparse.Namespace, default_name: str,
                 check: Callable[[RunConfig], object] | None = None) -> tuple[RunConfig, Prepared, RunStore]:
    """check(cfg): validates the command's settings against the resolved config before anything is written."""
    _check_sweep(args)

    def checked(cfg: RunConfig) -> object:
        if cfg.noise.adaptive:  # per-replica adaptive N in sweeps is not built (docs/calibration.md)
            raise UsageError("--samples auto: only hil train adapts N; a sweep reads every network a fixed N times")
        return check(cfg) if check else None

    if args.resume_from is not None:
        store = RunStore.open(args.resume_from)
        cfg = store.config()  # the resolved config it started with, not today's config files
        checked(cfg)
        prep = prepare(cfg)
        store.mark_running()
    else:
        cfg, prep, store = setup_run(args, default_name, check=checked, connect=False)
        atomic_write_text(store.path / SWEEP_COMMAND, json.dumps({"argv": args.argv}, indent=1) + "\n")
    # what every network of the sweep trains (a --preset, a lab's run: section and flags resolved)
    varied = [key for key, _ in getattr(args, "vary", None) or []]
    if varied and getattr(args, "sigmas", None):
        varied.insert(0, "noise.sigma")
    print(f"{describe_network(cfg, prep.data)}, batch {cfg.train.batch_size}, {cfg.dtype}"
          + (f" (the base: {', '.join(varied)} varied per cell)" if varied else ""), flush=True)
    return cfg, prep, store


def cmd_sweep_resume(args: argparse.Namespace) -> int:
    folder = args.run_dir
    try:
        argv = json.loads((folder / SWEEP_COMMAND).read_text())["argv"]
    except (OSError, ValueError, KeyError):
        raise UsageError(f"RUN_DIR: {folder} is not a sweep folder (no readable {SWEEP_COMMAND})") from None
    store = RunStore.open(folder)
    if store.status().get("status") == "completed":
        raise UsageError(f"RUN_DIR: the sweep in {folder} has completed; its results are in its CSV files")
    pid = store.running_elsewhere()
    if pid is not None:
        raise UsageError(f"RUN_DIR: the sweep in {folder} is still running (pid {pid}); stop it first")
    if not (folder / CHECKPOINT).is_file():
        raise UsageError(f"RUN_DIR: {folder} has no {CHECKPOINT} (it stopped before training began): start the sweep again")
    again = args.parser.parse_args(argv)
    again.argv, again.resume_from, again.parser = argv, folder, args.parser
    again.no_progress = again.no_progress or args.no_progress
    if args.executor is not None:  # a sweep's chunks may finish on another executor: same chunks, same results
        again.executor, again.address = args.executor, args.address
    elif args.address is not None:
        raise UsageError("--address: with --executor ray")
    print(f"resuming: hil {' '.join(argv)}", flush=True)
    with shared_budget(getattr(again, "threads", None)):  # the recorded --threads, if the sweep had one
        result: int = again.func(again)
    return result


def sweep_options(args: argparse.Namespace) -> SweepOptions:
    """The training settings every sweep command shares (checked by _check_sweep)."""
    return SweepOptions(trials=args.trials, threshold=args.threshold, max_replicas=args.max_replicas,
                        progress=not args.no_progress, resume=args.resume_from is not None)


def executor_options(args: argparse.Namespace) -> ExecutorOptions:
    """Where the sweep's chunks train (every sweep kind has the executor options)."""
    return ExecutorOptions(name=args.executor, address=args.address, num_cpus=args.ray_cpus,
                           threads=args.threads or 1, gpu_fraction=args.gpu_fraction, max_retries=args.max_retries)


def cmd_sweep_table(args: argparse.Namespace) -> int:
    if any(s < 0 or s != s for s in args.sigmas):
        raise UsageError(f"--sigma: read noise must be >= 0 V (got {args.sigmas})")
    cfg, prep, store = _sweep_setup(args, "sweep-table")
    return sweep_table(sweep_options(args), args.sigmas, cfg, prep, store, executor_options(args))


def _sigmas(args: argparse.Namespace) -> list[float]:
    return sigma_grid(args.sigmas, args.sigma_min, args.sigma_max, args.points)


def cmd_sweep_sigma(args: argparse.Namespace) -> int:
    sigmas = _sigmas(args)  # validated before anything is written, and used as it is
    cfg, prep, store = _sweep_setup(args, "sweep-sigma")
    return sweep_sigma(sweep_options(args), sigmas, cfg, prep, store, executor_options(args))


def cmd_sweep_samples(args: argparse.Namespace) -> int:
    sigmas = _sigmas(args)
    cfg, prep, store = _sweep_setup(args, "sweep-samples")
    return sweep_samples(sweep_options(args), sigmas, args.samples_list, cfg, prep, store, executor_options(args))


def cmd_sweep_grid(args: argparse.Namespace) -> int:
    given = set(overrides_from(args))  # a --vary key may not also be set as a flag (no silent override)
    grids: list[Grid] = []

    def check(cfg: RunConfig) -> None:  # every cell validated before anything is written
        grids.append(build_grid(cfg, args.vary or [], args.sigmas, args.trials, given))

    cfg, prep, store = _sweep_setup(args, "sweep-grid", check=check)
    return run_grid_sweep(grids[-1], sweep_options(args), executor_options(args), cfg, prep, store)


def _vary_pair(text: str):
    try:
        return parse_vary(text)
    except GridError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_sweep_grid_parser(kinds) -> None:
    gr = kinds.add_parser("grid", help="convergence rate over any config fields (Fig. 5 heat maps), in-process or Ray",
                          description="Train --trials networks in every cell of the --vary grid; per cell the "
                          "convergence rate (final test accuracy >= --threshold), mean and best accuracy. Writes "
                          "table.csv, trials.csv and convergence_heatmap.png (one panel per sigma).")
    gr.add_argument("--vary", action="append", type=_vary_pair, metavar="KEY=V1,V2,...",
                    help="a dotted config field and its values, e.g. ep.beta=0.5,1 or network.init_scale=0.5,0.7; "
                    "ep.eta_eff=... sets eta = eta_eff*beta per cell; repeat for each key (each key once)")
    gr.add_argument("--sigma", dest="sigmas", type=float, action="append", metavar="SIGMA",
                    help="read noise, V; repeat for each value (the heat maps' panels; same as --vary noise.sigma=)")
    _sweep_options(gr, trials=8)
    add_run_options(gr, exclude=frozenset({"sigma", "replicas"}))
    gr.set_defaults(func=cmd_sweep_grid)


def _sweep_options(p: argparse.ArgumentParser, trials: int = 30, critical: bool = False) -> None:
    """critical: the sweep finds sigma_crit, where the mean accuracy falls to --threshold."""
    threshold = 0.5
    p.add_argument("--trials", action=StoreOnce, type=int, default=trials, help=f"networks per point, seeds seed..seed+trials-1 (default {trials})")
    what = "counts as converged, and that sigma_crit's mean accuracy reaches" if critical else "counts as converged"
    p.add_argument("--threshold", action=StoreOnce, type=float, default=threshold,
                   help=f"final test accuracy that {what} (default {threshold}; the paper used 0.9 on MNIST: put it "
                   "between chance and your plateau)")
    p.add_argument("--max-replicas", action=StoreOnce, type=int, help="networks trained at once (default: what memory allows)")
    p.add_argument("--lab", type=Path, metavar="LAB.yaml",
                   help="use this bench's settings (its lab config's run: section) so the result applies to it")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(resume_from=None)
    ex = p.add_argument_group("executor")
    ex.add_argument("--executor", action=StoreOnce, choices=EXECUTORS, default="inprocess",
                    help="inprocess: chunks one after the other here (default); ray: each chunk a Ray task")
    ex.add_argument("--address", action=StoreOnce, help="Ray: the address of a running cluster (default: start a local one)")
    ex.add_argument("--ray-cpus", action=StoreOnce, type=int, help="Ray: CPUs of the local cluster it starts (default: all)")
    ex.add_argument("--gpu-fraction", action=StoreOnce, type=float, default=0.25,
                    help="Ray with CUDA: share of a GPU one chunk reserves (default 0.25)")
    ex.add_argument("--max-retries", action=StoreOnce, type=int, default=3, help="Ray: retries of a chunk whose worker died (default 3)")


def _sigma_grid_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sigma", dest="sigmas", type=float, action="append", metavar="SIGMA",
                   help="read noise of one reading, V; repeat for each point (or use the grid below)")
    p.add_argument("--sigma-min", type=float, default=1e-4, help="smallest sigma of a log grid, V (default 1e-4)")
    p.add_argument("--sigma-max", type=float, default=3e-2, help="largest sigma of a log grid, V (default 3e-2)")
    p.add_argument("--points", type=int, default=9, help="points of the log grid (default 9)")


def add_sweep_parsers(sub) -> None:
    sw = sub.add_parser("sweep", help="train many networks at once: over sigma, N or any config fields (simulator)")
    kinds = sw.add_subparsers(dest="sweep_kind", required=True, metavar="KIND")
    tb = kinds.add_parser("table", help="Table I: per sigma, convergence rate and mean of the five best accuracies",
                          description="Train --trials networks at every --sigma (as replicas at once) and print, per "
                          "sigma, the share that converged and the mean of the five best final test accuracies.")
    tb.add_argument("--sigma", dest="sigmas", type=float, action="append", required=True, metavar="SIGMA",
                    help="read noise, V; repeat for each point")
    _sweep_options(tb)
    add_run_options(tb, exclude=frozenset({"sigma", "replicas"}))
    tb.set_defaults(func=cmd_sweep_table)

    ss = kinds.add_parser("sigma", help="accuracy against sigma (Fig. 3) and the critical sigma",
                          description="Train --trials networks at each sigma; report mean and best test accuracy, "
                          "sigma_crit (largest sigma whose mean accuracy reaches --threshold, interpolated) and sigma_opt.")
    _sigma_grid_options(ss)
    _sweep_options(ss, trials=8, critical=True)
    add_run_options(ss, exclude=frozenset({"sigma", "replicas"}))
    ss.set_defaults(func=cmd_sweep_sigma)

    sn = kinds.add_parser("samples", help="sigma_crit against N (Fig. 4): averaging N readings raises it by sqrt(N)",
                          description="Run the sigma sweep for every N in --samples-list at once and compare sigma_crit.")
    sn.add_argument("--samples-list", type=int_list, default=[1, 4], help="N values, e.g. 1,4,16 (default 1,4)")
    _sigma_grid_options(sn)
    _sweep_options(sn, trials=8, critical=True)
    add_run_options(sn, exclude=frozenset({"sigma", "samples", "replicas"}))
    sn.set_defaults(func=cmd_sweep_samples)

    add_sweep_grid_parser(kinds)

    rs = kinds.add_parser("resume", help="continue a stopped sweep from its last snapshot",
                          description="Continue a sweep that was interrupted or failed: the command it was started "
                          "with (sweep.json) runs again from sweep-checkpoint.pt; finished chunks are not retrained, the one in "
                          "training goes on from its last snapshot.")
    rs.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the sweep's folder")
    rs.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    rs.add_argument("--executor", action=StoreOnce, choices=EXECUTORS,
                    help="run the remaining chunks on this executor (default: the recorded one)")
    rs.add_argument("--address", action=StoreOnce, help="with --executor ray: the cluster's address")
    rs.set_defaults(func=cmd_sweep_resume)

