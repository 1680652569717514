"""Pulsed device models: mean step against each formula, spreads against their configured values, presets."""

import math

import pytest
import torch

from hil.core.devices import PRESETS, DeviceModelConfig, resolve_device_model, save_device_model
from hil.core.devices.store import DeviceModelError
from sim_backend.devices import DeviceArray

G_MIN, G_MAX = 1e-6, 1e-4  # S


def formula(p: DeviceModelConfig, w: torch.Tensor, up: bool) -> torch.Tensor:
    """The mean step of one pulse in normalized units, written out from the config's docstring (nominal device)."""
    dw = p.dw_min * ((1 + p.up_down) if up else (1 - p.up_down))
    if p.kind == "constant":
        return torch.full_like(w, dw if up else -dw)
    if p.kind in ("linear", "soft_bounds"):
        g = (p.gamma_up if up else p.gamma_down) if p.kind == "linear" else 1.0
        return dw * (1 - g * w / p.w_max) if up else -dw * (1 - g * w / p.w_min)
    z = 2 * p.a * w / (p.w_max - p.w_min) + p.b
    if up:
        return dw * (1 - p.A_up * torch.exp(p.gamma_exp_up * z)).clamp_min(0)
    return -dw * (1 - p.A_down * torch.exp(-p.gamma_exp_down * z)).clamp_min(0)


def nominal(name: str, **changes) -> DeviceModelConfig:
    """A preset without spreads or noise (so one device is the formula), with changes."""
    quiet = dict(dw_min_dtod=0.0, up_down_dtod=0.0, w_min_dtod=0.0, w_max_dtod=0.0, dw_min_std=0.0, write_noise_std=0.0)
    return PRESETS[name].model_copy(update={**quiet, **changes})


def to_w(p, g):
    return p.w_min + (g - G_MIN) / (G_MAX - G_MIN) * (p.w_max - p.w_min)


@pytest.mark.parametrize("name", ["reram-es", "reram-sb", "ecram", "ecram-mo", "capacitor", "idealized", "gokmen-vlasov"])
def test_mean_step_matches_the_formula_across_the_range(name):
    p = nominal(name)
    dev = DeviceArray(p, (1, 1, 201), g_min=G_MIN, g_max=G_MAX, dtype=torch.float64)
    g = torch.linspace(G_MIN, G_MAX, 201, dtype=torch.float64).view(1, 1, -1)
    unit = (G_MAX - G_MIN) / (p.w_max - p.w_min)
    for up in (True, False):
        got = dev.mean_step(g, up) / unit
        want = formula(p, to_w(p, g), up)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12 * p.dw_min)
        # and one pulse moves a device by exactly that (no noise configured), inside the bounds
        n = torch.full_like(g, 1.0 if up else -1.0)
        moved = (dev.apply_pulses(g, n) - g) / unit
        inside = (g + want * unit > G_MIN) & (g + want * unit < G_MAX)
        torch.testing.assert_close(moved[inside], want[inside], rtol=1e-9, atol=1e-12 * p.dw_min)


def test_the_models_differ_where_their_formulas_do():
    """Control for the test above: the step of the soft-bounds device at 90% of its range is not the constant one."""
    g = torch.full((1, 1, 1), G_MIN + 0.9 * (G_MAX - G_MIN), dtype=torch.float64)
    sb = DeviceArray(nominal("reram-sb"), (1, 1, 1), g_min=G_MIN, g_max=G_MAX, dtype=torch.float64)
    const = DeviceArray(nominal("gokmen-vlasov", dw_min=0.002), (1, 1, 1), g_min=G_MIN, g_max=G_MAX, dtype=torch.float64)
    assert float(sb.mean_step(g, True)) < 0.2 * float(const.mean_step(g, True))


@pytest.mark.parametrize("name", ["ecram", "reram-es"])
def test_k_pulses_at_once_match_k_single_pulses(name):
    """The pulse-count shortcut (midpoint rule) against k single pulses, noise off: within 1% of the change."""
    p = nominal(name)
    dev = DeviceArray(p, (1, 1, 50), g_min=G_MIN, g_max=G_MAX, dtype=torch.float64)
    g0 = torch.linspace(G_MIN + 0.2 * (G_MAX - G_MIN), G_MIN + 0.8 * (G_MAX - G_MIN), 50, dtype=torch.float64).view(1, 1, -1)
    for k in (5, -5, 20, -20):
        g = g0.clone()
        for _ in range(abs(k)):
            g = dev.apply_pulses(g, torch.full_like(g, math.copysign(1, k)))
        fast = dev.apply_pulses(g0, torch.full_like(g0, float(k)))
        assert ((fast - g).abs() <= 0.01 * (g - g0).abs()).all()


N = 40_000  # devices in the statistical tests: the std of a sample std is then sd / sqrt(2N) = 0.35% of it


