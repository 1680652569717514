"""Adding an instrument is one driver class and one emulated class that declare their kind; nothing else changes.

A made-up "mock_dac" (a QDAC-II variant with its own identity and a smaller range) is declared here, in the test
module only: the lab config accepts the kind and checks limits against its range, the emulated lab starts the
emulated class, the bench opens it through its driver over pyvisa-py and runs a measurement, and `hil safe`
brings it back to 0 V after a crash.
"""

from pathlib import Path

import pytest
import torch
import yaml
from conftest import quiet_tree

from drivers.crossbar import InstrumentCrossbar
from drivers.lab import ChannelRef, LabConfig, load_lab
from drivers.qdac2 import QDac2
from drivers.registry import DRIVERS, driver_class
from hil.cli import main
from hil.core.config import ConfigError, EPConfig, NetworkConfig
from sim_backend.emulator import EmulatedLab
from sim_backend.emulator.base import EMULATED, emulated_class
from sim_backend.emulator.qdac2 import EmulatedQDac2

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lab-emulated.yaml"
NET = NetworkConfig(hidden=[8], input_gain=16.0, g_min=0.01, g_max=1.0)  # the example lab's 16-8-2 run


class MockDac(QDac2):
    """The driver: the QDAC-II command set, another identity, a +-9 V range."""

    KIND = "mock_dac"
    MAX_V = 9.0
    IDN_MATCH = "MOCK-DAC"


class EmulatedMockDac(EmulatedQDac2):
    """What the emulated lab starts for a mock_dac."""

    KIND = "mock_dac"
    IDN = "Acme,MOCK-DAC,7,0.1"


def mock_lab_tree() -> dict:
    tree = quiet_tree()
    for name in ("dac_plus", "dac_minus"):
        tree["instruments"][name]["kind"] = "mock_dac"
    return tree


def test_declared_kinds_are_registered():
    assert driver_class("mock_dac") is MockDac and emulated_class("mock_dac") is EmulatedMockDac
    assert driver_class("qdac2") is QDac2 and emulated_class("qdac2") is EmulatedQDac2
    assert MockDac.ROLE == "dac"  # inherited from the QDAC-II driver
    assert set(DRIVERS.kinds()) >= {"qdac2", "keithley2450", "keithley2600", "keysight_b2900", "keithley707b",
                                    "xbar_board", "mock_dac"}
    assert set(EMULATED.kinds()) >= set(DRIVERS.kinds())  # every driver kind has an emulated instrument


def test_lab_config_takes_the_kind_and_its_range(tmp_path):
    tree = mock_lab_tree()
    lab = LabConfig.model_validate(tree)
    assert lab.instruments["dac_plus"].role == "dac"
    assert lab.nodes.inputs[0].plus == ChannelRef("dac_plus", "1") and str(lab.nodes.inputs[0].plus) == "dac_plus/1"
    # The range check comes from the class: 9.5 V is within a qdac2 (10 V) but not a mock_dac (9 V).
    tree["limits"]["dac_plus"]["max_abs_V"] = 9.5
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=r"limits.dac_plus.max_abs_V: 9.5 V is beyond what a mock_dac can do \(\+-9 V\)"):
        load_lab(path)
    tree["instruments"]["dac_plus"]["kind"] = "nosuch"
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=r"instruments.dac_plus.kind: kind 'nosuch': no driver declares it "
                                          r"\(known: .*mock_dac"):
        load_lab(path)


def test_mock_dac_runs_through_the_emulated_lab(tmp_path, capsys):
    tree = mock_lab_tree()
    lab = LabConfig.model_validate(tree)
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(yaml.safe_dump(lab.model_dump(mode="json")))  # ChannelRefs dump back to "inst/ch"
    assert load_lab(lab_file) == lab
    with EmulatedLab(lab) as emu:
        assert type(emu.instruments["dac_plus"]) is EmulatedMockDac
        reg = emu.write_registry(tmp_path / "reg.json")
        bench = InstrumentCrossbar(lab, NET, EPConfig(), layer_sizes=[16, 8, 2], registry=reg)
        assert type(bench.instruments.dacs["dac_plus"]) is MockDac
        bench.clamp(torch.full((1, 16), 0.5))  # the mock DACs hold +-40 mV
        readings = bench.measure(2)
        assert readings.shape == (2, 1, 1, 10) and bool(torch.isfinite(readings).all())
        idn = [reply for inst, cmd, reply in bench.log.entries if inst == "dac_plus" and cmd == "*IDN?"]
        assert idn == ["Acme,MOCK-DAC,7,0.1"]
        assert "dac_plus" in emu.outputs()
        # A crash: the sessions are gone, nothing was shut down; `hil safe` finds the mock DACs on.
        bench.instruments.session.close()
        bench.instruments.closed = True
        capsys.readouterr()
        assert main(["safe", "--lab", str(lab_file), "--registry", str(reg)]) == 0
        out = capsys.readouterr().out
        assert "found on: dac_plus" in out and "found on: dac_minus" in out
        assert emu.outputs() == {}


def test_channel_references_are_parsed_once_with_one_clear_error(tmp_path):
    tree = yaml.safe_load(EXAMPLE.read_text())
    lab = LabConfig.model_validate(tree)
    route = lab.nodes.hidden[0][0].route
    assert route == ChannelRef("switch", "1A01") and str(route) == "switch/1A01"
    tree["nodes"]["inputs"][0]["plus"] = "dac_plus1"
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=r"nodes.inputs.0.plus: 'dac_plus1' is not instrument/channel"):
        load_lab(path)


def test_each_driver_is_given_its_own_slice_of_the_lab_config():
    """A driver's settings come from its DriverSettings alone: its limits, the board read voltage, and the clock of
    an emulated instrument (a real one's is 1)."""
    lab = load_lab(EXAMPLE)
    dac = lab.driver_settings("dac_plus")
    assert (dac.name, dac.instrument.kind, dac.limits.max_abs_V, dac.strict) == ("dac_plus", "qdac2", 0.15, lab.strict)
    assert QDac2.settings(dac)["max_abs_V"] == 0.15
    smu = lab.driver_settings("smu_hidden")
    assert driver_class("keithley2450").settings(smu) == {"max_abs_V": 0.2, "compliance_A": 1.0e-5}
    board = lab.driver_settings("board")
    assert driver_class("xbar_board").settings(board)["read_voltage_V"] == lab.programming.read_voltage_V
    assert dac.emulated and dac.clock_scale == lab.emulator.time_scale
    tree = yaml.safe_load(EXAMPLE.read_text())
    tree["instruments"]["dac_plus"]["resource"] = "TCPIP0::10.0.0.5::5025::SOCKET"  # a real one
    real = LabConfig.model_validate(tree).driver_settings("dac_plus")
    assert not real.emulated and real.clock_scale == 1.0
