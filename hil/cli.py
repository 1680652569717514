"""The `hil` command line."""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

# hil.cli is the top layer: it may import every other part of the project.
from calibration import commands as calibration_commands
from calibration.commands import CommandError
from calibration.device_commands import cmd_characterize_devices, sample_devices
from calibration.statistics import NoiseDataError
from drivers.crossbar import make_bench_safe
from drivers.lab import load_lab
from hil import version
from hil.core.config import (
    FLAG_FIELDS,
    ConfigError,
    FlagField,
    RunConfig,
    build_config,
    data_defaults,
    flag_fields,
    load_config,
    merge_trees,
    refuse_on_bench,
)
from hil.data import DatasetError
from hil.grid import GridError, parse_vary
from hil.grid_run import grid_from_args, run_grid_sweep
from hil.presets import load_preset, preset_names
from hil.runner import Prepared, describe_network, prepare, train_run
from hil.runview import run_folders
from hil.runview import summarize as summarize_run
from hil.store import RunStore, atomic_write_text
from hil.sweep import (
    CHECKPOINT,
    SWEEP_COMMAND,
    finish_sweep,
    format_summary,
    run_trials,
    summarize,
    sweep_recording,
    write_summary_csv,
    write_trials_csv,
)
from hil.threads import shared_budget
from sim_backend.emulator import EmulatedLab
from sim_backend.emulator.lab import RegistryInUse


class UsageError(ValueError):
    """Bad command-line input; printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and negative numbers in any float form (-1e-5) taken as values."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

    def error(self, message: str) -> Any:  # NoReturn in argparse; exit() raises
        self.exit(2, f"hil: error: {message} (see '{self.prog} --help')\n")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return values


def _layer_list(text: str) -> list[int]:
    """Hidden layer sizes; `none` (not an empty string, which is usually a shell mistake) for no hidden layer."""
    return [] if text.strip().lower() == "none" else _int_list(text)


def _set_pair(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. noise.sigma=1e-5), got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"{key.strip()}: the value {value!r} is not readable YAML") from None


def _samples_arg(text: str) -> int | str:
    """N (a whole number; the config says which are allowed) or auto."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number N or auto, got {text!r}") from None


#: Flags whose text needs more than int(): list[int] fields read comma-separated lists.
_LIST_PARSERS: dict[str, Callable[[str], list[int]]] = {"hidden": _layer_list}
#: Flags of a union type argparse cannot read from the annotation alone.
_UNION_PARSERS: dict[str, Callable[[str], Any]] = {"samples": _samples_arg}


def _flag_kwargs(field: FlagField) -> dict[str, Any]:
    """argparse settings for a config field, from its type: bool -> --x/--no-x, Literal -> choices, lists of ints
    comma-separated; help from its description. Every value defaults to None: unset flags leave the config alone."""
    kwargs: dict[str, Any] = {"dest": field.dest, "default": None, "help": field.help.replace("%", "%%")}
    if field.metavar:
        kwargs["metavar"] = field.metavar
    ann = field.info.annotation
    types = [t for t in (ann, *getattr(ann, "__args__", ())) if t is not type(None)]
    choices = field.choices
    if field.dest in _UNION_PARSERS:
        kwargs["type"] = _UNION_PARSERS[field.dest]
    elif bool in types:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif choices is not None:
        kwargs.update(choices=choices, type=type(choices[0]))
    elif any(getattr(t, "__origin__", None) is list for t in types):
        kwargs["type"] = _LIST_PARSERS.get(field.dest, _int_list)
    else:
        kwargs["type"] = next(t for t in (int, float, Path, str) if t in types)
    return kwargs


