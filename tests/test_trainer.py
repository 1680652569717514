"""Trainer behaviour on the simulated backend: replicas, non-finite updates, dtype."""

import pytest
import torch

from hil.config import build_config
from hil.data import load_dataset
from hil.trainer import NonFiniteUpdateError, Trainer
from sim_backend.crossbar import SimCrossbar


def setup(over=None, seeds=None, replicas=1, sigma=None):
    cfg = build_config({}, {"network.hidden": [16], "data.train_limit": 200, "data.test_limit": 80,
                            "dtype": "float64", "train.epochs": 2, **(over or {})})
    data = load_dataset(cfg.data)
    data.x_train, data.x_test = data.x_train.double(), data.x_test.double()
    net = SimCrossbar.from_config(cfg, data.n_inputs, data.n_classes, seeds=seeds, replicas=replicas, sigma=sigma)
    return cfg, data, net


def test_replicas_train_like_separate_runs():
    """Replica r of a batched run ends exactly where a run of that replica's seed alone ends (sigma = 0)."""
    cfg, data, many = setup(seeds=[5, 6, 7], replicas=3)
    Trainer(cfg, many, data).fit()
    for r, seed in enumerate([5, 6, 7]):
        _, _, one = setup(seeds=[seed], replicas=1)
        Trainer(cfg, one, data).fit()
        for wm, w1 in zip(many.weights, one.weights):
            torch.testing.assert_close(wm[r], w1[0], rtol=1e-9, atol=1e-12)
    assert not torch.allclose(many.weights[0][0], many.weights[0][1])


def test_sigma_and_samples_per_replica():
    cfg, data, net = setup(seeds=[1, 1, 1], replicas=3, sigma=[0.0, 0.05, 0.05])
    tr = Trainer(cfg, net, data, samples=[1, 1, 64])
    tr.fit()
    w = net.weights[0]
    d_noisy = (w[1] - w[0]).norm().item()
    d_averaged = (w[2] - w[0]).norm().item()
    assert d_noisy > 0 and d_averaged > 0
    assert d_averaged < d_noisy / 3  # 64 readings shrink the noise-driven drift (about 8x)


def test_nonfinite_update_stops_before_programming():
    cfg, data, net = setup(seeds=[0, 1], replicas=2)
    tr = Trainer(cfg, net, data)
    tr.train_epoch(1)
    with torch.no_grad():  # replica 0: hidden node 3 loses every device -> it floats -> 0/0
        net.weights[0][0, :, 3] = 0
        net.weights[1][0, 3, :] = 0
        net.load_conductances(net.weights, net.biases)
    before = [w.clone() for w in net.weights]
    with pytest.raises(NonFiniteUpdateError, match=r"replica\(s\) \[0\]"):
        tr.train_epoch(2)
    for b, w in zip(before, net.weights):
        assert torch.equal(b[0], w[0])  # nothing programmed into the bad replica
        assert torch.isfinite(w).all()


def test_float32_and_float64_agree_at_start():
    cfg32, data, n32 = setup({"dtype": "float32"})
    _, _, n64 = setup()
    for a, b in zip(n32.weights, n64.weights):
        assert a.dtype == torch.float32 and b.dtype == torch.float64
        torch.testing.assert_close(a.double(), b, rtol=1e-6, atol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_matches_cpu():
    cfg, data, cpu = setup()
    Trainer(cfg, cpu, data).fit()
    cfg_c, data_c, gpu = setup({"device": "cuda"})
    Trainer(cfg_c, gpu, data_c.to("cuda")).fit()
    torch.testing.assert_close(gpu.weights[0].cpu(), cpu.weights[0], rtol=1e-9, atol=1e-12)
