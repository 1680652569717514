"""Update modes of the simulator: exact (default, unchanged), pulses (accumulate or stochastic), write-verify."""

import json
import subprocess
import sys

import pytest
import torch
import yaml

from hil.core.backend import ConductanceUpdate, LowRankDelta
from hil.core.config import ConfigError, build_config, load_config
from hil.core.devices import PRESETS
from sim_backend.crossbar import SimCrossbar

QUIET = {"dw_min_dtod": 0.0, "up_down_dtod": 0.0, "w_min_dtod": 0.0, "w_max_dtod": 0.0, "dw_min_std": 0.0,
         "write_noise_std": 0.0}


def net(tmp_path, model="gokmen-vlasov", over=None, **model_changes):
    spec = model
    if model_changes:
        from hil.core.devices import save_device_model

        spec = str(save_device_model(PRESETS[model].model_copy(update=model_changes), tmp_path / "device.yaml"))
    cfg = build_config({}, {"network.hidden": [6], "network.g_max": 0.2, "network.g_min": 0.0, "dtype": "float64",
                            "devices.model": spec, **(over or {})})
    return SimCrossbar.from_config(cfg, 5, 3, replicas=2, seeds=[0, 1])


def update(n, scale, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ConductanceUpdate([LowRankDelta(torch.randn(2, 4, 10, generator=g, dtype=torch.float64),
                                           torch.randn(2, 4, 6, generator=g, dtype=torch.float64), scale),
                              torch.randn(2, 6, 3, generator=g, dtype=torch.float64) * scale])


def test_default_is_exact_with_an_ideal_device():
    cfg = build_config({}, {})
    assert cfg.devices.model == "ideal" and cfg.devices.update == "exact"
    assert SimCrossbar.from_config(cfg, 5, 3).programmer is None


def test_accumulated_pulses_add_up_to_the_requested_change(tmp_path):
    """Constant step, no noise, far from the bounds: programmed change + kept residual = requested change."""
    sim = net(tmp_path, **QUIET)
    sim.load_conductances([torch.full_like(w, 0.1) for w in sim.weights])  # mid-range: no bound is reached
    start = [w.clone() for w in sim.weights]
    total = [torch.zeros_like(w) for w in sim.weights]
    for s in range(20):
        u = update(2, 2e-4, seed=s)
        for t, d in zip(total, u.dense_weights()):
            t += d
        sim.program(u)
    prog = sim.programmer
    for j, (w, w0, t) in enumerate(zip(sim.weights, start, total)):
        moved = w - w0
        steps = moved / prog.dw_S
        torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-6)  # whole pulses only
        torch.testing.assert_close(moved + prog.residual[j] * prog.dw_S, t, rtol=0, atol=1e-12)
        assert (prog.residual[j].abs() < 1).all()
    stats = sim.programming_stats()
    assert stats["pulses_per_update"] > 0
    assert stats["programming_s_per_update"] == pytest.approx(stats["pulses_per_update"] * 1e-5, rel=0.02)


def test_stochastic_rounding_is_unbiased(tmp_path):
    sim = net(tmp_path, over={"devices.rounding": "stochastic"}, **QUIET)
    sim.load_conductances([torch.full_like(w, 0.05) for w in sim.weights])  # 60 steps up stay inside
    w0 = sim.weights[1].clone()
    frac = 0.3  # a change of 0.3 steps on every device of layer 1, 200 times: 60 steps expected
    for _ in range(200):
        sim.program(ConductanceUpdate([torch.zeros_like(sim.weights[0]),
                                       torch.full_like(sim.weights[1], frac * sim.programmer.dw_S)]))
    steps = ((sim.weights[1] - w0) / sim.programmer.dw_S)
    # each device: Binomial(200, 0.3), sd 6.5; mean over 36 devices has sd 1.1
    assert abs(steps.mean().item() - 60) < 4.5
    assert steps.std().item() > 3  # really random, not rounded the same way everywhere


def test_cpu_gather_path_equals_the_masked_gpu_path(tmp_path):
    """The CPU path (only pulsed devices gathered) and the GPU path (every device, masked) program the same."""
    for mode in ("pulses", "write-verify"):
        a = net(tmp_path, model="ecram", over={"devices.update": mode}, **QUIET)
        b = net(tmp_path, model="ecram", over={"devices.update": mode}, **QUIET)
        b.host_checks = False
        for s in range(10):
            a.program(update(2, 3e-3, seed=s))
            b.program(update(2, 3e-3, seed=s))
        for wa, wb in zip(a.weights, b.weights):
            torch.testing.assert_close(wa, wb, rtol=0, atol=1e-15)
        assert a.programming_stats()["pulses_per_update"] == b.programming_stats()["pulses_per_update"]


def test_write_verify_lands_within_its_tolerance(tmp_path):
    sim = net(tmp_path, model="ecram", over={"devices.update": "write-verify", "devices.verify_max_pulses": 200,
                                       "devices.verify_max_reversals": 200},
              **{**QUIET, "dw_min_std": 0.3})
    w0 = [w.clone() for w in sim.weights]
    u = update(2, 2e-3, seed=3)
    sim.program(u)
    target = [(w + d).clamp(0, 0.2) for w, d in zip(w0, u.dense_weights())]
    tol = sim.programmer.tol_S
    for w, t, t0 in zip(sim.weights, target, w0):
        due = (t - t0).abs() > tol
        assert ((w - t).abs()[due] <= tol).all()
        assert torch.equal(w[~due], t0[~due])  # changes below the tolerance wait
    stats = sim.programming_stats()
    assert stats["verify_reads_per_update"] > stats["pulses_per_update"] > 0
    assert 0 < stats["verify_residual_S"] <= tol


