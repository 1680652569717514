"""The emulator registry belongs to one live emulator: never overwritten under it, never trusted after it died."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.lab import load_lab
from drivers.session import InstrumentError, resolve_resource
from hil.cli import main
from sim_backend.emulator import EmulatedLab
from sim_backend.emulator.lab import RegistryInUse

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lab-emulated.yaml"


def registry_of(path, pid):
    path.write_text(json.dumps({"lab": "x", "pid": pid, "host": socket.gethostname(),
                                "resources": {"smu": "TCPIP0::127.0.0.1::1::SOCKET"}}))
    return path


def test_a_live_emulators_registry_is_not_overwritten(tmp_path, capsys):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        reg = registry_of(tmp_path / "reg.json", other.pid)
        before = reg.read_text()
        with EmulatedLab(load_lab(EXAMPLE)) as emu:
            with pytest.raises(RegistryInUse, match=f"pid {other.pid}"):
                emu.write_registry(reg)
            EmulatedLab.remove_registry(reg)  # not ours: left alone
        assert reg.read_text() == before
        assert main(["emulate", "--lab", str(EXAMPLE), "--registry", str(reg), "--duration", "0"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("hil: error: --registry:") and f"pid {other.pid}" in err
        assert reg.read_text() == before
    finally:
        other.kill()
        other.wait()


def test_a_dead_emulators_registry_is_named_stale_and_replaced(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    reg = registry_of(tmp_path / "reg.json", dead.pid)
    with pytest.raises(InstrumentError, match=f"pid {dead.pid}\\) is no longer running"):
        resolve_resource("emulator:smu", reg)
    assert main(["emulate", "--lab", str(EXAMPLE), "--registry", str(reg), "--duration", "0"]) == 0
    out = capsys.readouterr().out
    assert "keeps its conductances between runs" in out
    assert not reg.exists()  # this emulator's own registry goes with it


def test_registry_not_json_is_one_error(tmp_path):
    reg = tmp_path / "reg.json"
    reg.write_text("{not json")
    with pytest.raises(InstrumentError, match="not an emulator registry"):
        resolve_resource("emulator:smu", reg)


def test_the_emulator_writes_the_registry_its_clients_read(tmp_path, monkeypatch):
    """write_registry() with no path: $HIL_EMULATOR_REGISTRY, else .hil-emulator.json here, as resolve_resource
    reads it (`hil emulate` with no --registry)."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("HIL_EMULATOR_REGISTRY", str(tmp_path / "env.json"))
    with EmulatedLab(load_lab(EXAMPLE)) as emu:
        path = emu.write_registry()
        assert path == tmp_path / "env.json" and not (here / ".hil-emulator.json").exists()
        name = next(iter(emu.resources))
        assert resolve_resource(f"emulator:{name}") == emu.resources[name]
        EmulatedLab.remove_registry(path)
        assert not path.exists()
        monkeypatch.delenv("HIL_EMULATOR_REGISTRY")
        assert emu.write_registry() == Path(".hil-emulator.json") and (here / ".hil-emulator.json").is_file()
        assert resolve_resource(f"emulator:{name}") == emu.resources[name]
        EmulatedLab.remove_registry(Path(".hil-emulator.json"))
