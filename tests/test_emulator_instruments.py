"""The emulated instruments through the real pyvisa + pyvisa-py stack: SCPI engine, TSP (Lua), physics, timing."""

import time

import pytest
import pyvisa
from conftest import quiet_tree

from drivers.lab import LabConfig
from hil.core.config import ConfigError
from sim_backend.emulator import EmulatedLab


def make_lab(**emulator):
    return LabConfig.model_validate(quiet_tree(**emulator))


@pytest.fixture(scope="module")
def emu():
    with EmulatedLab(make_lab()) as lab:
        yield lab


@pytest.fixture
def open_inst(emu):
    rm = pyvisa.ResourceManager("@py")
    opened = []

    def _open(name):
        r = rm.open_resource(emu.resources[name], read_termination="\n", write_termination="\n", timeout=5000)
        r.write("*RST")
        r.write("*CLS")
        r.query("*OPC?")   # acted on before any other instrument's next command
        opened.append(r)
        return r

    yield _open
    for r in opened:
        r.write("*RST")
        r.query("*OPC?")   # each connection has its own server thread: finish before the next test starts
        r.close()
    rm.close()


# ---- SCPI engine ---------------------------------------------------------------------------------------------

def test_scpi_queries_every_setting_in_long_short_and_any_case(open_inst):
    k = open_inst("smu_hidden")
    assert k.query("*LANG?") == "SCPI"
    assert k.query(":SOUR:FUNC?") == "VOLT"
    k.write("source:function:mode current")
    assert k.query(":SOURce1:FUNCtion?") == "CURR"
    k.write(":SOUR:CURR:LEV 1e-6")
    assert float(k.query(":sour:curr?")) == 1e-6
    assert float(k.query(":SOUR:CURR:LEV:IMM:AMPL?")) == 1e-6
    k.write(":SENS:FUNC 'VOLT'")
    assert k.query(":SENS:FUNC?") == '"VOLT:DC"'
    k.write(":OUTP:STAT ON")
    assert k.query(":OUTP?") == "1"
    assert float(k.query(":SOUR:CURR:VLIM? MAX")) == 210.0
    k.write(":SOUR:CURR:VLIM MIN")
    assert float(k.query(":SOUR:CURR:VLIM?")) == 0.02
    assert k.query(":SYST:ERR:COUN?") == "0"


def test_scpi_compound_messages_follow_the_header_path(open_inst):
    k = open_inst("smu_hidden")
    # ';' continues at the last node's level, ';:' starts again at the root; replies join with ';'
    k.write(":SOUR:CURR:VLIM 0.5;:SENS:VOLT:NPLC 2;RANG:AUTO OFF")
    assert k.query(":SOUR:CURR:VLIM?;:SENS:VOLT:NPLC?;RANG:AUTO?") == "5.000000E-01;2.000000E+00;0"
    assert k.query("*OPC?;:SYST:ERR?") == '1;0,"No error"'


def test_scpi_error_queue_codes_and_all(open_inst):
    k = open_inst("smu_hidden")
    k.write(":SOUR:FROB 1")                   # -113
    k.write(":SOUR:CURR 5")                   # -222 (2450 sources at most 1.05 A)
    k.write(":SOUR:CURR")                     # -109
    k.write(":SOUR:FUNC PLASMA")              # -224
    k.write(":SOUR:CURR abc")                 # -104
    k.write(":OUTP ON, 2")                    # -108
    k.write(":SENS:FUNC 'VOLT")               # -102 unterminated string
    assert k.query(":SYST:ERR:COUN?") == "7"
    assert int(k.query("*STB?")) & 4          # error available
    assert int(k.query("*ESR?")) & (1 << 5)   # command error
    assert k.query(":SYST:ERR:NEXT?") == '-113,"Undefined header"'
    rest = k.query(":SYST:ERR:ALL?")
    assert [int(x.split(",")[0]) for x in rest.split('",')[:-1] + [rest.split('",')[-1]]] == [-222, -109, -224, -104,
                                                                                                -108, -102]
    assert k.query(":SYST:ERR?") == '0,"No error"'
    k.write(":OUTP ON;:SOUR:FROB;:OUTP OFF")  # the rest of a message after an error is not executed
    assert k.query(":OUTP?") == "1"
    assert k.query(":SYST:ERR?") == '-113,"Undefined header"'
    k.write("*ESE 32;*SRE 32")
    assert k.query("*ESE?;*SRE?") == "32;32"
    assert k.query("*TST?") == "0"