def add_run_options(p: argparse.ArgumentParser, exclude: frozenset[str] = frozenset()) -> None:
    """The RunConfig flags, shared by train and the sweeps: one per config field marked with `flag(...)` in
    hil.core.config, which holds its name, type and help (README's table is generated from them too)."""
    g = _Group(p.add_argument_group("run options (override the config file)"), exclude)
    g.add_argument("--config", type=Path, action="append", metavar="FILE",
                   help="YAML file with a RunConfig (nested as the config fields; unknown keys are errors); repeat to "
                   "merge (later wins)")
    add_preset_options(g)
    for field in flag_fields():
        g.add_argument(field.option, **_flag_kwargs(field))
    g.add_argument("--set", dest="set_pairs", type=_set_pair, action="append", default=[], metavar="KEY=VALUE",
                   help="set any config field, e.g. --set noise.sigma=2e-5")


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return n


def add_preset_options(g) -> None:
    """--preset (a named config beneath --config files and flags) and --threads (this process's CPU threads)."""
    g.add_argument("--preset", metavar="NAME", help=f"start from a named config ({', '.join(preset_names())}); "
                   "--config files and flags override it")
    g.add_argument("--threads", type=_positive_int, metavar="N", help="CPU threads for torch (default: the cores "
                   "shared fairly among the hil processes running here; OMP_NUM_THREADS also sets it); with "
                   "`sweep grid --executor ray`: the threads and CPUs of each chunk's task (default 1)")


def preset_tree(args: argparse.Namespace) -> dict[str, Any]:
    """The --preset's config tree ({} without one)."""
    name = getattr(args, "preset", None)
    return load_preset(name) if name else {}


#: Commands that compute (and so take a share of the cores, hil.threads); the others mostly wait.
COMPUTE_COMMANDS = frozenset({"train", "sweep", "characterize"})


class _Group:
    """An argument group that skips the flags a command defines its own way (e.g. --sigma in sweeps)."""

    def __init__(self, group: argparse._ArgumentGroup, exclude: frozenset[str]) -> None:
        self.group, self.exclude = group, exclude

    def add_argument(self, flag: str, *args: Any, **kwargs: Any) -> None:
        if flag.lstrip("-").replace("-", "_") not in self.exclude:
            if "action" not in kwargs:
                kwargs["action"] = _StoreOnce
            elif kwargs["action"] is argparse.BooleanOptionalAction:
                kwargs["action"] = _BoolOnce
            self.group.add_argument(flag, *args, **kwargs)


def _refuse_repeat(action: argparse.Action, parser, namespace, option_string) -> None:
    """A setting given twice is an error: silently keeping the last value hides a typo in a long command."""
    seen = namespace.__dict__.setdefault("_given_once", {})
    if action.dest in seen:
        both = "" if seen[action.dest] == option_string else f" (as {seen[action.dest]} and {option_string})"
        parser.error(f"argument {option_string}: given twice{both}; give each setting once")
    seen[action.dest] = option_string


class _StoreOnce(argparse._StoreAction):
    def __call__(self, parser, namespace, values, option_string=None):
        _refuse_repeat(self, parser, namespace, option_string)
        super().__call__(parser, namespace, values, option_string)


class _BoolOnce(argparse.BooleanOptionalAction):
    def __call__(self, parser, namespace, values, option_string=None):
        _refuse_repeat(self, parser, namespace, option_string)
        super().__call__(parser, namespace, values, option_string)


