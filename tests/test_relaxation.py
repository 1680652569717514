"""After relaxation every node satisfies Millman's equation."""

import pytest
import torch

from hil.core.backend import input_voltages
from sim_backend.crossbar import SimCrossbar


def millman_residual(net, x, targets=None, beta=0.0):
    """max over nodes of |V_i - rho(M_i)| / max(|V| in the layer), with M_i Millman's weighted mean."""
    W, V = net.weights, net.voltages
    x_in = input_voltages(x.to(net.dtype), net.input_gain)
    L = len(W)
    worst = 0.0
    for l in range(1, L + 1):
        below = x_in.unsqueeze(0).expand(net.replicas, -1, -1) if l == 1 else V[l - 2]
        num = torch.bmm(below, W[l - 1])
        den = W[l - 1].sum(1, keepdim=True)
        if l < L:
            num = num + torch.bmm(V[l], W[l].transpose(1, 2))
            den = den + W[l].sum(2).unsqueeze(1)
        if net.biases is not None:
            num = num + net.biases[l - 1].unsqueeze(1)
        if l == L and targets is not None:
            num, den = num + beta * targets, den + beta
        m = num / den
        if l < L:
            k = m.shape[-1]
            half = k - k // 2 if net.bipolar else k
            m = torch.cat([m[..., :half].clamp(min=0), m[..., half:].clamp(max=0)], -1)
        scale = V[l - 1].abs().amax().clamp(min=1e-30)
        worst = max(worst, ((V[l - 1] - m).abs() / scale).amax().item())
    return worst


@pytest.mark.parametrize("bipolar,bias", [(False, False), (True, True)])
@pytest.mark.parametrize("nudged", [False, True])
def test_every_node_satisfies_millman(bipolar, bias, nudged):
    torch.manual_seed(1)
    net = SimCrossbar.from_settings([10, 12, 8, 4], input_gain=5.0, replicas=3, seeds=[1, 2, 3], bias=bias,
                      bipolar=bipolar, sweeps=200, dtype=torch.float64)
    if bias:
        for b in net.biases:
            b.normal_(0, 0.1)
    x = torch.rand(5, 10, dtype=torch.float64)
    t = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 3, 0]), 4).double()
    net.clamp(x)
    net.nudge(t if nudged else None, 0.5)
    net.relax()
    assert millman_residual(net, x, t if nudged else None, 0.5) < 1e-6
    assert all(v.abs().amax() > 0 for v in net.voltages)  # not trivially satisfied by 0 V


@pytest.mark.parametrize("sizes", [[10, 4], [10, 12, 4]])
@pytest.mark.parametrize("beta", [0.5, -0.05, "per-output"])
def test_millman_without_hidden_layers_and_with_any_nudge(sizes, beta):
    """No hidden layer (inputs straight to outputs), a negative (centered) nudge, and one beta per output."""
    torch.manual_seed(2)
    net = SimCrossbar.from_settings(sizes, input_gain=5.0, replicas=2, seeds=[1, 2], bias=True, sweeps=200, dtype=torch.float64)
    for b in net.biases:
        b.normal_(0, 0.1)
    x = torch.rand(5, 10, dtype=torch.float64)
    t = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 3, 0]), 4).double()
    b = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64) if beta == "per-output" else beta
    net.clamp(x)
    net.nudge(t, b)
    net.relax()
    assert millman_residual(net, x, t, b) < 1e-6
    free = [v.clone() for v in net.voltages]
    net.nudge(None)
    net.relax()
    assert (net.voltages[-1] - free[-1]).abs().amax() > 1e-6  # the nudge moved the outputs


def test_few_sweeps_leave_a_measurable_residual():
    """The residual check can fail: one sweep on a deep net does not settle the lower layers."""
    net = SimCrossbar.from_settings([10, 12, 8, 4], input_gain=5.0, seeds=[1], sweeps=1, dtype=torch.float64)
    x = torch.rand(5, 10, dtype=torch.float64)
    net.clamp(x)
    net.relax()
    assert millman_residual(net, x) > 1e-6


def test_hidden_diodes_and_bipolar_signs():
    net = SimCrossbar.from_settings([10, 12, 4], input_gain=5.0, seeds=[4], bipolar=True, sweeps=50, dtype=torch.float64)
    net.clamp(torch.rand(16, 10, dtype=torch.float64))
    net.relax()
    h = net.voltages[0]
    assert (h[..., :6] >= 0).all() and (h[..., 6:] <= 0).all()
    assert (h[..., :6] > 0).any() and (h[..., 6:] < 0).any()


def test_conductances_stay_in_device_range():
    from hil.core.backend import ConductanceUpdate

    net = SimCrossbar.from_settings([4, 5, 3], input_gain=1.0, seeds=[0], g_min=0.01, g_max=0.2)
    big = [torch.full_like(w, 10.0) for w in net.weights]
    net.program(ConductanceUpdate(big))
    assert all(torch.all(w == 0.2) for w in net.weights)
    net.program(ConductanceUpdate([-2 * b for b in big]))
    assert all(torch.all(w == 0.01) for w in net.weights)
