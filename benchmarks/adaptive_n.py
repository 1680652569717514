"""Adaptive N against a fixed N when the read noise steps up 4x halfway through training (issue 21).

    python benchmarks/adaptive_n.py [--sigma 0.001] [--target 0.001] [--epochs 2] [--seeds 5] [--threads 2]

The digits (64-128-10, the defaults), simulated white read noise sigma that steps to 4 sigma halfway through
the training steps (noise.sigma_schedule). Two runs of `--seeds` networks each (replicas, seeds 0..4):

- adaptive: `samples: auto` with the target effective noise sigma/sqrt(N) = --target;
- fixed: N chosen with hindsight for the worst sigma, ceil((4 sigma / target)^2), the whole run.

Prints the three acceptance figures: after the step, the first check from which the measured effective noise
(the block's pooled sigma over sqrt(N)) stays within +-20% of the target, in steps after the step; the mean
final test accuracy of both (points); and the readings each took.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _machine import describe  # noqa: E402

from hil.core.config import build_config  # noqa: E402
from hil.runner import prepare  # noqa: E402
from hil.trainer import Trainer  # noqa: E402

STEP_FACTOR = 4.0


def run(over: dict) -> tuple[Trainer, list[float], float]:
    cfg = build_config({}, over)
    prep = prepare(cfg)
    trainer = Trainer(cfg, prep.backend, prep.data)
    t0 = time.perf_counter()
    history = trainer.fit()
    return trainer, history[-1].test_acc, time.perf_counter() - t0


def settle_steps(trainer: Trainer, step_at: int, target: float, band: float = 0.2) -> list[int | None]:
    """Per replica: steps after the sigma step until the measured effective noise stays within target*(1 +- band)
    at every later check (None: never)."""
    out: list[int | None] = []
    for r in range(trainer.R):
        after = [c for c in trainer.tracker.history if c.step > step_at]
        ok = [abs(c.sigma_block_V[r] / math.sqrt(c.samples[r]) / target - 1) <= band for c in after]
        first = next((i for i in range(len(ok)) if all(ok[i:])), None)
        out.append(None if first is None else after[first].step - step_at)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sigma", type=float, default=0.001, help="read noise before the step, V (default 0.001)")
    p.add_argument("--target", type=float, default=0.001, help="effective noise to hold, V (default 0.001: N = 1, then 16)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seeds", type=int, default=5, help="networks per run (replicas, seeds 0..n-1)")
    p.add_argument("--every", type=int, default=20, help="K: steps between updates of N (default 20)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    base = {"noise.sigma": args.sigma, "train.epochs": args.epochs, "train.replicas": args.seeds,
            "noise.sigma_schedule": {"kind": "step", "start": 0.5, "factor": STEP_FACTOR}}
    fixed_n = math.ceil((STEP_FACTOR * args.sigma / args.target) ** 2 - 1e-9)
    print(f"machine: {describe()}")
    print(f"digits 64-128-10, {args.epochs} epochs, {args.seeds} seeds as replicas; sigma {args.sigma:g} V stepping "
          f"to {STEP_FACTOR * args.sigma:g} V halfway; target sigma/sqrt(N) {args.target:g} V; fixed N {fixed_n}")
    adaptive, acc_a, sec_a = run({**base, "noise.samples": "auto", "noise.sigma_target": args.target,
                                  "noise.adapt.every_steps": args.every})
    steps = adaptive.tracker.total_steps
    step_at = int(0.5 * (steps - 1)) + 1  # the first step at progress >= 0.5
    fixed, acc_f, sec_f = run({**base, "noise.samples": fixed_n})
    settle = settle_steps(adaptive, step_at, args.target)
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    n_before = [c.samples for c in adaptive.tracker.history if c.step <= step_at][-1]
    print(f"adaptive N before the step {n_before}, at the end {adaptive.tracker.samples}")
    print(f"1. effective noise within +-20% of the target from {settle} steps after the step "
          f"(step {step_at} of {steps}; need <= 200): {'pass' if all(s is not None and s <= 200 for s in settle) else 'FAIL'}")
    diff = 100 * (mean(acc_a) - mean(acc_f))
    print(f"2. final test accuracy, mean of {args.seeds}: adaptive {100 * mean(acc_a):.2f}%, fixed N={fixed_n} "
          f"{100 * mean(acc_f):.2f}% ({diff:+.2f} points; need >= -1): {'pass' if diff >= -1 else 'FAIL'}")
    ra, rf = adaptive.tracker.ledger.readings, fixed.tracker.ledger.readings
    print(f"3. readings per network (training and evaluation): adaptive {mean(ra):,.0f}, fixed {mean(rf):,.0f} "
          f"({mean(ra) / mean(rf):.2f}x): {'pass' if mean(ra) < mean(rf) else 'FAIL'}")
    print(f"wall time: adaptive {sec_a:.1f} s, fixed {sec_f:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
