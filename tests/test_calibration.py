"""Noise statistics, Allan deviation, the choice of N, and their commands."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from calibration.allan import analyse_allan, overlapping_adev
from calibration.samples import BenchTiming, CalibrationError, choose_samples
from calibration.statistics import NoiseDataError, estimate_noise
from hil.cli import main
from sim_backend.noise import ReadNoise


def sim_readings(m, nodes=16, seed=0, **model):
    noise = ReadNoise(model.pop("sigma", 1e-3), 1, "cpu", torch.float64, **model)
    g = torch.Generator().manual_seed(seed)
    return noise.sample(torch.zeros(1, 1, nodes, dtype=torch.float64), m, g)[:, 0, 0].numpy()


def test_interval_on_sigma_covers_95_percent_of_2000_trials():
    rng = np.random.default_rng(2026)
    true = 3e-4
    est = estimate_noise(rng.normal(1.0, true, size=(50, 2000)))  # each column one trial of 50 readings
    coverage = np.mean((est.sigma_low <= true) & (true <= est.sigma_high))
    assert 0.93 <= coverage <= 0.97, coverage
    assert est.pooled_low <= true <= est.pooled_high
    assert np.allclose(est.u_mean, est.sigma / math.sqrt(50))


def test_white_noise_allan_slope_and_no_floor():
    res = analyse_allan(sim_readings(8192))
    assert abs(res.white_slope + 0.5) <= 0.05, res.white_slope
    assert res.floor is None and res.n_max is None
    assert abs(res.white_sigma - 1e-3) < 2e-5


def test_flicker_floor_found_and_n_max_finite():
    res = analyse_allan(sim_readings(8192, flicker_floor_V=2e-4))
    assert res.floor is not None and 1.6e-4 < res.floor < 2.4e-4, res.floor
    assert res.n_max is not None and 5 < res.n_max < 100, res.n_max  # corner ~ (1e-3/2e-4)^2 = 25


def test_drift_found():
    res = analyse_allan(sim_readings(8192, drift_V_per_s=2e-4))
    assert res.drift_var > 0 and res.n_max is not None


def test_lag1_and_effective_n_see_correlation():
    white = estimate_noise(sim_readings(4000))
    pink = estimate_noise(sim_readings(4000, flicker_floor_V=5e-4))
    assert abs(np.median(white.lag1)) < 0.05 and np.median(white.n_eff) > 3500
    assert np.median(pink.lag1) > 0.2 and np.median(pink.n_eff) < 2500


def test_overlapping_adev_matches_allantools():
    allantools = pytest.importorskip("allantools")
    y = np.random.default_rng(1).normal(size=1024)
    m, ours = overlapping_adev(y)
    taus, ad, _, _ = allantools.oadev(y, rate=1.0, data_type="freq", taus=m.astype(float))
    np.testing.assert_allclose(ours[:, 0], ad, rtol=1e-10)


@pytest.mark.parametrize("bad,msg", [(np.zeros((0, 3)), "no readings"), (np.zeros((1, 3)), "single reading"),
                                     (np.array([[1.0, 2.0], [np.nan, 1.0], [1.0, 1.0]]), "NaN")])
def test_bad_samples_raise(bad, msg):
    with pytest.raises(NoiseDataError, match=msg):
        estimate_noise(bad)


def test_choose_samples():
    c = choose_samples(1e-3, 2.5e-4, timing=BenchTiming(0.02, 0.001, 20, parallel_channels=4))
    assert c.samples == 16 and not c.capped
    assert math.isclose(c.seconds_per_update, 2 * 16 * 0.021 * 5)
    with pytest.raises(CalibrationError, match="sigma_target"):
        choose_samples(1e-3, 0.0)
    with pytest.raises(CalibrationError, match="sigma_target"):
        choose_samples(1e-3, -1e-4)
    pink = analyse_allan(sim_readings(8192, flicker_floor_V=2e-4))
    with pytest.raises(CalibrationError, match="below the Allan floor"):
        choose_samples(1e-3, 1.5e-4, pink)
    capped = choose_samples(1e-3, 2.05e-4, pink)
    assert capped.capped and capped.samples == pink.n_max and capped.sigma_eff > 2.05e-4
    assert any("Capped at N_max" in line for line in capped.reasoning)


def test_characterize_recovers_sigma_and_calibrate_uses_it(tmp_path, capsys):
    assert main(["characterize", "--sigma", "1e-3", "--nplc", "4", "--readings", "1000", "--runs-dir", str(tmp_path)]) == 0
    (run,) = tmp_path.iterdir()
    rep = json.loads((run / "characterize.json").read_text())
    est = rep["estimate"]
    assert est["pooled_low"] <= 1e-3 / 2 <= est["pooled_high"]  # white noise falls as 1/sqrt(NPLC)
    assert rep["allan"]["floor_V"] is None and (run / "allan.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "pooled sigma" in out and "white slope" in out
    assert main(["calibrate", "--characterization", str(run / "characterize.json"), "--sigma-target", "1e-4",
                 "--runs-dir", str(tmp_path / "cal")]) == 0
    (cal,) = (tmp_path / "cal").iterdir()
    choice = json.loads((cal / "calibration.json").read_text())
    assert choice["samples"] == math.ceil((est["pooled_high"] / 1e-4) ** 2)
    # the saved N feeds `hil train --config`
    assert main(["train", "--config", str(cal / "calibration.yaml"), "--epochs", "1", "--train-limit", "40",
                 "--test-limit", "20", "--no-progress", "--runs-dir", str(tmp_path / "t")]) == 0
    (trained,) = (tmp_path / "t").iterdir()
    assert f"samples: {choice['samples']}" in (trained / "config.yaml").read_text()


def test_characterize_with_flicker_reports_floor_and_caps(tmp_path, capsys):
    assert main(["characterize", "--sigma", "1e-3", "--flicker", "2e-4", "--readings", "4000",
                 "--runs-dir", str(tmp_path)]) == 0
    (run,) = tmp_path.iterdir()
    allan = json.loads((run / "characterize.json").read_text())["allan"]
    assert allan["floor_V"] and allan["n_max"]
    assert main(["calibrate", "--characterization", str(run / "characterize.json"), "--sigma-target", "1e-4",
                 "--runs-dir", str(tmp_path / "c")]) == 2
    assert "below the Allan floor" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_calibration_bad_input_one_line(tmp_path, capsys):
    assert main(["characterize", "--readings", "1", "--sigma", "1e-3", "--runs-dir", str(tmp_path)]) == 2
    assert main(["characterize", "--runs-dir", str(tmp_path)]) == 2  # no noise configured
    assert main(["calibrate", "--sigma-target", "0", "--reading-sigma", "1e-3", "--runs-dir", str(tmp_path)]) == 2
    assert main(["calibrate", "--sigma-target", "1e-4", "--runs-dir", str(tmp_path)]) == 2
    errs = capsys.readouterr().err.strip().splitlines()
    assert len(errs) == 4 and all(e.startswith("hil: error: ") for e in errs)
    assert "--readings" in errs[0] and "no noise" in errs[1] and "sigma_target" in errs[2] and "--characterization" in errs[3]
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


@pytest.mark.slow
def test_sweep_samples_shows_sqrt_n(tmp_path, capsys):
    """N = 4 readings raise sigma_crit by 2 +- 30% (digits, 64-128-10, 800 training samples, 4 epochs, 6 trials)."""
    code = main(["sweep", "samples", "--samples-list", "1,4", "--sigma-min", "1e-3", "--sigma-max", "2e-2", "--points", "9",
                 "--trials", "6", "--epochs", "4", "--train-limit", "800", "--no-progress", "--runs-dir", str(tmp_path)])
    assert code == 0
    (run,) = tmp_path.iterdir()
    rows = list(csv.DictReader(open(run / "critical.csv")))
    ratio = float(rows[1]["ratio"])
    assert 1.4 <= ratio <= 2.6, rows
    for r in rows:  # a 95% bootstrap interval around each sigma_crit, inside the grid
        assert 1e-3 <= float(r["sigma_crit_lo_V"]) <= float(r["sigma_crit_V"]) <= float(r["sigma_crit_hi_V"]) <= 2e-2
    table = list(csv.DictReader(open(run / "table.csv")))
    n1 = [float(r["mean_test_acc"]) for r in table if r["samples"] == "1"]
    assert n1[0] > 0.7 and n1[-1] < 0.2  # accuracy falls toward chance above sigma_crit
    for png in ("sigma_crit_vs_N.png", "accuracy_vs_sigma.png"):
        assert (run / png).stat().st_size > 1000


def test_sweep_sigma_finds_critical_sigma(tmp_path, capsys):
    code = main(["sweep", "sigma", "--sigma", "1e-3", "--sigma", "4e-3", "--sigma", "3e-2", "--trials", "3", "--epochs", "3",
                 "--train-limit", "600", "--no-progress", "--runs-dir", str(tmp_path)])
    assert code == 0
    (run,) = tmp_path.iterdir()
    crit = json.loads((run / "critical.json").read_text())
    assert 1e-3 <= crit["sigma_crit_V"] <= 3e-2
    means = [p["mean_acc"] for p in crit["points"]]
    assert means[0] > 0.6 and means[-1] < 0.2
    lo, hi = crit["sigma_crit_95_V"]
    assert lo <= crit["sigma_crit_V"] <= hi
    assert all(p["mean_acc_95"][0] <= p["mean_acc"] <= p["mean_acc_95"][1] for p in crit["points"])
    assert "sigma_crit" in capsys.readouterr().out
    # calibrate --from-sweep picks its target from this folder
    assert main(["calibrate", "--from-sweep", str(run), "--reading-sigma", "2e-2", "--runs-dir", str(tmp_path / "c")]) == 0
    (cal,) = (tmp_path / "c").iterdir()
    choice = json.loads((cal / "calibration.json").read_text())
    assert choice["sigma_target"] <= crit["sigma_crit_V"]
    assert choice["samples"] == math.ceil((2e-2 / choice["sigma_target"]) ** 2 - 1e-9)


def test_find_critical_sigma_api_with_lab_settings():
    """The Python API from a run config alone; a lab config supplies the bench's network and input gain."""
    from pathlib import Path

    from calibration.critical import find_critical_sigma
    from drivers.lab import load_lab
    from hil.core.config import build_config

    lab = load_lab(Path(__file__).resolve().parents[1] / "examples" / "lab-emulated.yaml")
    cfg = build_config({}, {"train.epochs": 2, "data.train_limit": 200})
    res = find_critical_sigma(cfg, [1e-3, 0.3], trials=2, threshold=0.8, lab=lab)
    assert [p.trials for p in res.points] == [2, 2]
    assert res.trials[0].seed == 0 and len(res.trials[0].test_acc) == 2
    # the bench's 16-8-2 two-class task (from the lab's run: section), not the 64-128-10 default
    assert res.points[0].mean_acc > 0.8 and res.points[1].mean_acc < 0.8
    assert res.sigma_crit is not None and 1e-3 <= res.sigma_crit < 0.3
