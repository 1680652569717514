"""Other people's drivers against the emulated instruments: PyMeasure 0.16 and QCoDeS 0.58 (+ contrib), through
the real pyvisa + pyvisa-py stack on 127.0.0.1. No mocks.

Each test constructs the driver, takes a snapshot (QCoDeS) or reads every setting (PyMeasure), sets and reads back
source level, compliance, NPLC and output state, takes a single and a buffered measurement, reads the error
queue and shuts down. REFUSED lists, per driver, the calls that do not work and why a real instrument would
refuse them too (or why the call never reaches the instrument); test_refused_calls checks each really fails.
"""

import itertools

import pytest
import pyvisa
from conftest import quiet_tree

from drivers.lab import LabConfig
from sim_backend.emulator import EmulatedLab

pymeasure_keithley = pytest.importorskip("pymeasure.instruments.keithley")
qcodes = pytest.importorskip("qcodes")
from qcodes.instrument import Instrument  # noqa: E402
from qcodes.instrument_drivers.Keithley import Keithley2450 as QKeithley2450  # noqa: E402
from qcodes.instrument_drivers.Keithley import Keithley2636B  # noqa: E402
from qcodes.instrument_drivers.Keysight import KeysightB2962A  # noqa: E402

QDac2 = pytest.importorskip("qcodes_contrib_drivers.drivers.QDevil.QDAC2").QDac2

_names = itertools.count()


@pytest.fixture(scope="module")
def emu():
    with EmulatedLab(LabConfig.model_validate(quiet_tree())) as lab:
        yield lab


@pytest.fixture
def qc_name():
    """A unique QCoDeS instrument name per test; every instrument is closed afterwards."""
    yield f"emu{next(_names)}"
    Instrument.close_all()


def pm(cls, emu, name):
    return cls(emu.resources[name], read_termination="\n", write_termination="\n", timeout=3000)


# Calls that do not work, per driver, and why the real instrument refuses them too (checked below).
REFUSED = {
    "pymeasure Keithley2450": {
        "config_buffer()": "sends the 2400's :STAT:MEAS:ENAB and :TRAC:FEED[:CONT]; the 2450 (2450-901-01, section 6) "
                           "has neither: -113 Undefined header",
        "wait_for_buffer()": "polls *STB? for the 2400's measurement-summary bit 0, which the 2450's status byte never "
                             "sets: times out",
        "buffer_data": ":TRAC:DATA? without start and end index; the 2450 requires both: -109 Missing parameter",
    },
    "pymeasure Keithley2600": {
        "measure_nplc = x": "PyMeasure 0.16 declares the NPLC control with map_values=True over a range [0.001, 25]: "
                            "it raises ValueError before anything is sent (and the getter maps the reply to an index)",
    },
    "qcodes Keithley2450": {
        "sense.user_delay / source.user_delay (snapshot)": "user_number has no initial value, so the driver sends "
                                                           ":...:DELay:USERNone?: -113 Undefined header",
        "source.sweep_axis (snapshot)": "client side: no sweep_setup() yet (ValueError, nothing sent)",
    },
    "qcodes KeysightB2962A": {
        "NPLC, buffered reading": "the driver has no NPLC or trigger-count parameter (the B2962A is a source); the "
                                  "test sends the B2900 SCPI for them through the same session",
    },
    "qcodes_contrib QDac2": {
        "compliance, output on/off": "the QDAC-II has no current limit setting and no output relay (a DAC)",
    },
}


# ---- PyMeasure -------------------------------------------------------------------------------------------------

def test_pymeasure_keithley2450(emu):
    k = pm(pymeasure_keithley.Keithley2450, emu, "smu_hidden")
    try:
        assert "MODEL 2450" in k.id
        k.reset()
        assert k.source_mode == "voltage" and k.source_enabled is False
        k.apply_current(compliance_voltage=0.5)
        k.source_current = 1e-6
        assert k.source_mode == "current" and k.source_current == 1e-6 and k.compliance_voltage == 0.5
        k.measure_voltage(nplc=2)
        assert k.voltage_nplc == 2
        k.enable_source()
        assert k.source_enabled is True
        assert k.voltage == pytest.approx(0.5)   # 1 uA into an open route: the voltage limit, as a real SMU
        # buffered: N readings into defbuffer1 with the 2450's own trace commands, then its statistics
        k.write(":SENS:COUN 10;:TRAC:CLE 'defbuffer1';:TRAC:TRIG 'defbuffer1'")
        data = k.values(":TRAC:DATA? 1, 10, 'defbuffer1'")
        assert len(data) == 10 and k.means == pytest.approx(0.5)
        assert k.next_error[0] == 0 and k.check_errors() == []
        k.shutdown()
        assert k.source_enabled is False and k.source_current == 0
    finally:
        k.adapter.close()


