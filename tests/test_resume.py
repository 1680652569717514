"""Resume: exact after a kill mid-epoch, refused when unsafe; `hil runs` tells a crashed run from a running one."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import torch
from conftest import journal_count, write_fashion_like

from hil.cli import main
from hil.core.devices import resolve_device_model, save_device_model

METRIC_KEYS = ("epoch", "train_acc", "test_acc", "train_loss", "test_loss")


def fashion_args(data, runs, name, epochs=3):
    # float32 on 784 inputs with the paper's gain, read noise with N = 2 and 1/f noise: every state a resume rebuilds.
    return ["train", "--no-progress", "--dataset", "fashion-mnist", "--data-dir", str(data), "--hidden", "64",
            "--gamma", "500", "--eta", "1e-3", "--sigma", "1e-4", "--samples", "2", "--flicker", "5e-5",
            "--epochs", str(epochs), "--runs-dir", str(runs), "--name", name]


def metrics(run):
    return [{k: r[k] for k in METRIC_KEYS} for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def test_resume_after_sigkill_mid_epoch_is_bit_identical(tmp_path):
    data = write_fashion_like(tmp_path / "fashion")
    assert main(fashion_args(data, tmp_path / "straight", "straight")) == 0
    straight = next((tmp_path / "straight").iterdir())

    cut_dir = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli", *fashion_args(data, cut_dir, "cut")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            runs = list(cut_dir.glob("*/metrics.jsonl"))
            if runs and runs[0].read_text().count("\n") >= 1:
                break
            time.sleep(0.05)
        time.sleep(0.3)  # into epoch 2
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        proc.kill()
    run = next(cut_dir.iterdir())
    done = len(metrics(run))
    assert 1 <= done < 3, done  # killed in the middle of the run
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # as a crash leaves it

    assert main(["train", "--no-progress", "--resume", str(run)]) == 0
    assert metrics(run) == metrics(straight)  # every epoch, to the bit
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(run / "checkpoint.pt", weights_only=True)
    for wa, wb in zip(a["weights"], b["weights"]):
        assert wa.dtype == torch.float32 and torch.equal(wa, wb)


def fake_run(tmp_path, pid, status="running"):
    assert main(["train", "--no-progress", "--runs-dir", str(tmp_path / "runs"), "--hidden", "8", "--epochs", "1",
                 "--train-limit", "40", "--test-limit", "20", "--name", "fake"]) == 0
    run = next((tmp_path / "runs").iterdir())
    st = json.loads((run / "run.json").read_text())
    st.update(status=status, pid=pid, host=socket.gethostname())
    (run / "run.json").write_text(json.dumps(st))
    return run


def test_resume_refuses_a_live_run_and_hil_runs_shows_it(tmp_path, capsys):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = fake_run(tmp_path, live.pid)
        capsys.readouterr()
        assert main(["train", "--resume", str(run), "--epochs", "2"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("hil: error: --resume:") and f"still running (pid {live.pid})" in err
        assert len(metrics(run)) == 1  # nothing written by the refused resume
        assert main(["runs", "--runs-dir", str(tmp_path / "runs")]) == 0
        line = capsys.readouterr().out.splitlines()[1]
        assert run.name in line and " running " in line
    finally:
        live.kill()
        live.wait()
    # The process is gone: the run is shown as crashed, with the command that resumes it.
    assert main(["runs", "--runs-dir", str(tmp_path / "runs")]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert " crashed " in line and f"hil train --resume {run}" in line


def test_resume_refuses_another_bench(tmp_path, capsys):
    run = fake_run(tmp_path, 0, status="interrupted")
    lab = tmp_path / "lab.yaml"
    lab.write_text("name: other\n")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--lab", str(lab)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hil: error: --lab:") and "on the simulator" in err and len(err.splitlines()) == 1


def test_resume_of_a_dead_process_run_is_allowed(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = fake_run(tmp_path, dead.pid)
    assert main(["train", "--no-progress", "--resume", str(run), "--epochs", "2"]) == 0
    assert [m["epoch"] for m in metrics(run)] == [1, 2]
    assert json.loads((run / "run.json").read_text())["pid"] == os.getpid()


def test_resume_with_pulsed_devices_is_bit_identical(tmp_path):
    """Pulsed devices keep state between updates (sub-step remainders, rounding generator, drift since the last
    write): the checkpoint has it."""
    drifting = save_device_model(resolve_device_model("reram-es").model_copy(update={"drift_nu": 0.05}),
                                 tmp_path / "device.yaml")

    def args(runs, epochs):
        return ["train", "--no-progress", "--hidden", "16", "--train-limit", "200", "--test-limit", "50",
                "--device-model", str(drifting), "--g-max", "0.2", "--sigma", "1e-3", "--epochs", str(epochs),
                "--runs-dir", str(runs)]

    assert main(args(tmp_path / "straight", 2)) == 0
    assert main(args(tmp_path / "split", 1)) == 0
    run = next((tmp_path / "split").iterdir())
    assert main(["train", "--no-progress", "--resume", str(run), "--epochs", "2"]) == 0
    straight = next((tmp_path / "straight").iterdir())
    assert metrics(run) == metrics(straight)
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(run / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(wa, wb) for wa, wb in zip(a["weights"], b["weights"]))
    assert "programmer" in b["random"]


def journal_done(run) -> int:
    """Finished steps in the run's journal (read while the run writes it)."""
    return journal_count(run, "SELECT COUNT(*) FROM steps WHERE done = 1")


