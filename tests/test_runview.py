"""hil.runview, what the dashboard and `hil export` read: live files read as they are written, no lock taken."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from hil.cli import main
from hil.journal import StepJournal
from hil.runview import (
    CommandLog,
    ReadOnlyDB,
    RunNotFound,
    journal_progress,
    read_metrics,
    resolve_file,
    resolve_run,
    summarize,
    sweep_cells,
)


def test_a_metrics_line_being_written_waits_for_the_next_read(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "test_acc": 0.5}\n{"epoch": 2, "te')
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1]
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\nnot json\n{"epoch": 3}\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):  # damage inside the file is an error
        read_metrics(tmp_path)


def test_the_journal_is_read_while_its_writer_works_and_never_blocks_it(tmp_path):
    writer = StepJournal(tmp_path / "journal.sqlite")
    try:
        for step in range(3):  # epoch 1: 3 steps of 4 samples, 3 correct each
            writer.begin_step(step, 1, step, np.arange(4 * step, 4 * step + 4))
            writer.end_step(step, correct=3.0, loss=0.1)
        writer.begin_step(3, 1, 3, np.arange(12, 16))  # in flight: not counted
        got = journal_progress(tmp_path)
        assert got is not None
        assert (got["steps_done"], got["epoch"], got["samples"], got["correct"]) == (3, 1, 12, 9.0)
        with ReadOnlyDB(tmp_path / "journal.sqlite") as db:  # a reader inside a read transaction ...
            db.execute("BEGIN")
            assert db.execute("SELECT COUNT(*) FROM steps").fetchone()[0] == 4
            writer.end_step(3, correct=4.0, loss=0.1)  # ... and the writer commits all the same (WAL)
            writer.begin_step(4, 2, 0, np.arange(4))
            writer.end_step(4, correct=1.0, loss=0.2)
        got = journal_progress(tmp_path)
        assert got is not None and (got["steps_done"], got["epoch"], got["samples"]) == (5, 2, 4)
    finally:
        writer.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    journal_progress(tmp_path)  # the writer is gone: read as immutable, nothing created beside the file
    assert sorted(p.name for p in tmp_path.iterdir()) == names


def test_the_command_log_is_followed_line_by_line(tmp_path):
    path = tmp_path / "commands.jsonl"
    rows = [{"t": 0.1, "instrument": "smu", "command": ":READ?", "reply": "1.0"},
            {"t": 0.2, "instrument": "dac", "command": "sour1:volt 0", "reply": None},
            {"t": 0.3, "instrument": "smu", "command": ":READ?", "reply": None, "fault": "garbage reply",
             "action": "retry"}]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    path.write_text(text[:-20])  # the last line half written
    log = CommandLog(path).update()
    assert log.commands == {"smu": 1, "dac": 1} and log.queries == {"smu": 1} and log.faults == []
    path.write_text(text)
    log.update()
    assert log.faults == [rows[2]] and log.commands == {"smu": 1, "dac": 1}  # the first two not counted twice
    assert log.offset == len(text.encode())


def test_names_that_leave_the_runs_dir_are_refused(tmp_path):
    runs = tmp_path / "runs"
    (runs / "a-run").mkdir(parents=True)
    (runs / "a-run" / "config.yaml").write_text("name: run\n")
    (runs / "a-run" / "metrics.jsonl").write_text("")
    (tmp_path / "outside.txt").write_text("x")
    assert resolve_run(runs, "a-run") == (runs / "a-run").resolve()
    assert resolve_file(runs, "a-run/metrics.jsonl") == (runs / "a-run" / "metrics.jsonl").resolve()
    for name in ("..", "../outside.txt", "a-run/../../outside.txt", "/etc/passwd", "a-run/..\\..\\outside.txt",
                 "", "a-run/", "a-run/nothing", "a-run/config.yaml\x00"):
        with pytest.raises(RunNotFound):
            resolve_file(runs, name)
    for name in ("..", "../runs", "a-run/..", "nope", "a-run/metrics.jsonl"):
        with pytest.raises(RunNotFound):
            resolve_run(runs, name)


def test_a_grid_sweeps_points_from_its_trials_match_its_table(tmp_path):
    runs = tmp_path / "runs"
    assert main(["sweep", "grid", "--vary", "ep.beta=0.5,1", "--vary", "ep.eta=0.01,0.02", "--trials", "2",
                 "--hidden", "8", "--epochs", "1", "--train-limit", "40", "--test-limit", "20", "--no-progress",
                 "--threshold", "0.05", "--runs-dir", str(runs)]) == 0
    (run,) = runs.iterdir()
    cells = sweep_cells(run)
    assert cells is not None and cells["keys"] == ["ep.beta", "ep.eta", "sigma_V", "samples"]
    assert cells["threshold"] == 0.05 and cells["varied"] == ["ep.beta", "ep.eta"]
    table = list(csv.DictReader((run / "table.csv").open()))
    assert len(cells["points"]) == len(table) == 4
    for point, row in zip(cells["points"], table):
        assert point["key"] == {k: row[k] for k in cells["keys"]}
        assert point["trials"] == int(row["trials"])
        assert point["mean_test_acc"] == pytest.approx(float(row["mean_test_acc"]), abs=1e-4)
        assert point["convergence_rate"] == pytest.approx(float(row["convergence_rate"]), abs=1e-4)
    assert summarize(run).kind == "sweep" and summarize(run).epochs == "-"