def test_pymeasure_keithley2600(emu):
    k = pm(pymeasure_keithley.Keithley2600, emu, "smu_out")
    a = k.ChA
    try:
        assert "2636B" in k.id
        a.source_mode = "current"
        a.compliance_voltage = 0.2
        a.source_current = 1e-3
        assert a.source_mode == "current" and a.compliance_voltage == 0.2 and a.source_current == 1e-3
        a.write("measure.nplc=2")
        assert float(k.ask("print(smua.measure.nplc)")) == 2
        a.source_output = "ON"
        assert a.source_output == "ON"
        assert a.voltage == pytest.approx(0.2)   # 1 mA into the output node: held at the 0.2 V compliance
        assert k.ask("print(smua.source.compliance)") == "true"
        a.write("measure.count=10")
        a.write("nvbuffer1.clear()")
        a.write("measure.v(smua.nvbuffer1)")
        readings = k.values("printbuffer(1, 10, smua.nvbuffer1.readings)")
        assert len(readings) == 10 and max(readings) <= 0.2 + 1e-9
        assert k.next_error[0] == 0
        a.shutdown()
        assert a.source_output == "OFF" and a.source_current == 0
    finally:
        k.adapter.close()


# ---- QCoDeS ----------------------------------------------------------------------------------------------------

def test_qcodes_keithley2450(emu, qc_name):
    k = QKeithley2450(qc_name, emu.resources["smu_hidden"], timeout=1)   # the snapshot's 4 refused queries time out
    k.reset()
    snap = k.snapshot(update=True)
    assert snap["parameters"]["output_enabled"]["value"] is False
    k.source_function("current")
    k.source.current(2e-6)
    k.source.limit(0.4)
    k.sense_function("voltage")
    k.sense.nplc(2)
    k.output_enabled(True)
    assert (k.source.current(), k.source.limit(), float(k.sense.nplc()), k.output_enabled()) == (2e-6, 0.4, 2.0, True)
    assert k.sense.voltage() == pytest.approx(0.4)
    assert k.source.limit_tripped() == 1
    buf = k.buffer("defbuffer1")
    buf.clear_buffer()
    k.sense.count(10)
    k.sense.voltage()                             # :MEASure? fills defbuffer1 with 10 readings
    assert buf.number_of_readings() == 10 and len(buf.get_data(1, 10)) == 10
    k.source.sweep_setup(0.0, 1e-6, 5)            # a buffered sweep through the 2450's trigger model
    k.sense.count(1)
    buf.clear_buffer()
    sweep = k.sense.sweep()
    assert len(sweep) == 5 and sweep[0] == pytest.approx(0.0, abs=1e-9)
    errors = k.ask(":SYST:ERR:ALL?")
    assert errors.count("-113") == 5   # the snapshot's five user_delay queries (REFUSED)
    k.output_enabled(False)
    assert k.ask(":SYST:ERR?") == '0,"No error"'


def test_qcodes_keithley2636b(emu, qc_name):
    k = Keithley2636B(qc_name, emu.resources["smu_out"], timeout=3)
    k.reset()
    assert k.smua.output() is False
    k.smua.mode("current")
    k.smua.curr(1e-3)
    k.smua.limitv(0.2)
    k.smua.nplc(2)
    k.smua.output("on")
    assert (k.smua.mode(), k.smua.limitv(), k.smua.nplc(), k.smua.output()) == ("current", 0.2, 2.0, True)
    assert k.smua.volt() == pytest.approx(0.2)
    assert k.smua.volt.measurement_status.name == "VOLTAGE_COMPLIANCE_ERROR"
    k.smua.timetrace_npts(10)
    k.smua.timetrace_dt(0.05)
    k.smua.timetrace_mode("voltage")
    trace = k.smua.timetrace()                    # a Lua script, binary REAL32 printbuffer
    assert len(trace) == 10 and max(trace) <= 0.2 + 1e-6
    assert k.ask("errorqueue.next()").startswith("0.00000e+00\tQueue Is Empty")
    k.smua.curr(0.0)
    k.smua.output("off")
    k.reset()


