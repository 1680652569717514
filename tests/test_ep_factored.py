"""The factored (low-rank) EP update equals the plain squared-drop difference, and keeps float32 accurate."""

import torch

from hil.core.backend import NodeStats, input_voltages
from hil.core.ep import ep_update, reading_weights


def squared_drop_difference_reference(x_in, phase0, phase1):
    """Plain per-device E[(dV^1)^2] - E[(dV^0)^2] in float64, straight from the definition.

    Readings of different nodes are independent, so E over the readings of a device's squared drop is the mean
    over every pair (reading k of the lower node, reading l of the upper one): (n, n, R, B, m, k) tensors.
    """
    out = []
    lowers0 = [None] + list(phase0[:-1])
    lowers1 = [None] + list(phase1[:-1])
    for k, (h0, h1) in enumerate(zip(phase0, phase1)):
        h0, h1 = h0.double(), h1.double()
        if k == 0:
            x = x_in.double()
            x = x if x.dim() == 3 else x.unsqueeze(0)
            a0 = a1 = x.unsqueeze(0)
        else:
            a0, a1 = lowers0[k].double(), lowers1[k].double()
        pairs = lambda a, h: (a[:, None, ..., :, None] - h[None, :, ..., None, :]) ** 2  # noqa: E731
        out.append((pairs(a1, h1) - pairs(a0, h0)).mean(dim=(0, 1, 3)))
    return out


def stats(readings, weights=None):
    return [NodeStats.from_readings(p, weights) for p in readings]


def phases(n, R, B, sizes, scale, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    p0 = [scale * torch.rand(n, R, B, k, generator=g, dtype=torch.float64) for k in sizes]
    p1 = [p + 1e-3 * torch.randn(p.shape, generator=g, dtype=torch.float64) for p in p0]
    return [p.to(dtype) for p in p0], [p.to(dtype) for p in p1]


def test_factored_equals_definition_float64():
    x = torch.rand(3, 5, dtype=torch.float64)
    x_in = input_voltages(x, 7.0)
    p0, p1 = phases(4, 2, 3, [6, 4, 2], 2.0, torch.float64)
    eta, beta = 0.3, 0.5
    upd = ep_update(x_in, stats(p0), stats(p1), beta, eta, biases=True)
    ref = squared_drop_difference_reference(x_in, p0, p1)
    for dense, r in zip(upd.dense_weights(), ref):
        torch.testing.assert_close(dense, -eta / (2 * beta) * r, rtol=1e-10, atol=1e-14)
    for db, a, b in zip(upd.biases, p0, p1):
        torch.testing.assert_close(db, eta / beta * (b - a).mean(dim=(0, 2)))


def test_reading_weights_give_each_replica_its_own_N():
    """Replica r uses only its first N_r readings: same as running it alone with N_r."""
    x_in = input_voltages(torch.rand(2, 3, dtype=torch.float64), 4.0)
    p0, p1 = phases(5, 2, 2, [4, 3], 1.0, torch.float64, seed=3)
    w = reading_weights([2, 5], 2, dtype=torch.float64)
    both = ep_update(x_in, stats(p0, w), stats(p1, w), 1.0, 1.0).dense_weights()
    alone0 = ep_update(x_in, stats([p[:2, :1] for p in p0]), stats([p[:2, :1] for p in p1]), 1.0, 1.0).dense_weights()
    alone1 = ep_update(x_in, stats([p[:, 1:] for p in p0]), stats([p[:, 1:] for p in p1]), 1.0, 1.0).dense_weights()
    for d, a0, a1 in zip(both, alone0, alone1):
        torch.testing.assert_close(d[0], a0[0])
        torch.testing.assert_close(d[1], a1[0])


def test_float32_factored_form_survives_gamma_500():
    """With gamma = 500 the squares are ~1e5 V^2; subtracting them in float32 loses the update, the factored form does not."""
    x = torch.rand(4, 20, dtype=torch.float64)
    x_in = input_voltages(x, 500.0)
    p0, p1 = phases(1, 1, 4, [8, 3], 2.0, torch.float32, seed=5)
    x_in = x_in.float().double()  # the exact reference sees the same (float32-representable) inputs
    exact = ep_update(x_in, stats([p.double() for p in p0]), stats([p.double() for p in p1]), 1.0, 1.0).dense_weights()[0]
    fast = ep_update(x_in.float(), stats([p.float() for p in p0]), stats([p.float() for p in p1]), 1.0, 1.0).dense_weights()[0]
    rel_fast = ((fast.double() - exact).norm() / exact.norm()).item()
    a, h0, h1 = x_in.float().unsqueeze(-1), p0[0].float()[0].unsqueeze(-2), p1[0].float()[0].unsqueeze(-2)
    naive = -0.5 * (((a - h1) ** 2) - ((a - h0) ** 2)).mean(0)
    rel_naive = ((naive.double() - exact[0]).norm() / exact.norm()).item()
    assert rel_fast < 1e-5, rel_fast
    assert rel_naive > 100 * rel_fast, (rel_naive, rel_fast)
