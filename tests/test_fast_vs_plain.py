"""The fast simulator path and a plain implementation from the equations agree (float64, 100 steps)."""

import torch

from hil.core.config import build_config
from hil.data import load_dataset
from hil.trainer import Trainer
from sim_backend.crossbar import SimCrossbar
from sim_backend.reference import PlainEP


def test_fast_and_plain_paths_give_the_same_conductances():
    cfg = build_config({}, {"network.hidden": [24, 16], "dtype": "float64", "network.input_gain": 64.0,
                            "ep.eta": 0.01, "ep.beta": 1.0, "train.seed": 3, "network.bipolar": False})
    data = load_dataset(cfg.data)
    x, y = data.x_train[:400].double(), data.y_train[:400]
    fast = SimCrossbar.from_config(cfg, 64, 10)
    trainer = Trainer(cfg, fast, data)
    plain = PlainEP([64, 24, 16, 10], gamma=64.0, beta=1.0, eta=0.01, sweeps=5, seed=3, init_scale=cfg.network.init_scale,
                    g_min=cfg.network.g_min, dtype=torch.float64)
    for w_fast, w_plain in zip(fast.weights, plain.W):
        assert torch.equal(w_fast[0], w_plain)
    for s in range(100):
        xb, yb = x[4 * s:4 * s + 4], y[4 * s:4 * s + 4]
        trainer.step(xb, yb)
        plain.step(xb, torch.nn.functional.one_hot(yb, 10).double())
    for w_fast, w_plain, w0 in zip(fast.weights, plain.W, SimCrossbar.from_config(cfg, 64, 10).weights):
        rel = ((w_fast[0] - w_plain).norm() / w_plain.norm()).item()
        moved = ((w_plain - w0[0]).norm() / w_plain.norm()).item()
        assert rel < 1e-9, rel
        assert moved > 1e-3  # the conductances really changed over the 100 steps
