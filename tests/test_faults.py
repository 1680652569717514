"""The fault policy on the emulated bench: each fault kind injected in each phase of a training step.

Every cell runs a tiny bench training (digits 0/1 at 4x4, 4 training samples, batch 2, one epoch) through the
real pyvisa + pyvisa-py and pyserial stacks against the emulated lab, with the fault injected once the bench is
connected and initialized. A cell either recovers (the run completes, the retry or read-back is in
commands.jsonl and the metrics) or stops (one-line error naming the instrument and the fault, run.json failed
with instrument, command and fault, every output at 0 V and off, nothing recorded lost) and then resumes to
the end. tests/test_faults.py::MATRIX is the table docs/bench.md prints.
"""

import json
from pathlib import Path

import pytest
import yaml

from drivers.lab import LabConfig
from drivers.retry import InstrumentFault
from hil.cli import main
from hil.core.config import load_config, merge_trees
from hil.runner import prepare, train_run
from hil.store import RunStore
from sim_backend.emulator import EmulatedLab

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lab-emulated.yaml"
TIMEOUT_MS = 300
DELAY_S = 0.8  # past the timeout

# phase -> fault -> (instrument, regex of the command it fires on, commands skipped first, expected outcome)
# A write fault targets a write of the phase, a reply fault a query of it. "recovered" or "stopped".
WRITE = {"clamp": ("dac_plus", r"^sour\d+:volt 0\.\d*[1-9]", 2),          # a DAC level of the inputs
         "measure": ("smu_hidden", r"^:TRAC:TRIG", 3),                    # the hidden SMU's buffered reading
         "nudge": ("smu_b", r"^:SOUR1:CURR -?[1-9]", 1),                  # the nudge current of output 1
         "program": ("board", r"^PULSE", 3)}                              # a programming pulse
QUERY = {"clamp": ("dac_plus", r"^\*OPC\?", 2),                          # the DACs' sync before reading
         "measure": ("smu_hidden", r"^:TRAC:DATA\?", 3),                  # the readings' fetch
         "nudge": ("smu_b", r"^\*OPC\?", 1),                              # the nudge current's sync
         "program": ("board", r"^READ", 3)}                               # write-verify's read of a device

MATRIX = {
    # fault kind (emulator)     phase -> (target table, outcome); None: that phase sends the instrument nothing
    "drop": {"clamp": (WRITE, "recovered"), "measure": (QUERY, "recovered"), "nudge": (WRITE, "recovered"),
             "program": (WRITE, "recovered")},
    "delay": {p: (QUERY, "recovered") for p in QUERY},
    "garbage": {p: (QUERY, "recovered") for p in QUERY},
    "error": {p: (WRITE, "stopped") for p in WRITE},
    "trip_compliance": {"clamp": None, "measure": (QUERY, "stopped"), "nudge": (WRITE, "stopped"), "program": None},
    "power_cycle": {p: (WRITE, "stopped") for p in WRITE},
    "lose_reply": {"clamp": None, "measure": None, "nudge": None, "program": (QUERY, "recovered")},
}
LABELS = {"drop": "connection dropped", "delay": "reply delayed past timeout", "garbage": "garbage reply",
          "error": "SCPI error on a write", "trip_compliance": "compliance trip", "power_cycle": "instrument reset",
          "lose_reply": "serial board reply lost"}
FATAL_WORDS = {"error": "SCPI error", "trip_compliance": "compliance trip", "power_cycle": "instrument reset"}

CELLS = [(kind, phase) for kind, row in MATRIX.items() for phase, cell in row.items() if cell is not None]


@pytest.fixture(scope="module")
def lab_file(tmp_path_factory):
    tree = yaml.safe_load(EXAMPLE.read_text())
    tree["emulator"]["time_scale"] = 0.0
    for inst in tree["instruments"].values():
        inst["timeout_ms"] = TIMEOUT_MS
    path = tmp_path_factory.mktemp("lab") / "lab.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


ARGS = {"data.train_limit": 4, "data.test_limit": 2, "train.epochs": 1, "train.batch_size": 2}


def run_config(lab_path, runs):
    lab_run = yaml.safe_load(lab_path.read_text())["run"]
    return load_config(None, {**ARGS, "runs_dir": str(runs)}, base=merge_trees({"name": "fault"}, lab_run))