def test_sigkill_at_random_steps_resumes_mid_epoch_bit_identical(tmp_path, seeded_draw):
    """Snapshots every 7 steps; killed at random steps (drawn from a printed seed: HIL_TEST_SEED replays them) and
    resumed from the last snapshot, the run ends with the same conductances and metrics, to the bit, as one never
    killed."""
    data = write_fashion_like(tmp_path / "fashion")
    extra = ["--train-limit", "200", "--test-limit", "48", "--checkpoint-every-steps", "7"]
    assert main([*fashion_args(data, tmp_path / "straight", "straight", epochs=2), *extra]) == 0
    straight = next((tmp_path / "straight").iterdir())
    steps = 2 * 200 // 4
    resumed = []
    for k, kill_at in enumerate(sorted(seeded_draw.sample(range(8, steps - 2), 3))):
        cut_dir = tmp_path / f"cut{k}"
        proc = subprocess.Popen([sys.executable, "-m", "hil.cli", *fashion_args(data, cut_dir, "cut", epochs=2), *extra],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while proc.poll() is None:
                runs = list(cut_dir.glob("*/"))
                if runs and journal_done(runs[0]) >= kill_at:
                    break
                time.sleep(0.002)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(30) == -signal.SIGKILL, (f"the run ended before step {kill_at} "
                                                      f"(HIL_TEST_SEED={seeded_draw.seed_used})")
        finally:
            proc.kill()
        run = next(cut_dir.iterdir())
        saved = torch.load(run / "checkpoint.pt", weights_only=True)
        done = journal_done(run)
        assert done >= kill_at
        resumed_from = (saved["in_epoch"]["epoch"], saved["in_epoch"]["pos"]) if "in_epoch" in saved else None
        assert main(["train", "--no-progress", "--resume", str(run)]) == 0
        assert metrics(run) == metrics(straight), (kill_at, resumed_from)
        a = torch.load(straight / "checkpoint.pt", weights_only=True)
        b = torch.load(run / "checkpoint.pt", weights_only=True)
        for wa, wb in zip(a["weights"], b["weights"]):
            assert torch.equal(wa, wb), (kill_at, resumed_from)
        assert journal_done(run) == steps  # every step journaled, the replayed ones once
        resumed.append(resumed_from)
    # kills past step 8 with snapshots every 7 steps (50 per epoch): nearly all resume in the middle of an epoch
    assert any(r is not None and r[1] > 0 for r in resumed), resumed
