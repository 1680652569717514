"""Issue 21: the online sigma estimate, adaptive N, noise schedules and reading accounting."""

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from drivers.lab import LabConfig
from hil.cli import main
from hil.core.config import ConfigError, Schedule, build_config
from hil.core.ep import reading_weights
from hil.core.sigma_estimate import SigmaEstimator, VarianceSums, noisy_nodes, stats_sums
from sim_backend.emulator import EmulatedLab
from sim_backend.noise import WhiteReadNoise
from sim_backend.streams import ReplicaStreams

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lab-emulated.yaml"


def rows_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def only_run(runs_dir: Path) -> Path:
    (run,) = [p for p in runs_dir.iterdir() if p.is_dir()]
    return run


def test_interval_covers_true_sigma_95_percent_of_1000_estimates():
    """1,000 estimates (replicas), each from 4 readings of 2 states of 5 nodes of the simulator's noise model
    (30 degrees of freedom): the chi-squared 95% interval covers the true sigma 93-97% of the time."""
    sigma, n, reps = 3e-3, 4, 1000
    noise = WhiteReadNoise(sigma, reps, "cpu", torch.float64)
    voltages = torch.rand(reps, 2, 5, generator=torch.Generator().manual_seed(21), dtype=torch.float64)
    st = noise.stats(voltages, reading_weights(n, reps, dtype=torch.float64), ReplicaStreams(range(reps), "cpu", salt=21))
    sums = VarianceSums(reps, 5)
    sums.add(*stats_sums(st, torch.full((reps,), n)))
    est, lo, hi = sums.sigma()
    assert sums.pooled()[1][0] == 2 * 5 * (n - 1)
    covered = float(((lo <= sigma) & (sigma <= hi)).double().mean())
    assert 0.93 <= covered <= 0.97, covered
    assert abs(float(est.mean()) / sigma - 1) < 0.02  # and the estimates centre on sigma


def test_drift_restarts_the_running_estimate_and_names_a_noisy_node():
    gen = ReplicaStreams([1], "cpu")
    est = SigmaEstimator(1, 6, drift_alpha=1e-3)
    node_sigma = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 3.0]) * 1e-3

    def block(scale):
        noise = WhiteReadNoise(1.0, 1, "cpu", torch.float64)
        st = noise.stats(torch.zeros(1, 50, 6, dtype=torch.float64), reading_weights(4, 1, dtype=torch.float64), gen)
        st.var = st.var * (scale * node_sigma) ** 2  # unit-variance readings scaled per node
        est.add(*stats_sums(st, torch.tensor([4])))

    for _ in range(5):
        block(1.0)
        assert est.check(0) == []
    before = float(est.sigma()[0][0])
    block(4.0)  # every node's noise steps up 4x
    (event,) = est.check(6)
    assert event.sigma_after_V / event.sigma_before_V == pytest.approx(4.0, rel=0.15)
    assert float(est.sigma()[0][0]) / before == pytest.approx(4.0, rel=0.15)  # the estimate restarted at the new level
    (named,) = noisy_nodes(est.epoch, ratio=1.5)
    assert [i for i, _, _ in named] == [5]


def test_schedules_and_config_errors():
    s = Schedule(kind="ramp", start=0.2, end=0.6, factor=0.25)
    assert s.at(0.1) == 1.0 and s.at(0.4) == pytest.approx(0.5) and s.at(0.9) == 0.25
    assert Schedule(kind="step", start=0.5, factor=4).at(0.5) == 4.0
    with pytest.raises(ConfigError, match="sigma_target"):
        build_config({}, {"noise.samples": "auto"})
    with pytest.raises(ConfigError, match="noise.sigma_schedule.end"):
        build_config({}, {"noise.sigma_schedule": {"kind": "ramp", "start": 0.5, "end": 0.4}})
    with pytest.raises(ConfigError, match="noise.samples"):
        build_config({}, {"noise.samples": 0})