#: Flags that only change how a network learns: `hil characterize` holds one state and reads it, so it has none of them.
TRAINING_ONLY = frozenset({"train_limit", "warm_start", "beta", "eta", "eta_layer_ratio", "centered", "samples",
                           "sigma_target", "allan_from", "target_from_sweep",
                           "update_mode", "epochs", "batch_size", "replicas", "checkpoint_every_steps",
                           "checkpoint_every_s"})


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, flags and --set pairs, as dotted keys. A key given twice (two
    --set, or --set and its flag) is an error, as a repeated flag is: which one wins would be a guess."""
    over, given = {}, {}
    for flag, dotted in FLAG_FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            over[dotted] = str(value) if isinstance(value, Path) else value
            given[dotted] = "--" + flag.replace("_", "-")
    for key, value in args.set_pairs:
        if key in given:
            also = "given twice" if given[key].startswith("--set") else f"also given as {given[key]}"
            raise UsageError(f"--set {key}: {also}; give each setting once")
        over[key] = value
        given[key] = f"--set {key}"
    return over


def lab_run_defaults(path: Path | None) -> dict:
    """The `run:` section of a lab config: settings that fit that bench, beneath --config and flags."""
    if path is None:
        return {}
    return load_lab(path).run


def cmd_train(args: argparse.Namespace) -> int:
    over = overrides_from(args)
    if args.trust_journal and not args.resume:
        raise UsageError("--trust-journal: only with --resume RUN_DIR (it chooses which devices a resume reads back)")
    if args.resume:
        changed = sorted(set(over) - {"train.epochs"})
        if changed or args.config or args.preset:
            raise UsageError(f"--resume continues a run with its saved config; only --epochs may change (got {', '.join(changed) or ('--config' if args.config else '--preset')})")
        store = RunStore.open(args.resume)
        pid = store.running_elsewhere()
        if pid is not None:
            raise UsageError(f"--resume: the run in {args.resume} is still running (pid {pid}); stop it first "
                             "(two processes would write one folder)")
        if not store.checkpoint_path.is_file():
            lab_shown = store.status().get("lab")
            raise UsageError(f"--resume: {args.resume} has no checkpoint: the run stopped before training started "
                             "(while connecting or programming the starting conductances); "
                             + (f"run hil safe --lab {lab_shown}, then " if lab_shown else "")
                             + "start it again")
        cfg = store.config(over)
        recorded = store.status().get("lab")
        if args.lab is not None and (recorded is None or Path(args.lab).resolve() != Path(recorded)):
            raise UsageError(f"--lab: the run in {args.resume} was trained "
                             f"{'on the bench ' + recorded if recorded else 'on the simulator'}; it resumes there "
                             f"(drop --lab {args.lab})")
        lab = Path(recorded) if recorded else None  # a bench run resumes on its bench
        if recorded:
            print(f"resuming on the bench it was trained on: {recorded}")
        prep = prepare(cfg, lab, initialize=False)
        if "train.epochs" in over:
            store.save_config(cfg)
        train_run(prep, store, resume=True, trust_journal=args.trust_journal, progress=not args.no_progress)
        return 0
    _, prep, store = _setup(args, "run")
    train_run(prep, store, progress=not args.no_progress)
    return 0


def _setup(args: argparse.Namespace, default_name: str, check: Callable[[RunConfig], object] | None = None,
           connect: bool = True) -> tuple[RunConfig, Prepared, RunStore]:
    """Config, data and backend validated (a bench connected), then a fresh run folder: nothing is written for bad input.

    connect=False (sweeps): a --lab only supplies the bench's settings; training runs on the simulator.
    """
    over = overrides_from(args)
    lab = getattr(args, "lab", None)
    # The command's folder name and a --preset sit beneath a lab's run: section, config files and --name.
    cfg = load_config(args.config, over, base=merge_trees(merge_trees({"name": default_name}, preset_tree(args)),
                                                          lab_run_defaults(lab)))
    calibration_commands.resolve_adaptive_inputs(cfg)  # a sweep's sigma_opt, a characterization's N_max
    if check:
        check(cfg)
    if lab is not None and connect:
        refuse_on_bench(cfg)  # before the device/replicas check: the refusal names every simulator-only setting
    # A bench run's folder is made once the bench is connected, before its long first programming (prepare_bench).
    prep = prepare(cfg, lab if connect else None, create_store=lambda **status: RunStore.create(cfg, **status))
    if prep.store is not None:
        return cfg, prep, prep.store
    try:
        return cfg, prep, RunStore.create(cfg)
    except BaseException:
        prep.backend.close()
        raise


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
    given = check

    def checked(cfg: RunConfig) -> object:
        if cfg.noise.adaptive:  # per-replica adaptive N in sweeps is not built (docs/calibration.md)
            raise UsageError("--samples auto: only hil train adapts N; a sweep reads every network a fixed N times")
        return given(cfg) if given else None
    if hasattr(args, "sigma_min"):
        calibration_commands.sigma_grid(args)  # validate the grid before anything is written
    if args.resume_from is not None:
        store = RunStore.open(args.resume_from)
        cfg = store.config()  # the resolved config it started with, not today's config files
        checked(cfg)
        prep = prepare(cfg)
        store.mark_running()
    else:
        cfg, prep, store = _setup(args, default_name, check=checked, connect=False)
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
        raise UsageError(f"RUN_DIR: {folder} has no {CHECKPOINT} (no epoch finished): start the sweep again")
    again = build_parser().parse_args(argv)
    again.argv, again.resume_from = argv, folder
    again.no_progress = again.no_progress or args.no_progress
    if args.executor is not None:  # a grid sweep's chunks may finish on another executor: same chunks, same results
        if not hasattr(again, "executor"):
            raise UsageError(f"--executor: only a `hil sweep grid` folder has executors ({folder} is `hil {argv[0]} {argv[1]}`)")
        again.executor, again.address = args.executor, args.address
    elif args.address is not None:
        raise UsageError("--address: with --executor ray")
    print(f"resuming: hil {' '.join(argv)}", flush=True)
    with shared_budget(getattr(again, "threads", None)):  # the recorded --threads, if the sweep had one
        result: int = again.func(again)
    return result


def cmd_sweep_table(args: argparse.Namespace) -> int:
    if any(s < 0 or s != s for s in args.sigmas):
        raise UsageError(f"--sigma: read noise must be >= 0 V (got {args.sigmas})")
    cfg, prep, store = _sweep_setup(args, "sweep-table")
    points = [(s, cfg.noise.initial_samples) for s in args.sigmas]
    print(f"Table I: {cfg.data.dataset}, {len(points)} sigma x {args.trials} trials, {cfg.train.epochs} epoch(s), "
          f"N={cfg.noise.samples}; folder {store.path}", flush=True)
    with store.recording():
        results = run_trials(cfg, prep.data, points, args.trials, max_replicas=args.max_replicas,
                             progress=not args.no_progress, **sweep_recording(args, cfg, store))
        rows = summarize(results, args.threshold)
        write_trials_csv(store.path / "trials.csv", results)
        write_summary_csv(store.path / "table.csv", rows)
    finish_sweep(store)
    print(format_summary(rows, args.threshold))
    print(f"saved {store.path / 'table.csv'} and trials.csv")
    return 0


def cmd_characterize(args: argparse.Namespace) -> int:
    if args.devices:
        return _characterize_devices(args)

    def check(cfg: RunConfig) -> None:
        n = cfg.noise
        if args.readings < 2:
            raise UsageError(f"--readings: need at least 2 readings per node for a spread (got {args.readings})")
        if args.show < 0:
            raise UsageError(f"--show: a number of nodes >= 0 (got {args.show})")
        if args.lab is None and n.sigma == 0 and n.flicker_floor_V == 0 and n.drift_V_per_s == 0:
            raise UsageError("the simulated bench has no noise to characterize: give --sigma (white, V at 1 PLC), "
                             "--flicker or --drift")

    cfg, prep, store = _setup(args, "characterize", check)
    try:
        with store.recording():
            return calibration_commands.cmd_characterize(args, cfg, prep, store)
    finally:
        prep.backend.close()


def _characterize_devices(args: argparse.Namespace) -> int:
    if args.lab is None:
        raise UsageError("--devices: characterizes a bench's devices through its programming board; give --lab "
                         "LAB.yaml (for an emulated bench, start `hil emulate --lab LAB.yaml` first)")
    for flag in ("pulses", "cycles", "repeats"):
        if getattr(args, flag) < (2 if flag == "repeats" else 1):
            raise UsageError(f"--{flag}: too small (got {getattr(args, flag)})")
    lab = load_lab(args.lab)
    sample_devices(lab, args.sample, args.seed or 0)  # a --sample the bench cannot give is refused before any folder
    cfg = build_config({}, {"name": args.name or "devices", "runs_dir": str(args.runs_dir) if args.runs_dir else None})
    store = RunStore.create(cfg)
    with store.recording():
        return cmd_characterize_devices(args, lab, store)


def cmd_calibrate(args: argparse.Namespace) -> int:
    if args.parallel_channels < 1:
        raise UsageError(f"--parallel-channels: at least 1 node read at a time (got {args.parallel_channels})")
    cfg = build_config({}, {"name": args.name or "calibrate", "runs_dir": str(args.runs_dir) if args.runs_dir else None})
    return calibration_commands.cmd_calibrate(args, lambda: RunStore.create(cfg))


def cmd_sweep_sigma(args: argparse.Namespace) -> int:
    cfg, prep, store = _sweep_setup(args, "sweep-sigma")
    return calibration_commands.cmd_sweep_sigma(args, cfg, prep, store)


def cmd_sweep_samples(args: argparse.Namespace) -> int:
    cfg, prep, store = _sweep_setup(args, "sweep-samples")
    return calibration_commands.cmd_sweep_samples(args, cfg, prep, store)


def cmd_emulate(args: argparse.Namespace) -> int:
    lab = load_lab(args.lab)
    emu = EmulatedLab(lab).start()
    try:
        registry = emu.write_registry(args.registry)
    except RegistryInUse as err:
        emu.stop()
        raise UsageError(f"--registry: {err}") from None
    except BaseException:
        emu.stop()
        raise
    print(f"emulated lab {lab.name!r}: {len(emu.resources)} instruments on 127.0.0.1")
    width = max(len(n) for n in emu.resources)
    for name, res in emu.resources.items():
        print(f"  {name:<{width}}  {lab.instruments[name].kind:<15} {res}")
    print(f"registry {registry} (resources emulator:NAME resolve through it); Ctrl-C stops")
    print("the emulated chip keeps its conductances between runs, as a real one does; restart hil emulate for a "
          "fresh chip", flush=True)

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a background job may have inherited it ignored
        signal.signal(sig, stop)
    try:
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
        EmulatedLab.remove_registry(registry)
        print(f"stopped; outputs left on: {emu.outputs() or 'none'}", flush=True)
    return 0


def cmd_safe(args: argparse.Namespace) -> int:
    lab = load_lab(args.lab)
    found, errors = make_bench_safe(lab, args.registry)
    for line in found:
        print(f"found on: {line}")
    if errors:
        raise RuntimeError(f"{len(errors)} instrument(s) could not be made safe: " + "; ".join(errors))
    print(f"bench {lab.name!r} safe: {len(lab.instruments)} instruments at 0, outputs off, switches open"
          + ("" if found else " (nothing was on)"))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    root = args.runs_dir
    if not root.is_dir():
        raise UsageError(f"--runs-dir: no folder {root} (runs are made in ./runs unless --runs-dir says otherwise)")
    folders = run_folders(root)
    if not folders:
        print(f"no run folders in {root}")
        return 0
    width = max(len(p.name) for p in folders)
    print(f"{'run':<{width}}  {'status':<11}  {'epochs':>6}  {'test acc':>8}  where")
    for path in folders:
        run = summarize_run(path)
        if run.status == "unreadable":
            print(f"{path.name:<{width}}  {'unreadable':<11}")
            continue
        shown = f"{100 * run.test_acc:7.1f}%" if run.test_acc is not None else f"{'-':>8}"
        print(f"{path.name:<{width}}  {run.status:<11}  {run.epochs:>6}  {shown}  {'; '.join(run.notes)}".rstrip())
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    if args.refresh_s <= 0:
        raise UsageError(f"--refresh-s: {args.refresh_s:g} s; give a positive number of seconds")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port: {args.port} is no TCP port (0 to 65535; 0: any free one)")
    try:
        # optional: Dash (the [dashboard] extra), and about a second to import; only this command needs it
        from hil.dashboard import serve
    except ImportError as err:
        raise UsageError(f"hil dashboard needs the dashboard extra ({err.name or err} does not import): "
                         "pip install 'crossbar-hil[dashboard]'") from None
    try:
        serve(args.runs_dir, args.host, args.port, args.refresh_s)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the way to stop it, not an interruption of anything
        print("dashboard stopped")
    except OSError as err:  # the port taken, an address not of this machine
        raise UsageError(f"--host/--port: cannot listen on {args.host}:{args.port} ({err.strerror or err})") from None
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if not args.run_dir.is_dir():
        raise UsageError(f"RUN_DIR: no folder {args.run_dir}")
    try:
        # optional: xarray and a netCDF writer (the [export] extra), and pandas with them; only this command needs them
        from hil.export import export_run
    except ImportError as err:
        raise UsageError(f"hil export needs the export extra ({err.name or err} does not import): "
                         "pip install 'crossbar-hil[export]'") from None
    for path in export_run(args.run_dir, args.format):
        print(f"wrote {path}")
    return 0


def _sigma_grid_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sigma", dest="sigmas", type=float, action="append", metavar="SIGMA",
                   help="read noise of one reading, V; repeat for each point (or use the grid below)")
    p.add_argument("--sigma-min", type=float, default=1e-4, help="smallest sigma of a log grid, V (default 1e-4)")
    p.add_argument("--sigma-max", type=float, default=3e-2, help="largest sigma of a log grid, V (default 3e-2)")
    p.add_argument("--points", type=int, default=9, help="points of the log grid (default 9)")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="hil", description="Train analog resistive crossbars in situ with Equilibrium Propagation.")
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = sub.add_parser("train", help="train a network (simulated by default)",
                       description="Train with EP; writes runs/<time>-<name>/ with config, metrics, checkpoint and plot.")
    t.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its last journaled step (only --epochs may "
                   "change)")
    t.add_argument("--trust-journal", action="store_true", help="bench resume: read back only the devices the "
                   "unfinished step touched (default: every device) before reprogramming those off")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    t.add_argument("--lab", type=Path, metavar="LAB.yaml", help="train on the bench this lab config describes")
    add_run_options(t)
    t.set_defaults(func=cmd_train)

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
    sn.add_argument("--samples-list", type=_int_list, default=[1, 4], help="N values, e.g. 1,4,16 (default 1,4)")
    _sigma_grid_options(sn)
    _sweep_options(sn, trials=8, critical=True)
    add_run_options(sn, exclude=frozenset({"sigma", "samples", "replicas"}))
    sn.set_defaults(func=cmd_sweep_samples)

    _add_sweep_grid_parser(kinds)

    rs = kinds.add_parser("resume", help="continue a stopped sweep from its last snapshot",
                          description="Continue a sweep that was interrupted or failed: the command it was started "
                          "with (sweep.json) runs again from sweep-checkpoint.pt; finished chunks are not retrained.")
    rs.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the sweep's folder")
    rs.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    rs.add_argument("--executor", action=_StoreOnce, choices=["inprocess", "ray"],
                    help="grid sweeps: run the remaining chunks on this executor (default: the recorded one)")
    rs.add_argument("--address", action=_StoreOnce, help="grid sweeps with --executor ray: the cluster's address")
    rs.set_defaults(func=cmd_sweep_resume)

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

    sf = sub.add_parser("safe", help="make a bench safe after a crash: ramp every output to 0, off, switches open",
                        description="Connect to every instrument of the lab config without resetting it, report what "
                        "is on, ramp sourced levels to 0, switch outputs off and open every switch.")
    sf.add_argument("--lab", type=Path, required=True, metavar="LAB.yaml", help="the bench to make safe")
    sf.add_argument("--registry", type=Path, help="emulator registry, for emulator:NAME resources (default: "
                    "$HIL_EMULATOR_REGISTRY, else .hil-emulator.json here)")
    sf.set_defaults(func=cmd_safe)

    ru = sub.add_parser("runs", help="list run folders with their status (a running run whose process died: crashed)",
                        description="One line per run folder: status, epochs recorded, last test accuracy; a run "
                        "recorded as running whose process is gone from this host is shown as crashed.")
    ru.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where run folders are (default ./runs)")
    ru.set_defaults(func=cmd_runs)

    da = sub.add_parser("dashboard", help="a local web page of the runs, sweeps and characterizations, live (read only)",
                        description="Serve a page listing the run folders of --runs-dir and, per folder, its metrics, "
                        "conductance snapshots, bench accounting and command log, sweep tables or Allan plot, "
                        "refreshed while it runs. It only reads the folders (no instrument, no lock a run needs) and "
                        "serves no file outside them. Needs the [dashboard] extra.")
    da.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where run folders are (default ./runs)")
    da.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                    "only; 0.0.0.0 shows the runs to anyone who can reach it)")
    da.add_argument("--port", type=int, default=8050, help="TCP port (default 8050; 0: any free port, printed)")
    da.add_argument("--refresh-s", type=float, default=2.0, help="how often an open page reads the folder again, s "
                    "(default 2)")
    da.set_defaults(func=cmd_dashboard)

    ex = sub.add_parser("export", help="a run, characterization or sweep folder as netCDF (xarray, QCoDeS) or CSV",
                        description="Write the metrics per epoch, the last conductance snapshot, characterize's "
                        "readings statistics and a sweep's tables as one xarray Dataset with units and attributes "
                        "(config, lab, project version, dates): RUN_DIR/<name>.nc, or CSV files. Needs the [export] extra.")
    ex.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run folder")
    ex.add_argument("--format", choices=("netcdf", "csv"), default="netcdf",
                    help="netcdf (default): RUN_DIR/<name>.nc; csv: RUN_DIR/<name>-<dims>.csv and <name>-attrs.json")
    ex.set_defaults(func=cmd_export)

    em = sub.add_parser("emulate", help="start an emulated lab (TCP servers speaking the instruments' command sets)",
                        description="Start every instrument of a lab config as an emulator on 127.0.0.1 and write the "
                        "registry through which `emulator:NAME` resources resolve. Runs until Ctrl-C.")
    em.add_argument("--lab", type=Path, required=True, metavar="LAB.yaml", help="the lab config whose instruments "
                    "to emulate")
    em.add_argument("--registry", type=Path, default=Path(".hil-emulator.json"), help="where to write the live "
                    "addresses (default: .hil-emulator.json here)")
    em.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)")
    em.set_defaults(func=cmd_emulate)
    return p


def _sweep_options(p: argparse.ArgumentParser, trials: int = 30, critical: bool = False) -> None:
    """critical: the sweep finds sigma_crit, where the mean accuracy falls to --threshold."""
    threshold = 0.5
    p.add_argument("--trials", action=_StoreOnce, type=int, default=trials, help=f"networks per point, seeds seed..seed+trials-1 (default {trials})")
    what = "counts as converged, and that sigma_crit's mean accuracy reaches" if critical else "counts as converged"
    p.add_argument("--threshold", action=_StoreOnce, type=float, default=threshold,
                   help=f"final test accuracy that {what} (default {threshold}; the paper used 0.9 on MNIST: put it "
                   "between chance and your plateau)")
    p.add_argument("--max-replicas", action=_StoreOnce, type=int, help="networks trained at once (default: what memory allows)")
    p.add_argument("--lab", type=Path, metavar="LAB.yaml",
                   help="use this bench's settings (its lab config's run: section) so the result applies to it")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(resume_from=None)


def subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """One command's parser, e.g. subcommand(build_parser(), "train")."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise KeyError(name)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _shown_default(value: Any) -> str:
    if value is None or value == []:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return "`" + ",".join(str(v) for v in value) + "`"
    if isinstance(value, float):
        return f"{value:g}"
    return f"`{value}`" if isinstance(value, (str, Path)) else str(value)