@pytest.mark.parametrize("kind,phase", CELLS, ids=[f"{k}-{p}" for k, p in CELLS])
def test_fault_matrix(kind, phase, lab_file, tmp_path, monkeypatch, capsys):
    table, outcome = MATRIX[kind][phase]
    instrument, match, after = table[phase]
    lab = LabConfig.model_validate(yaml.safe_load(lab_file.read_text()))
    with EmulatedLab(lab) as emu:
        reg = emu.write_registry(tmp_path / "reg.json")
        monkeypatch.setenv("HIL_EMULATOR_REGISTRY", str(reg))
        cfg = run_config(lab_file, tmp_path / "runs")
        prep = prepare(cfg, lab_file)
        store = RunStore.create(cfg.runs_dir, cfg.name, cfg)
        emu.inject(instrument, kind, match=match, after=after, delay_s=DELAY_S, code=-222)
        try:
            train_run(prep, store)
            stopped = None
        except InstrumentFault as err:
            stopped = err
        assert emu.instruments[instrument].faults.fired, "the fault never fired: the cell tests nothing"
        status = json.loads((store.path / "run.json").read_text())
        log = [json.loads(x) for x in (store.path / "commands.jsonl").read_text().splitlines()]
        faults = [r for r in log if "fault" in r]
        assert emu.outputs() == {}  # every output at 0 V and off, whatever happened
        if outcome == "recovered":
            assert stopped is None, f"{kind} in {phase} stopped the run: {stopped}"
            assert status["status"] == "completed"
            assert any(r["instrument"] == instrument and r["action"] in ("retry", "read back", "reconnect")
                       for r in faults), faults
            row = json.loads((store.path / "metrics.jsonl").read_text().splitlines()[-1])
            # a lost pulse reply is read back, not retried; every other transient fault retries a query once
            assert row["faults_logged"] >= 1 and row["retries"] >= (0 if phase == "program" and table is WRITE else 1)
            return
        assert stopped is not None, f"{kind} in {phase} should stop the run"
        message = str(stopped)
        assert len(message.splitlines()) == 1 and message.startswith(f"{instrument}:")
        assert FATAL_WORDS[kind] in message
        assert status["status"] == "failed" and status["instrument"] == instrument
        assert FATAL_WORDS[kind] in status["fault"] and status["command"]
        assert any(r["action"] == "stop" for r in faults) or kind == "power_cycle"
        assert (store.path / "checkpoint.pt").is_file()  # the starting state: nothing recorded before is lost
        n_logged = len(log)
        emu.clear_faults(instrument)
        capsys.readouterr()
        assert main(["train", "--resume", str(store.path), "--no-progress"]) == 0
        assert emu.outputs() == {}
    assert json.loads((store.path / "run.json").read_text())["status"] == "completed"
    assert len((store.path / "commands.jsonl").read_text().splitlines()) > n_logged  # appended, nothing lost
    assert [json.loads(x)["epoch"] for x in (store.path / "metrics.jsonl").read_text().splitlines()] == [1]


def train_with_lab_faults(lab_file, tmp_path, monkeypatch, faults: dict) -> tuple[int, Path, dict]:
    """`hil train --lab` (4 samples, one epoch) with the lab config's emulator.faults set to `faults`; the bench
    must end with every output off. Returns the exit code, the lab file and the faults fired per instrument."""
    lab_tree = yaml.safe_load(lab_file.read_text())
    lab_tree["emulator"]["faults"] = faults
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(lab_tree))
    with EmulatedLab(LabConfig.model_validate(lab_tree)) as emu:
        monkeypatch.setenv("HIL_EMULATOR_REGISTRY", str(emu.write_registry(tmp_path / "reg.json")))
        code = main(["train", "--lab", str(path), "--train-limit", "4", "--test-limit", "2", "--epochs", "1",
                     "--batch-size", "2", "--no-progress", "--runs-dir", str(tmp_path / "runs")])
        assert emu.outputs() == {}
        return code, path, {name: list(inst.faults.fired) for name, inst in emu.instruments.items()}


def test_cli_prints_one_line_naming_instrument_and_fault(lab_file, tmp_path, monkeypatch, capsys):
    code, _, _ = train_with_lab_faults(lab_file, tmp_path, monkeypatch,
                                       {"smu_b": [{"kind": "error", "match": r"^:SOUR1:CURR -?[1-9]", "code": -222}]})
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hil: error: smu_b: SCPI error -222") and "Data out of range" in err[0]


def test_a_second_failure_of_the_retried_query_stops_the_run(lab_file, tmp_path, monkeypatch):
    lab = LabConfig.model_validate(yaml.safe_load(lab_file.read_text()))
    with EmulatedLab(lab) as emu:
        monkeypatch.setenv("HIL_EMULATOR_REGISTRY", str(emu.write_registry(tmp_path / "reg.json")))
        cfg = run_config(lab_file, tmp_path / "runs")
        prep = prepare(cfg, lab_file)
        store = RunStore.create(cfg.runs_dir, cfg.name, cfg)
        emu.inject("smu_hidden", "garbage", match=r"^:TRAC:DATA\?", after=3, count=2)  # the retry gets garbage too
        with pytest.raises(InstrumentFault, match=r"smu_hidden: garbage reply, again after a retry"):
            train_run(prep, store)
        assert emu.outputs() == {}
    st = json.loads((store.path / "run.json").read_text())
    assert st["status"] == "failed" and st["fault"] == "garbage reply, again after a retry"
    actions = [r["action"] for r in map(json.loads, (store.path / "commands.jsonl").read_text().splitlines())
               if r.get("fault")]
    # one retry (after the reconnect the lost measurement trigger is sent again), then the stop
    assert actions[0] == "retry" and actions.count("retry") == 1 and actions[-1] == "stop", actions


def test_a_fault_while_programming_the_start_is_recorded_and_leaves_the_bench_off(lab_file, tmp_path, monkeypatch, capsys):
    """The run folder exists once every instrument answered: a fault while the devices are read back and programmed
    to the start is in its run.json, and every output is off."""
    # the start reads every device back first: garbage twice on one read (the retry too) stops it
    code, path, fired = train_with_lab_faults(lab_file, tmp_path, monkeypatch,
                                              {"board": [{"kind": "garbage", "match": r"^READ", "after": 10, "count": 2}]})
    assert code == 1 and fired["board"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hil: error: board: garbage reply"), err
    (run,) = (tmp_path / "runs").iterdir()
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "failed" and status["instrument"] == "board" and status["lab"] == str(path.resolve())
    assert not (run / "checkpoint.pt").exists()
    assert main(["runs", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "failed" in capsys.readouterr().out
