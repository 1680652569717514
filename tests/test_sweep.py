"""Sweeps: many (sigma, N, trial) networks trained as replicas at once, and the Table I summary."""

import csv
import math

import pytest

from hil.cli import main
from hil.sweep import Trial, summarize


def test_summary_counts_and_best_five():
    finals = [0.9, 0.2, 0.85, 0.95, 0.6, 0.1, 0.88]
    trials = [Trial(1e-5, 1, i, i, [f]) for i, f in enumerate(finals)]
    trials.append(Trial(1e-5, 1, 7, 7, [0.99], diverged=True))
    (row,) = summarize(trials, threshold=0.5)
    assert row.trials == 8 and row.converged == 5
    assert math.isclose(row.mean_best5, (0.95 + 0.9 + 0.88 + 0.85 + 0.6) / 5)
    assert math.isclose(row.mean_acc, sum(finals) / 8)  # the diverged trial counts as 0
    assert row.best_acc == 0.95


def test_sweep_table_cli(tmp_path, capsys):
    code = main(["sweep", "table", "--sigma", "0", "--sigma", "0.5", "--trials", "3", "--epochs", "2",
                 "--train-limit", "600", "--no-progress", "--runs-dir", str(tmp_path), "--max-replicas", "4"])
    assert code == 0
    out = capsys.readouterr().out
    (folder,) = list(tmp_path.iterdir())
    rows = list(csv.DictReader(open(folder / "table.csv")))
    assert [float(r["sigma_V"]) for r in rows] == [0.0, 0.5]
    quiet, loud = rows
    assert int(quiet["trials"]) == 3 and float(quiet["convergence_rate"]) == 1.0
    # 95% intervals: Wilson for 3/3 (0.44-1), Student t around each mean
    assert abs(float(quiet["convergence_rate_lo"]) - 0.4385) < 1e-3 and float(quiet["convergence_rate_hi"]) == 1.0
    assert all(float(r["mean_test_acc_lo"]) <= float(r["mean_test_acc"]) <= float(r["mean_test_acc_hi"]) for r in rows)
    assert float(quiet["mean_test_acc"]) > 0.7
    assert float(loud["mean_test_acc"]) < 0.4  # sigma = 0.5 V drowns the nudge signal
    trials = list(csv.DictReader(open(folder / "trials.csv")))
    assert len(trials) == 6 and {t["seed"] for t in trials} == {"0", "1", "2"}
    assert "converged" in out and "best 5" in out
    assert all(t["epochs_done"] == "2" for t in trials)
    assert "epoch 1/2, networks 1-4 of 6" in out and "epoch 2/2, networks 5-6 of 6" in out  # progress per epoch


def test_sweep_rejects_negative_sigma(tmp_path, capsys):
    assert main(["sweep", "table", "--sigma", "-1e-5", "--runs-dir", str(tmp_path)]) == 2
    assert "--sigma" in capsys.readouterr().err and not any(tmp_path.iterdir())


def _grid(sigmas=(0.0, 0.01), epochs=2):
    from hil.core.config import build_config
    from hil.data import load_dataset
    from hil.grid import Grid

    cfg = build_config({}, {"train.epochs": epochs, "data.train_limit": 200, "data.test_limit": 60})
    return Grid(cfg, {"noise.sigma": list(sigmas)}, 2), load_dataset(cfg.data)


def _stop_at(monkeypatch, when, seen=None):
    """Ctrl-C after epoch `epoch` of the chunk whose first network is `first` (when = (first, epoch))."""
    from hil import grid_run

    original = grid_run.GridRecorder.epoch_done

    def epoch_done(self, chunk, epoch, accs, diverged):
        original(self, chunk, epoch, accs, diverged)
        if seen is not None:
            seen.append((chunk.trials[0], epoch))
        if (chunk.trials[0], epoch) == when:
            raise KeyboardInterrupt

    monkeypatch.setattr(grid_run.GridRecorder, "epoch_done", epoch_done)


def test_interrupted_sweep_keeps_every_finished_epoch(tmp_path, monkeypatch):
    """Ctrl-C in epoch 2 of the second chunk: trials.csv holds what finished, run.json says interrupted."""
    import json

    from hil.grid_run import point_trials_csv, run_sweep
    from hil.store import RunStore
    from hil.sweep import SweepOptions

    grid, data = _grid()
    store = RunStore.create(tmp_path, "sweep", grid.base)
    seen: list = []
    _stop_at(monkeypatch, (3, 1), seen)
    with pytest.raises(KeyboardInterrupt), store.recording():
        run_sweep(grid, SweepOptions(trials=2, max_replicas=3), data, folder=store.path, write_trials=point_trials_csv)
    assert seen == [(0, 1), (0, 2), (3, 1)]
    rows = list(csv.DictReader(open(store.path / "trials.csv")))
    assert [r["epochs_done"] for r in rows] == ["2", "2", "2", "1"]
    assert all(0 < float(r["final_test_acc"]) <= 1 for r in rows)
    status = json.loads((store.path / "run.json").read_text())
    assert status["status"] == "interrupted"