def test_b2900_and_qdac_answer_in_their_own_formats(open_inst):
    b = open_inst("smu_b")
    b.write(":SOUR2:FUNC:MODE CURR;:SOUR2:CURR 2e-6;:SENS2:VOLT:PROT 0.3")
    assert b.query(":SOUR2:FUNC:MODE?;:SOUR2:CURR?;:SENS2:VOLT:PROT?") == "CURR;+2.000000E-06;+3.000000E-01"
    b.write(":SOUR3:CURR 0")
    assert b.query(":SYST:ERR?") == '-114,"Header suffix out of range"'
    q = open_inst("dac_plus")
    q.write("sour5:rang low;volt 0.1")          # relative header: sour5:volt
    assert q.query("sour5:rang?") == "low" and float(q.query("sour5:volt?")) == 0.1
    q.write("sour5:volt 3")                     # the low range is +-2 V
    q.write("sour5:rang high;:sour5:volt 3")    # ';:' starts again at the root
    assert float(q.query("sour5:volt?")) == 3.0
    q.write("sour5:rang low")                   # 3 V does not fit the low range: settings conflict
    assert q.query("syst:err:all?") == '-222, "Data out of range",-221, "Settings conflict"'
    q.write("sour5:volt 0")


# ---- TSP on Lua ----------------------------------------------------------------------------------------------

def test_tsp_runs_any_valid_lua(open_inst):
    s = open_inst("smu_out")
    s.write("smua.source.func=smua.OUTPUT_DCAMPS smua.source.limitv=0.5")   # no spaces, two statements
    s.write("smua.source.output=1")
    assert float(s.query("print(smua.source.output)")) == 1.0
    assert s.query("print(smua.source.limitv, smua.source.func == smua.OUTPUT_DCAMPS)") == "5.00000e-01\ttrue"
    s.write("for k = 1, 3 do smua.measure.count = k end")
    assert s.query("print(smua.measure.count)") == "3.00000e+00"
    s.write("smua.nvbuffer1.clear() smua.measure.v(smua.nvbuffer1)")
    assert s.query("print(smua.nvbuffer1.n)") == "3.00000e+00"
    assert len(s.query("printbuffer(1, smua.nvbuffer1.n, smua.nvbuffer1.readings)").split(", ")) == 3
    s.write("format.asciiprecision = 3")
    assert s.query("print(1/4)") == "2.50e-01"
    assert s.query("print(localnode.model)") == "2636B"
    s.write("errorqueue.clear()")
    assert s.query("print(errorqueue.count)") == "0.00e+00"


def test_tsp_errors_are_the_manuals_codes(open_inst):
    s = open_inst("smu_out")
    s.write("smua.source.leveli = = 1")          # syntax
    s.write("smua.nosuch.thing = 1")             # runtime: index a nil
    s.write("smua.source.leveli = 5")            # 2636B: 1.5 A at most
    s.write("smua.source.limitv = 0.001")        # below the smallest limit
    codes = []
    for _ in range(5):
        codes.append(s.query("print(errorqueue.next())").split("\t"))
    assert [float(c[0]) for c in codes] == [-285, -286, 1102, 1101, 0]
    assert "TSP Syntax error" in codes[0][1] and codes[4][1] == "Queue Is Empty"
    assert s.query("*IDN?").startswith("Keithley Instruments Inc., Model 2636B")


def test_tsp_script_and_switch(open_inst):
    sw = open_inst("switch")
    sw.write("loadandrunscript\r\nchannel.close('1A01')\r\nchannel.close(\"1A02\")\r\nendscript")
    assert sw.query("print(channel.getclose('allslots'))") == "1A01;1A02"
    sw.write("channel.open('1A01')")
    assert sw.query("print(channel.getclose('slot1'))") == "1A02"
    sw.write("channel.close('1A13')")           # the card has 12 columns
    assert float(sw.query("print(errorqueue.next())").split("\t")[0]) == 1115
    sw.write("reset()")
    assert sw.query("print(channel.getclose('allslots'))") == "nil"


# ---- source physics --------------------------------------------------------------------------------------------

def test_current_into_a_node_stops_at_the_voltage_compliance(emu, open_inst):
    sw, k = open_inst("switch"), open_inst("smu_hidden")
    sw.write("channel.exclusiveclose('1A01')")
    sw.query("*OPC?")   # the switch has acted before the SMU (another connection, another thread) sources
    k.write(":SOUR:FUNC CURR;:SOUR:CURR 1e-3;:SOUR:CURR:VLIM 0.2;:SENS:FUNC 'VOLT';:OUTP ON")
    k.write(":SENS:COUN 3;:TRAC:CLE;:TRAC:TRIG")
    values = k.query(":TRAC:DATA? 1, 3, 'defbuffer1', READ, STAT").split(",")
    volts, status = [float(v) for v in values[::2]], [int(s) for s in values[1::2]]
    assert all(v <= 0.2 + 1e-12 for v in volts) and volts[0] == pytest.approx(0.2)
    assert status == [8, 8, 8]                               # each reading carries the compliance flag
    assert k.query(":SOUR:CURR:VLIM:TRIP?") == "1" and int(k.query("*STB?")) & 8   # questionable summary
    k.write(":SOUR:CURR 1e-6")                               # a small current: the node sits below the limit
    assert 0 < float(k.query(":READ?")) < 0.2 and k.query(":SOUR:CURR:VLIM:TRIP?") == "0"


