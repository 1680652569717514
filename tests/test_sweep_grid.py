"""`hil sweep grid`: cells over any config fields, per-cell table, heat maps, clear errors, resume by chunks."""

from __future__ import annotations

import csv

import pytest

from hil.cli import main

SMALL = ["--trials", "2", "--epochs", "2", "--train-limit", "300", "--test-limit", "100", "--max-replicas", "4",
         "--no-progress"]
GRID = ["sweep", "grid", "--vary", "ep.beta=0.5,1", "--vary", "ep.eta_eff=0.01,0.03", "--sigma", "0",
        "--sigma", "0.02", *SMALL]


def _rows(path):
    return list(csv.DictReader(open(path)))


def test_grid_writes_cells_table_trials_and_heat_map(tmp_path, capsys):
    assert main([*GRID, "--runs-dir", str(tmp_path)]) == 0
    (folder,) = list(tmp_path.iterdir())
    table = _rows(folder / "table.csv")
    cells = {(float(r["noise.sigma"]), float(r["ep.beta"]), float(r["ep.eta_eff"])) for r in table}
    assert cells == {(s, b, e) for s in (0.0, 0.02) for b in (0.5, 1.0) for e in (0.01, 0.03)}
    assert all(int(r["trials"]) == 2 and float(r["sigma_V"]) == float(r["noise.sigma"]) for r in table)
    quiet = [r for r in table if float(r["sigma_V"]) == 0]
    loud = [r for r in table if float(r["sigma_V"]) == 0.02]
    assert min(float(r["mean_test_acc"]) for r in quiet) > max(float(r["mean_test_acc"]) for r in loud)
    assert all(0 <= float(r["convergence_rate"]) <= 1 and float(r["best_test_acc"]) >= float(r["mean_test_acc"])
               for r in table)
    trials = _rows(folder / "trials.csv")
    assert len(trials) == 16 and {t["seed"] for t in trials} == {"0", "1"}
    assert all(t["epochs_done"] == "2" for t in trials)
    png = (folder / "convergence_heatmap.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert "rate" in capsys.readouterr().out


def test_eta_eff_sets_eta_per_cell():
    from hil.core.config import build_config
    from hil.grid import Grid, check_vary

    grid = Grid(build_config({}, {}), check_vary([("ep.beta", [0.5, 2.0]), ("ep.eta_eff", [0.01, 0.03])]), 1)
    etas = {(c.ep.beta, round(c.ep.eta, 12)) for c in grid.configs}
    assert etas == {(0.5, 0.005), (0.5, 0.015), (2.0, 0.02), (2.0, 0.06)}


def test_list_values_vary_and_a_bad_one_is_one_line(tmp_path, capsys):
    from hil.grid import parse_vary

    assert parse_vary("network.hidden=[64,32],[64]") == ("network.hidden", [[64, 32], [64]])
    with pytest.raises(SystemExit):
        main(["sweep", "grid", "--vary", "network.hidden=[64,32", "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "not readable" in err and "Traceback" not in err


def test_varying_the_depth_refuses_settings_sized_to_the_base(tmp_path, capsys):
    """A deeper cell would keep the gain, eta and diodes sized for the base's single layer."""
    argv = ["sweep", "grid", "--vary", "network.hidden=[16],[16,8]", "--trials", "1", "--epochs", "1",
            "--no-progress", "--runs-dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "network.input_gain" in err and "sized" in err
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_unknown_field_is_one_clear_error(tmp_path, capsys):
    assert main(["sweep", "grid", "--vary", "ep.betta=1,2", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "ep.betta" in err and "not a config field" in err and len(err.strip().splitlines()) == 1
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # nothing written for bad input


def test_a_bad_value_names_the_cell_and_field(tmp_path, capsys):
    assert main(["sweep", "grid", "--vary", "ep.beta=1,-1", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "ep.beta=-1" in err and "ep.beta" in err


@pytest.mark.parametrize("argv, named", [
    (["--vary", "ep.beta=0.5,1", "--vary", "ep.beta=2"], "ep.beta: given twice"),
    (["--vary", "ep.beta=0.5,1", "--beta", "2"], "also set by a flag"),
    (["--vary", "ep.eta_eff=0.01,0.02", "--eta", "0.1"], "ep.eta_eff"),
    (["--vary", "noise.sigma=0,0.01", "--sigma", "0"], "--sigma and --vary noise.sigma"),
    (["--vary", "ep.eta=0.01", "--vary", "ep.eta_eff=0.01"], "vary one"),
])
def test_a_key_given_twice_is_refused(tmp_path, capsys, argv, named):
    assert main(["sweep", "grid", *argv, "--runs-dir", str(tmp_path)]) == 2
    assert named in capsys.readouterr().err
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_repeated_scalar_flag_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as ex:
        main(["sweep", "grid", "--vary", "ep.beta=1,2", "--trials", "2", "--trials", "3", "--runs-dir", str(tmp_path)])
    assert ex.value.code == 2 and "given twice" in capsys.readouterr().err


def test_resume_after_interruption_gives_the_same_table(tmp_path, monkeypatch):
    """Ctrl-C after two of four chunks; `hil sweep resume` trains the other two: the same table and trials."""
    import hil.grid_run as grid_run

    whole = ["sweep", "grid", "--vary", "ep.beta=0.5,1", "--sigma", "0", "--sigma", "0.02", "--trials", "2",
             "--epochs", "2", "--train-limit", "300", "--test-limit", "100", "--max-replicas", "2", "--no-progress"]
    assert main([*whole, "--runs-dir", str(tmp_path / "whole")]) == 0
    original = grid_run.GridRecorder.__call__

    def stop_after_two(self, chunk, result):
        original(self, chunk, result)
        if len(self.done) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(grid_run.GridRecorder, "__call__", stop_after_two)
    assert main([*whole, "--runs-dir", str(tmp_path / "cut")]) == 130
    (cut,) = list((tmp_path / "cut").iterdir())
    assert sorted(t["epochs_done"] for t in _rows(cut / "trials.csv")) == ["0"] * 4 + ["2"] * 4
    monkeypatch.setattr(grid_run.GridRecorder, "__call__", original)
    assert main(["sweep", "resume", str(cut), "--no-progress", "--executor", "inprocess"]) == 0
    (done,) = list((tmp_path / "whole").iterdir())
    assert _rows(cut / "table.csv") == _rows(done / "table.csv")
    assert _rows(cut / "trials.csv") == _rows(done / "trials.csv")


def test_list_valued_cells_train_and_show_as_written(tmp_path, capsys):
    """A width alone keeps the sized gain, eta and diodes: the grid trains; cells print and store as [16]."""
    argv = ["sweep", "grid", "--vary", "network.hidden=[16],[24]", "--sigma", "0", "--sigma", "0.001", "--trials", "1",
            "--epochs", "1", "--train-limit", "100", "--test-limit", "50", "--no-progress", "--runs-dir", str(tmp_path)]
    assert main(argv) == 0
    (folder,) = list(tmp_path.iterdir())
    table = _rows(folder / "table.csv")
    assert [(r["network.hidden"], float(r["noise.sigma"])) for r in table] == [
        ("[16]", 0.0), ("[16]", 0.001), ("[24]", 0.0), ("[24]", 0.001)]
    assert {t["network.hidden"] for t in _rows(folder / "trials.csv")} == {"[16]", "[24]"}
    assert (folder / "convergence_heatmap.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    assert "sweep: table.csv" in capsys.readouterr().out


def test_deeper_cells_with_their_settings_given_build():
    from hil.core.config import build_config
    from hil.grid import Grid, check_vary

    base = build_config({}, {"network.input_gain": 64.0, "ep.eta": 0.01, "network.bipolar": False})
    grid = Grid(base, check_vary([("network.hidden", [[16], [16, 8]])]), 2)
    assert [c.network.hidden for c in grid.configs] == [[16], [16, 8]]
    assert len({t.cell for t in grid.trials}) == 2 and grid.trials[-1].cell == (("network.hidden", (16, 8)),)


def test_a_list_field_without_brackets_says_how_to_write_it(tmp_path, capsys):
    assert main(["sweep", "grid", "--vary", "network.hidden=16,32", "--runs-dir", str(tmp_path)]) == 2
    assert "written in brackets: network.hidden=[64],[64,32]" in capsys.readouterr().err


@pytest.mark.parametrize("argv, named", [
    (["grid", "--sigma", "0", "--sigma", "0.01", "--sigma", "0"], "--sigma: 0 given twice"),
    (["table", "--sigma", "0.01", "--sigma", "1e-2"], "--sigma: 0.01 given twice"),
    (["table", "--sigma", "0", "--set", "noise.sigma=0.001"], "--set noise.sigma: the sweep sets it per network"),
    (["samples", "--samples-list", "1,4,1"], "--samples-list: a value is given twice"),
])
def test_sweeps_refuse_points_given_twice_and_settings_they_override(tmp_path, capsys, argv, named):
    """Trials repeated at one sigma would count twice in the convergence rate; a --set the sweep overrides is lost."""
    assert main(["sweep", *argv, "--runs-dir", str(tmp_path)]) == 2
    assert named in capsys.readouterr().err
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_noisy_grid_does_not_depend_on_its_chunking(tmp_path):
    """Each replica reads its noise from its own seed's stream: the chunks (--max-replicas) change nothing."""
    base = ["sweep", "grid", "--vary", "ep.beta=0.5,1", "--sigma", "0.01", "--sigma", "0.03", "--trials", "2",
            "--epochs", "2", "--train-limit", "200", "--test-limit", "100", "--hidden", "16", "--no-progress"]
    tables, trials = [], []
    for r in (1, 2, 4):
        runs = tmp_path / f"r{r}"
        assert main([*base, "--max-replicas", str(r), "--runs-dir", str(runs)]) == 0
        (folder,) = list(runs.iterdir())
        tables.append((folder / "table.csv").read_text())
        trials.append(_rows(folder / "trials.csv"))
    assert tables[0] == tables[1] == tables[2]
    assert trials[0] == trials[1] == trials[2]
    accs = {t["final_test_acc"] for t in trials[0]}
    assert len(accs) > 1  # the trials differ from each other (their seeds and sigmas), only not between chunkings


def test_one_sweep_engine():
    """Every sweep (table, sigma, samples, grid, and calibration.find_critical_sigma) trains through
    hil.executors.train_chunk: it is the only place outside `hil train` (hil/runner.py) that builds a Trainer."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    builders = sorted(str(p.relative_to(root)) for pkg in ("hil", "calibration", "sim_backend", "drivers")
                      for p in (root / pkg).rglob("*.py") if "Trainer(" in p.read_text())
    assert builders == ["hil/executors.py", "hil/runner.py"], builders
