"""The `hil` command line: the only part of the project that reads argparse. Each command parses its flags
into typed settings (config objects, dataclasses) and calls the engine (hil.runner, hil.grid_run, calibration)."""

from hil.cli.app import build_parser, flag_table, main, subcommand
from hil.cli.options import UsageError, add_run_options

__all__ = ["UsageError", "add_run_options", "build_parser", "flag_table", "main", "subcommand"]