def flag_table() -> str:
    """README's table of `hil train`'s flags, generated from its parser (tests/test_flags.py checks the README holds
    it; print it with `python -c "from hil.cli import flag_table; print(flag_table())"`)."""
    fields = {f.dest: f for f in flag_fields()}
    sized = set(data_defaults({}))  # settings sized to the data where unset
    rows = ["| flag | config field | default | meaning |", "|---|---|---|---|"]
    for action in subcommand(build_parser(), "train")._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        field = fields.get(action.dest)
        if isinstance(action, argparse.BooleanOptionalAction):
            flag = ", ".join(f"`{o}`" for o in action.option_strings)
        else:
            metavar = f" {action.metavar}" if isinstance(action.metavar, str) else ""
            flag = f"`{action.option_strings[0]}{metavar}`"
        if field is None:
            where, default = "", _shown_default(action.default or None) if action.dest != "set_pairs" else ""
        else:
            where = f"`{field.dotted}`"
            default = "sized to the data*" if field.dotted in sized else _shown_default(field.info.default)
        rows.append(f"| {_cell(flag)} | {where} | {_cell(default)} | {_cell((action.help or '').replace('%%', '%'))} |")
    return "\n".join(rows) + "\n"


# ---- hil sweep grid (issue 14): any config fields, in-process or on a Ray cluster ------------------------
def cmd_sweep_grid(args: argparse.Namespace) -> int:
    args.scalar_overrides = overrides_from(args)  # a --vary key may not also be set as a flag (no silent override)
    cfg, prep, store = _sweep_setup(args, "sweep-grid", check=lambda cfg: grid_from_args(args, cfg))
    return run_grid_sweep(args, cfg, prep, store)


