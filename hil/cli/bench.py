"""`hil emulate` (an emulated lab on 127.0.0.1) and `hil safe` (a bench made safe after a crash)."""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path

from drivers.crossbar import make_bench_safe
from drivers.lab import load_lab
from hil.cli.options import UsageError
from sim_backend.emulator import EmulatedLab
from sim_backend.emulator.lab import RegistryInUse


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



def add_bench_parsers(sub) -> None:
    sf = sub.add_parser("safe", help="make a bench safe after a crash: ramp every output to 0, off, switches open",
                        description="Connect to every instrument of the lab config without resetting it, report what "
                        "is on, ramp sourced levels to 0, switch outputs off and open every switch.")
    sf.add_argument("--lab", type=Path, required=True, metavar="LAB.yaml", help="the bench to make safe")
    sf.add_argument("--registry", type=Path, help="emulator registry, for emulator:NAME resources (default: "
                    "$HIL_EMULATOR_REGISTRY, else .hil-emulator.json here)")
    sf.set_defaults(func=cmd_safe)

    em = sub.add_parser("emulate", help="start an emulated lab (TCP servers speaking the instruments' command sets)",
                        description="Start every instrument of a lab config as an emulator on 127.0.0.1 and write the "
                        "registry through which `emulator:NAME` resources resolve. Runs until Ctrl-C.")
    em.add_argument("--lab", type=Path, required=True, metavar="LAB.yaml", help="the lab config whose instruments "
                    "to emulate")
    em.add_argument("--registry", type=Path, default=None, help="where to write the live addresses (default: "
                    "$HIL_EMULATOR_REGISTRY, else .hil-emulator.json here)")
    em.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)")
    em.set_defaults(func=cmd_emulate)