def test_a_voltage_sourced_node_reads_its_level_and_its_current(emu, open_inst):
    sw, k = open_inst("switch"), open_inst("smu_hidden")
    sw.write("channel.exclusiveclose('1A02')")
    sw.query("*OPC?")
    k.write(":SOUR:FUNC VOLT;:SOUR:VOLT 0.05;:SOUR:VOLT:ILIM 1e-3;:OUTP ON")
    k.write(":SENS:FUNC 'VOLT'")
    assert float(k.query(":READ?")) == pytest.approx(0.05, abs=1e-7)
    amps = float(k.query(":MEAS:CURR?"))
    assert amps > 0                                          # the node's devices draw current from the source
    k.write(f":SOUR:VOLT:ILIM {amps / 10:.6e}")               # a tenth of it: the current limit holds instead
    k.write(":SENS:FUNC 'VOLT'")
    assert float(k.query(":READ?")) < 0.05 and k.query(":SOUR:VOLT:ILIM:TRIP?") == "1"
    k.write(":SOUR:VOLT:RANG:AUTO OFF;:SOUR:VOLT:RANG 0.02")
    k.write(":SOUR:VOLT 0.5")                                # beyond the fixed 20 mV range: refused, not clamped
    assert k.query(":SYST:ERR?") == '-222,"Data out of range"' and float(k.query(":SOUR:VOLT?")) == 0.05


def test_open_route_reads_a_floating_terminal_and_two_closed_crosspoints_short(emu, open_inst):
    sw, k = open_inst("switch"), open_inst("smu_hidden")
    sw.write("channel.open('allslots')")
    sw.query("*OPC?")
    k.write(":SOUR:FUNC CURR;:SOUR:CURR 0;:SOUR:CURR:VLIM 0.2;:SENS:FUNC 'VOLT';:OUTP ON")
    assert float(k.query(":READ?")) == 0.0                   # 0 A into nothing: 0 V (plus noise), not NaN
    k.write(":SOUR:CURR 1e-9")
    assert float(k.query(":READ?")) == pytest.approx(0.2)    # a current with nowhere to go: the voltage limit
    k.write(":SOUR:CURR 2e-6")
    sw.write("channel.exclusiveclose('1A03')")
    sw.query("*OPC?")
    alone = float(k.query(":READ?"))
    sw.write("channel.close('1A04')")                        # two nodes on the bus: the switch shorts them
    sw.query("*OPC?")
    v = float(k.query(":READ?"))
    assert v < alone                                         # the current now spreads over both nodes
    bench = emu.bench
    with bench.lock:
        bench._settle()
        va, vb = bench.node_voltage((0, 2)), bench.node_voltage((0, 3))
    assert va == pytest.approx(vb, abs=1e-6) and v == pytest.approx(va, abs=1e-6)


# ---- timing ----------------------------------------------------------------------------------------------------

def test_buffered_readings_take_aperture_plus_overhead_in_real_time():
    """100 readings at 1 PLC and 50 Hz: the 2450's clock advances 100 x (20 ms + its overhead); at time scale 1
    the reply (here *OPC?, which waits for the pending acquisition) comes no sooner than that."""
    from sim_backend.emulator.keithley2450 import Emulated2450

    lab = make_lab(time_scale=1.0)
    assert lab.timing.line_frequency_hz == 50
    with EmulatedLab(lab) as emu:
        rm = pyvisa.ResourceManager("@py")
        k = rm.open_resource(emu.resources["smu_hidden"], read_termination="\n", write_termination="\n",
                             timeout=20000)
        try:
            k.write(":SOUR:FUNC CURR;:SOUR:CURR 0;:SENS:FUNC 'VOLT';:SENS:VOLT:NPLC 1;:SENS:COUN 100;:OUTP ON")
            assert k.query("*OPC?") == "1"
            clock = emu.instruments["smu_hidden"].clock
            before = clock.now_s
            start = time.monotonic()
            k.write(":TRAC:TRIG")
            assert k.query("*OPC?") == "1"
            wall = time.monotonic() - start
            expected = 100 * (1 / 50 + Emulated2450.OVERHEAD_S)
            assert clock.now_s - before == pytest.approx(expected, rel=1e-9)
            assert expected > 2.0 and wall >= expected
            assert len(k.query(":TRAC:DATA? 1, 100").split(",")) == 100
        finally:
            k.close()
            rm.close()


