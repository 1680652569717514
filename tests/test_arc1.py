"""The ArC ONE programmer (drivers/arc1.py) through pyserial over real sockets: against our emulated ArC ONE,
against arc1_pyqt's own VirtualArC, through write-verify, training, `characterize --devices` and the fault policy."""

import json
import os
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from conftest import characterize_devices_on

from drivers.arc1 import ArcOne
from drivers.lab import LabConfig
from drivers.programming import write_verify
from drivers.retry import InstrumentFault
from drivers.session import CommandLog, InstrumentError, LimitError
from hil.cli import main
from hil.core.config import load_config, merge_trees
from hil.core.devices import PRESETS, resolve_device_model
from hil.runner import prepare, train_run
from hil.store import RunStore
from sim_backend.emulator import EmulatedLab

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lab-emulated-arc1.yaml"


def lab_tree(**emulator):
    tree = yaml.safe_load(EXAMPLE.read_text())
    tree["emulator"].update(emulator)
    return tree


@pytest.fixture
def arc_lab():
    lab = LabConfig.model_validate(lab_tree(time_scale=0.0))
    with EmulatedLab(lab) as emu:
        yield lab, emu


def open_arc(resource, log, timeout_s=5.0, **kw):
    return ArcOne("arc", ArcOne.open_port(resource, timeout_s=timeout_s), log,
                  **{"max_pulse_V": 2.0, "max_pulse_width_s": 1e-5, "read_voltage_V": 0.1, "reset_wait_s": 0.0, **kw})


def test_transcript_write_verify_and_limits(arc_lab):
    lab, emu = arc_lab
    log = CommandLog()
    arc = open_arc(emu.resources["arc"], log)
    arc.connect()
    # arc1_pyqt's initialise sequence, its read update, then the firmware query (two uint16)
    assert log.transcript("arc") == [("00", None), ("0 50 32 32 2 0 1 0.100000", "1"), ("01 2 0.100000", None),
                                     ("999", "ArC ONE, firmware 2.0")]
    # word 3, bit 5 is layer 0's device (2, 4) (the lab maps rows and columns from word and bit line 1)
    g_true = emu.bench.conductance("arc", 3, 5)
    g0 = arc.read_conductance(3, 5)
    assert g0 == pytest.approx(g_true, rel=1e-3)
    for target in (g0 + 5e-6, g0 - 3e-6):
        res = write_verify(arc, 3, 5, target, lab.programming)
        assert abs(res.error_S) <= lab.programming.tolerance_S and not res.stuck and res.pulses >= 2
        assert emu.bench.conductance("arc", 3, 5) == pytest.approx(res.final_S, rel=1e-3)
    pulses = [(c, r) for c, r in log.transcript("arc") if c.startswith("3 ")]
    # pulse-and-read: one exchange per pulse, its float32 reading the verify step (no separate read)
    assert len(pulses) >= 4 and all(c.startswith("3 3 5 ") and float(r) > 0 for c, r in pulses)
    reads = [c for c, _ in log.transcript("arc") if c.startswith("1 ")]
    assert reads == ["1 3 5"] * 3  # g0, and each write-verify's starting read
    n = len(log.transcript("arc"))
    for bad, match in [((3, 5, 2.5, 1e-6), "pulse amplitude"), ((3, 5, 1.0, 2e-5), "pulse width"),
                       ((3, 5, 1.0, 50e-9), "pulse width"), ((0, 5, 1.0, 1e-6), "word line 0 outside 1..32"),
                       ((3, 33, 1.0, 1e-6), "bit line 33 outside 1..32")]:
        with pytest.raises(LimitError, match=match):
            arc.pulse(*bad)
    assert len(log.transcript("arc")) == n  # nothing refused went out
    assert emu.outputs() == {"arc": {"read_voltage_V": 0.1}}
    arc.shutdown()
    arc.close()
    assert emu.outputs() == {}


