"""`hil safe`: after a crash left a bench on, connect without a reset, report what is on, ramp it to 0 and off."""

import torch
import yaml
from conftest import quiet_tree

from drivers.crossbar import InstrumentCrossbar
from drivers.lab import LabConfig
from hil.cli import main
from hil.core.config import EPConfig, NetworkConfig
from sim_backend.emulator import EmulatedLab

NET = NetworkConfig(hidden=[8], input_gain=16.0, g_min=0.01, g_max=1.0)  # the example lab's 16-8-2 run


def test_hil_safe_after_a_crash(tmp_path, capsys):
    tree = quiet_tree()
    lab = LabConfig.model_validate(tree)
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(yaml.safe_dump(tree))
    with EmulatedLab(lab) as emu:
        reg = emu.write_registry(tmp_path / "reg.json")
        bench = InstrumentCrossbar(lab, NET, EPConfig(), layer_sizes=[16, 8, 2], registry=reg)
        bench.clamp(torch.full((1, 16), 0.5))  # the DACs hold 8 V and -8 V
        bench.measure(1)
        bench.nudge(torch.tensor([[1.0, 0.0]]), 1.0)
        bench.measure(1)  # SMUs on, the output SMUs sourcing the nudge currents
        left_on = emu.outputs()
        assert left_on
        # The crash: the process loses its sessions without shutting anything down.
        bench.instruments.session.close()
        bench.instruments.closed = True
        assert emu.outputs() == left_on

        capsys.readouterr()
        assert main(["safe", "--lab", str(lab_file), "--registry", str(reg)]) == 0
        out = capsys.readouterr().out
        assert emu.outputs() == {}  # every output at 0 and off, every switch open
        assert "found on:" in out and "safe:" in out
        for name in left_on:  # each instrument that was on is named (the board's protocol has no state query)
            assert name == "board" or f"found on: {name}" in out, (name, out)

        # Run again: nothing is on any more.
        assert main(["safe", "--lab", str(lab_file), "--registry", str(reg)]) == 0
        assert "nothing was on" in capsys.readouterr().out


def test_hil_safe_names_an_instrument_it_cannot_reach(tmp_path, capsys, example_lab):
    tree = example_lab
    lab = LabConfig.model_validate(tree)
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(yaml.safe_dump(tree))
    with EmulatedLab(lab) as emu:
        reg = emu.write_registry(tmp_path / "reg.json")
        emu.servers["smu_b"].shutdown()
        emu.servers["smu_b"].server_close()
        capsys.readouterr()
        assert main(["safe", "--lab", str(lab_file), "--registry", str(reg)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("hil: error: 1 instrument(s) could not be made safe: smu_b:")
        assert not {k: v for k, v in emu.outputs().items() if k != "smu_b"}


def test_train_names_an_instrument_nothing_answers_at(tmp_path, monkeypatch, capsys, example_lab):
    """pyvisa-py opens a socket at its first command: a refused connection is said as such, not as a drop."""
    tree = example_lab
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(yaml.safe_dump(tree))
    with EmulatedLab(LabConfig.model_validate(tree)) as emu:
        monkeypatch.setenv("HIL_EMULATOR_REGISTRY", str(emu.write_registry(tmp_path / "reg.json")))
        emu.servers["smu_b"].shutdown()
        emu.servers["smu_b"].server_close()
        capsys.readouterr()
        assert main(["train", "--lab", str(lab_file), "--train-limit", "4", "--test-limit", "2", "--epochs", "1",
                     "--no-progress", "--runs-dir", str(tmp_path / "runs")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("hil: error: smu_b: cannot connect to TCPIP0::127.0.0.1::"), err
        assert "connection refused" in err[0]
        assert emu.outputs() == {} and not (tmp_path / "runs").exists()
