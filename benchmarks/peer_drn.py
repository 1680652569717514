"""The peer of docs/results.md: the DRN code of rain-neuromorphics/energy-based-learning, run in the paper's setting.

    git clone https://github.com/rain-neuromorphics/energy-based-learning /path/to/drn
    python benchmarks/peer_drn.py --drn /path/to/drn --seed 0 [--sigma 1.4e-5] [--epochs 3] [--train 4000]

Imports that clone's modules (nothing of it is copied here) and trains its DeepResistiveEnergy (1568-1024-10,
bipolar hidden layer, biases, its clamped-symmetric init) with its QuadraticMinimizer (asynchronous, --sweeps
iterations in inference and training) and its EquilibriumProp (--variant positive, nudging --beta), plain SGD
at --eta with its clamp at 0, on the first --train / --test images of a Debian IDX dataset (Fashion-MNIST by
default), batch 4, free phase started from the previous batch's state as its Trainer does. --sigma adds the
paper's node-reading noise (eq. 8) to the hidden and output states that enter the update. Prints the test
accuracy after each epoch, the numbers docs/results.md compares `hil train` with.
"""

import argparse
import sys
import time
from pathlib import Path

import hil  # noqa: F401  (before torch: hil sets the OpenMP wait policy that torch's import starts with)

# isort: split
import numpy as np
import torch

from hil.data import read_idx


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--drn", required=True, help="a clone of rain-neuromorphics/energy-based-learning")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gamma", type=float, default=500.0)
    p.add_argument("--sweeps", type=int, default=5)
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--eta", type=float, default=1e-3)
    p.add_argument("--eta-bias", type=float, default=None, help="the biases' learning rate (default: --eta)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train", type=int, default=4000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--sigma", type=float, default=0.0, help="node-reading noise, V (the paper's eq. 8)")
    p.add_argument("--variant", default="positive", choices=["positive", "centered", "negative"])
    p.add_argument("--schedule", type=float, default=1.0, help="learning-rate decay per epoch (the DRN code: 0.99)")
    p.add_argument("--dataset", default="fashion-mnist", help="a folder name under /usr/share/datasets")
    p.add_argument("--diodes", default="bipolar", choices=["bipolar", "relu"],
                   help="hidden diodes: the DRN code's half excitatory, half inhibitory layer, or every node a ReLU "
                        "(as `hil train --preset paper`)")
    p.add_argument("--biases", action=argparse.BooleanOptionalAction, default=True,
                   help="train the DRN code's node biases (--no-biases: they stay at their initial 0, as in --preset paper)")
    p.add_argument("--warm-start", action=argparse.BooleanOptionalAction, default=True,
                   help="start each batch's free phase from the previous batch's state, as the DRN code's Trainer "
                        "does (--no-warm-start: from 0 V, as `hil train` without --warm-start)")
    a = p.parse_args()
    sys.path.insert(0, a.drn)
    from model.function.cost import SquaredError
    from model.function.network import Network
    from model.resistive.minimizer import QuadraticMinimizer
    from model.resistive.network import DeepResistiveEnergy
    from training.sgd import AugmentedFunction, EquilibriumProp

    root = Path(f"/usr/share/datasets/{a.dataset}")

    def load(prefix: str, n: int):
        x = read_idx(root / f"{prefix}-images-idx3-ubyte.gz")[:n].astype(np.float32) / 255.0
        y = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")[:n].astype(np.int64)
        return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)

    xtr, ytr = load("train", a.train)
    xte, yte = load("t10k", a.test)
    torch.manual_seed(a.seed)
    energy_fn = DeepResistiveEnergy([(2, 28, 28), (1024,), (10,)], [1.0, 1.0], a.gamma)
    energy_fn.set_device("cpu")
    if a.diodes == "relu":  # the paper's diodes: every hidden node clamped at 0 V from below (an instance override)
        for hidden in energy_fn.layers()[1:-1]:
            hidden.activate = (lambda layer: lambda: layer.state.clamp(min=0.0))(hidden)
    cost_fn = SquaredError(energy_fn.layers()[-1])
    network = Network(energy_fn)
    params, layers, free = energy_fn.params(), energy_fn.layers(), network.free_layers()
    augmented = AugmentedFunction(energy_fn, cost_fn)
    relax_train = QuadraticMinimizer(augmented, free)
    relax_train.num_iterations, relax_train.mode = a.sweeps, "asynchronous"
    estimator = EquilibriumProp(params, layers, augmented, cost_fn, relax_train)
    estimator.nudging, estimator.variant = a.beta, a.variant
    relax = QuadraticMinimizer(energy_fn, free)
    relax.num_iterations, relax.mode = a.sweeps, "asynchronous"
    # its Optimizer is plain SGD with one learning rate per parameter (biases, then weights)
    eta_bias = (a.eta if a.eta_bias is None else a.eta_bias) if a.biases else 0.0  # lr 0: they stay at 0
    lrs = [eta_bias if type(q).__name__ == "Bias" else a.eta for q in params]
    opt = torch.optim.SGD([{"params": q.state, "lr": lr} for q, lr in zip(params, lrs)], lr=0.1)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=a.schedule)
    free_names = {layer.name for layer in free}
    gen = torch.Generator().manual_seed(10_000 + a.seed)
    if a.sigma > 0:  # eq. 8: every read of a hidden or output node is V + sigma*xi
        exact = estimator._standard_param_grads

        def noisy(first: dict, second: dict):
            def read(states: dict) -> dict:
                return {k: v + a.sigma * torch.randn(v.shape, generator=gen) if k in free_names else v
                        for k, v in states.items()}

            grads = exact(read(first), read(second))
            for layer in layers:  # the next batch starts from the state itself, not from its readings
                if layer.name in second:
                    layer.state = second[layer.name]
            return grads

        estimator._standard_param_grads = noisy
    trainable = params + cost_fn.params()

    def evaluate() -> float:
        correct = 0
        for i in range(0, len(xte), 100):
            network.set_input(xte[i:i + 100], reset=True)
            relax.compute_equilibrium()
            correct += (energy_fn.layers()[-1].state.argmax(1) == yte[i:i + 100]).sum().item()
        return correct / len(xte)

    accs = []
    for epoch in range(a.epochs):
        t0 = time.time()
        order = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), 4):
            idx = order[i:i + 4]
            network.set_input(xtr[idx], reset=not a.warm_start)  # its Trainer: from the previous batch's state
            relax.compute_equilibrium()
            cost_fn.set_target(ytr[idx])
            for q, g in zip(trainable, estimator.compute_gradient()):
                q.state.grad = g
            opt.step()
            for q in trainable:
                q.clamp_()
        sched.step()
        accs.append(evaluate())
        print(f"epoch {epoch + 1}: test accuracy {100 * accs[-1]:.1f}% ({time.time() - t0:.0f} s)", file=sys.stderr)
    print(f"drn seed={a.seed} sigma={a.sigma:g} diodes={a.diodes} biases={a.biases} warm={a.warm_start} test accuracy per epoch: " + " ".join(f"{100 * x:.1f}" for x in accs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
