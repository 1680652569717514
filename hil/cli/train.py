"""`hil train`: a new run, or one resumed from its folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from hil.cli.options import UsageError, add_run_options, overrides_from
from hil.cli.setup import setup_run
from hil.runner import prepare, train_run
from hil.store import RunStore


def cmd_train(args: argparse.Namespace) -> int:
    over = overrides_from(args)
    if args.trust_journal and not args.resume:
        raise UsageError("--trust-journal: only with --resume RUN_DIR (it chooses which devices a resume reads back)")
    if args.resume:
        return _resume(args, over)
    _, prep, store = setup_run(args, "run")
    train_run(prep, store, progress=not args.no_progress)
    return 0


def _resume(args: argparse.Namespace, over: dict) -> int:
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


def add_train_parser(sub) -> None:
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
