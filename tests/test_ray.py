"""`hil sweep grid --executor ray` on a real local Ray cluster: a worker killed mid-sweep, the same table."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from hil.cli import main

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
BASE = ["sweep", "grid", "--vary", "ep.beta=0.5,1", "--sigma", "0", "--sigma", "0.02", "--trials", "2",
        "--epochs", "2", "--train-limit", "200", "--test-limit", "100", "--hidden", "16", "--no-progress"]
GRID = [*BASE, "--max-replicas", "2"]
TASK_TITLE = b"ray::_ray_train_chunk"  # the process title Ray gives a worker while it runs a chunk


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ours(tmp: Path) -> list[int]:
    """Pids of processes whose command line names this test's Ray folder (left over after the groups' kill)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if str(tmp).encode() in (d / "cmdline").read_bytes():
                    found.append(int(d.name))
            except OSError:
                pass
    return found


@contextmanager
def ray_cluster():
    """A head without CPUs and a two-CPU worker node on 127.0.0.1: two worker processes run chunks.

    Each `ray start` runs in its own process group; teardown kills those groups (and nothing else)."""
    temp = Path(f"/tmp/ray-{os.getpid()}-{_free_port()}")  # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    home = temp.with_name(temp.name + "-home")  # Ray keeps state in ~/.ray (an auth token of another cluster)
    home.mkdir()
    env = os.environ | {"PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                        "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", "HOME": str(home)}
    common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    groups = []

    def start(*args):
        p = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", *args, *common], env=env,
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        groups.append(p.pid)
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]

    try:
        start("--head", "--port", str(port), "--num-cpus", "0", "--temp-dir", str(temp), "--include-dashboard=false")
        start("--address", f"127.0.0.1:{port}", "--num-cpus", "2")
        yield f"127.0.0.1:{port}", env
    finally:
        for pgid in groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in _ours(temp):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["rm", "-rf", str(temp), str(home)], check=False)


def _task_pids() -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "cmdline").read_bytes().startswith(TASK_TITLE):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def _table(runs: Path) -> list[dict]:
    (folder,) = list(runs.iterdir())
    return list(csv.DictReader(open(folder / "table.csv")))


@pytest.mark.slow
def test_ray_sweep_survives_a_killed_worker_with_the_in_process_table(tmp_path):
    # In-process in chunks of 4 (before the cluster takes its share of the CPUs), on Ray in chunks of 2: with
    # sigma > 0 too, every trial reads its own noise stream, so the tables agree whatever the chunks.
    assert main([*BASE, "--max-replicas", "4", "--runs-dir", str(tmp_path / "here")]) == 0
    # Table I runs on the same engine and executors
    table = ["sweep", "table", "--sigma", "0", "--sigma", "0.02", *BASE[BASE.index("--trials"):]]
    assert main([*table, "--max-replicas", "4", "--runs-dir", str(tmp_path / "table-here")]) == 0
    with ray_cluster() as (address, env):
        out, returncode, killed = _sweep_killing_one_task(tmp_path / "ray", address, env)
        on_ray = subprocess.run([sys.executable, "-m", "hil.cli", *table, "--max-replicas", "2", "--runs-dir",
                                 str(tmp_path / "table-ray"), "--executor", "ray", "--address", address], env=env,
                                cwd=ROOT, capture_output=True, timeout=300)
    assert on_ray.returncode == 0, on_ray.stdout.decode()[-2000:] + on_ray.stderr.decode()[-2000:]
    assert _table(tmp_path / "table-ray") == _table(tmp_path / "table-here")
    assert returncode == 0, out.decode()[-3000:]
    assert killed is not None, "no chunk was seen running on a worker"
    ray_rows, here_rows = _table(tmp_path / "ray"), _table(tmp_path / "here")
    assert len(here_rows) == 4 and ray_rows == here_rows  # the retried chunk trained exactly as before, chunked apart


def _sweep_killing_one_task(runs: Path, address: str, env: dict):
    """The grid through Ray; the first worker process seen training a chunk is SIGKILLed mid-task."""
    sweep = subprocess.Popen([sys.executable, "-m", "hil.cli", *GRID, "--runs-dir", str(runs),
                              "--executor", "ray", "--address", address], env=env, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    killed = None
    try:
        while sweep.poll() is None and killed is None:
            running = _task_pids()
            if running:
                killed = running[0]
                os.kill(killed, signal.SIGKILL)  # the worker process training a chunk dies mid-task
            time.sleep(0.05)
        out, _ = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    return out, sweep.returncode, killed