def test_progress_line_names_few_points_and_summarizes_many():
    from hil.sweep import epoch_line

    few = [Trial(s, 1, 0, 0, [a]) for s, a in [(0.0, 0.9), (1e-3, 0.5)]]
    assert ("epoch 1/3, networks 1-2 of 2: mean test accuracy 0 V 90.0%, 0.001 V 50.0%"
            in epoch_line(few, 0, 2, 1, 3, 0.0))
    many = [Trial(1e-3 * k, 4 if k % 2 else 1, 0, 0, [0.1 * k]) for k in range(1, 10)]
    line = epoch_line(many, 9, 18, 2, 3, 0.0)
    assert "networks 10-18 of 18: mean test accuracy 10.0% to 90.0% over 9 points" in line


def _sweep(folder, monkeypatch, stop_at=None, resume=False, sigmas=(0.0, 0.02)):
    """Train 2 sigma x 2 trials in chunks of 3 (networks 0-2 and 3); stop_at=(first network, epoch) raises Ctrl-C."""
    from hil.grid_run import run_sweep
    from hil.sweep import SweepOptions

    folder.mkdir(exist_ok=True)
    grid, data = _grid(sigmas, epochs=3)
    monkeypatch.undo()  # the stop of an earlier call
    if stop_at is not None:
        _stop_at(monkeypatch, stop_at)
    return run_sweep(grid, SweepOptions(trials=2, max_replicas=3, resume=resume), data, folder=folder)