def test_lab_refuses_a_map_outside_the_array_and_overlaps():
    tree = lab_tree()
    tree["devices"][0]["row_offset"] = 0  # word line 0 does not exist
    with pytest.raises(ValueError, match=r"devices\[0\]: layer 0 needs rows \(word lines\) 0..31 on arc, a arc1 "
                                         r"with lines 1..32"):
        LabConfig.model_validate(tree)
    tree = lab_tree()
    tree["devices"][1]["col_offset"] = 32  # bits 32..33
    with pytest.raises(ValueError, match=r"devices\[1\]: layer 1 needs columns \(bit lines\) 32..33"):
        LabConfig.model_validate(tree)
    tree = lab_tree()
    tree["devices"][1]["col_offset"] = 8  # bit 8 is layer 0's
    with pytest.raises(ValueError, match=r"devices\[1\]: layer 1 overlaps devices\[0\] on arc"):
        LabConfig.model_validate(tree)
    tree = lab_tree()
    tree["limits"]["arc"]["max_pulse_V"] = 13.0
    with pytest.raises(ValueError, match=r"limits.arc.max_pulse_V: 13 V is beyond the board"):
        LabConfig.model_validate(tree)


def test_wrong_baud_rate_refused(tmp_path, arc_lab):
    lab, emu = arc_lab
    tree = lab_tree()
    tree["instruments"]["arc"].update(resource=emu.resources["arc"], baudrate=115200)
    bad = LabConfig.model_validate(tree)
    from drivers.bench import open_instrument
    from drivers.session import VisaSession

    with pytest.raises(InstrumentError, match="baudrate: an ArC ONE talks at 921600 baud"):
        open_instrument(bad, "arc", VisaSession("@py", CommandLog()))


# ---- arc1_pyqt's VirtualArC behind a byte stream ------------------------------------------------------------

class VirtualArcServer:
    """A TCP server whose bytes drive arc1_pyqt's VirtualArC through its instrument interface (write_b,
    read_floats). VirtualArC has no initialise handshake, read update or firmware query (arc1_pyqt starts it
    without them): this adapter answers the handshake itself ("1"), stays silent on 999 (as old firmware does) and
    passes every other line to write_b unchanged; a reading goes back as arc1_pyqt's ArC1 expects it, float32
    little-endian."""

    HANDLED_HERE = {"00": 0, "0": 7, "01": 2, "999": 0}
    READS = {"1": 2, "3": 4}  # opcode -> argument lines, then one float comes back

    def __init__(self, vac):
        self.vac = vac
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as lines:
                pending = []
                for raw in lines:
                    pending.append(raw.decode().strip())
                    op = pending[0]
                    if op in self.HANDLED_HERE:
                        if len(pending) > self.HANDLED_HERE[op]:
                            if op == "0":
                                conn.sendall(b"1\n")
                            pending = []
                        continue
                    if len(pending) > self.READS.get(op, 0):
                        for part in pending:
                            self.vac.write_b(part + "\n")
                        if op in self.READS:
                            conn.sendall(struct.pack("<f", float(self.vac.read_floats(1))))
                        pending = []

    def close(self):
        self.sock.close()


def test_driver_reads_and_programs_virtualarc():
    va = pytest.importorskip("arc1pyqt.VirtualArC.virtualarc", reason="arc1_pyqt (its VirtualArC) is not installed")
    import numpy as np

    np.random.seed(0)
    vac = va.VirtualArC()
    server = VirtualArcServer(vac)
    try:
        log = CommandLog()
        arc = open_arc(f"socket://127.0.0.1:{server.port}", log, timeout_s=0.3, max_pulse_V=3.0)
        arc.connect()
        assert arc.firmware is None and arc.idn == "ArC ONE, firmware not reported"
        word, bit = 5, 9
        dev = vac.crossbar[word][bit]
        # readings within VirtualArC's 1% read noise of the device's state
        for _ in range(5):
            assert arc.read_resistance(word, bit) == pytest.approx(dev.Rmem, rel=0.0101)
        # VirtualArC's parametric device: a positive pulse raises R toward a0p + a1p*V (G down), a negative one
        # lowers it toward a0n + a1n*V (G up); the width in steps of its dt = 1 us. Predict with the model itself.
        twin = va.memristor(Ap=dev.Ap, An=dev.An, a0p=dev.a0p, a1p=dev.a1p, a0n=dev.a0n, a1n=dev.a1n, tp=dev.tp,
                            tn=dev.tn)
        for volts, sign in ((1.5, 1), (-1.5, -1), (1.0, 1)):
            twin.initialise(dev.Rmem)
            before = dev.Rmem
            for _ in range(int(5e-6 / vac.dt)):
                twin.step_dt(volts, vac.dt)
            g_after = arc.pulse_read(word, bit, volts, 5e-6)
            assert np.sign(dev.Rmem - before) == sign and abs(dev.Rmem - before) > 0.02 * before
            assert dev.Rmem == pytest.approx(twin.Rmem, rel=1e-9)  # the volts and width arrived as sent
            assert 1 / g_after == pytest.approx(dev.Rmem, rel=0.0101)
        # a device on neither line of the pulsed one sees no half-select voltage (VirtualArC's V/2 scheme)
        far = vac.crossbar[20][20].Rmem
        arc.pulse_read(word, bit, 1.5, 5e-6)
        assert vac.crossbar[20][20].Rmem == far and vac.crossbar[word][20].Rmem != far
        arc.shutdown()
        arc.close()
    finally:
        server.close()


