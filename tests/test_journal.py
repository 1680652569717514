"""The step journal itself, and the per-step recording the trainer does through it."""

import sqlite3

import numpy as np
from conftest import HostReads

from hil.cli import main
from hil.journal import StepJournal
from hil.snapshots import StepRecorder


def test_a_step_begun_but_not_ended_is_the_unfinished_one(tmp_path):
    j = StepJournal(tmp_path / "journal.sqlite", durable=True)
    j.begin_step(0, 1, 0, np.array([3, 1]))
    j.record_devices(0, [(0, 1, 2, 0.5, 0.501, 3)])
    j.end_step(0, 1.0, 0.25, targets=[(0, np.array([0.5, 0.25]))])
    j.begin_step(1, 1, 1, np.array([0, 2]))
    j.record_devices(1, [(1, 0, 0, 0.7, 0.699, 2)])
    # another process (a resume after a kill) sees what was committed, WAL or not
    other = StepJournal(tmp_path / "journal.sqlite")
    assert other.last_done() == 0 and other.unfinished() == 1
    assert other.devices(0) == [(0, 1, 2, 0.5, 0.501, 3)] and other.devices(1) == [(1, 0, 0, 0.7, 0.699, 2)]
    assert list(other.steps()[0]["batch"]) == [3, 1] and other.steps()[0]["correct"] == 1.0
    assert list(other.targets(0)[0]) == [0.5, 0.25]
    j.begin_step(1, 1, 1, np.array([0, 2]))  # the step redone after a resume starts afresh
    assert other.devices(1) == []
    assert sqlite3.connect(tmp_path / "journal.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    j.close()
    other.close()


def test_journaling_a_step_reads_nothing_back_from_the_device(tmp_path):
    """As on a GPU: the recorder journals batch indices from the CPU order and never the step's device counts."""
    from hil.core.config import build_config
    from hil.data import load_dataset
    from hil.trainer import Trainer
    from sim_backend.crossbar import SimCrossbar

    cfg = build_config({}, {"data.train_limit": 40, "data.test_limit": 8, "network.hidden": [8],
                            "train.checkpoint_every_steps": 0, "train.checkpoint_every_s": 0})
    data = load_dataset(cfg.data)
    data.x_train, data.x_test = data.x_train.float(), data.x_test.float()
    net = SimCrossbar.from_config(cfg, data.n_inputs, data.n_classes)
    net.host_checks = False
    tr = Trainer(cfg, net, data, check_every=10**9)
    journal = StepJournal(tmp_path / "journal.sqlite")
    rec = StepRecorder(tr, lambda state: None, journal, every_steps=0, every_s=0)
    rec.on_cpu = False  # what a CUDA run does
    order = tr.epoch_order(1)
    tr.step(data.x_train[order[:4]], data.y_train[order[:4]])  # caches
    with HostReads() as reads:
        for pos in range(1, 6):
            idx = order[4 * pos:4 * pos + 4]
            rec.begin(1, pos, idx)
            c, l = tr.step(data.x_train[idx], data.y_train[idx])
            rec.end(1, pos, c, l)
    assert reads.seen == []
    assert journal.count("steps") == 5 and journal.last_done() == 5
    journal.close()


def test_trust_journal_needs_resume(capsys):
    assert main(["train", "--trust-journal"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hil: error: --trust-journal: only with --resume") and len(err.splitlines()) == 1


def test_a_negative_snapshot_interval_is_refused(capsys, tmp_path):
    assert main(["train", "--checkpoint-every-steps", "-1", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hil: error: train.checkpoint_every_steps:") and "-1" in err
    assert not any(tmp_path.iterdir())  # no run folder for bad input