def test_switch_closure_and_dac_slew_take_their_time(emu, open_inst):
    from sim_backend.emulator.keithley707b import ACTUATION_S

    sw, q = open_inst("switch"), open_inst("dac_plus")
    t0 = emu.instruments["switch"].clock.now_s
    sw.write("channel.close('1A05')")
    sw.query("*OPC?")
    assert emu.instruments["switch"].clock.now_s - t0 == pytest.approx(ACTUATION_S)
    clock = emu.instruments["dac_plus"].clock
    q.write("sour7:volt:slew 10")
    t0 = clock.now_s
    q.write("sour7:volt 0.1")                     # 0.1 V at 10 V/s: 10 ms of ramp
    q.query("*OPC?")
    assert clock.now_s - t0 == pytest.approx(0.01)
    q.write("sour7:volt 0")


# ---- fault injection -------------------------------------------------------------------------------------------

def test_faults_from_the_lab_config_and_from_a_test(tmp_path):
    from drivers.session import CommandLog, InstrumentError
    from drivers.xbar_board import XbarBoard

    lab = make_lab(faults={"smu_b": [{"kind": "error", "code": -350, "match": "OUTP"}],
                           "board": [{"kind": "lose_reply", "after": 1}]})
    with EmulatedLab(lab) as emu:
        rm = pyvisa.ResourceManager("@py")
        b = rm.open_resource(emu.resources["smu_b"], read_termination="\n", write_termination="\n", timeout=500)
        b.write(":SOUR1:FUNC:MODE CURR")
        assert b.query(":SYST:ERR?") == '+0,"No error"'
        b.write(":OUTP1 ON")                                   # configured: -350 queued on the first OUTP command
        assert b.query(":SYST:ERR?") == '-350,"Queue overflow"' and b.query(":OUTP1?") == "1"
        emu.inject("smu_b", "garbage", match=r"^\*IDN\?")
        assert b.query("*IDN?") != emu.instruments["smu_b"].IDN
        emu.inject("smu_b", "delay", delay_s=1.0)
        with pytest.raises(pyvisa.errors.VisaIOError):          # the reply comes after the client's 0.5 s timeout
            b.query("*OPC?")
        time.sleep(1.0)
        b.read()                                                # the late "1"
        b.write(":SOUR1:CURR 1e-6;:SENS1:VOLT:PROT 0.1")
        emu.inject("smu_b", "trip_compliance")
        assert b.query(":SENS1:VOLT:PROT:TRIP?") == "1"         # the fault current drives it to its limit
        assert float(b.query(":MEAS:VOLT? (@1)")) == pytest.approx(0.1)
        emu.clear_faults("smu_b")
        assert b.query(":SENS1:VOLT:PROT:TRIP?") == "0"
        emu.inject("smu_b", "power_cycle")
        with pytest.raises(pyvisa.errors.VisaIOError):
            b.query(":OUTP1?")                                  # the connection is gone
        b.close()
        b = rm.open_resource(emu.resources["smu_b"], read_termination="\n", write_termination="\n", timeout=500)
        assert b.query(":OUTP1?") == "0" and b.query(":SOUR1:FUNC:MODE?") == "VOLT"   # power-on state
        emu.inject("smu_b", "drop", after=1)
        assert b.query("*OPC?") == "1"
        with pytest.raises(pyvisa.errors.VisaIOError):
            b.query("*OPC?")
        b.close()
        rm.close()
        log = CommandLog()
        board = XbarBoard("board", XbarBoard.open_port(emu.resources["board"]), log, max_pulse_V=2.0,
                          max_pulse_width_s=1e-5, read_voltage_V=0.1)
        board.resource.port.timeout = 0.5
        assert board.query("*IDN?").startswith("XBAR")
        with pytest.raises(InstrumentError, match="no reply"):  # the second command's reply is lost
            board.query("RST")
        board.close()
    with pytest.raises(ValueError, match="emulator.faults.nosuch: no such instrument"):
        make_lab(faults={"nosuch": [{"kind": "drop"}]})
    with pytest.raises(ValueError, match="kind"):
        make_lab(faults={"board": [{"kind": "melt"}]})
    with pytest.raises(ValueError, match=r"faults.board.0.match\n  Value error, not a regular expression"):
        make_lab(faults={"board": [{"kind": "drop", "match": "("}]})
    with EmulatedLab(make_lab()) as emu:  # a test's fault is checked by the same schema as the lab config's
        with pytest.raises(ConfigError, match=r"inject: kind: Input should be 'drop', 'delay'"):
            emu.inject("board", "melt")
        with pytest.raises(ConfigError, match=r"inject: count: Input should be greater than or equal to 1"):
            emu.inject("board", "drop", count=0)
        pending = emu.inject("board", "delay", delay_s=0.25, after=2)
        assert (pending.kind, pending.delay_s, pending.after, pending.config.after) == ("delay", 0.25, 2, 2)