# ---- the bench: training, characterization, faults -------------------------------------------------------------

def test_hil_emulate_and_train_on_the_arc1_lab(tmp_path):
    """`hil emulate` in one process, `hil train --lab` in another: the ArC ONE programs every update."""
    reg = tmp_path / "emulator.json"
    emu = subprocess.Popen([sys.executable, "-m", "hil.cli", "emulate", "--lab", str(EXAMPLE), "--registry", str(reg),
                            "--duration", "240"], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        lines = [emu.stdout.readline() for _ in range(9)]
        assert any(ln.split()[:2] == ["arc", "arc1"] and "socket://127.0.0.1:" in ln for ln in lines), lines
        r = subprocess.run([sys.executable, "-m", "hil.cli", "train", "--lab", str(EXAMPLE), "--train-limit", "20",
                            "--test-limit", "10", "--epochs", "1", "--no-progress", "--runs-dir", "runs"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=240,
                           env={**os.environ, "HIL_EMULATOR_REGISTRY": str(reg)})
        assert r.returncode == 0, r.stderr
        (run,) = (tmp_path / "runs").iterdir()
        log = [json.loads(x) for x in (run / "commands.jsonl").read_text().splitlines()]
        pulses = [row for row in log if row["instrument"] == "arc" and row["command"].startswith("3 ")]
        assert len(pulses) > 50 and all(float(row["reply"]) > 0 for row in pulses)
        assert json.loads((run / "run.json").read_text())["status"] == "completed"
    finally:
        emu.terminate()
        out, _ = emu.communicate(timeout=30)
    assert "outputs left on: none" in out


@pytest.mark.slow
def test_characterize_devices_through_the_arc1(tmp_path, capsys):
    """`hil characterize --devices` recovers the capacitor preset's step within 10% through the ArC ONE."""
    folder = characterize_devices_on(lab_tree(device_model="capacitor"), tmp_path)
    fit = resolve_device_model(folder / "device.yaml")
    true = PRESETS["capacitor"]
    assert fit.dw_min == pytest.approx(true.dw_min, rel=0.10)
    assert not fit.dw_min == pytest.approx(1.25 * true.dw_min, rel=0.10)  # control: a wrong step would fail


FAULT_TIMEOUT_MS = 1000  # generous: a loaded CI machine must not turn a normal reply into a timeout
PULSE, READ = r"^3 ", r"^1 "
# cell -> (fault kind, command it fires on, commands skipped first, outcome). Training sends the ArC ONE only
# pulse-and-reads (their readings verify); plain reads come when the start reads every device back, so the read
# cells inject before the bench is prepared.
ARC_MATRIX = {
    "drop": ("drop", PULSE, 3, "recovered"),            # reconnect; the pulse's effect is read back
    "delay": ("delay", PULSE, 3, "recovered"),          # the reading came too late: read back on a fresh connection
    "delay-read": ("delay", READ, 10, "recovered"),     # a late reading: retried on a fresh connection
    "garbage": ("garbage", PULSE, 3, "recovered"),      # bytes that are no float32 reading: read back
    "garbage-read": ("garbage", READ, 10, "recovered"),  # retried
    "error": ("error", PULSE, 3, "stopped"),            # a failed read-out (no error queue: the reply says it)
    "power_cycle": ("power_cycle", PULSE, 3, "stopped"),  # after the reconnect its initialisation is gone
    "lose_reply": ("lose_reply", PULSE, 3, "recovered"),  # the pulse's reading lost: read back, never pulsed again
    "lose_reply-read": ("lose_reply", READ, 10, "recovered"),  # retried
}
FATAL = {"error": "instrument error", "power_cycle": "instrument reset"}


@pytest.fixture(scope="module")
def fault_lab(tmp_path_factory):
    tree = lab_tree(time_scale=0.0)
    for inst in tree["instruments"].values():
        inst["timeout_ms"] = FAULT_TIMEOUT_MS
    path = tmp_path_factory.mktemp("lab") / "lab.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.mark.parametrize("cell", list(ARC_MATRIX))
def test_fault_matrix_covers_the_arc1(cell, fault_lab, tmp_path, monkeypatch, capsys):
    kind, match, after, outcome = ARC_MATRIX[cell]
    tree = yaml.safe_load(fault_lab.read_text())
    with EmulatedLab(LabConfig.model_validate(tree)) as emu:
        monkeypatch.setenv("HIL_EMULATOR_REGISTRY", str(emu.write_registry(tmp_path / "reg.json")))
        over = {"data.train_limit": 4, "data.test_limit": 2, "train.epochs": 1, "train.batch_size": 2,
                "runs_dir": str(tmp_path / "runs")}
        cfg = load_config(None, over, base=merge_trees({"name": "fault"}, tree["run"]))
        if match == READ:
            emu.inject("arc", kind, match=match, after=after, delay_s=1.5)
        prep = prepare(cfg, fault_lab)
        store = RunStore.create(cfg.runs_dir, cfg.name, cfg)
        if match == PULSE:
            emu.inject("arc", kind, match=match, after=after, delay_s=1.5)
        try:
            train_run(prep, store)
            stopped = None
        except InstrumentFault as err:
            stopped = err
        assert emu.instruments["arc"].faults.fired, "the fault never fired: the cell tests nothing"
        assert emu.outputs() == {}
        status = json.loads((store.path / "run.json").read_text())
        faults = [r for r in map(json.loads, (store.path / "commands.jsonl").read_text().splitlines()) if "fault" in r]
        if outcome == "recovered":
            assert stopped is None, f"{kind} stopped the run: {stopped}"
            assert status["status"] == "completed"
            assert any(r["instrument"] == "arc" and r["action"] in ("retry", "read back") for r in faults), faults
            return
        assert stopped is not None and str(stopped).startswith("arc: ") and FATAL[kind] in str(stopped)
        assert status["status"] == "failed" and status["instrument"] == "arc" and FATAL[kind] in status["fault"]
        emu.clear_faults("arc")
        capsys.readouterr()
        assert main(["train", "--resume", str(store.path), "--no-progress"]) == 0
        assert emu.outputs() == {}
    assert json.loads((store.path / "run.json").read_text())["status"] == "completed"


def test_unknown_kind_suggests_arc1():
    tree = lab_tree()
    tree["instruments"]["arc"]["kind"] = "arc2"
    with pytest.raises(ValueError, match="did you mean 'arc1'"):
        LabConfig.model_validate(tree)


def test_hil_safe_resets_an_arc1_left_initialised(tmp_path, capsys):
    """After a crash the ArC ONE is still initialised (its read voltage set): `hil safe` resets it."""
    tree = lab_tree(time_scale=0.0)
    lab_path = tmp_path / "lab.yaml"
    lab_path.write_text(yaml.safe_dump(tree))
    with EmulatedLab(LabConfig.model_validate(tree)) as emu:
        reg = emu.write_registry(tmp_path / "reg.json")
        crashed = open_arc(emu.resources["arc"], CommandLog())
        crashed.connect()  # and never shut down, as in a killed process
        assert emu.outputs() == {"arc": {"read_voltage_V": 0.1}}
        assert main(["safe", "--lab", str(lab_path), "--registry", str(reg)]) == 0
        assert emu.outputs() == {}
    assert "safe" in capsys.readouterr().out
