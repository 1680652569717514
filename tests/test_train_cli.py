"""`hil train` end to end: the default digits run, bad input, resume, and failures that keep what was recorded."""

import json
import subprocess
import sys

import pytest
import torch
import yaml

from hil.cli import main


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "hil.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def only_run(runs_dir):
    runs = sorted(p for p in runs_dir.iterdir() if p.is_dir())
    assert len(runs) == 1, runs
    return runs[0]


def test_default_train_reaches_90_percent_on_digits(runs_dir, capsys):
    """The README's default `hil train` (digits, 10 epochs), unchanged but for the runs folder."""
    assert main(["train", "--no-progress", "--runs-dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    run = only_run(runs_dir)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 11))
    assert rows[-1]["test_acc"] >= 0.90, rows[-1]
    assert rows[-1]["samples_per_s"] > 0
    assert "final test accuracy" in out and "epoch  train acc" in out
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["data"]["dataset"] == "digits" and cfg["network"]["hidden"] == [128]
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert (run / "accuracy.png").stat().st_size > 1000
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 10 and ck["weights"][0].shape == (1, 128, 128)


@pytest.mark.parametrize(
    "args,field",
    [
        (["--beta", "0"], "ep.beta"),
        (["--beta", "-1"], "ep.beta"),
        (["--sigma", "-1e-5"], "noise.sigma"),
        (["--samples", "0"], "noise.samples"),
        (["--set", "noise.sigmaa=1"], "noise.sigmaa: unknown key"),
        (["--dataset", "fashion-mnist", "--data-dir", "/nonexistent/fmnist"], "/nonexistent/fmnist"),
    ],
)
def test_bad_input_one_line_no_run_left(tmp_path, args, field):
    r = run_cli("train", "--runs-dir", "runs", *args, cwd=tmp_path)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("hil: error: ") and field in lines[0], lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_unknown_key_in_config_file(tmp_path):
    (tmp_path / "run.yaml").write_text("ep:\n  beta: 0.5\n  etaa: 0.1\n")
    r = run_cli("train", "--config", "run.yaml", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == "hil: error: ep.etaa: unknown key"
    assert not (tmp_path / "runs").exists()


def test_missing_dataset_names_the_files(tmp_path, capsys):
    assert main(["train", "--dataset", "kmnist", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in err and "t10k-labels-idx1-ubyte" in err and str(tmp_path) in err


def small_args(runs_dir, epochs, *extra):
    return ["train", "--no-progress", "--runs-dir", str(runs_dir), "--hidden", "32", "--epochs", str(epochs),
            "--train-limit", "400", "--test-limit", "100", "--sigma", "1e-3", "--samples", "2", *extra]


def test_resume_continues_exactly(tmp_path, capsys):
    straight, split = tmp_path / "a", tmp_path / "b"
    assert main(small_args(straight, 3, "--dtype", "float64")) == 0
    assert main(small_args(split, 2, "--dtype", "float64")) == 0
    run = only_run(split)
    assert main(["train", "--no-progress", "--resume", str(run), "--epochs", "3"]) == 0
    a = torch.load(only_run(straight) / "checkpoint.pt", weights_only=True)
    b = torch.load(run / "checkpoint.pt", weights_only=True)
    for wa, wb in zip(a["weights"], b["weights"]):
        torch.testing.assert_close(wa, wb, rtol=1e-12, atol=0)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert main(["train", "--resume", str(run), "--sigma", "0.1"]) == 2
    assert "only --epochs may change" in capsys.readouterr().err


def test_failure_mid_run_keeps_records(tmp_path, capsys):
    """An update that turns NaN stops the run with one clear line; earlier epochs stay on disk."""
    # No conductance floor, g_max tiny and a huge eta: after the first epoch conductances sit at 0 -> floating
    # nodes -> NaN (what the default g_min > 0 prevents).
    args = small_args(tmp_path, 3, "--eta", "1e6", "--g-min", "0", "--g-max", "1e-3")
    code = main(args)
    err = capsys.readouterr().err
    run = only_run(tmp_path)
    status = json.loads((run / "run.json").read_text())
    assert code == 1 and "non-finite conductance update" in err
    assert status["status"] == "failed" and "NonFiniteUpdateError" in status["error"]
    assert (run / "config.yaml").is_file()