def test_pulsed_devices_get_a_range_sized_to_the_network_and_need_a_pulsed_mode(tmp_path):
    # unset: 2.5 x the largest initial conductance 0.7/sqrt(fan_in); digits 64-128-10: fan_in 128 (doubled inputs)
    assert build_config({}, {"devices.model": "ecram"}).network.g_max == pytest.approx(0.15)
    paper = build_config({}, {"devices.model": "capacitor", "data.dataset": "fashion-mnist", "network.hidden": [1024]})
    assert paper.network.g_max == pytest.approx(0.055)  # the 1024-node hidden layer starts highest: 0.7/32
    assert build_config({}, {"devices.model": "ecram", "network.g_max": 0.3}).network.g_max == 0.3  # given: kept
    assert build_config({}, {}).network.g_max is None  # the ideal model: unbounded
    config = tmp_path / "c.yaml"
    config.write_text("network: {g_max: null}\ndevices: {model: ecram}\n")
    with pytest.raises(ConfigError, match=r"network.g_max: the device model 'ecram' maps its normalized range "
                                          r"\[-0.83, 1.17\] onto \[g_min, g_max\] S, so it needs g_max; set --g-max"):
        load_config(config)
    with pytest.raises(ConfigError, match="update 'exact' programs changes exactly and ignores"):
        build_config({}, {"devices.model": "ecram", "devices.update": "exact", "network.g_max": 1.0})
    with pytest.raises(ConfigError, match="devices.model: 'nope' is neither a preset"):
        build_config({}, {"devices.model": "nope"})


def test_train_cli_with_a_device_model(tmp_path):
    cmd = [sys.executable, "-m", "hil.cli", "train", "--epochs", "1", "--train-limit", "200", "--test-limit", "50",
           "--hidden", "8", "--device-model", "reram-es", "--runs-dir", str(tmp_path), "--no-progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    row = json.loads(next(tmp_path.glob("*/metrics.jsonl")).read_text().splitlines()[-1])
    assert row["pulses_per_update"] > 0 and row["programming_s_per_update"] > 0
    saved = yaml.safe_load(next(tmp_path.glob("*/config.yaml")).read_text())
    assert saved["network"]["g_max"] == 0.62  # no --g-max: 2.5 x 0.7/sqrt(8), the hidden layer's start
    bad_cmd = [c if c != "reram-es" else "nope" for c in cmd]
    bad = subprocess.run(bad_cmd, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.startswith("hil: error: devices.model: 'nope' is neither a preset") and bad.stderr.count("\n") == 1


def test_calibrate_adds_the_programming_time_of_a_pulsed_run(tmp_path, capsys):
    from hil.cli import main

    assert main(["train", "--epochs", "1", "--train-limit", "80", "--test-limit", "20", "--hidden", "8",
                 "--device-model", "ecram", "--g-max", "0.2", "--no-progress", "--runs-dir", str(tmp_path / "t")]) == 0
    (trained,) = (tmp_path / "t").iterdir()
    prog = json.loads((trained / "metrics.jsonl").read_text().splitlines()[-1])["programming_s_per_update"]
    assert main(["characterize", "--sigma", "1e-3", "--readings", "50", "--runs-dir", str(tmp_path / "ch")]) == 0
    (ch,) = (tmp_path / "ch").iterdir()
    times = {}
    for extra in ([], ["--programming-from", str(trained)]):
        out = tmp_path / f"cal{len(extra)}"
        assert main(["calibrate", "--characterization", str(ch / "characterize.json"), "--sigma-target", "5e-4",
                     "--runs-dir", str(out), *extra]) == 0
        (cal,) = out.iterdir()
        times[len(extra)] = json.loads((cal / "calibration.json").read_text())["seconds_per_update"]
    assert prog > 0 and times[2] == pytest.approx(times[0] + prog, rel=1e-9)
    assert "programming the update's pulses" in capsys.readouterr().out
    assert main(["calibrate", "--reading-sigma", "1e-3", "--sigma-target", "5e-4", "--programming-s", "0.1",
                 "--runs-dir", str(tmp_path / "bad")]) == 2


def test_drift_follows_each_device_since_its_last_write(tmp_path):
    """G(t) = G_written ((t + t0)/t0)^-nu on the read-noise clock; a device written now starts again from t = 0."""
    sim = net(tmp_path, model="gokmen-vlasov", **{**QUIET, "drift_nu": 0.1, "drift_t0_s": 1.0})
    sim.load_conductances([torch.full_like(w, 0.1) for w in sim.weights])
    nothing = ConductanceUpdate([torch.zeros_like(w) for w in sim.weights])
    sim.program(nothing)
    torch.testing.assert_close(sim.weights[1], torch.full_like(sim.weights[1], 0.1))
    sim.noise.time_s = 99.0  # 99 s of readings later
    sim.program(nothing)
    torch.testing.assert_close(sim.weights[1], torch.full_like(sim.weights[1], 0.1 * 100 ** -0.1))
    step = sim.programmer.dw_S
    change = torch.zeros_like(sim.weights[1])
    change[:, 0, :] = 2.5 * step  # two pulses into row 0 now
    sim.program(ConductanceUpdate([torch.zeros_like(sim.weights[0]), change]))
    torch.testing.assert_close(sim.weights[1][:, 0], torch.full_like(sim.weights[1][:, 0], 0.1 + 2 * step))
    torch.testing.assert_close(sim.weights[1][:, 1:], torch.full_like(sim.weights[1][:, 1:], 0.1 * 100 ** -0.1))