def test_train_auto_holds_the_target_on_digits(runs_dir, capsys):
    """The issue's acceptance command: sigma 0.01 V, target 0.002 V -> sigma estimate within 10%, N near 25."""
    assert main(["train", "--sigma", "0.01", "--samples", "auto", "--sigma-target", "0.002", "--epochs", "2",
                 "--no-progress", "--runs-dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    run = only_run(runs_dir)
    rows = rows_of(run)
    for r in rows:
        assert abs(r["sigma_estimate_V"] / 0.01 - 1) < 0.1, r
        assert r["sigma_estimate_low_V"] <= 0.01 <= r["sigma_estimate_high_V"] * 1.001, r
    assert 22 <= rows[-1]["samples"] <= 28, rows[-1]
    summary = json.loads((run / "run.json").read_text())["reading"]
    assert summary["readings"] == rows[-1]["readings"] and summary["reading_time_s"] > 0
    assert summary["worst_case_readings"] >= summary["readings"]
    assert "a fixed N = " in out
    assert main(["runs", "--runs-dir", str(runs_dir)]) == 0
    assert "readings" in capsys.readouterr().out


def test_sigma_step_raises_n_and_is_logged_as_drift(runs_dir):
    """A simulated 4x step of sigma halfway: N goes up about 16x, and the drift is in the metrics."""
    assert main(["train", "--sigma", "0.004", "--samples", "auto", "--sigma-target", "0.002", "--epochs", "2",
                 "--train-limit", "400", "--set", "noise.sigma_schedule={kind: step, start: 0.5, factor: 4}",
                 "--set", "noise.adapt.every_steps=10", "--no-progress", "--runs-dir", str(runs_dir)]) == 0
    rows = rows_of(only_run(runs_dir))
    assert rows[0]["samples"] <= 5 and rows[1]["samples"] > 40, rows
    assert rows[1]["sigma_estimate_V"] > 3 * rows[0]["sigma_estimate_V"]
    assert any(e["sigma_after_V"] > 3 * e["sigma_before_V"] for e in rows[1]["drift"])


def test_fixed_n_with_target_adds_noise_and_n1_estimates_from_a_subset(runs_dir):
    """No simulated noise, N = 1 and a target of 3 mV: the simulator adds noise up to it, and an extra reading of
    a rotating half of the nodes estimates it."""
    assert main(["train", "--samples", "1", "--sigma-target", "0.003", "--epochs", "1", "--train-limit", "200",
                 "--set", "noise.adapt.estimate_fraction=0.5", "--no-progress", "--runs-dir", str(runs_dir)]) == 0
    (row,) = rows_of(only_run(runs_dir))
    assert abs(row["sigma_estimate_V"] / 0.003 - 1) < 0.05 and row["samples"] == 1
    # 50 steps x 4 samples x 138 nodes x 2 phases, 69 extra readings a sample, and the evaluation's 360 x 138
    assert row["readings"] == 50 * 4 * 138 * 2 + 50 * 4 * 69 + 360 * 138


def test_bench_adapts_n_and_names_the_noisy_route(tmp_path, capsys):
    """The emulated lab with one crosspoint 5x noisier (a bad contact): `hil train --lab ... --samples auto`
    runs end to end over pyvisa-py, its metrics carry N and sigma per epoch, and the route is named."""
    tree = yaml.safe_load(EXAMPLE.read_text())
    tree["emulator"]["channel_noise_V"] = {"switch/1A03": 1.0e-5}
    lab_path = tmp_path / "lab.yaml"
    lab_path.write_text(yaml.safe_dump(tree))
    with EmulatedLab(LabConfig.model_validate(tree)) as emu:
        os.environ["HIL_EMULATOR_REGISTRY"] = str(emu.write_registry(tmp_path / "reg.json"))
        try:
            code = main(["train", "--lab", str(lab_path), "--samples", "auto", "--sigma-target", "3e-4",
                         "--train-limit", "40", "--test-limit", "20", "--epochs", "2", "--set",
                         "noise.adapt.every_steps=4", "--no-progress", "--runs-dir", str(tmp_path / "runs")])
            # a target that N = 1 meets: a rotating quarter of the nodes is read a second time, and only those
            code1 = main(["train", "--lab", str(lab_path), "--samples", "auto", "--sigma-target", "1e-2",
                          "--set", "noise.adapt.start_samples=1", "--train-limit", "20", "--test-limit", "8",
                          "--epochs", "1", "--no-progress", "--runs-dir", str(tmp_path / "runs1")])
        finally:
            del os.environ["HIL_EMULATOR_REGISTRY"]
        assert code == 0 and code1 == 0 and emu.outputs() == {}
    (one,) = rows_of(only_run(tmp_path / "runs1"))
    assert one["samples"] == 1 and 0.5e-3 < one["sigma_estimate_V"] < 1.0e-3, one
    # 5 steps x 4 samples x 10 nodes x 2 phases, round(0.25 x 10) = 2 nodes again per sample, evaluation 8 x 10
    assert one["readings"] == 5 * 4 * 10 * 2 + 5 * 4 * 2 + 8 * 10
    out = capsys.readouterr().out
    rows = rows_of(only_run(tmp_path / "runs"))
    assert [r["epoch"] for r in rows] == [1, 2]
    # pooled over 10 nodes: 9 at 2 uV and one at 10 uV (5 mV per normalized volt): sqrt((9*0.16 + 4)/10) = 0.74e-3
    assert 0.6e-3 < rows[-1]["sigma_estimate_V"] < 0.9e-3, rows[-1]
    assert rows[-1]["samples"] >= 5 and "drift" not in rows[-1]  # N: (0.74e-3 / 3e-4)^2 = 6.1 -> 7
    (noisy,) = rows[-1]["noisy_nodes"]
    assert noisy["node"] == "hidden1[2] (smu_hidden/1 via switch/1A03)" and noisy["times_median"] > 3
    assert "noisy node: hidden1[2] (smu_hidden/1 via switch/1A03)" in out


def test_refusals_name_the_setting(tmp_path, capsys):
    bad = {"emulator": {"channel_noise_V": {"switch/9Z99": 1e-5}}}
    tree = yaml.safe_load(EXAMPLE.read_text())
    tree["emulator"].update(bad["emulator"])
    with pytest.raises(ValueError, match="channel_noise_V.switch/9Z99"):
        LabConfig.model_validate(tree)
    # a bench with a fixed N cannot take a target (the simulator alone adds noise), before anything connects
    assert main(["train", "--lab", str(EXAMPLE), "--sigma-target", "1e-3", "--runs-dir", str(tmp_path / "r")]) == 2
    assert "noise.sigma_target" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(["sweep", "sigma", "--sigma", "1e-3", "--samples", "auto", "--sigma-target", "1e-3",
                 "--runs-dir", str(tmp_path / "r")]) == 2
    assert "--samples auto" in capsys.readouterr().err


def test_target_from_a_sweep_and_n_max_from_a_characterization(tmp_path):
    """The files' numbers land in the config (and so in the run's config.yaml); a file without them is one error."""
    from calibration.commands import CommandError, resolve_adaptive_inputs

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    points = [{"sigma_V": s} for s in (1e-6, 1e-5, 1e-4)]
    (sweep / "critical.json").write_text(json.dumps({"sigma_crit_V": 4e-5, "sigma_opt_V": 1e-5, "points": points}))
    ch = tmp_path / "characterize.json"
    ch.write_text(json.dumps({"allan": {"n_max": 3}}))
    cfg = build_config({}, {"noise.samples": "auto", "noise.adapt.target_from_sweep": str(sweep),
                            "noise.adapt.allan_from": str(ch)})
    resolve_adaptive_inputs(cfg)
    assert cfg.noise.sigma_target == 1e-5 and cfg.noise.adapt.n_max == 3 and cfg.noise.adapt.start_samples == 3
    ch.write_text(json.dumps({"estimate": {}}))
    with pytest.raises(CommandError, match="--allan-from"):
        resolve_adaptive_inputs(build_config({}, {"noise.sigma_target": 1e-3, "noise.adapt.allan_from": str(ch)}))
    with pytest.raises(CommandError, match="give one of them"):
        resolve_adaptive_inputs(build_config({}, {"noise.sigma_target": 1e-3,
                                                  "noise.adapt.target_from_sweep": str(sweep)}))


def test_resume_keeps_the_adapted_n_and_the_counts(runs_dir, capsys):
    """A resumed adaptive run goes on with the N it had chosen and its reading counts, not from the start."""
    args = ["--sigma", "0.01", "--samples", "auto", "--sigma-target", "0.002", "--train-limit", "200",
            "--set", "noise.adapt.every_steps=10", "--no-progress"]
    assert main(["train", *args, "--epochs", "1", "--runs-dir", str(runs_dir)]) == 0
    run = only_run(runs_dir)
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    first, second = rows_of(run)
    n = second["samples"]  # (0.01 / 0.002)^2 = 25
    assert first["samples"] < 25 and n == 25.0  # epoch 1 began at N = 4, epoch 2 did not
    # 50 steps x 4 samples x 138 nodes x 2 phases at N, and the evaluation of 360 samples
    assert second["readings"] - first["readings"] == 50 * 4 * 138 * 2 * n + 360 * 138 * n
    assert json.loads((run / "run.json").read_text())["reading"]["readings"] == second["readings"]
