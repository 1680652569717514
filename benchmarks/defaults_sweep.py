"""How the defaults (init scale c, input gain gamma, learning rate eta) fare on three data sets.

    nice -n 10 python benchmarks/defaults_sweep.py [--grid star|full] [--epochs 2,6] [--trials 3]
        [--datasets digits,mnist1d,fashion-mnist] [--fashion-train 2000] [--fashion-test 1000]

Around each data set's resolved defaults (gamma and eta sized to its input count, hil.core.config.data_defaults),
trains --trials seeds of every setting (as replicas at once, hil.grid_run.run_sweep, sigma = 0) and prints the
mean final test accuracy after each of the --epochs counts (one training read at both: the accuracy after
epoch 2 of a 6-epoch run is that of a 2-epoch run). Diverged trials count as 0.

--grid star: the defaults, then each of c, gamma, eta alone at x0.5 and x2 (7 settings);
--grid full: every combination of those three values per axis (27 settings).
Fashion-MNIST: the first --fashion-train / --fashion-test images (Debian's files, or --data-dir).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

from hil.core.config import build_config  # noqa: E402
from hil.data import load_dataset  # noqa: E402
from hil.grid import Grid  # noqa: E402
from hil.grid_run import run_sweep  # noqa: E402
from hil.sweep import SweepOptions  # noqa: E402
from hil.threads import shared_budget  # noqa: E402

FACTORS = (0.5, 1.0, 2.0)


def settings(grid: str) -> list[tuple[float, float, float]]:
    """(c factor, gamma factor, eta factor) triples."""
    if grid == "full":
        return list(itertools.product(FACTORS, FACTORS, FACTORS))
    star = [(1.0, 1.0, 1.0)]
    for axis in range(3):
        for f in (0.5, 2.0):
            s = [1.0, 1.0, 1.0]
            s[axis] = f
            star.append((s[0], s[1], s[2]))
    return star


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", choices=["star", "full"], default="star")
    p.add_argument("--epochs", default="2,6", help="epoch counts to report, e.g. 2,6 (trains to the largest)")
    p.add_argument("--trials", type=int, default=3, help="seeds per setting (default 3)")
    p.add_argument("--datasets", default="digits,mnist1d,fashion-mnist")
    p.add_argument("--fashion-train", type=int, default=2000)
    p.add_argument("--fashion-test", type=int, default=1000)
    p.add_argument("--mnist1d-train", type=int, help="use the first n MNIST-1D training signals (default all 4,000)")
    p.add_argument("--data-dir", type=Path, help="Fashion-MNIST folder (default: Debian's)")
    a = p.parse_args()
    counts = sorted({int(e) for e in a.epochs.split(",")})
    names = a.datasets.split(",")
    print(f"{describe()}; grid {a.grid}, {a.trials} seeds, epochs {counts}", flush=True)
    grid = settings(a.grid)
    table: dict[tuple[float, float, float], dict[str, list[float]]] = {s: {} for s in grid}
    for name in names:
        data_tree: dict = {"dataset": name}
        if name == "fashion-mnist":
            data_tree.update(train_limit=a.fashion_train, test_limit=a.fashion_test)
            if a.data_dir:
                data_tree["data_dir"] = str(a.data_dir)
        if name == "mnist1d" and a.mnist1d_train:
            data_tree["train_limit"] = a.mnist1d_train
        base = build_config({"data": data_tree, "train": {"epochs": counts[-1]}})
        c0, g0, e0 = base.network.init_scale, base.network.input_gain, base.ep.eta
        data = load_dataset(base.data)
        print(f"{name}: {len(data.x_train)} train / {len(data.x_test)} test, {data.n_inputs} inputs; defaults "
              f"c={c0:g}, gamma={g0:g} V, eta={e0:g}", flush=True)
        for fc, fg, fe in grid:
            cfg = build_config(base.model_dump(mode="json"), {"network.init_scale": c0 * fc,
                                                              "network.input_gain": g0 * fg, "ep.eta": e0 * fe})
            t0 = time.perf_counter()
            trials = run_sweep(Grid(cfg, {"noise.sigma": [0.0]}, a.trials),
                               SweepOptions(trials=a.trials, max_replicas=a.trials), data)
            accs = [statistics.mean(0.0 if t.diverged or len(t.test_acc) < n else t.test_acc[n - 1] for t in trials)
                    for n in counts]
            table[(fc, fg, fe)][name] = accs
            print(f"  c x{fc:g} gamma x{fg:g} eta x{fe:g}: " + ", ".join(
                f"{100 * acc:.1f}% after {n}" for n, acc in zip(counts, accs)) + f" ({time.perf_counter() - t0:.0f} s)",
                flush=True)
    head = "c     gamma  eta   " + "".join(f"{f'{n}@{e}':>16}" for n in names for e in counts)
    print("\nmean test accuracy (factor of each data set's default; columns: dataset@epochs)")
    print(head)
    for s in grid:
        cells = "".join(f"{100 * table[s][n][i]:15.1f}%" for n in names for i in range(len(counts)))
        print(f"x{s[0]:<4g} x{s[1]:<5g} x{s[2]:<4g}" + cells)
    return 0


if __name__ == "__main__":
    with shared_budget():  # a hil process like the others: it takes its share of the cores
        sys.exit(main())