def _vary_pair(text: str):
    try:
        return parse_vary(text)
    except GridError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_sweep_grid_parser(kinds) -> None:
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
    ex = gr.add_argument_group("executor")
    ex.add_argument("--executor", action=_StoreOnce, choices=["inprocess", "ray"], default="inprocess",
                    help="inprocess: chunks one after the other here (default); ray: each chunk a Ray task")
    ex.add_argument("--address", action=_StoreOnce, help="Ray: the address of a running cluster (default: start a local one)")
    ex.add_argument("--ray-cpus", action=_StoreOnce, type=int, help="Ray: CPUs of the local cluster it starts (default: all)")
    ex.add_argument("--gpu-fraction", action=_StoreOnce, type=float, default=0.25,
                    help="Ray with CUDA: share of a GPU one chunk reserves (default 0.25)")
    ex.add_argument("--max-retries", action=_StoreOnce, type=int, default=3, help="Ray: retries of a chunk whose worker died (default 3)")
    add_run_options(gr, exclude=frozenset({"sigma", "replicas"}))
    gr.set_defaults(func=cmd_sweep_grid)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # recorded by the sweeps, which `hil sweep resume` runs again
    if hasattr(args, "no_progress") and not sys.stderr.isatty():
        args.no_progress = True  # a progress bar is for a terminal; in a redirected log it is noise
    try:
        with _sigterm_as_interrupt(), _thread_budget(args):
            code: int = args.func(args)
            return code
    except (ConfigError, DatasetError, UsageError, CommandError, NoiseDataError) as err:
        print(f"hil: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hil: interrupted; everything recorded so far is kept", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError) as err:  # InstrumentError, LimitError and StoreError among them
        print(f"hil: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a file or folder the command needed: name it, in one line
        where = f" {err.filename}" if err.filename else ""
        print(f"hil: error: {err.strerror or err.__class__.__name__}:{where}", file=sys.stderr)
        return 1


@contextmanager
def _thread_budget(args: argparse.Namespace) -> Iterator[None]:
    """A computing command takes its share of the cores among the hil processes on this machine (hil.threads)."""
    if args.command not in COMPUTE_COMMANDS:
        yield
        return
    with shared_budget(getattr(args, "threads", None)):
        yield


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """`kill` (SIGTERM) stops a command the way Ctrl-C does: a bench shut down safely, the run marked interrupted."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


if __name__ == "__main__":
    sys.exit(main())
