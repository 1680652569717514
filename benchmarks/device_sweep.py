"""What costs accuracy: test accuracy against the number of device states and against write noise (a figure in docs/results.md).

The paper's setting (784-1024-10, gamma=500 V, beta=1 S, eta=1e-3, T=5, batch 4, float32) on Fashion-MNIST,
one epoch (--train-limit for a quicker look), devices on [0, --g-max] S, open-loop `pulses` programming.
A constant-step device without spreads or noise isolates the step size: states = range / step. Then, at
--states-for-noise states, write noise (std relative to the step, redrawn at every write) is added. Each
point is trained at every read-noise sigma in --sigmas at once (replicas of the same seed).
Writes docs/img/device_sweep.png (or --out) and prints the table.

    python benchmarks/device_sweep.py [--train-limit 20000] [--sigmas 0,1.4e-5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import hil  # noqa: F401  (before torch: hil sets the OpenMP wait policy that torch's import starts with)

# isort: split
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402
from train_fashion import PAPER  # noqa: E402

from hil.core.config import build_config  # noqa: E402
from hil.core.devices import DeviceModelConfig, save_device_model  # noqa: E402
from hil.data import load_dataset  # noqa: E402
from hil.plotting import save_figure, subplots  # noqa: E402
from hil.trainer import Trainer  # noqa: E402
from sim_backend.crossbar import SimCrossbar  # noqa: E402


def accuracy(data, model: DeviceModelConfig | None, sigmas, g_max, folder: Path) -> list[float]:
    over = dict(PAPER, **{"network.g_max": g_max})
    if model is not None:
        over["devices.model"] = str(save_device_model(model, folder / f"{model.name}.yaml"))
    cfg = build_config({}, over)
    net = SimCrossbar.from_config(cfg, data.n_inputs, data.n_classes, sigma=list(sigmas), seeds=[0] * len(sigmas),
                                  replicas=len(sigmas))
    tr = Trainer(cfg, net, data, halt_on_nonfinite=False)
    tr.train_epoch(1)
    return tr.evaluate(data.x_test, data.y_test)[0]


def main() -> int:
    here = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--states", default="30,100,300,1000,3000,10000")
    p.add_argument("--write-noise", default="0.3,1,3,10,30", help="write noise std, in steps")
    p.add_argument("--states-for-noise", type=float, default=3000)
    p.add_argument("--sigmas", default="0,1.4e-5", help="read noise of one reading, V (1.4e-5: the paper's sigma_opt)")
    p.add_argument("--g-max", type=float, default=0.05)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=here / "docs" / "img" / "device_sweep.png")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    sigmas = [float(s) for s in a.sigmas.split(",")]
    cfg = build_config({}, dict(PAPER, **{"data.train_limit": a.train_limit}))
    data = load_dataset(cfg.data)
    folder = Path(tempfile.mkdtemp(prefix="device-sweep-"))
    print(f"machine: {describe()}")
    print(f"setting: paper's (784-1024-10, gamma 500, beta 1, eta 1e-3, T 5, batch 4), Fashion-MNIST, "
          f"{len(data.x_train)} training samples, one epoch, devices on [0, {a.g_max:g}] S; sigma {sigmas} V", flush=True)
    ideal = accuracy(data, None, sigmas, a.g_max, folder)
    print(f"exact: {ideal}", flush=True)
    by_states, by_noise = [], []
    for n in [float(s) for s in a.states.split(",")]:
        m = DeviceModelConfig(name=f"states-{n:g}", kind="constant", dw_min=2.0 / n, citation="constant step")
        by_states.append((n, accuracy(data, m, sigmas, a.g_max, folder)))
        print(f"{n:g} states: {by_states[-1][1]}", flush=True)
    for wn in [float(s) for s in a.write_noise.split(",")]:
        m = DeviceModelConfig(name=f"wn-{wn:g}", kind="constant", dw_min=2.0 / a.states_for_noise, write_noise_std=wn)
        by_noise.append((wn, accuracy(data, m, sigmas, a.g_max, folder)))
        print(f"write noise {wn:g} steps: {by_noise[-1][1]}", flush=True)

    fig, axes = subplots(1, 2, figsize=(9, 3.6), dpi=110, sharey=True)
    for k, s in enumerate(sigmas):
        label = f"read noise sigma = {s:g} V"
        axes[0].semilogx([n for n, _ in by_states], [100 * acc[k] for _, acc in by_states], "o-", color=f"C{k}",
                         label=label)
        axes[1].semilogx([w for w, _ in by_noise], [100 * acc[k] for _, acc in by_noise], "o-", color=f"C{k}",
                         label=label)
        for ax in axes:
            ax.axhline(100 * ideal[k], ls="--", lw=0.8, color=f"C{k}")
    axes[0].set_xlabel("device states (range / step), constant step")
    axes[1].set_xlabel(f"write noise std, in steps ({a.states_for_noise:g} states)")
    axes[0].set_ylabel("test accuracy after one epoch (%)")
    axes[0].legend(fontsize=7, title="dashed: exact programming", title_fontsize=7)
    fig.suptitle(f"Fashion-MNIST, paper's setting, {len(data.x_train)} training samples", fontsize=9)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, a.out)
    print("\n| states | " + " | ".join(f"sigma {s:g} V" for s in sigmas) + " |")
    print("|---|" + "---|" * len(sigmas))
    print("| exact | " + " | ".join(f"{100 * v:.1f}%" for v in ideal) + " |")
    for n, acc in by_states:
        print(f"| {n:g} | " + " | ".join(f"{100 * v:.1f}%" for v in acc) + " |")
    print(f"\n| write noise (steps, {a.states_for_noise:g} states) | " + " | ".join(f"sigma {s:g} V" for s in sigmas) + " |")
    print("|---|" + "---|" * len(sigmas))
    for w, acc in by_noise:
        print(f"| {w:g} | " + " | ".join(f"{100 * v:.1f}%" for v in acc) + " |")
    print(f"saved {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
