"""Three `hil train` runs sharing the machine against one alone, in the same run.

    python benchmarks/shared_machine.py [--runs 3] [--epochs 20] [--pause PID] [--code DIR] [-- extra train flags]

Starts one default `hil train` (digits) alone, then --runs of them at once, each in a folder of its own, and
reads every epoch's samples/s from the run folders' metrics.jsonl. The lines are watched as they are written,
so each epoch gets its wall-clock interval: the summed throughput counts only the epochs during which all the
runs were training (a run that starts late or ends early is not credited with time it had the machine alone).

Prints the solo figure, the runs' summed samples/s against it (target >= 80%) and their slowest epoch against
it (target >= 15%: nobody starves). --code DIR runs another checkout's hil (e.g. one without the thread budget)
for comparison. --pause PID stops a background process (SIGSTOP) for the measurement and always resumes it
(SIGCONT), also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Watched:
    """One `hil train` process and its metrics lines, each with the wall time it appeared."""

    proc: subprocess.Popen
    runs_dir: Path
    started: float
    epochs: list[dict] = field(default_factory=list)  # metrics rows + "t_end"
    _seen: int = 0

    def poll(self) -> None:
        files = list(self.runs_dir.glob("*/metrics.jsonl"))
        if not files:
            return
        lines = files[0].read_text().splitlines()
        now = time.monotonic()
        for line in lines[self._seen:]:
            if line.endswith("}"):
                row = json.loads(line)
                row["t_end"] = now
                self.epochs.append(row)
                self._seen += 1


def start(code: Path, runs_dir: Path, epochs: int, extra: list[str]) -> Watched:
    env = dict(os.environ, PYTHONPATH=str(code))
    runs_dir.parent.mkdir(parents=True)
    cmd = [sys.executable, "-m", "hil.cli", "train", "--no-progress", "--epochs", str(epochs),
           "--runs-dir", str(runs_dir), *extra]
    proc = subprocess.Popen(cmd, cwd=runs_dir.parent, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(runs_dir.parent / "stderr.txt", "w"))  # noqa: SIM115 - the child owns it
    return Watched(proc, runs_dir, time.monotonic())


def watch(runs: list[Watched]) -> None:
    while any(r.proc.poll() is None for r in runs):
        for r in runs:
            r.poll()
        time.sleep(0.02)
    for r in runs:
        r.poll()
        if r.proc.returncode != 0:
            raise RuntimeError(f"hil train failed ({r.proc.returncode}): {(r.runs_dir.parent / 'stderr.txt').read_text()[-500:]}")


def measure(code: Path, n: int, epochs: int, extra: list[str], tmp: Path, label: str) -> list[Watched]:
    runs = [start(code, tmp / f"{label}-{i}" / "runs", epochs, extra) for i in range(n)]
    watch(runs)
    return runs


def overlapped(runs: list[Watched]) -> list[list[dict]]:
    """Per run, its epochs that lie wholly inside the time every run was training (first epoch start to last end)."""
    begin = max(r.epochs[0]["t_end"] - r.epochs[0]["seconds"] for r in runs)
    end = min(r.epochs[-1]["t_end"] for r in runs)
    return [[e for e in r.epochs if e["t_end"] - e["seconds"] >= begin and e["t_end"] <= end] for r in runs]


class Paused:
    """SIGSTOP a process for a measurement; SIGCONT it however the block ends (error, Ctrl-C, SIGTERM)."""

    def __init__(self, pid: int | None):
        self.pid = pid

    def _resume(self, *_):
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def __enter__(self):
        if self.pid is not None:
            self._before = signal.signal(signal.SIGTERM, lambda *a: (self._resume(), sys.exit(143)))
            os.kill(self.pid, signal.SIGSTOP)
        return self

    def __exit__(self, *exc):
        self._resume()
        if self.pid is not None:
            signal.signal(signal.SIGTERM, self._before)
        return False


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="runs started together (default 3)")
    p.add_argument("--epochs", type=int, default=20, help="epochs per run (default 20: long enough to overlap)")
    p.add_argument("--pause", type=int, metavar="PID", help="SIGSTOP this process while measuring (always resumed)")
    p.add_argument("--code", type=Path, default=ROOT, help="checkout whose hil runs (default: this one)")
    p.add_argument("extra", nargs="*", help="more `hil train` flags (after --)")
    a = p.parse_args()
    load = os.getloadavg()
    print(f"code: {a.code}; load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"{os.cpu_count()} cores; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset: hil sets PASSIVE)')}")
    with tempfile.TemporaryDirectory(prefix="hil-shared-") as d, Paused(a.pause):
        tmp = Path(d)
        solo_run = measure(a.code, 1, a.epochs, a.extra, tmp, "solo")[0]
        solo = statistics.median(e["samples_per_s"] for e in solo_run.epochs)
        shared = measure(a.code, a.runs, a.epochs, a.extra, tmp, "shared")
        during = os.getloadavg()[0]
    inside = overlapped(shared)
    per_run = [statistics.mean(e["samples_per_s"] for e in eps) if eps else float("nan") for eps in inside]
    total = sum(per_run)
    slowest = min(e["samples_per_s"] for r in shared for e in r.epochs)
    print(f"solo: {solo:,.0f} samples/s (median epoch of {len(solo_run.epochs)})")
    for i, (r, eps, s) in enumerate(zip(shared, inside, per_run)):
        print(f"run {i + 1}: {s:,.0f} samples/s over its {len(eps)} epochs while all {a.runs} ran; epochs "
              f"{min(e['samples_per_s'] for e in r.epochs):,.0f}-{max(e['samples_per_s'] for e in r.epochs):,.0f}")
    print(f"summed: {total:,.0f} samples/s = {100 * total / solo:.0f}% of solo (target >= 80%); slowest epoch "
          f"{slowest:,.0f} = {100 * slowest / solo:.0f}% of solo (target >= 15%); 1-min load after: {during:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
