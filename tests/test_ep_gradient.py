"""EP at small beta matches the true gradient of the loss at the free equilibrium.

The true gradient comes from autograd through a plain relaxation written here
straight from Millman's equations (unrolled to convergence), independent of
the simulator's code; the EP side goes through the simulator and hil.core.ep.
"""

import pytest
import torch

from hil.core.backend import NodeStats, input_voltages
from hil.core.ep import ep_update
from sim_backend.crossbar import SimCrossbar

SIZES = [6, 7, 5, 3]  # two hidden layers, so both update forms are checked


def plain_relax(weights, biases, x_in, sweeps, lo=None):
    """Block Gauss-Seidel on the layers, from 0 V, written from the equations (differentiable)."""
    L = len(weights)
    V = [torch.zeros(x_in.shape[0], W.shape[1], dtype=x_in.dtype) for W in weights]
    for _ in range(sweeps):
        for l in range(1, L + 1):
            below = x_in if l == 1 else V[l - 2]
            num = below @ weights[l - 1] + biases[l - 1]
            den = weights[l - 1].sum(0)
            if l < L:
                num = num + V[l] @ weights[l].T
                den = den + weights[l].sum(1)
            z = num / den
            V[l - 1] = z if l == L else torch.relu(z)
    return V


def make_net(centered_seed=0):
    torch.manual_seed(centered_seed)
    net = SimCrossbar.from_settings(SIZES, input_gain=3.0, seeds=[7], bias=True, sweeps=400, dtype=torch.float64)
    with torch.no_grad():
        for b in net.biases:
            b.copy_(0.2 * torch.randn_like(b))
    x = torch.rand(3, SIZES[0], dtype=torch.float64)
    y = torch.tensor([0, 2, 1])
    t = torch.nn.functional.one_hot(y, SIZES[-1]).double()
    return net, x, t


def autograd_gradient(net, x, t):
    W = [w[0].clone().requires_grad_(True) for w in net.weights]
    b = [v[0].clone().requires_grad_(True) for v in net.biases]
    V = plain_relax(W, b, input_voltages(x, net.input_gain), 400)
    loss = 0.5 * ((V[-1] - t) ** 2).sum(-1).mean()
    loss.backward()
    return [w.grad for w in W], [v.grad for v in b], V


def ep_gradient(net, x, t, beta, centered):
    eta = 1.0
    net.clamp(x)
    net.nudge(None)
    net.relax()
    free = NodeStats.from_readings(net.measure(1)).split(net.measured_sizes)
    net.nudge(t, beta)
    net.relax()
    plus = NodeStats.from_readings(net.measure(1)).split(net.measured_sizes)
    if centered:
        net.nudge(t, -beta)
        net.relax()
        minus = NodeStats.from_readings(net.measure(1)).split(net.measured_sizes)
        upd = ep_update(input_voltages(x, net.input_gain), minus, plus, beta, eta, centered=True, biases=True)
    else:
        upd = ep_update(input_voltages(x, net.input_gain), free, plus, beta, eta, biases=True)
    # dg = -eta * grad, so the gradient estimate is -dg/eta
    return [-d[0] / eta for d in upd.dense_weights()], [-d[0] / eta for d in upd.biases], free


@pytest.mark.parametrize("centered", [False, True])
def test_ep_update_matches_autograd_gradient(centered):
    net, x, t = make_net()
    g_true, gb_true, V_plain = autograd_gradient(net, x, t)
    g_ep, gb_ep, free = ep_gradient(net, x, t, beta=1e-3, centered=centered)
    # Both relaxations reach the same free equilibrium.
    for a, b in zip(free, V_plain):
        torch.testing.assert_close(a.mean[0], b.detach(), rtol=1e-10, atol=1e-12)
    for k, (a, b) in enumerate(zip(g_ep + gb_ep, g_true + gb_true)):
        cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()
        ratio = (a.norm() / b.norm()).item()
        assert b.norm() > 0, f"layer {k}: zero true gradient makes the check vacuous"
        assert cos > 0.999, f"parameter group {k}: cosine {cos:.6f}"
        assert abs(ratio - 1) < 0.01, f"parameter group {k}: norm ratio {ratio:.5f}"


def test_large_beta_is_measurably_biased():
    """The check above can fail: at beta = 1 the positive-EP estimate is off by more than 1% in norm."""
    net, x, t = make_net()
    g_true, _, _ = autograd_gradient(net, x, t)
    g_ep, _, _ = ep_gradient(net, x, t, beta=3.0, centered=False)
    ratios = [(a.norm() / b.norm()).item() for a, b in zip(g_ep, g_true)]
    assert any(abs(r - 1) > 0.01 for r in ratios), ratios