def test_qcodes_keysight_b2962a(emu, qc_name):
    k = KeysightB2962A(qc_name, emu.resources["smu_b"], timeout=3)
    k.write("*RST")
    snap = k.snapshot(update=True)
    assert snap["submodules"]["ch1"]["parameters"]["source_mode"]["value"] == "voltage"
    k.ch1.source_mode("voltage")
    k.ch1.source_voltage(0.1)
    k.ch1.current_limit(1e-4)
    k.write(":SENS1:VOLT:NPLC 2")
    k.ch1.enable("on")
    assert (k.ch1.source_voltage(), k.ch1.current_limit(), k.ch1.enable()) == (0.1, 1e-4, True)
    assert float(k.ask(":SENS1:VOLT:NPLC?")) == 2
    assert k.ch1.voltage() == pytest.approx(0.1)  # a voltage-sourced node reads its level
    assert 0 < k.ch1.current() < 1e-4
    readings = k.ask(":TRIG1:COUN 10;:INIT (@1);:FETC:ARR:VOLT? (@1)").split(",")
    assert len(readings) == 10
    assert k.ask(":SYST:ERR?") == '+0,"No error"'
    k.ch1.source_voltage(0.0)
    k.ch1.enable("off")


def test_qcodes_contrib_qdac2(emu, qc_name):
    k = QDac2(qc_name, visalib="@py", address=emu.resources["dac_plus"])
    k.write("*rst")                               # reset() would also wait 5 s as the driver documents
    snap = k.snapshot(update=True)
    assert snap["submodules"]["ch01"]["parameters"]["output_range"]["value"] == "high"
    k.ch03.output_range("low")
    k.ch03.dc_constant_V(0.12)
    k.ch03.measurement_nplc(2)
    k.ch03.measurement_count(5)
    assert (k.ch03.output_range(), k.ch03.dc_constant_V(), k.ch03.measurement_nplc()) == ("low", 0.12, 2)
    assert len(k.ch03.read_current_A()) == 5      # buffered current readings
    assert k.ch03.current_last_A() != 0.0         # input row 3 draws current through its devices
    assert k.n_errors() == 0 and k.errors() == '0, "No error"'
    k.ch03.dc_constant_V(3.0)                     # beyond the low range: refused by the instrument
    assert k.error().startswith("-222")
    k.ch03.dc_constant_V(0.0)


# ---- the refused calls really fail, for the stated reason ------------------------------------------------------

def test_refused_calls(emu, qc_name, caplog):
    k = pm(pymeasure_keithley.Keithley2450, emu, "smu_hidden")
    try:
        k.write("*RST;*CLS")
        k.config_buffer(10)   # reads the error queue itself and logs what it finds
        assert caplog.text.count('-113.0, "Undefined header"') == 2
        k.start_buffer()
        with pytest.raises(Exception, match="Timed out"):
            k.wait_for_buffer(timeout=0.5, interval=0.1)
        k.adapter.connection.timeout = 500
        with pytest.raises(pyvisa.errors.VisaIOError):  # the instrument answers nothing: the read times out
            _ = k.buffer_data
        assert k.ask(":SYST:ERR:ALL?").endswith('-109,"Missing parameter"')
    finally:
        k.adapter.close()
    k = pm(pymeasure_keithley.Keithley2600, emu, "smu_out")
    try:
        with pytest.raises(ValueError):
            k.ChA.measure_nplc = 1
    finally:
        k.adapter.close()
    q = QKeithley2450(qc_name, emu.resources["smu_hidden"], timeout=0.5)
    with pytest.raises(pyvisa.errors.VisaIOError):  # an undefined header gets no reply: the read times out
        q.sense.user_delay()
    assert q.ask(":SYST:ERR?") == '-113,"Undefined header"'
    with pytest.raises(ValueError, match="setup the sweep"):
        q.source.sweep_axis()
    assert set(REFUSED) == {"pymeasure Keithley2450", "pymeasure Keithley2600", "qcodes Keithley2450",
                            "qcodes KeysightB2962A", "qcodes_contrib QDac2"}
