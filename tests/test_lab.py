"""The lab bench through the real pyvisa + pyvisa-py and pyserial stacks, against the emulated lab on 127.0.0.1."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import pyvisa
import torch
import yaml
from conftest import example_tree, quiet_tree

from drivers.crossbar import InstrumentCrossbar
from drivers.keithley707b import Keithley707B
from drivers.keithley2450 import Keithley2450
from drivers.keithley2600 import Keithley2600
from drivers.keysight_b2900 import KeysightB2900
from drivers.lab import LabConfig, load_lab
from drivers.programming import write_verify
from drivers.qdac2 import QDac2
from drivers.session import CommandLog, InstrumentError, LimitError, VisaSession
from drivers.xbar_board import XbarBoard
from hil.core.config import ConfigError, EPConfig, NetworkConfig
from sim_backend.emulator import EmulatedLab

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lab-emulated.yaml"
NET = NetworkConfig(hidden=[8], input_gain=16.0, g_min=0.01, g_max=1.0)  # the example lab's 16-8-2 run


def lab_tree():
    return example_tree()


def open_driver(cls, emu, name, log, **kw):
    session = VisaSession("@py", log)
    return cls(name, session.open(emu.resources[name]), log, **kw)


# How each instrument writes a reading (its manual's ASCII format): 2450 "-1.013526E-05", B2900 "+1.000000E-03".
ZERO3 = ",".join(["0.000000E+00"] * 3)
ZERO3_B2900 = ",".join(["+0.000000E+00"] * 3)
# TSP print() writes numbers as format.asciiprecision (6) digits: an empty error queue prints code, severity, node.
TSP_OK = "0.00000e+00\tQueue Is Empty\t0.00000e+00\t0.00000e+00"


def test_transcript_keithley2450(quiet_lab):
    lab, emu = quiet_lab
    log = CommandLog()
    smu = open_driver(Keithley2450, emu, "smu_hidden", log, max_abs_V=0.2, compliance_A=1e-5)
    sw = open_driver(Keithley707B, emu, "switch", log)
    sw.connect()
    sw.route("1A03")
    smu.connect()
    smu.configure_voltmeter("1", nplc=2)
    assert smu.read_voltages("1", 3) == [0.0, 0.0, 0.0]
    smu.shutdown()
    ok = ("0,\"No error\"")
    assert log.transcript("smu_hidden") == [
        ("*IDN?", "KEITHLEY INSTRUMENTS,MODEL 2450,04412345,1.7.12b"),
        ("*RST", None), (":SYSTem:ERRor?", ok),
        (":SOUR:FUNC CURR", None), (":SYSTem:ERRor?", ok),
        (':SENS:FUNC "VOLT"', None), (":SYSTem:ERRor?", ok),
        (":SOUR:CURR:VLIM 0.2", None), (":SYSTem:ERRor?", ok),
        (":SOUR:CURR 0", None), (":SYSTem:ERRor?", ok),
        (":SENS:VOLT:NPLC 2", None), (":SYSTem:ERRor?", ok),
        (":OUTP ON", None), (":SYSTem:ERRor?", ok),
        (":SENS:COUN 3", None), (':TRAC:CLE "defbuffer1"', None), (':TRAC:TRIG "defbuffer1"', None),
        (':TRAC:DATA? 1, 3, "defbuffer1", READ', ZERO3),
        (":SOUR:CURR 0", None), (":OUTP OFF", None), (":SYSTem:ERRor?", ok),
    ]
    assert smu.queries == 10  # IDN, 7 error checks, shutdown check and ONE for the 3 readings
    assert log.transcript("switch") == [
        ("*IDN?", "Keithley Instruments Inc., Model 707B, 04123456, 1.7.0"), ("reset()", None),
        ('channel.open("allslots")', None), ("print(errorqueue.next())", TSP_OK),
        ('channel.exclusiveclose("1A03")', None), ("*OPC?", "1")]
    assert sw.closed_channels() == "1A03"


def test_transcript_keithley2600_nudge_and_shutdown(quiet_lab):
    lab, emu = quiet_lab
    log = CommandLog()
    smu = open_driver(Keithley2600, emu, "smu_out", log, max_abs_V=0.2, compliance_A=1e-5)
    smu.connect()
    smu.configure_voltmeter("a", nplc=1)
    smu.source_current("a", 2e-6)
    volts = smu.read_voltages("a", 2)
    assert len(volts) == 2 and volts[0] > 0  # 2 uA into the output node raises it
    smu.shutdown()
    ok = TSP_OK
    t = log.transcript("smu_out")
    assert t[:3] == [("*IDN?", "Keithley Instruments Inc., Model 2636B, 4123456, 4.0.4"), ("reset()", None),
                     ("print(errorqueue.next())", ok)]
    assert t[3:15:2] == [("smua.source.func = smua.OUTPUT_DCAMPS", None),
                         ("display.smua.measure.func = display.MEASURE_DCVOLTS", None),
                         ("smua.source.limitv = 0.2", None), ("smua.source.leveli = 0", None),
                         ("smua.measure.nplc = 1", None), ("smua.source.output = smua.OUTPUT_ON", None)]
    assert t[15:19] == [("smua.source.leveli = 2e-06", None), ("smua.measure.count = 2", None),
                        ("smua.nvbuffer1.clear()", None), ("smua.measure.v(smua.nvbuffer1)", None)]
    assert t[19][0] == "printbuffer(1, 2, smua.nvbuffer1.readings)" and len(t[19][1].split(", ")) == 2
    assert t[20:] == [("smua.source.leveli = 1.33333e-06", None), ("smua.source.leveli = 6.66667e-07", None),
                      ("smua.source.leveli = 0", None), ("smua.source.output = smua.OUTPUT_OFF", None),
                      ("smub.source.leveli = 0", None), ("smub.source.output = smub.OUTPUT_OFF", None),
                      ("print(errorqueue.next())", ok)]
    assert emu.outputs() == {}


def test_transcript_b2900_and_qdac(quiet_lab):
    lab, emu = quiet_lab
    log = CommandLog()
    smu = open_driver(KeysightB2900, emu, "smu_b", log, max_abs_V=0.2, compliance_A=1e-5)
    smu.connect()
    smu.configure_voltmeter("1", nplc=1)
    assert smu.read_voltages("1", 3) == [0.0] * 3
    t = log.transcript("smu_b")
    assert t[0] == ("*IDN?", "Keysight Technologies,B2902A,MY51140123,3.4.2011.5100")
    assert t[3::2][:6] == [(":SOUR1:FUNC:MODE CURR", None), (':SENS1:FUNC "VOLT"', None), (":SENS1:VOLT:PROT 0.2", None),
                           (":SOUR1:CURR 0", None), (":SENS1:VOLT:NPLC 1", None), (":OUTP1 ON", None)]
    assert t[-3:] == [(":TRIG1:COUN 3", None), (":INIT (@1)", None), (":FETC:ARR:VOLT? (@1)", ZERO3_B2900)]
    dac = open_driver(QDac2, emu, "dac_plus", log, max_abs_V=0.15)
    dac.connect()
    dac.configure_channel(4)
    dac.set_voltage(4, 0.09)
    dac.check_errors()  # a query: the DAC has acted on the writes
    assert emu.outputs()["dac_plus"] == {4: {"on": True, "level_V": 0.09}}
    dac.shutdown()
    smu.shutdown()
    d = log.transcript("dac_plus")
    assert d == [("*IDN?", "QDevil,QDAC-II,12,13-1.57"), ("*rst", None), ("syst:err?", '0, "No error"'),
                 ("sour4:rang low", None), ("syst:err?", '0, "No error"'), ("sour4:filt dc", None),
                 ("syst:err?", '0, "No error"'), ("sour4:volt:mode fix", None), ("syst:err?", '0, "No error"'),
                 ("sour4:volt:slew 1", None), ("syst:err?", '0, "No error"'), ("sour4:volt 0", None),
                 ("sour4:volt 0.09", None), ("syst:err?", '0, "No error"'), ("sour4:volt 0.06", None), ("sour4:volt 0.03", None), ("sour4:volt 0", None),
                 ("syst:err?", '0, "No error"')]
    assert emu.outputs() == {}


def test_transcript_serial_board_write_verify(quiet_lab):
    lab, emu = quiet_lab
    log = CommandLog()
    board = XbarBoard("board", XbarBoard.open_port(emu.resources["board"]), log, max_pulse_V=2.0,
                      max_pulse_width_s=1e-5, read_voltage_V=0.1)
    board.connect()
    assert log.transcript("board") == [("*IDN?", "XBAR,EMU-1,0001,1.0"), ("RST", "OK"), ("VREAD 0.1", "OK")]
    g0 = board.read_conductance(3, 5)
    res = write_verify(board, 3, 5, g0 + 5e-6, lab.programming)
    assert abs(res.error_S) <= lab.programming.tolerance_S and not res.stuck and res.pulses >= 2
    t = log.transcript("board")[5:]  # after IDN, RST, VREAD and the two reads of G before pulsing
    assert len(t) == 2 * res.pulses
    for (pulse, ok), (read, value) in zip(t[::2], t[1::2]):
        assert pulse.startswith("PULSE 3 5 ") and ok == "OK" and read == "READ 3 5" and float(value) > 0
    assert emu.bench.conductance("board", 3, 5) == pytest.approx(res.final_S, rel=1e-3)
    with pytest.raises(LimitError, match="pulse amplitude"):
        board.pulse(3, 5, 2.5, 1e-6)
    assert log.transcript("board")[-1][0] == "READ 3 5"  # the refused pulse never went out


def test_emulator_is_strict(quiet_lab):
    lab, emu = quiet_lab
    rm = pyvisa.ResourceManager("@py")
    r = rm.open_resource(emu.resources["smu_hidden"], read_termination="\n", write_termination="\n")
    r.write(":SOUR:FROB 1")
    assert r.query(":SYST:ERR?") == '-113,"Undefined header"'
    r.write(":SOUR:CURR 5")
    assert r.query(":SYST:ERR?") == '-222,"Data out of range"'
    assert r.query(":SYST:ERR?") == '0,"No error"'
    r.write(":sour:curr:vlim 0.1")  # short and long forms, any case
    r.write(":SOURCE:CURRENT:VLIMIT 0.1")
    assert r.query(":SYSTem:ERRor?") == '0,"No error"'
    r.close()


def test_twelve_volts_on_a_ten_volt_channel_refused_at_load(tmp_path):
    tree = lab_tree()
    tree["limits"]["dac_plus"]["max_abs_V"] = 12.0
    p = tmp_path / "lab.yaml"
    p.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=r"limits.dac_plus.max_abs_V: 12 V is beyond what a qdac2 can do \(\+-10 V\)"):
        load_lab(p)
    tree = lab_tree()
    tree["nodes"]["outputs"][0]["nudge"] = None
    p.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=r"nodes.outputs\[0\].nudge"):
        load_lab(p)


def make_bench(lab, emu, tmp_path, beta=1.0, **kw):
    reg = emu.write_registry(tmp_path / "reg.json")
    return InstrumentCrossbar(lab, NET, EPConfig(beta=beta), layer_sizes=[16, 8, 2], registry=reg, **kw)


def test_limit_raises_before_sending_and_bench_ends_safe(quiet_lab, tmp_path):
    lab, emu = quiet_lab
    bench = make_bench(lab, emu, tmp_path)
    x = torch.rand(2, 16)
    bench.clamp(x)
    free = bench.measure(2)
    assert free.shape == (2, 1, 2, 10)
    assert emu.outputs()  # DACs and SMUs are on while measuring
    n_logged = len(bench.log.entries)
    bench.nudge(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 1e5)  # 1e5 S * ~1 V = far past the 10 uA compliance
    with pytest.raises(LimitError, match="current: .* exceeds the safe limit"):
        bench.measure(2)
    sent = [c for _, c, _ in bench.log.entries[n_logged:]]
    levels = [float(c.split()[-1]) for c in sent if "source.leveli = " in c or c.startswith(":SOUR1:CURR ")]
    assert levels and all(abs(i) <= 1e-5 for i in levels)  # only the shutdown ramps went out, never the 0.05 A asked
    assert not any(c.startswith("PULSE") for c in sent)
    assert emu.outputs() == {}  # every output ramped to 0 and off
    assert bench.closed


def test_driver_error_leaves_outputs_off(tmp_path):
    lab = LabConfig.model_validate(quiet_tree())
    with EmulatedLab(lab) as emu:
        bench = make_bench(lab, emu, tmp_path)
        bench.clamp(torch.rand(1, 16))
        bench.measure(1)
        inst = emu.servers["smu_b"].instrument
        obey = inst.handle  # the SMU keeps obeying, but its readings come back corrupted
        inst.handle = lambda line: "garbage,reply" if line.startswith(":FETC") else obey(line)
        with pytest.raises(InstrumentError, match="expected numbers"):
            bench.measure(1)
        assert emu.outputs() == {}


def test_wrong_instrument_refused_at_connect(tmp_path):
    tree = lab_tree()
    lab = LabConfig.model_validate(tree)
    with EmulatedLab(lab) as emu:
        emu.resources["smu_b"], emu.resources["smu_out"] = emu.resources["smu_out"], emu.resources["smu_b"]
        with pytest.raises(InstrumentError, match=r"smu_out: \*IDN\? answered .*B2902A.*expected a MODEL 26"):
            make_bench(lab, emu, tmp_path)
        assert emu.outputs() == {}


def test_hil_emulate_and_train_end_to_end(tmp_path):
    """`hil emulate` in one process, `hil train --lab` in another, over real TCP VISA sessions."""
    reg = tmp_path / "emulator.json"
    emu = subprocess.Popen([sys.executable, "-m", "hil.cli", "emulate", "--lab", str(EXAMPLE), "--registry", str(reg),
                            "--duration", "240"], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        lines = [emu.stdout.readline() for _ in range(9)]
        assert lines[0].startswith("emulated lab 'emulated-16-8-2': 7 instruments") and "TCPIP0::127.0.0.1::" in "".join(lines)
        assert reg.is_file()
        r = subprocess.run([sys.executable, "-m", "hil.cli", "train", "--lab", str(EXAMPLE), "--train-limit", "40",
                            "--test-limit", "20", "--epochs", "1", "--no-progress", "--runs-dir", "runs"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=240,
                           env={**__import__("os").environ, "HIL_EMULATOR_REGISTRY": str(reg)})
        assert r.returncode == 0, r.stderr
        assert "VISA round trips" in r.stdout
        (run,) = (tmp_path / "runs").iterdir()
        row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        # per sample and phase: 10 node reads (N readings in one query each), 8 route syncs, DAC and nudge syncs,
        # the nudge's response reading of 2 outputs; evaluation adds its own reads
        assert 40 <= row["round_trips_per_training_sample"] <= 80, row
        log = (run / "commands.jsonl").read_text().splitlines()
        assert len(log) > 1000 and json.loads(log[-1])["instrument"]
    finally:
        emu.terminate()
        out, _ = emu.communicate(timeout=30)
    assert "outputs left on: none" in out


def test_characterize_the_bench(tmp_path, capsys):
    """`hil characterize --lab`: the emulated SMUs' white noise (2 uV at 1 PLC = 4e-4 normalized V) comes back."""
    from hil.cli import main

    lab = load_lab(EXAMPLE)
    with EmulatedLab(lab) as emu:
        reg = emu.write_registry(tmp_path / "reg.json")
        import os

        os.environ["HIL_EMULATOR_REGISTRY"] = str(reg)
        try:
            code = main(["characterize", "--lab", str(EXAMPLE), "--readings", "400", "--runs-dir", str(tmp_path / "runs")])
        finally:
            del os.environ["HIL_EMULATOR_REGISTRY"]
        assert code == 0
        assert emu.outputs() == {}
    (run,) = (tmp_path / "runs").iterdir()
    est = json.loads((run / "characterize.json").read_text())["estimate"]
    assert est["pooled_low"] <= 4e-4 <= est["pooled_high"]
    assert "pooled sigma" in capsys.readouterr().out
    # calibrate from it: the training command it suggests runs on the same bench
    assert main(["calibrate", "--characterization", str(run / "characterize.json"), "--sigma-target", "2e-3",
                 "--runs-dir", str(tmp_path / "cal")]) == 0
    assert f"train with it: hil train --lab {EXAMPLE.resolve()} --config " in capsys.readouterr().out


