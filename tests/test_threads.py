"""The CPU thread budget hil processes on one machine share (hil.threads), and the OpenMP wait policy."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hil import idle_wait_policy, threads
from hil.cli import main
from hil.threads import ThreadBudget, fair_share, shared_budget


@pytest.fixture
def no_user_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


@pytest.fixture
def sleeper():
    """A live process that is not this one: the other hil process of the machine."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield p.pid
    p.kill()
    p.wait()


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_fair_share():
    assert [fair_share(4, n) for n in (0, 1, 2, 3, 4, 8)] == [4, 4, 2, 1, 1, 1]
    assert fair_share(2, 3) == 1  # never 0 threads


def test_two_live_processes_get_half_the_cores_each(tmp_path, no_user_threads, sleeper):
    me = ThreadBudget(tmp_path, cores=4)
    me.register()
    assert me.threads() == 4  # alone
    other = ThreadBudget(tmp_path, cores=4, pid=sleeper)
    other.register()
    assert me.live_processes() == sorted([os.getpid(), sleeper])
    assert me.threads() == 2 and other.threads() == 2
    other.unregister()
    assert me.threads() == 4


def test_a_stale_pid_is_ignored_and_its_file_removed(tmp_path, no_user_threads):
    me = ThreadBudget(tmp_path, cores=4)
    me.register()
    gone = ThreadBudget(tmp_path, cores=4, pid=dead_pid())
    gone.register()
    assert me.threads() == 4
    assert not gone.path.exists()


def test_a_reused_pid_is_not_the_process_that_registered(tmp_path, no_user_threads, sleeper):
    """A live pid whose start time differs from the one recorded belongs to another process now."""
    if not os.path.exists(f"/proc/{sleeper}/stat"):
        pytest.skip("no /proc: start times unknown")
    me = ThreadBudget(tmp_path, cores=4)
    me.register()
    (tmp_path / f"{sleeper}.pid").write_text("1")  # started at tick 1: not the sleeper
    assert me.live_processes() == [os.getpid()]


def test_omp_num_threads_wins_and_threads_flag_wins_over_it(tmp_path, monkeypatch, sleeper):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    me = ThreadBudget(tmp_path, cores=4)
    me.register()
    ThreadBudget(tmp_path, cores=4, pid=sleeper).register()
    assert me.threads() == 3
    assert ThreadBudget(tmp_path, cores=4, explicit=1).threads() == 1
    with pytest.raises(ValueError, match="--threads"):
        ThreadBudget(tmp_path, explicit=0)


def test_shared_budget_sets_torch_threads_rebalances_and_restores(tmp_path, no_user_threads, monkeypatch, sleeper):
    monkeypatch.setattr(threads, "machine_cores", lambda: 2)
    monkeypatch.setattr(threads, "RECHECK_S", 0.0)
    before = torch.get_num_threads()
    with shared_budget(folder=tmp_path) as budget:
        assert torch.get_num_threads() == 2 and budget.path.exists()
        ThreadBudget(tmp_path, pid=sleeper).register()  # a second hil process starts
        threads.rebalance()
        assert torch.get_num_threads() == 1
    assert not budget.path.exists()
    assert torch.get_num_threads() == before
    threads.rebalance()  # outside a budget: nothing
    assert torch.get_num_threads() == before


def test_a_command_run_inside_another_applies_its_own_threads(tmp_path, no_user_threads, monkeypatch):
    """`hil sweep resume` runs the recorded command inside its own budget: the recorded --threads still counts."""
    monkeypatch.setattr(threads, "machine_cores", lambda: 2)
    with shared_budget(folder=tmp_path):
        assert torch.get_num_threads() == 2
        with shared_budget(1):
            assert torch.get_num_threads() == 1