def test_the_source_puts_out_its_level_rounded_to_the_range_resolution(emu, open_inst):
    sw, k = open_inst("switch"), open_inst("smu_hidden")
    sw.write("channel.open('allslots')")
    sw.query("*OPC?")
    k.write(":SOUR:FUNC VOLT;:SOUR:VOLT:RANG:AUTO OFF;:SOUR:VOLT:RANG 0.02;:SOUR:VOLT 0.0123456789;:OUTP ON")
    k.write(":SENS:FUNC 'VOLT'")
    assert float(k.query(":SOUR:VOLT?")) == pytest.approx(0.0123456789, rel=1e-6)   # the programmed value
    assert float(k.query(":READ?")) == pytest.approx(0.0123455, abs=1e-12)         # 500 nV steps on 20 mV
    k.write(":SOUR:VOLT:RANG 2")
    assert float(k.query(":READ?")) == pytest.approx(0.01235, abs=1e-12)           # 50 uV steps on 2 V
    s = open_inst("smu_out")
    s.write("smub.source.func = smub.OUTPUT_DCVOLTS smub.source.rangev = 0.15 smub.source.output = 1")
    assert s.query("print(smub.source.rangev, smub.source.autorangev)") == "2.00000e-01\t0.00000e+00"


@pytest.mark.parametrize("name", ["smu_hidden", "smu_b", "dac_plus"])
def test_every_setting_answers_its_query_and_takes_its_own_reply_back(emu, name):
    """Every Param of the command table: `header?` answers, and writing the answer back is accepted unchanged."""
    import re

    from sim_backend.emulator.scpi import Param

    inst = emu.instruments[name]
    inst.handle("*RST;*CLS")
    for p in type(inst).TABLE:
        if not isinstance(p, Param):
            continue
        header = ":" + re.sub(r"\[[^\]]*\]", "", p.header).replace("#", "1")
        reply = inst.handle(header + "?")
        assert reply is not None, f"{name}: {header}? did not answer: {inst.handle(':SYST:ERR?')}"
        assert inst.handle(f"{header} {reply}") is None
        assert inst.handle(header + "?") == reply
        assert inst.handle(":SYST:ERR:COUN?") == "0", f"{name}: {header} {reply}: {inst.handle(':SYST:ERR?')}"
    inst.handle("*RST")


def test_a_programmed_source_delay_precedes_the_next_reading(emu, open_inst):
    from sim_backend.emulator.keithley2450 import Emulated2450

    k = open_inst("smu_hidden")
    clock = emu.instruments["smu_hidden"].clock
    k.write(":SOUR:FUNC CURR;:SOUR:CURR:DEL:AUTO OFF;:SOUR:CURR:DEL 0.5;:SENS:VOLT:NPLC 1;:OUTP ON")
    k.write(":SENS:FUNC 'VOLT';:SOUR:CURR 0")
    t0 = clock.now_s
    k.query(":READ?")                               # after a source change: the delay, then the reading
    k.query(":READ?")                               # no change since: the reading alone
    assert clock.now_s - t0 == pytest.approx(0.5 + 2 * (1 / 50 + Emulated2450.OVERHEAD_S))


def test_a_client_that_hangs_up_mid_reply_is_no_traceback(capfd):
    """A killed or timed-out client resets its connection; the emulator goes on serving without a traceback."""
    import socket
    import struct

    with EmulatedLab(make_lab()) as lab:
        host, port = lab.servers["smu_hidden"].server_address
        for _ in range(3):
            s = socket.create_connection((host, port))
            s.sendall(b"*IDN?\n" * 200)  # replies the client will not read
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
            s.close()
        time.sleep(0.3)
        rm = pyvisa.ResourceManager("@py")
        r = rm.open_resource(lab.resources["smu_hidden"], read_termination="\n", write_termination="\n", timeout=5000)
        assert "2450" in r.query("*IDN?")  # still serving
        r.close()
        rm.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "ConnectionResetError" not in err, err