RESISTORS = EXAMPLE.with_name("lab-emulated-resistors.yaml")


def test_conductance_nudge_matches_the_simulator(tmp_path):
    """Nudge resistors: the bench's nudged outputs equal the simulator's conductance nudge on the same conductances."""
    from sim_backend.crossbar import SimCrossbar

    lab = LabConfig.model_validate(quiet_tree(RESISTORS.name))
    with EmulatedLab(lab) as emu:
        bench = make_bench(lab, emu, tmp_path, beta=1.0, dtype=torch.float64)
        x = torch.rand(2, 16, dtype=torch.float64)
        t = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        bench.clamp(x)
        free = bench.measure(1)[0, 0]
        bench.nudge(t, 1.0)
        nudged = bench.measure(1)[0, 0]
        sim = SimCrossbar.from_settings([16, 8, 2], input_gain=16.0, sweeps=200, dtype=torch.float64)
        sim.load_conductances([w.clone() for w in bench.weights])
        sim.clamp(x)
        sim.relax()
        torch.testing.assert_close(free, torch.cat(sim.voltages, -1)[0], atol=2e-3, rtol=0)
        sim.nudge(t, 1.0)
        sim.relax()
        torch.testing.assert_close(nudged, torch.cat(sim.voltages, -1)[0], atol=2e-3, rtol=0)
        assert (nudged[:, -2:] - free[:, -2:]).abs().max() > 0.05  # the nudge really moved the outputs
        closes = [c for i, c, _ in bench.log.entries if i == "nudge_switch" and "channel.close" in c]
        assert closes == ['channel.close("1A01")', 'channel.close("1A02")']  # once for both samples
        bench.close()
        assert emu.outputs() == {}


