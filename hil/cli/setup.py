"""What the commands that train or read a network share: config, data and backend validated, then the folder."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from calibration.commands import resolve_adaptive_inputs
from drivers.lab import load_lab
from hil.cli.options import overrides_from, preset_tree
from hil.core.config import RunConfig, load_config, merge_trees, refuse_on_bench
from hil.runner import Prepared, prepare
from hil.store import RunStore


def lab_run_defaults(path: Path | None) -> dict:
    """The `run:` section of a lab config: settings that fit that bench, beneath --config and flags."""
    if path is None:
        return {}
    return load_lab(path).run


def setup_run(args: argparse.Namespace, default_name: str, check: Callable[[RunConfig], object] | None = None,
              connect: bool = True) -> tuple[RunConfig, Prepared, RunStore]:
    """Config, data and backend validated (a bench connected), then a fresh run folder: nothing is written for bad input.

    connect=False (sweeps): a --lab only supplies the bench's settings; training runs on the simulator.
    """
    over = overrides_from(args)
    lab = getattr(args, "lab", None)
    # The command's folder name and a --preset sit beneath a lab's run: section, config files and --name.
    cfg = load_config(args.config, over, base=merge_trees(merge_trees({"name": default_name}, preset_tree(args)),
                                                          lab_run_defaults(lab)))
    resolve_adaptive_inputs(cfg)  # a sweep's sigma_opt, a characterization's N_max
    if check:
        check(cfg)
    if lab is not None and connect:
        refuse_on_bench(cfg)  # before the device/replicas check: the refusal names every simulator-only setting

    def create_store(**status: object) -> RunStore:
        return RunStore.create(cfg.runs_dir, cfg.name, cfg, **status)

    # A bench run's folder is made once the bench is connected, before its long first programming (prepare_bench).
    prep = prepare(cfg, lab if connect else None, create_store=create_store)
    if prep.store is not None:
        return cfg, prep, prep.store
    try:
        return cfg, prep, create_store()
    except BaseException:
        prep.backend.close()
        raise