@pytest.mark.parametrize("stop_at", [(0, 1), (3, 2)])
def test_resumed_sweep_ends_where_an_uninterrupted_one_does(tmp_path, monkeypatch, stop_at):
    """Stopped in the first chunk or in the last, then resumed: the same accuracies, epoch by epoch, to the bit."""
    whole = _sweep(tmp_path / "whole", monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _sweep(tmp_path / "cut", monkeypatch, stop_at=stop_at)
    assert list((tmp_path / "cut" / "sweep-chunks").glob("chunk-*.pt"))  # the chunk in training kept its snapshot
    resumed = _sweep(tmp_path / "cut", monkeypatch, resume=True)
    assert [t.test_acc for t in resumed] == [t.test_acc for t in whole]
    assert all(len(t.test_acc) == 3 for t in resumed)
    assert whole[0].test_acc != whole[2].test_acc  # the noisy point really differs


def test_a_checkpoint_of_the_earlier_one_chunk_format_resumes(tmp_path, monkeypatch):
    """A sweep started before the sweeps were grids left one file: its chunk in training (trainer state) and every
    trial's accuracies. Resumed now, it ends as an uninterrupted sweep does."""
    import torch

    from hil.store import atomic_torch_save

    whole = _sweep(tmp_path / "whole", monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _sweep(tmp_path / "cut", monkeypatch, stop_at=(3, 1))  # networks 0-2 done, network 3 after its epoch 1
    (snap_file,) = (tmp_path / "cut" / "sweep-chunks").glob("chunk-*.pt")
    snap = torch.load(snap_file, weights_only=True)
    accs = [t.test_acc for t in whole[:3]] + snap["test_acc"]
    old = {"chunk_start": 3, "chunk_size": 3, "epoch": 1, "trainer": snap["trainer"],
           "trials": [{"sigma": t.sigma, "samples": t.samples, "seed": t.seed, "test_acc": a, "diverged": False}
                      for t, a in zip(whole, accs)]}
    (tmp_path / "old").mkdir()
    atomic_torch_save(tmp_path / "old" / "sweep-checkpoint.pt", old)
    from hil.grid_run import resume_recorder

    grid, _ = _grid((0.0, 0.02), epochs=3)
    rec = resume_recorder(tmp_path / "old", grid)  # converted: the first chunk done, the second from its epoch 1
    assert set(rec.done) == {0} and [t.test_acc for t in grid.trials[:3]] == [t.test_acc for t in whole[:3]]
    (converted,) = (tmp_path / "old" / "sweep-chunks").glob("chunk-*.pt")
    assert torch.load(converted, weights_only=True)["trainer"]["epoch"] == 1
    resumed = _sweep(tmp_path / "old", monkeypatch, resume=True)
    assert [t.test_acc for t in resumed] == [t.test_acc for t in whole]


def test_resume_refuses_a_different_sweep(tmp_path, monkeypatch):
    from hil.sweep import SweepResumeError

    with pytest.raises(KeyboardInterrupt):
        _sweep(tmp_path, monkeypatch, stop_at=(0, 1))
    with pytest.raises(SweepResumeError, match="different sweep"):
        _sweep(tmp_path, monkeypatch, resume=True, sigmas=(0.0, 0.05))


def test_sweep_resume_after_kill(tmp_path, capsys):
    """A real `hil sweep table` process stopped by `kill` (SIGTERM) mid-sweep, then `hil sweep resume`: the same table."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ["sweep", "table", "--sigma", "0", "--sigma", "0.02", "--trials", "2", "--epochs", "4",
            "--max-replicas", "2", "--no-progress"]
    cut_dir, whole_dir = tmp_path / "cut", tmp_path / "whole"
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli", *args, "--runs-dir", str(cut_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # wait for the first finished epoch
        rows = list(cut_dir.glob("*/trials.csv"))
        if rows and any(r["epochs_done"] != "0" for r in csv.DictReader(open(rows[0]))):
            break
        time.sleep(0.02)
    (folder,) = cut_dir.iterdir()
    assert main(["sweep", "resume", str(folder)]) == 2  # refused while the sweep runs
    assert f"still running (pid {proc.pid})" in capsys.readouterr().err
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    assert json.loads((folder / "run.json").read_text())["status"] == "interrupted"
    done = [int(r["epochs_done"]) for r in csv.DictReader(open(folder / "trials.csv"))]
    assert 0 < sum(done) < 16  # stopped part way: some epochs kept, not all

    assert main(["sweep", "resume", str(folder), "--executor", "inprocess"]) == 0  # every sweep has executors
    assert main([*args, "--runs-dir", str(whole_dir)]) == 0
    (whole,) = whole_dir.iterdir()
    assert (folder / "table.csv").read_text() == (whole / "table.csv").read_text()
    assert not (folder / "sweep-checkpoint.pt").exists() and not (folder / "sweep-chunks").exists()
    assert main(["sweep", "resume", str(folder)]) == 2  # completed: nothing to resume


def test_sweep_killed_with_sigkill_resumes_from_its_last_snapshot(tmp_path, seeded_draw):
    """`hil sweep table` killed with SIGKILL at a random step (drawn here) in the middle of an epoch, then
    `hil sweep resume`: it continues from the last mid-epoch snapshot and ends with the same table."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    import torch

    args = ["sweep", "table", "--sigma", "0", "--sigma", "0.02", "--trials", "2", "--epochs", "2", "--max-replicas", "2",
            "--train-limit", "80", "--test-limit", "40", "--checkpoint-every-steps", "5", "--no-progress"]
    # 20 steps per epoch, snapshots every 5: done steps 6-14 of either chunk's first epoch leave a mid-epoch one
    kill_at = seeded_draw.choice([*range(6, 15), *range(46, 55)])  # replay: HIL_TEST_SEED
    cut_dir, whole_dir = tmp_path / "cut", tmp_path / "whole"
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli", *args, "--runs-dir", str(cut_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})

    def done_steps():
        found = list(cut_dir.glob("*/journal.sqlite"))
        if not found:
            return 0
        try:
            db = sqlite3.connect(f"file:{found[0]}?mode=ro", uri=True, timeout=5)
            try:
                return db.execute("SELECT COUNT(*) FROM steps WHERE done = 1").fetchone()[0]
            finally:
                db.close()
        except sqlite3.OperationalError:
            return 0

    try:
        while proc.poll() is None and done_steps() < kill_at:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL, f"the sweep ended before step {kill_at}"
    finally:
        proc.kill()
    (folder,) = cut_dir.iterdir()
    (snapshot,) = (folder / "sweep-chunks").glob("chunk-*.pt")  # the chunk in training's, mid-epoch
    saved = torch.load(snapshot, weights_only=True)
    assert saved["trainer"]["in_epoch"]["pos"] in (5, 10, 15), (kill_at, saved["trainer"].get("in_epoch"))
    assert main(["sweep", "resume", str(folder)]) == 0
    assert main([*args, "--runs-dir", str(whole_dir)]) == 0
    (whole,) = whole_dir.iterdir()
    assert (folder / "table.csv").read_text() == (whole / "table.csv").read_text()
    assert (folder / "trials.csv").read_text() == (whole / "trials.csv").read_text()


def test_interval_formulas():
    from hil.intervals import mean_interval, wilson_interval

    lo, hi = wilson_interval(15, 30)  # the Table I sweep's 15/30: 33-67%
    assert abs(lo - 0.3315) < 1e-4 and abs(hi - 0.6685) < 1e-4
    assert wilson_interval(0, 30)[0] == 0.0 and wilson_interval(30, 30)[1] == 1.0
    lo, hi = mean_interval([0.80, 0.82, 0.79])  # t(0.975, 2) = 4.303, sd 0.01528
    assert abs((hi - lo) / 2 - 4.303 * 0.015275 / 3**0.5) < 1e-4
