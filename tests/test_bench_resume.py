"""A bench run killed with SIGKILL at random moments, then resumed: the chip is reconciled with the step journal
and the run ends where an uninterrupted one does (conductances within the write-verify tolerance, the same
per-epoch accuracies; see the note on write-verify below). Real pyvisa + pyvisa-py and pyserial against the emulated lab on 127.0.0.1."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import journal_count
from conftest import quiet_tree as quiet_lab_tree

from drivers.lab import LabConfig
from hil.cli import main
from sim_backend.emulator import EmulatedLab

ROOT = Path(__file__).resolve().parents[1]
# One kill in each quarter of the run's programmed devices (about 6 s each), alternately trusting the journal;
# the moments come from a printed seed (HIL_TEST_SEED replays them, HIL_TEST_SEED=random draws new ones).
KILLS = 4


def quiet_tree():
    """The example bench, instant, with emulated read noise and cycle-to-cycle device spread off."""
    return quiet_lab_tree(time_scale=0.0, device_spread=0.0)


def train_args(lab, runs):
    return ["train", "--lab", str(lab), "--train-limit", "8", "--test-limit", "4", "--epochs", "2", "--batch-size", "2",
            "--checkpoint-every-steps", "3", "--no-progress", "--runs-dir", str(runs)]


def journal_devices(run: Path) -> int:
    return journal_count(run, "SELECT COUNT(*) FROM devices")


def accuracies(run: Path):
    return [(r["epoch"], r["train_acc"], r["test_acc"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def programmed_times(run: Path, shapes) -> list[torch.Tensor]:
    """Per layer, how often the run's journal says each device was programmed (updates after initialization)."""
    counts = [torch.zeros(shape, dtype=torch.float64) for shape in shapes]
    db = sqlite3.connect(f"file:{run / 'journal.sqlite'}?mode=ro", uri=True)
    try:
        for layer, i, j, n in db.execute("SELECT layer, row, col, COUNT(*) FROM devices GROUP BY layer, row, col"):
            counts[layer][0, i, j] = n
    finally:
        db.close()
    return counts


def weights(run: Path):
    return torch.load(run / "checkpoint.pt", weights_only=True)["weights"]


