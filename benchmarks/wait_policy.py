"""`hil train` started right after a burn of every core has ended: hil's own wait policy against forced ACTIVE.

    python benchmarks/wait_policy.py [--rounds 2] [--burn-s 90] [-- extra train flags]

Users and scripts run jobs one after another. A job that has just ended leaves the 1-minute load average high
for a minute, so a policy read from it made the next run sleep its idle OpenMP threads (PASSIVE) on a machine
that was in fact free: -49% samples/s (issue 22). hil now counts the processes runnable at its start instead.

Each round burns every core for --burn-s seconds (one busy process per core), stops the burn, and at once starts
`hil train` twice in turn (the order alternating between rounds): with hil's own policy, and with
OMP_WAIT_POLICY=ACTIVE forced, each after a burn of its own. Prints each run's samples/s (the mean over its
epochs) and the 1-minute load average at its start, then the ratio of the medians: the target is >= 90%.
Default training: the paper's network on 8,000 Fashion-MNIST images, one epoch (the digits where Debian's
Fashion-MNIST files are missing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")


def burn(seconds: float) -> float:
    """Every core busy for `seconds`; returns the 1-minute load average when the burn ends."""
    cores = len(os.sched_getaffinity(0))
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        time.sleep(seconds)
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
    return os.getloadavg()[0]


def train(args: list[str], forced_active: bool, runs: Path) -> tuple[float, str]:
    """One `hil train`; returns its mean samples/s and the wait policy it ran with."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    if forced_active:
        env["OMP_WAIT_POLICY"] = "ACTIVE"
    folder = Path(tempfile.mkdtemp(dir=runs))
    probe = "import hil, os, runpy, sys; print('policy', os.environ.get('OMP_WAIT_POLICY', 'default'), flush=True); " \
            "sys.argv = ['hil', *sys.argv[1:]]; runpy.run_module('hil.cli', run_name='__main__')"
    out = subprocess.run([sys.executable, "-c", probe, "train", "--no-progress", "--runs-dir", str(folder), *args],
                         env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"hil train failed:\n{out.stderr[-2000:]}")
    policy = out.stdout.split("policy ", 1)[1].split()[0]
    (run,) = [p for p in folder.iterdir() if p.is_dir()]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return statistics.fmean(r["samples_per_s"] for r in rows), policy


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--burn-s", type=float, default=90.0,
                   help="seconds of burn before each run (default 90: the 1-minute load average then passes "
                        "cores - 0.5, where the old policy chose PASSIVE)")
    p.add_argument("train_args", nargs="*", help="after --: flags for hil train")
    a = p.parse_args()
    if a.train_args:
        args = a.train_args
    elif FASHION.is_dir():
        args = ["--preset", "paper", "--dataset", "fashion-mnist", "--train-limit", "8000", "--test-limit", "500",
                "--epochs", "1"]
    else:
        args = ["--epochs", "2"]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _machine import describe

    print(describe())
    print(f"hil train {' '.join(args)}; {a.rounds} rounds, each run after {a.burn_s:g} s of burn on every core")
    got: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for forced in ((False, True) if r % 2 == 0 else (True, False)):
                load = burn(a.burn_s)
                sps, policy = train(args, forced, Path(tmp))
                got[forced].append(sps)
                label = "forced ACTIVE" if forced else "hil's own"
                print(f"round {r + 1}: {label:>13}  policy {policy:<8} load(1 min) at start {load:4.2f}  "
                      f"{sps:7.0f} samples/s", flush=True)
    own, active = statistics.median(got[False]), statistics.median(got[True])
    print(f"median samples/s: hil's own {own:.0f}, forced ACTIVE {active:.0f}: {100 * own / active:.0f}% "
          f"(target >= 90%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
