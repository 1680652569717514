"""Trainer behaviour on the simulated backend: replicas, non-finite updates, dtype."""

import pytest
import torch
from conftest import HostReads, Sizes

from hil.core.config import build_config
from hil.data import load_dataset
from hil.trainer import NonFiniteUpdateError, Trainer
from sim_backend.crossbar import SimCrossbar
from sim_backend.noise import ReadNoise


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
    cfg, data, net = setup({"network.g_min": 0.0}, seeds=[0, 1], replicas=2)  # no floor: a node can float
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


def test_finite_flags_exactly_the_replicas_with_nan_or_inf():
    """The one-sum test: NaN, +Inf, and +Inf/-Inf entries that would cancel are all caught, per replica."""
    from hil.core.backend import ConductanceUpdate, LowRankDelta

    def update():
        g = torch.Generator().manual_seed(0)
        lr = LowRankDelta(torch.randn(5, 3, 7, generator=g), torch.randn(5, 3, 4, generator=g), 1e-3)
        return ConductanceUpdate([lr, torch.randn(5, 4, 2, generator=g)], [torch.randn(5, 4, generator=g)])

    u = update()
    assert u.finite().tolist() == [True] * 5
    u.weights[0].left[1, 2, 3] = float("nan")
    u.weights[0].right[2, 0, 0], u.weights[0].right[2, 1, 1] = float("inf"), float("-inf")  # would cancel
    u.weights[1][3, 0, 1] = float("inf")
    u.biases[0][4, 2] = float("-inf")
    assert u.finite().tolist() == [True, False, False, False, False]
    kept = u.masked(u.finite())
    assert torch.isfinite(kept.weights[0].dense()).all() and kept.weights[0].dense()[1:].abs().sum() == 0


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


# Reading a device value into Python (bool(t), t.item(), nonzero) stalls a GPU until its queue drains.
@pytest.mark.parametrize("over", [
    {"noise.sigma": 1e-3, "noise.samples": 3, "network.bias": True, "network.hidden": [16, 8]},
    {"ep.centered": True, "ep.beta": 0.2, "network.bias": True},
    # pulsed devices (the GPU path: every device through the same arithmetic, masked)
    {"devices.model": "reram-es", "network.g_max": 0.5, "network.g_min": 0.01},
    {"devices.model": "ecram", "devices.rounding": "stochastic", "network.g_max": 0.5, "network.hidden": [16, 8]},
    {"devices.model": "gokmen-vlasov", "devices.update": "write-verify", "network.g_max": 0.5},
])
def test_training_step_reads_nothing_back_to_the_host(over):
    """The inner loop never synchronises: every check is kept on the device until check_finite()."""

    cfg, data, net = setup({"dtype": "float32", **over})
    net.host_checks = False  # as on a GPU
    data.x_train = data.x_train.float()
    tr = Trainer(cfg, net, data, check_every=10**9)
    tr.step(data.x_train[:4], data.y_train[:4])  # the first step may build caches
    with HostReads() as reads:
        for s in range(1, 6):
            tr.step(data.x_train[4 * s:4 * s + 4], data.y_train[4 * s:4 * s + 4])
    assert reads.seen == []
    with HostReads() as reads:
        tr.check_finite()
    assert reads.seen  # the control: the counter does see a host read


def test_centered_beta_beyond_output_conductance_is_refused():
    """-beta larger than an output node's conductance: an error at once on the CPU; NaN, then an error, elsewhere."""
    cfg, data, net = setup({"ep.centered": True, "ep.beta": 50.0})
    with pytest.raises(ValueError, match="beta: -50 S exceeds the conductance"):
        Trainer(cfg, net, data).step(data.x_train[:4], data.y_train[:4])
    cfg, data, net = setup({"ep.centered": True, "ep.beta": 50.0})
    net.host_checks = False
    before = [w.clone() for w in net.weights]
    with pytest.raises(NonFiniteUpdateError, match="centered EP, lower beta"):
        Trainer(cfg, net, data).step(data.x_train[:4], data.y_train[:4])
    assert all(torch.equal(b, w) for b, w in zip(before, net.weights))


def test_training_step_allocates_nothing_weight_sized():
    """Updates go into the conductances in place: no tensor of a weight matrix's size is created in a step."""
    cfg, data, net = setup({"dtype": "float32", "network.hidden": [64], "noise.sigma": 1e-3, "noise.samples": 2})
    data.x_train = data.x_train.float()
    tr = Trainer(cfg, net, data, check_every=10**9)
    tr.step(data.x_train[:4], data.y_train[:4])
    w0 = net.weights[0][0].numel()  # 128 x 64 devices
    with Sizes() as sizes:
        for s in range(1, 4):
            tr.step(data.x_train[4 * s:4 * s + 4], data.y_train[4 * s:4 * s + 4])
    assert sizes.largest < w0 / 4, (sizes.largest, w0)
    with Sizes() as control:  # the counter does see a dense update
        tr.step(data.x_train[:4], data.y_train[:4])
        from hil.core.backend import LowRankDelta
        LowRankDelta(torch.ones(1, 3, 128), torch.ones(1, 3, 64), 1.0).dense()
    assert control.largest >= w0


def test_readings_are_reduced_as_they_are_taken(monkeypatch):
    """N readings never exist at once: a step with N = 2000 holds one chunk of readings, and the statistics are right."""
    chunk = 1 << 14
    monkeypatch.setattr(ReadNoise, "CHUNK_ELEMENTS", chunk)
    n, sigma = 2000, 1e-2
    cfg, data, net = setup({"noise.sigma": sigma, "noise.samples": n})
    tr = Trainer(cfg, net, data, check_every=10**9)
    x = data.x_train[:4]
    readings = 4 * sum(net.measured_sizes) * n  # 208,000 values if they were all held
    with Sizes() as sizes:
        tr.step(x, data.y_train[:4])
    assert sizes.largest <= chunk + 64, (sizes.largest, readings)
    with Sizes() as control:  # the counter sees readings held whole
        net.measure(n)
    assert control.largest >= readings
    # The reduced statistics: mean and variance within 5 of their standard errors (sigma/sqrt(n), sigma^2 sqrt(2/n)).
    net.clamp(x)
    net.relax()
    st = net.measure_stats(tr.w)
    v = torch.cat(net.voltages, -1)
    assert (st.mean - v).abs().max() < 5 * sigma / n**0.5
    assert (st.var / sigma**2 - 1).abs().max() < 5 * (2 / n) ** 0.5


def test_accuracy_is_an_exact_fraction_of_the_samples():
    """k of n correct is k/n in float64, so a sweep's threshold (0.7 = 700 of 1,000) counts an accuracy at it as
    reaching it (a float32 division gave 0.69999999, below 0.7)."""
    cfg, data, net = setup({"dtype": "float32"}, seeds=list(range(8)), replicas=8)
    data.x_test, data.y_test = data.x_test[:10].float(), data.y_test[:10]
    accs, _ = Trainer(cfg, net, data).evaluate(data.x_test, data.y_test)
    assert len(accs) == 8
    assert all(acc == round(acc * 10) / 10 for acc in accs), accs
    assert any(round(acc * 10) not in (0, 5, 10) for acc in accs), accs  # some accuracy that float32 cannot hold
