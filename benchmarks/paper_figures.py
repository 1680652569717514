"""The paper's Fig. 3 and Fig. 4 from `hil sweep sigma` folders, beside what the paper reports.

    python benchmarks/paper_figures.py --threshold 0.9 --label digits RUN [RUN ...] [--label fashion RUN ...] \
        --out docs/img

Each RUN is a `hil sweep sigma` (or `samples`) folder. The trials of a label's folders (trials.csv: each network's
final test accuracy) are pooled per N, so a second sweep at more sigmas with the same seeds refines a point of
Fig. 4; the statistics are the sweeps' own (hil.sweep.summarize: the mean's 95% Student t interval; calibration.
critical: sigma_crit where the mean crosses --threshold, interpolated in log sigma, with its 95% paired bootstrap
over trials). N = 1 draws Fig. 3 (mean and best test accuracy against sigma); each N gives one point of Fig. 4. The paper's lines (Peters & Talatchian 2025, arXiv 2503.22810): sigma_crit
about 5e-5 V on MNIST, KMNIST and Fashion-MNIST (Fig. 3), growing as sqrt(N) (Fig. 4, MNIST, 90% mean accuracy).
Prints the figures' numbers as markdown tables (docs/results.md quotes them).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import hil  # noqa: F401  (before torch/matplotlib: hil's process set-up)

# isort: split
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from calibration.critical import beyond_grid, crit_interval, crossing  # noqa: E402
from hil.sweep import Trial, summarize  # noqa: E402

PAPER_SIGMA_CRIT_V = 5e-5  # Fig. 3: the same on all three datasets, N = 1


def read_trials(folder: Path) -> list[Trial]:
    out = []
    for r in csv.DictReader(open(folder / "trials.csv")):
        accs = [float(x) for x in r["test_acc_per_epoch"].split()]
        out.append(Trial(float(r["sigma_V"]), int(r["samples"]), int(r["trial"]), int(r["seed"]), accs,
                         diverged=r["diverged"] == "1"))
    return out


def by_samples(folders: list[Path]) -> dict[int, list[Trial]]:
    """N -> the pooled trials of the folders (a (sigma, N, trial) in two folders: the later folder's)."""
    pooled: dict[tuple[float, int, int], Trial] = {}
    for folder in folders:
        for t in read_trials(folder):
            pooled[(t.sigma, t.samples, t.trial)] = t
    out: dict[int, list[Trial]] = {}
    for t in pooled.values():
        out.setdefault(t.samples, []).append(t)
    return dict(sorted(out.items()))


def fig3(ax, label: str, trials: list[Trial], threshold: float) -> list[str]:
    rows = sorted(summarize(trials, threshold), key=lambda r: r.sigma)
    sig = [r.sigma for r in rows]
    floor = min(s for s in sig if s > 0) / 3  # sigma = 0 drawn left of the smallest sigma on the log axis
    x = [s if s > 0 else floor for s in sig]
    mean = [100 * r.mean_acc for r in rows]
    lo = [100 * r.mean_interval[0] for r in rows]
    hi = [100 * r.mean_interval[1] for r in rows]
    best = [100 * r.best_acc for r in rows]
    ax.fill_between(x, lo, hi, alpha=0.25, label="mean, 95% interval")
    ax.plot(x, mean, "o-", label=f"mean of {max(r.trials for r in rows)} trials")
    ax.plot(x, best, "s--", label="max")
    ax.axvline(PAPER_SIGMA_CRIT_V, color="grey", ls=":", label="paper: sigma_crit ~5e-5 V")
    crit = crossing(rows, threshold)
    if crit:
        ax.axvline(crit, color="C3", ls="-.", label=f"sigma_crit here ({crit:.2g} V, {100 * threshold:g}%)")
    ax.set_xscale("log")
    ax.set_xlabel("sigma (V); the leftmost point is sigma = 0")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Fig. 3, {label} (N = 1)")
    ax.legend(fontsize=7)
    return [f"| {label} | {r.sigma:g} | {r.trials} | {m:.1f} ({a:.1f}-{b:.1f}) | {bb:.1f} | {100 * r.convergence_rate:.0f}% |"
            for r, m, a, b, bb in zip(rows, mean, lo, hi, best)]


def fig4(ax, label: str, groups: dict[int, list[Trial]], threshold: float) -> list[str]:
    pts = []
    for n, trials in groups.items():
        rows = summarize(trials, threshold)
        c = crossing(rows, threshold)
        if c:
            pts.append((n, c, crit_interval(trials, threshold, n) or (c, c), beyond_grid(rows, threshold)))
    if not pts:
        return []
    n = [p[0] for p in pts]
    c = [p[1] for p in pts]
    err = [[v - p[2][0] for v, p in zip(c, pts)], [p[2][1] - v for v, p in zip(c, pts)]]
    ax.errorbar(n, c, yerr=err, fmt="o", capsize=3, label=f"{label}: sigma_crit ({100 * threshold:g}%), 95% bootstrap")
    grid = [min(n), max(n)]
    ax.plot(grid, [c[0] * math.sqrt(g / n[0]) for g in grid], "--", label=f"{label}: sqrt(N) from N = {n[0]}")
    if "paper: 5e-5 V x sqrt(N)" not in ax.get_legend_handles_labels()[1]:
        ax.plot(grid, [PAPER_SIGMA_CRIT_V * math.sqrt(g) for g in grid], ":", color="grey",
                label="paper: 5e-5 V x sqrt(N)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("samples per reading N")
    ax.set_ylabel("sigma_crit (V)")
    ax.legend(fontsize=7)
    return [f"| {label} | {k} | {100 * threshold:g}% | {v:.3g} ({lo:.3g}-{hi:.3g}) | {v / c[0]:.2f} | "
            f"{math.sqrt(k / n[0]):.2f} |{' lower bound' if past else ''} |"
            for k, v, (lo, hi), past in ((p[0], p[1], p[2], p[3]) for p in pts)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label", action="append", nargs="+", metavar=("LABEL", "RUN_DIR"), required=True,
                   help="a dataset's label, then its sweep folders (any N)")
    p.add_argument("--threshold", action="append", type=float, required=True,
                   help="the mean accuracy sigma_crit is read at, one per --label in order (the paper: 0.9)")
    p.add_argument("--out", type=Path, default=Path("docs/img"))
    a = p.parse_args()
    if len(a.threshold) != len(a.label):
        p.error("--threshold: give one per --label")
    groups = [(g[0], by_samples([Path(d) for d in g[1:]]), thr) for g, thr in zip(a.label, a.threshold)]
    a.out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    print("| data | sigma (V) | trials | mean acc % (95% interval) | max acc % | converged |\n|---|---|---|---|---|---|")
    for ax, (label, by_n, thr) in zip(axes[0], groups):
        if 1 in by_n:
            print("\n".join(fig3(ax, label, by_n[1], thr)))
    fig.tight_layout()
    fig.savefig(a.out / "fig3.png", dpi=110)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    print("\n| data | N | threshold | sigma_crit V (95% interval) | ratio to N = 1 | sqrt(N) | |\n|---|---|---|---|---|---|---|")
    for label, by_n, thr in groups:
        print("\n".join(fig4(ax, label, by_n, thr)))
    ax.set_title("Fig. 4: sigma_crit against N")
    fig.tight_layout()
    fig.savefig(a.out / "fig4.png", dpi=110)
    print(f"saved {a.out / 'fig3.png'} and {a.out / 'fig4.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
