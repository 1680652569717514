"""The emulated bench pulses the simulator's device model; `hil characterize --devices` recovers a preset."""

from pathlib import Path

import pytest
import torch
import yaml
from conftest import characterize_devices_on

from drivers.lab import LabConfig
from hil.cli import main
from hil.core.devices import PRESETS, resolve_device_model, save_device_model
from sim_backend.devices import DeviceArray
from sim_backend.emulator.bench import EmulatedBench

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lab-emulated.yaml"


def lab_tree(device_model):
    tree = yaml.safe_load(EXAMPLE.read_text())
    tree["emulator"]["device_model"] = str(device_model)
    return tree


def test_emulated_pulse_is_one_step_of_the_device_model(tmp_path):
    quiet = PRESETS["ecram"].model_copy(update={"dw_min_std": 0.0})
    lab = LabConfig.model_validate(lab_tree(save_device_model(quiet, tmp_path / "device.yaml")))
    bench = EmulatedBench(lab)
    p = lab.programming
    arr = DeviceArray(quiet, bench.net.weights[0].shape, g_min=p.g_min_S, g_max=p.g_max_S, seeds=[lab.emulator.seed],
                      layer=0, dtype=torch.float64)
    for volts in (1.0, -1.0):
        g = bench.conductance("board", 3, 2)
        bench.pulse("board", 3, 2, volts, 1e-6)
        want = float(arr.mean_step(torch.full(arr.shape, g, dtype=torch.float64), volts > 0)[0, 3, 2])
        assert bench.conductance("board", 3, 2) - g == pytest.approx(want, rel=1e-9)
    g = bench.conductance("board", 3, 2)
    bench.pulse("board", 3, 2, 0.5, 1e-6)  # below device_threshold_V: nothing happens
    assert bench.conductance("board", 3, 2) == g


def test_lab_device_model_must_be_pulsed():
    with pytest.raises(ValueError, match="'ideal' is not a pulsed device model"):
        LabConfig.model_validate(lab_tree("ideal"))


@pytest.mark.slow
def test_characterize_devices_recovers_a_preset(tmp_path, capsys):
    """capacitor preset (Li et al. 2018): step size, bounds and asymmetry within 10%, cycle-to-cycle within 20%."""
    folder = characterize_devices_on(lab_tree("capacitor"), tmp_path)
    fit = resolve_device_model(folder / "device.yaml")
    assert (folder / "device_fit.png").stat().st_size > 10_000
    estimates = yaml.safe_load((folder / "device.yaml").read_text())["fit"]["estimates"]
    assert all(e["stderr"] >= 0 for e in estimates.values())
    true = PRESETS["capacitor"]
    half = (true.w_max - true.w_min) / 2
    assert fit.dw_min == pytest.approx(true.dw_min, rel=0.10)
    assert not fit.dw_min == pytest.approx(1.25 * true.dw_min, rel=0.10)  # control: a wrong step would fail
    assert abs(fit.w_min - true.w_min) < 0.10 * half and abs(fit.w_max - true.w_max) < 0.10 * half
    ratio = (1 + fit.up_down) / (1 - fit.up_down)  # up step / down step
    assert ratio == pytest.approx((1 + true.up_down) / (1 - true.up_down), rel=0.10)
    assert fit.dw_min_std == pytest.approx(true.dw_min_std, rel=0.20)
    assert fit.stuck_fraction == 0
    assert "dw_min_std" in capsys.readouterr().out


def test_characterize_devices_needs_a_lab(tmp_path, capsys):
    assert main(["characterize", "--devices", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hil: error: --devices: characterizes a bench's devices") and err.count("\n") == 1


def synthetic_trains(model, devices=40, pulses=500, cycles=2, seed=0):
    """Pulse trains of `devices` devices of `model` (the simulator's DeviceArray), without a bench."""
    import numpy as np

    from calibration.device_fit import PulseTrains

    g_min, g_max = 1e-6, 1e-4
    arr = DeviceArray(model, (1, 1, devices), g_min=g_min, g_max=g_max, seeds=[seed], dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    g = arr.initial_state(torch.full((1, 1, devices), 0.5 * (g_min + g_max), dtype=torch.float64))
    out = np.empty((devices, cycles, 2 * pulses + 1))
    for c in range(cycles):
        out[:, c, 0] = g.view(-1).numpy()
        for t in range(2 * pulses):
            g = arr.apply_pulses(g, torch.full_like(g, 1.0 if t < pulses else -1.0), gen)
            out[:, c, t + 1] = g.view(-1).numpy()
    rest = np.repeat(out[:, :1, 0], 10, axis=1) + 1e-10 * np.random.default_rng(seed).standard_normal((devices, 10))
    return PulseTrains([(0, 0, d) for d in range(devices)], out, rest, g_min, g_max)


def test_fit_finds_the_stuck_devices_and_refuses_trains_too_short():
    from calibration.device_fit import FitError, fit_pulse_trains

    model = PRESETS["capacitor"].model_copy(update={"stuck_fraction": 0.2})
    data = synthetic_trains(model)
    fit = fit_pulse_trains(data)
    arr = DeviceArray(model, (1, 1, 40), g_min=1e-6, g_max=1e-4, seeds=[0], dtype=torch.float64)
    assert fit.stuck.tolist() == arr.stuck.view(-1).tolist()  # exactly the devices drawn stuck
    assert 0 < fit.model.stuck_fraction == pytest.approx(arr.stuck.double().mean().item())
    assert fit.model.dw_min == pytest.approx(0.005, rel=0.1)
    with pytest.raises(FitError, match="raise --pulses"):
        fit_pulse_trains(synthetic_trains(PRESETS["capacitor"], pulses=60))