def spread_of_up_steps(model, *, c2c=False):
    """Relative std of one up pulse's step: across devices (one pulse each) or across pulses of one device."""
    shape = (1, 1, N)
    dev = DeviceArray(model, shape, g_min=G_MIN, g_max=G_MAX, seeds=[3], dtype=torch.float64)
    g = torch.full(shape, 0.5 * (G_MIN + G_MAX), dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    steps = dev.apply_pulses(g, torch.ones(shape, dtype=torch.float64), gen) - g
    return (steps.std() / steps.mean()).item()


def test_device_to_device_step_spread_matches_its_configured_value():
    p = nominal("gokmen-vlasov", dw_min_dtod=0.2)  # constant step: the step is dw_min_i itself
    est = spread_of_up_steps(p)
    tolerance = 0.03  # relative; 8 standard errors of the estimate (0.35%), and the 3-sigma truncation (-1.5%)
    assert abs(est / 0.2 - 1) < tolerance
    assert not abs(est / 0.22 - 1) < tolerance  # control: a spread 10% off would fail


def test_cycle_to_cycle_spread_matches_its_configured_value():
    p = nominal("gokmen-vlasov", dw_min_std=0.3)  # identical devices, noisy pulses
    est = spread_of_up_steps(p, c2c=True)
    assert abs(est / 0.3 - 1) < 0.03
    assert not abs(est / 0.33 - 1) < 0.03  # control


def test_bound_spread_and_asymmetry_across_devices():
    p = nominal("gokmen-vlasov", w_max_dtod=0.1, up_down=0.2)
    dev = DeviceArray(p, (1, 1, N), g_min=G_MIN, g_max=G_MAX, dtype=torch.float64)
    half_S = 0.5 * (G_MAX - G_MIN)
    sd = (dev.hi_S.std() / half_S).item()
    assert abs(sd / 0.1 - 1) < 0.03 and not abs(sd / 0.11 - 1) < 0.03
    g = torch.full((1, 1, N), 0.5 * (G_MIN + G_MAX), dtype=torch.float64)
    ratio = (dev.mean_step(g, True) / -dev.mean_step(g, False)).mean().item()
    assert ratio == pytest.approx(1.2 / 0.8, rel=1e-9)


def test_stuck_fraction_and_side():
    p = nominal("gokmen-vlasov", stuck_fraction=0.05, stuck_high_share=0.25)
    shape = (1, 1, N)
    dev = DeviceArray(p, shape, g_min=G_MIN, g_max=G_MAX, dtype=torch.float64)
    g = dev.initial_state(torch.full(shape, 0.5 * (G_MIN + G_MAX), dtype=torch.float64))
    moved = dev.apply_pulses(g, torch.full(shape, 3.0, dtype=torch.float64)) != g
    frac = 1 - moved.double().mean().item()
    se = math.sqrt(0.05 * 0.95 / N)
    assert abs(frac - 0.05) < 4 * se and not abs(frac - 0.06) < 4 * se  # control: 1% more would fail
    high = (g[~moved] == dev.hi_S[~moved]).double().mean().item()
    assert abs(high - 0.25) < 4 * math.sqrt(0.25 * 0.75 / (~moved).sum().item())


def test_write_noise_and_read_noise_have_their_configured_std():
    p = nominal("gokmen-vlasov", write_noise_std=2.0, read_noise_std=0.5)
    shape = (1, 1, N)
    dev = DeviceArray(p, shape, g_min=G_MIN, g_max=G_MAX, dtype=torch.float64)
    g = torch.full(shape, 0.5 * (G_MIN + G_MAX), dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    written = dev.write_noise(g, torch.ones(shape, dtype=torch.bool), gen)
    assert abs((written - g).std().item() / (2.0 * dev.dw_S) - 1) < 0.03
    assert torch.equal(dev.write_noise(g, torch.zeros(shape, dtype=torch.bool), gen), g)  # unwritten: unchanged
    read = dev.read(g, gen)
    assert abs((read - g).std().item() / (0.5 * dev.dw_S) - 1) < 0.03


def test_drift_is_a_power_law_in_time():
    p = nominal("gokmen-vlasov", drift_nu=0.05, drift_t0_s=1.0)
    dev = DeviceArray(p, (1, 1, 4), g_min=G_MIN, g_max=G_MAX, dtype=torch.float64)
    g = torch.full((1, 1, 4), 5e-5, dtype=torch.float64)
    for t in (0.0, 9.0, 999.0):
        torch.testing.assert_close(dev.drift(g, t), g * (1 + t) ** -0.05)


def test_device_draws_depend_on_the_replica_seed_only():
    p = PRESETS["reram-es"]
    many = DeviceArray(p, (3, 7, 5), g_min=G_MIN, g_max=G_MAX, seeds=[4, 5, 6], layer=1)
    one = DeviceArray(p, (1, 7, 5), g_min=G_MIN, g_max=G_MAX, seeds=[5], layer=1)
    torch.testing.assert_close(many.hi_S[1], one.hi_S[0])
    assert not torch.equal(many.hi_S[0], many.hi_S[1])


def test_presets_cite_their_source_and_resolve(tmp_path):
    for name, p in PRESETS.items():
        assert p.citation and p.name == name
        assert resolve_device_model(name) is p
    assert 9000 < PRESETS["idealized"].states < 11000 and 1100 < PRESETS["gokmen-vlasov"].states < 1300
    path = save_device_model(PRESETS["ecram"], tmp_path / "device.yaml", fit={"dw_min": [0.002, 0.0001]})
    assert resolve_device_model(path) == PRESETS["ecram"]
    with pytest.raises(DeviceModelError, match="'nope' is neither a preset"):
        resolve_device_model("nope")
    (tmp_path / "bad.yaml").write_text("model: {kind: linear, w_min: 0.1}\n")
    with pytest.raises(DeviceModelError, match="w_min, w_max: the linear step"):
        resolve_device_model(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="ideal"):
        DeviceArray(PRESETS["ideal"], (1, 1, 1), g_min=G_MIN, g_max=G_MAX)
