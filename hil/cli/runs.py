"""`hil runs` (the run folders and their status), `hil dashboard` (a live web page of them) and `hil export`."""

from __future__ import annotations

import argparse
from pathlib import Path

from hil.cli.options import UsageError
from hil.runview import run_folders
from hil.runview import summarize as summarize_run


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



def add_runs_parsers(sub) -> None:
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