def test_sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch, capsys, seeded_draw):
    tree = quiet_tree()
    lab_path = tmp_path / "lab.yaml"
    lab_path.write_text(yaml.safe_dump(tree))
    lab = LabConfig.model_validate(tree)
    tol = lab.programming.tolerance_S / lab.units.conductance_unit_S
    with EmulatedLab(lab) as emu:
        monkeypatch.setenv("HIL_EMULATOR_REGISTRY", str(emu.write_registry(tmp_path / "reg.json")))
        assert main(train_args(lab_path, tmp_path / "straight")) == 0
    (straight,) = (tmp_path / "straight").iterdir()
    total = journal_devices(straight)
    assert total > 20
    # Stratified, so a fixed seed still covers the whole run: kill k lands in the k-th quarter of the programmed
    # devices (two per epoch), where the seed puts it inside that quarter, plus up to 50 ms.
    edges = [1 + (total - 1) * q // KILLS for q in range(KILLS + 1)]
    moments = [(seeded_draw.randrange(lo, max(lo + 1, hi)), seeded_draw.uniform(0, 0.05)) for lo, hi in zip(edges, edges[1:])]
    spread = []
    for k, (devices, extra_s) in enumerate(moments):
        trust = k % 2 == 1
        with EmulatedLab(lab) as emu:
            reg = emu.write_registry(tmp_path / f"reg{k}.json")
            monkeypatch.setenv("HIL_EMULATOR_REGISTRY", str(reg))
            runs = tmp_path / f"cut{k}"
            proc = subprocess.Popen([sys.executable, "-m", "hil.cli", *train_args(lab_path, runs)], cwd=ROOT,
                                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                while proc.poll() is None:
                    found = list(runs.glob("*/journal.sqlite"))
                    if found and journal_devices(found[0].parent) >= devices:
                        break
                    time.sleep(0.002)
                time.sleep(extra_s)
                proc.send_signal(signal.SIGKILL)
                assert proc.wait(30) == -signal.SIGKILL, f"kill {k}: the run ended before {devices} devices (HIL_TEST_SEED={seeded_draw.seed_used})"
            finally:
                proc.kill()
            (run,) = runs.iterdir()
            capsys.readouterr()
            assert main(["train", "--resume", str(run), "--no-progress", *(["--trust-journal"] if trust else [])]) == 0
            assert emu.outputs() == {}
            out = capsys.readouterr().out
            assert "reconciled the chip with the journal" in out
            assert json.loads((run / "run.json").read_text())["status"] == "completed"
        where = (f"kill {k} after {devices} devices (+{extra_s * 1e3:.0f} ms), trust_journal={trust}, "
                 f"HIL_TEST_SEED={seeded_draw.seed_used}")
        assert accuracies(run) == accuracies(straight), where
        # At the resume every device was brought within the tolerance of the journal's state (which is the
        # uninterrupted run's: the emulated bench is deterministic, two uninterrupted runs agree to the bit).
        reconciled = json.loads((run / "run.json").read_text())["reconciled"]
        assert reconciled["max_after_S"] <= lab.programming.tolerance_S, (where, reconciled)
        # Write-verify stops anywhere within +-tol of its target, so a device reprogrammed by the resume and the
        # same device in the uninterrupted run start the remaining steps up to 2 tol apart, and each later
        # programming of it (at the same steps in both runs: a device is due when its pending change reaches
        # tol) moves the gap by up to 2 tol more: nearly every device ends within tol, and none further than
        # 2 tol per time the uninterrupted run programmed it, plus one.
        off = [(a.double() - b.double()).abs() for a, b in zip(weights(straight), weights(run))]
        flat = torch.cat([o.flatten() for o in off])
        within = (flat <= tol).double().mean().item()
        assert within >= 0.9, f"{where}: {(flat > tol).sum().item()} of {flat.numel()} devices off by more than tol"
        times = programmed_times(straight, [o.shape for o in off])
        for o, n in zip(off, times):
            worst = (o / (2 * tol * (1 + n))).max().item()
            assert worst <= 1.0, f"{where}: a conductance {o.max().item():.3g} normalized S away ({worst:.2f} of its bound)"
        spread.append((within, flat.max().item() / tol))
    print("fraction within tol, worst offset in tol units, per kill:", spread)


def start_run(lab_path, runs, reg):
    return subprocess.Popen([sys.executable, "-m", "hil.cli", *train_args(lab_path, runs)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "HIL_EMULATOR_REGISTRY": str(reg)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_devices(proc, runs, n):
    while proc.poll() is None:
        found = list(runs.glob("*/journal.sqlite"))
        if found and journal_devices(found[0].parent) >= n:
            return found[0].parent
        time.sleep(0.001)
    raise AssertionError(f"the run ended before {n} devices were programmed: {proc.stderr.read()}")


def chip_matches_journal(emu, lab, run, tol_S):
    """Every device on the emulated chip holds what the checkpoint and the journal after it say (within tol)."""
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    expected = [w.double().clone() for w in state["weights"]]
    db = sqlite3.connect(run / "journal.sqlite")
    for layer, i, j, verified in db.execute("SELECT layer, row, col, verified FROM devices WHERE step >= ? "
                                            "ORDER BY rowid", (int(state["step"]),)):
        expected[layer][0, i, j] = verified
    db.close()
    gu = lab.units.conductance_unit_S
    worst = 0.0
    for blk in lab.devices:
        w = expected[blk.layer][0]
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                g = emu.bench.conductance(blk.board, blk.row_offset + i, blk.col_offset + j)
                worst = max(worst, abs(g - float(w[i, j]) * gu))
    assert worst <= tol_S, f"a device is {worst:.3g} S from what the journal says"


# SIGINT and SIGTERM share one handler (drivers/signals.py): one of each covers both signals and both behaviours.
@pytest.mark.parametrize("sig,twice", [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_signal_while_programming_finishes_the_device_and_stops_safely(sig, twice, tmp_path, monkeypatch):
    tree = quiet_tree()
    lab_path = tmp_path / "lab.yaml"
    lab_path.write_text(yaml.safe_dump(tree))
    lab = LabConfig.model_validate(tree)
    with EmulatedLab(lab) as emu:
        reg = emu.write_registry(tmp_path / "reg.json")
        proc = start_run(lab_path, tmp_path / "runs", reg)
        try:
            run = wait_for_devices(proc, tmp_path / "runs", 4)
            proc.send_signal(sig)
            if twice:
                proc.send_signal(sig)
            assert proc.wait(60) == 130
        finally:
            proc.kill()
        err = proc.stderr.read()
        assert "interrupted" in err
        assert emu.outputs() == {}  # every output ramped to 0 V and off
        st = json.loads((run / "run.json").read_text())
        assert st["status"] == "interrupted"
        if not twice:  # the device being programmed was finished and journaled before the stop
            chip_matches_journal(emu, lab, run, lab.programming.tolerance_S)
        monkeypatch.setenv("HIL_EMULATOR_REGISTRY", str(reg))
        assert main(["train", "--resume", str(run), "--no-progress"]) == 0
        assert emu.outputs() == {}
    assert [r["epoch"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())] == [1, 2]


def test_a_kill_while_programming_the_start_leaves_a_crashed_run_that_says_what_to_do(tmp_path, monkeypatch, capsys):
    """The run folder exists from the moment the bench is connected, before the starting conductances are
    programmed: a SIGKILL there is listed as crashed with `hil safe`, and --resume says why it cannot."""
    tree = quiet_tree()
    lab_path = tmp_path / "lab.yaml"
    lab_path.write_text(yaml.safe_dump(tree))
    runs = tmp_path / "runs"
    with EmulatedLab(LabConfig.model_validate(tree)) as emu:
        reg = emu.write_registry(tmp_path / "reg.json")
        monkeypatch.setenv("HIL_EMULATOR_REGISTRY", str(reg))
        proc = start_run(lab_path, runs, reg)
        try:
            while proc.poll() is None and not list(runs.glob("*/run.json")):
                time.sleep(0.001)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(30) == -signal.SIGKILL, proc.stderr.read()
        finally:
            proc.kill()
        (run,) = runs.iterdir()
        assert not (run / "checkpoint.pt").exists(), "the kill came after the start was programmed: the test tests nothing"
        capsys.readouterr()
        assert main(["runs", "--runs-dir", str(runs)]) == 0
        line = capsys.readouterr().out.splitlines()[-1]
        assert "crashed" in line and f"hil safe --lab {lab_path.resolve()}" in line, line
        assert main(["train", "--resume", str(run), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "has no checkpoint" in err and "hil safe --lab" in err
        assert main(["safe", "--lab", str(lab_path), "--registry", str(reg)]) == 0
        assert emu.outputs() == {}
