"""`--preset paper`: the paper's setting as a named config, beneath --config files and flags."""

import sys
from pathlib import Path

import pytest
import yaml
from conftest import write_fashion_like

from hil.cli import main
from hil.presets import load_preset, preset_names


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    return write_fashion_like(tmp_path_factory.mktemp("fashion"), n_train=16, n_test=8)


def train_config(runs_dir, *args) -> dict:
    assert main(["train", "--no-progress", "--epochs", "1", "--train-limit", "8", "--test-limit", "8",
                 "--runs-dir", str(runs_dir), *args]) == 0
    (run,) = [p for p in runs_dir.iterdir() if p.is_dir()]
    return yaml.safe_load((run / "config.yaml").read_text())


def test_paper_preset_is_the_papers_setting(runs_dir, fashion):
    cfg = train_config(runs_dir, "--preset", "paper", "--dataset", "fashion-mnist", "--data-dir", str(fashion))
    assert cfg["data"]["dataset"] == "fashion-mnist"
    net, ep = cfg["network"], cfg["ep"]
    assert net["hidden"] == [1024] and net["input_gain"] == 500.0 and net["g_min"] == 0.0
    assert net["init"] == "symmetric" and net["init_scale"] == 1.0  # the DRN code's init (docs/results.md)
    assert ep["beta"] == 1.0 and ep["eta"] == 1e-3 and ep["centered"] is False
    assert cfg["relax"]["sweeps"] == 5 and cfg["train"]["batch_size"] == 4
    # 1.5e5 updates: 10 epochs of 60,000 samples in batches of 4
    assert load_preset("paper")["train"]["epochs"] * 60_000 // cfg["train"]["batch_size"] == 150_000
    assert load_preset("paper")["data"]["dataset"] == "mnist"


def test_config_files_override_the_preset_and_flags_override_both(runs_dir, fashion, tmp_path):
    extra = tmp_path / "mine.yaml"
    extra.write_text(yaml.safe_dump({"ep": {"eta": 2e-3, "beta": 0.5}, "network": {"hidden": [32]}}))
    cfg = train_config(runs_dir, "--preset", "paper", "--config", str(extra), "--beta", "0.25",
                       "--dataset", "fashion-mnist", "--data-dir", str(fashion))
    assert cfg["ep"]["eta"] == 2e-3 and cfg["network"]["hidden"] == [32]  # the file over the preset
    assert cfg["ep"]["beta"] == 0.25  # the flag over the file
    assert cfg["network"]["input_gain"] == 500.0  # what neither set: the preset's


def test_unknown_preset_is_one_clear_error_listing_the_presets(runs_dir, capsys):
    assert main(["train", "--preset", "nope", "--runs-dir", str(runs_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["hil: error: --preset: no preset 'nope' (presets: paper)"]
    assert not runs_dir.exists()


def test_resume_refuses_a_preset(runs_dir, capsys):
    assert main(["train", "--resume", str(runs_dir), "--preset", "paper"]) == 2
    assert "--preset" in capsys.readouterr().err


def test_presets_ship_with_the_package():
    assert "paper" in preset_names()
    if sys.version_info < (3, 11):
        pytest.skip("tomllib: Python 3.11+")
    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "*.yaml" in project["tool"]["setuptools"]["package-data"]["hil.presets"]
