"""The small things a new user meets: --version, names from config files, progress only on a terminal, help text,
effective N, sigma_crit past the grid."""

import subprocess
import sys

import numpy as np

from calibration.statistics import estimate_noise
from hil.cli import build_parser, main

TINY = ["--hidden", "8", "--epochs", "1", "--train-limit", "40", "--test-limit", "20"]


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as stop:
        assert stop.code == 0
    assert capsys.readouterr().out.startswith("hil 0.")


def test_name_in_a_config_file_names_the_folder(tmp_path):
    (tmp_path / "c.yaml").write_text("name: mine\n")
    assert main(["train", "--no-progress", *TINY, "--config", str(tmp_path / "c.yaml"),
                 "--runs-dir", str(tmp_path / "runs")]) == 0
    assert [p.name.split("-", 2)[-1] for p in (tmp_path / "runs").iterdir()] == ["mine"]
    assert main(["train", "--no-progress", *TINY, "--config", str(tmp_path / "c.yaml"), "--name", "flag",
                 "--runs-dir", str(tmp_path / "runs2")]) == 0  # the flag still wins
    assert [p.name.split("-", 2)[-1] for p in (tmp_path / "runs2").iterdir()] == ["flag"]


def test_progress_bar_only_on_a_terminal(tmp_path):
    r = subprocess.run([sys.executable, "-m", "hil.cli", "train", *TINY, "--runs-dir", "runs"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stderr == "", r.stderr  # no bar written into a redirected log


def test_characterize_help_has_no_training_options():
    sub = build_parser()._subparsers._group_actions[0].choices
    text = sub["characterize"].format_help()
    for flag in ("--epochs", "--eta", "--beta", "--batch-size", "--samples ", "--replicas"):
        assert flag not in text, flag
    assert "--sigma" in text and "--readings" in text
    assert "--epochs" in sub["train"].format_help()


def test_effective_n_never_exceeds_the_readings():
    rng = np.random.default_rng(0)
    est = estimate_noise(rng.normal(size=(200, 64)))  # white: lag-1 scatters around 0, both signs
    assert (est.lag1 < 0).any()
    assert est.n_eff.max() <= 200


def test_sigma_crit_beyond_the_grid_is_a_lower_bound(tmp_path, capsys):
    assert main(["sweep", "sigma", "--sigma", "1e-5", "--sigma", "2e-5", "--trials", "1", "--threshold", "0.05",
                 "--no-progress", *TINY, "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "sigma_crit >= 2e-05 V (beyond the grid" in out


def test_a_setting_given_twice_is_an_error(capsys):
    for args in (["--beta", "1", "--beta", "2"], ["--bias", "--no-bias"], ["--sigma", "1e-3", "--sigma", "1e-3"]):
        try:
            main(["train", *args])
        except SystemExit as stop:
            assert stop.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "given twice" in err[0], err


def test_a_folder_that_trains_nothing_records_only_its_name(tmp_path):
    """`hil calibrate` makes its folder with RunStore.create(runs_dir, name): no training config is invented."""
    import yaml

    from hil.core.config import ConfigError
    from hil.store import RunStore

    assert main(["calibrate", "--sigma-target", "1e-4", "--reading-sigma", "1e-3", "--name", "cal",
                 "--runs-dir", str(tmp_path)]) == 0
    (folder,) = tmp_path.iterdir()
    assert folder.name.endswith("-cal")
    assert yaml.safe_load((folder / "config.yaml").read_text()) == {"name": "cal", "runs_dir": str(tmp_path)}
    try:
        RunStore.create(tmp_path / "other", "no spaces")
    except ConfigError as err:
        assert "name" in str(err)
    else:
        raise AssertionError("a name with a space made a folder")
    assert not (tmp_path / "other").exists()
