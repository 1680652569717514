"""network.init: the initial conductances, uniform on [0, c/sqrt(fan_in)] or the DRN code's clamped-symmetric draw."""

import math

import pytest
import torch

from hil.core.config import build_config
from sim_backend.crossbar import SimCrossbar


def _first_layer(init: str, scale: float, g_min: float = 0.0) -> torch.Tensor:
    net = SimCrossbar.from_settings([100, 50, 10], input_gain=1.0, replicas=2, seeds=[3, 4], init=init,
                                    init_scale=scale, g_min=g_min, dtype=torch.float64)
    return net.weights[0]


def test_symmetric_init_puts_half_the_devices_at_the_bottom():
    bound = 1.0 / math.sqrt(200)  # fan_in: the 100 inputs doubled
    w = _first_layer("symmetric", 1.0)
    at_bottom = (w == 0).double().mean().item()
    assert abs(at_bottom - 0.5) < 0.03  # 20,000 devices: sd of the fraction 0.0035
    assert w.max().item() <= bound and w.max().item() > 0.95 * bound
    assert abs(w[w > 0].mean().item() - bound / 2) < 0.02 * bound
    # clamped into the device range: with g_min > 0 the bottom is g_min
    assert (_first_layer("symmetric", 1.0, g_min=1e-3) >= 1e-3).all()


def test_uniform_init_fills_its_range_and_both_draw_from_the_replica_seed():
    bound = 0.7 / math.sqrt(200)
    w = _first_layer("uniform", 0.7)
    assert (w > 0).all() and w.max().item() <= bound and abs(w.mean().item() - bound / 2) < 0.02 * bound
    alone = SimCrossbar.from_settings([100, 50, 10], input_gain=1.0, replicas=1, seeds=[4], init="symmetric",
                                      init_scale=1.0, dtype=torch.float64).weights[0]
    assert torch.equal(alone[0], _first_layer("symmetric", 1.0)[1])


def test_an_unknown_init_is_one_error_naming_the_field():
    with pytest.raises(ValueError, match="network.init"):
        build_config({}, {"network.init": "normal"})