def test_conductance_nudge_refuses_another_beta(tmp_path):
    lab = load_lab(RESISTORS)
    with pytest.raises(ConfigError, match=r"ep.beta: this bench nudges through fixed resistors of 1 normalized S"):
        InstrumentCrossbar(lab, NET, EPConfig(beta=0.5), layer_sizes=[16, 8, 2])
    with pytest.raises(ConfigError, match="ep.centered"):
        InstrumentCrossbar(lab, NET, EPConfig(beta=1.0, centered=True), layer_sizes=[16, 8, 2])
    with pytest.raises(ValueError, match=r"network.hidden: \[8\] differs from the hidden sizes of layer_sizes"):
        InstrumentCrossbar(lab, NET, EPConfig(), layer_sizes=[16, 4, 2])
    with pytest.raises(TypeError, match="input_gain"):  # the gain comes from the network section, never a keyword
        InstrumentCrossbar(lab, NET, EPConfig(), layer_sizes=[16, 8, 2], input_gain=16.0)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="network.input_gain: gamma=40 puts"):  # the sections' values are checked
        InstrumentCrossbar(lab, NET.model_copy(update={"input_gain": 40.0}), EPConfig(), layer_sizes=[16, 8, 2])
    tree = yaml.safe_load(RESISTORS.read_text())
    tree["nodes"]["outputs"][0]["nudge_route"] = "switch/1A11"  # the switch that routes hidden nodes
    with pytest.raises(ValueError, match="also routes nodes for reading"):
        LabConfig.model_validate(tree)


def test_train_with_nudge_resistors(tmp_path, capsys):
    from hil.cli import main

    lab = load_lab(RESISTORS)
    with EmulatedLab(lab) as emu:
        import os

        os.environ["HIL_EMULATOR_REGISTRY"] = str(emu.write_registry(tmp_path / "reg.json"))
        try:
            code = main(["train", "--lab", str(RESISTORS), "--train-limit", "40", "--test-limit", "20", "--epochs", "1",
                         "--no-progress", "--runs-dir", str(tmp_path / "runs")])
            assert code == 0 and emu.outputs() == {}
            assert "VISA round trips" in capsys.readouterr().out
            (run,) = (tmp_path / "runs").iterdir()
            # resuming a bench run goes back to its bench, even without --lab
            assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
        finally:
            del os.environ["HIL_EMULATOR_REGISTRY"]
        assert emu.outputs() == {}
    out = capsys.readouterr().out
    assert "resuming on the bench it was trained on" in out and "lab bench emulated-16-8-2-resistors" in out
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and "round_trips_per_training_sample" in rows[1]
