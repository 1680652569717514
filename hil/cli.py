"""The `hil` command line."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from hil.config import FLAG_FIELDS, ConfigError, load_config
from hil.data import DatasetError


class UsageError(ValueError):
    """Bad command-line input; printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and negative numbers in any float form (-1e-5) taken as values."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

    def error(self, message: str):
        self.exit(2, f"hil: error: {message} (see '{self.prog} --help')\n")


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _set_pair(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. noise.sigma=1e-5), got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def add_run_options(p: argparse.ArgumentParser, exclude: frozenset[str] = frozenset()) -> None:
    """The RunConfig flags, shared by train and the sweeps. Each maps to one field (hil.config.FLAG_FIELDS)."""
    g = _Group(p.add_argument_group("run options (override the config file)"), exclude)
    g.add_argument("--config", type=Path, help="YAML file with a RunConfig")
    g.add_argument("--name", help="run name (folder suffix)")
    g.add_argument("--dataset", help="digits | mnist | kmnist | fashion-mnist")
    g.add_argument("--data-dir", type=Path, help="folder with the IDX files")
    g.add_argument("--download", action=argparse.BooleanOptionalAction, default=None, help="fetch through torchvision")
    g.add_argument("--classes", type=_int_list, help="keep only these labels, e.g. 0,1")
    g.add_argument("--image-size", type=int, help="average-pool images to this side length")
    g.add_argument("--train-limit", type=int, help="use the first n training samples")
    g.add_argument("--test-limit", type=int, help="use the first n test samples")
    g.add_argument("--hidden", type=_int_list, help="hidden layer sizes, e.g. 1024 or 256,128")
    g.add_argument("--gamma", type=float, help="input gain, V per unit input")
    g.add_argument("--bias", action=argparse.BooleanOptionalAction, default=None, help="bias current sources")
    g.add_argument("--bipolar", action=argparse.BooleanOptionalAction, default=None, help="half the diodes reversed")
    g.add_argument("--init-scale", type=float, help="c: initial g uniform on [0, c/sqrt(fan_in)] S")
    g.add_argument("--g-min", type=float, help="lowest conductance, S")
    g.add_argument("--g-max", type=float, help="highest conductance, S")
    g.add_argument("--sweeps", type=int, help="T: relaxation sweeps per phase")
    g.add_argument("--warm-start", action=argparse.BooleanOptionalAction, default=None, help="free phase from the last state")
    g.add_argument("--beta", type=float, help="nudge conductance, S")
    g.add_argument("--eta", type=float, help="learning rate")
    g.add_argument("--centered", action=argparse.BooleanOptionalAction, default=None, help="centered EP (+-beta)")
    g.add_argument("--sigma", type=float, help="read noise of one reading, V")
    g.add_argument("--samples", type=int, help="N: readings averaged per node and state")
    g.add_argument("--epochs", type=int, help="passes over the training set")
    g.add_argument("--batch-size", type=int, help="samples per update")
    g.add_argument("--seed", type=int, help="random seed")
    g.add_argument("--replicas", type=int, help="R networks trained at once (simulator)")
    g.add_argument("--device", help="cpu | cuda | cuda:N | auto")
    g.add_argument("--dtype", help="float32 | float64")
    g.add_argument("--runs-dir", type=Path, help="where run folders go (default ./runs)")
    g.add_argument("--set", dest="set_pairs", type=_set_pair, action="append", default=[], metavar="KEY=VALUE",
                   help="set any config field, e.g. --set noise.sigma=2e-5")


class _Group:
    """An argument group that skips the flags a command defines its own way (e.g. --sigma in sweeps)."""

    def __init__(self, group, exclude):
        self.group, self.exclude = group, exclude

    def add_argument(self, flag, *args, **kwargs):
        if flag.lstrip("-").replace("-", "_") not in self.exclude:
            self.group.add_argument(flag, *args, **kwargs)


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    over = {}
    for flag, dotted in FLAG_FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            over[dotted] = str(value) if isinstance(value, Path) else value
    for key, value in args.set_pairs:
        over[key] = value
    return over