def test_hil_train_registers_while_it_runs_and_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setenv(threads.DIR_ENV, str(tmp_path / "reg"))
    seen = []
    monkeypatch.setattr(threads, "RECHECK_S", 0.0)
    real = ThreadBudget.apply

    def watch(self):
        seen.append(sorted(p.name for p in self.folder.glob("*.pid")))
        return real(self)

    monkeypatch.setattr(ThreadBudget, "apply", watch)
    assert main(["train", "--no-progress", "--epochs", "1", "--train-limit", "40", "--threads", "1",
                 "--runs-dir", str(tmp_path / "runs")]) == 0
    assert seen and all(names == [f"{os.getpid()}.pid"] for names in seen)
    assert list((tmp_path / "reg").glob("*.pid")) == []


def test_threads_flag_refuses_zero(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--threads", "0"])
    assert e.value.code == 2
    assert "--threads" in capsys.readouterr().err


def test_a_busy_machine_gets_a_passive_wait_policy_an_idle_one_the_default():
    assert idle_wait_policy(2.1, 2) == "PASSIVE"  # the load already fills both cores
    assert idle_wait_policy(1.6, 2) == "PASSIVE"
    assert idle_wait_policy(0.4, 2) is None  # alone: libgomp's short spin is faster
    assert idle_wait_policy(3.0, 16) is None


def test_the_wait_policy_sees_work_running_now_not_the_load_average():
    """Busy processes are counted at once (the 1-minute load average takes a minute to see them, and as long to
    forget them); a burn of 2 x cores processes reads as busy."""
    import hil

    cores = len(os.sched_getaffinity(0))
    burn = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 * cores)]
    try:
        time.sleep(0.5)
        busy = hil.runnable_others(samples=20)
    finally:
        for p in burn:
            p.kill()
            p.wait()
    assert busy >= cores - 0.5 and hil.idle_wait_policy(busy, cores) == "PASSIVE"


def test_importing_hil_keeps_a_wait_policy_the_user_chose():
    env = {**os.environ, "OMP_WAIT_POLICY": "ACTIVE"}
    out = subprocess.run([sys.executable, "-c", "import hil, os; print(os.environ['OMP_WAIT_POLICY'])"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == "ACTIVE"


def test_an_unwritable_registry_still_counts_this_process(tmp_path, no_user_threads, sleeper, capsys, monkeypatch):
    monkeypatch.setattr(threads, "machine_cores", lambda: 4)
    ThreadBudget(tmp_path, cores=4, pid=sleeper).register()
    blocked = tmp_path / "file"
    blocked.write_text("")
    me = ThreadBudget(tmp_path, cores=4)
    assert me.threads() == 2  # the sleeper and this one, which has no file yet
    with shared_budget(folder=blocked / "sub") as budget:  # a file where the folder should be
        assert budget.threads() == 4 and not budget.path.exists()
    assert "cannot register" in capsys.readouterr().err


# A finder that records MKL_CBWR and OMP_WAIT_POLICY's presence at the moment torch is first imported.
_WATCH_TORCH = """
import importlib.abc, os, sys
seen = {}
class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen["MKL_CBWR"] = os.environ.get("MKL_CBWR")
        return None
sys.meta_path.insert(0, Watch())
import %s
import torch
print(seen["MKL_CBWR"], "hil" in sys.modules)
"""


@pytest.mark.parametrize("entry", ["hil.cli", "hil.trainer", "sim_backend.crossbar", "sim_backend.reference",
                                   "drivers.crossbar", "drivers.programming", "calibration.critical"])
def test_every_entry_point_sets_the_process_up_before_torch_starts(entry):
    """MKL's reproducible mode (and the wait policy, set in the same call) is in the environment when torch is
    first imported, whichever package a program imports first."""
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    out = subprocess.run([sys.executable, "-c", _WATCH_TORCH % entry], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["AUTO,STRICT", "True"]


def test_the_process_set_up_lives_in_the_core_and_sim_backend_does_not_import_hil():
    """sim_backend/__init__.py calls hil.core.process's set-up; it no longer imports the hil package for it."""
    root = Path(__file__).resolve().parents[1]
    for pkg in ("sim_backend", "drivers", "calibration"):
        text = (root / pkg / "__init__.py").read_text()
        assert "from hil.core.process import configure_process" in text and "configure_process()" in text, pkg
        assert "import hil\n" not in text and "import hil  #" not in text, pkg
    assert "configure_process()" in (root / "hil" / "__init__.py").read_text()
