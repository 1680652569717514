"""The `hil` command: its parser (one module per command family) and main, which turns errors into one line."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from calibration.commands import CommandError
from calibration.statistics import NoiseDataError
from hil import version
from hil.cli.bench import add_bench_parsers
from hil.cli.characterize import add_characterize_parsers
from hil.cli.options import COMPUTE_COMMANDS, Parser, UsageError
from hil.cli.runs import add_runs_parsers
from hil.cli.sweep import add_sweep_parsers
from hil.cli.train import add_train_parser
from hil.core.config import ConfigError, data_defaults, flag_fields
from hil.data import DatasetError
from hil.threads import shared_budget


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="hil", description="Train analog resistive crossbars in situ with Equilibrium Propagation.")
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train_parser(sub)
    add_sweep_parsers(sub)
    add_characterize_parsers(sub)
    add_bench_parsers(sub)
    add_runs_parsers(sub)
    return p


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
    """docs/flags.md's table of `hil train`'s flags, generated from its parser (tests/test_flags.py checks docs/flags.md holds
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # recorded by the sweeps, which `hil sweep resume` runs again
    args.parser = parser  # with which `hil sweep resume` reads the recorded command line
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