def cmd_train(args: argparse.Namespace) -> int:
    from hil.runner import prepare, train_run
    from hil.store import RunStore

    over = overrides_from(args)
    if args.resume:
        changed = sorted(set(over) - {"train.epochs"})
        if changed or args.config:
            raise UsageError(f"--resume continues a run with its saved config; only --epochs may change (got {', '.join(changed) or '--config'})")
        store = RunStore.open(args.resume)
        cfg = store.config(over)
        prep = prepare(cfg)
        if "train.epochs" in over:
            store.save_config(cfg)
        train_run(prep, store, resume=True, progress=not args.no_progress)
        return 0
    cfg = load_config(args.config, over)
    prep = prepare(cfg)  # validates data and backend before any folder is made
    store = RunStore.create(cfg)
    train_run(prep, store, progress=not args.no_progress)
    return 0


def _sweep_setup(args: argparse.Namespace, default_name: str):
    """Config, data and a fresh run folder for a sweep."""
    from hil.runner import prepare
    from hil.store import RunStore

    over = overrides_from(args)
    over.setdefault("name", default_name)
    cfg = load_config(args.config, over)
    if args.trials < 1:
        raise UsageError(f"--trials: need at least 1 (got {args.trials})")
    if not 0 < args.threshold <= 1:
        raise UsageError(f"--threshold: an accuracy in (0, 1] (got {args.threshold})")
    prep = prepare(cfg)
    return cfg, prep, RunStore.create(cfg)


def cmd_sweep_table(args: argparse.Namespace) -> int:
    from hil.sweep import format_summary, run_trials, summarize, write_summary_csv, write_trials_csv

    if any(s < 0 or s != s for s in args.sigmas):
        raise UsageError(f"--sigma: read noise must be >= 0 V (got {args.sigmas})")
    cfg, prep, store = _sweep_setup(args, "sweep-table")
    points = [(s, cfg.noise.samples) for s in args.sigmas]
    print(f"Table I: {cfg.data.dataset}, {len(points)} sigma x {args.trials} trials, {cfg.train.epochs} epoch(s), "
          f"N={cfg.noise.samples}; folder {store.path}", flush=True)
    results = run_trials(cfg, prep.data, points, args.trials, max_replicas=args.max_replicas,
                         progress=not args.no_progress,
                         on_chunk=lambda done, total: print(f"  trained {done}/{total}", flush=True))
    rows = summarize(results, args.threshold)
    write_trials_csv(store.path / "trials.csv", results)
    write_summary_csv(store.path / "table.csv", rows)
    store.set_status("completed")
    print(format_summary(rows, args.threshold))
    print(f"saved {store.path / 'table.csv'} and trials.csv")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="hil", description="Train analog resistive crossbars in situ with Equilibrium Propagation.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = sub.add_parser("train", help="train a network (simulated by default)",
                       description="Train with EP; writes runs/<time>-<name>/ with config, metrics, checkpoint and plot.")
    t.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its last checkpoint")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_run_options(t)
    t.set_defaults(func=cmd_train)

    sw = sub.add_parser("sweep", help="train many networks at once over sigma or N (simulator)")
    kinds = sw.add_subparsers(dest="sweep_kind", required=True, metavar="KIND")
    tb = kinds.add_parser("table", help="Table I: per sigma, convergence rate and mean of the five best accuracies",
                          description="Train --trials networks at every --sigma (as replicas at once) and print, per "
                          "sigma, the share that converged and the mean of the five best final test accuracies.")
    tb.add_argument("--sigma", dest="sigmas", type=float, action="append", required=True, metavar="SIGMA",
                    help="read noise, V; repeat for each point")
    _sweep_options(tb)
    add_run_options(tb, exclude=frozenset({"sigma", "replicas"}))
    tb.set_defaults(func=cmd_sweep_table)
    return p


def _sweep_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=int, default=30, help="networks per point (seeds seed..seed+trials-1)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="final test accuracy that counts as converged (default 0.5)")
    p.add_argument("--max-replicas", type=int, help="networks trained at once (default: what memory allows)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DatasetError, UsageError) as err:
        print(f"hil: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hil: interrupted; everything recorded so far is kept", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError) as err:
        print(f"hil: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
