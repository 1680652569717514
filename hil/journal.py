"""The step journal: an append-only, crash-safe record of a training run (SQLite in WAL mode, journal.sqlite).

Per training step (one batch): the epoch, its position in the epoch, the batch's sample indices and, once the
step is done, its free-phase correct count and summed loss. On a bench also, per programmed device, the EP
update's target conductance, the verified conductance and the pulse count (normalized siemens). A snapshot
row records each checkpoint (the step it holds). A transaction commits per step: a run killed at any moment
leaves every finished step in the journal and at most the step in flight unfinished.

Tables:
    steps(step, epoch, pos, batch BLOB int64, done, correct, loss, t)          step: 0-based, run-wide
    devices(step, layer, row, col, target, verified, pulses)                   bench programming, per device
    targets(step, layer, data BLOB float64)                                    bench: W + pending after the step
    snapshots(step, epoch, pos, t)                                             checkpoints written
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS steps (step INTEGER PRIMARY KEY, epoch INTEGER, pos INTEGER, batch BLOB,
                                  done INTEGER DEFAULT 0, correct REAL, loss REAL, t REAL);
CREATE TABLE IF NOT EXISTS devices (step INTEGER, layer INTEGER, row INTEGER, col INTEGER, target REAL,
                                    verified REAL, pulses INTEGER);
CREATE TABLE IF NOT EXISTS targets (step INTEGER, layer INTEGER, data BLOB);
CREATE TABLE IF NOT EXISTS snapshots (step INTEGER, epoch INTEGER, pos INTEGER, t REAL);
"""


class StepJournal:
    """journal.sqlite in a run folder. `synchronous=NORMAL` in WAL mode: a killed process loses no commit
    (the OS has it); `durable=True` (benches) syncs each step's start and end to disk, against power loss too.
    The devices recorded one by one inside a step (`record_devices`) are not synced each: a sync costs about
    3 ms on a VM's disk, as much as programming a device, and a kill keeps them all the same. After a power loss
    a resume reads every device back (unless --trust-journal), so none of them is needed to stay correct."""

    def __init__(self, path: Path, *, durable: bool = False):
        self.path = Path(path)
        self.durable = durable
        self.db = sqlite3.connect(self.path, isolation_level=None)  # autocommit; explicit BEGIN per step
        self.db.execute("PRAGMA journal_mode=WAL")
        self._sync("FULL" if durable else "NORMAL")

    def _sync(self, level: str) -> None:
        self.db.execute(f"PRAGMA synchronous={level}")
        self.db.executescript(SCHEMA)

    def begin_step(self, step: int, epoch: int, pos: int, batch: np.ndarray) -> None:
        """The step is about to run on these samples (replaces an unfinished record of the same step)."""
        db = self.db
        db.execute("BEGIN")
        db.execute("DELETE FROM devices WHERE step = ?", (step,))  # a step redone after a resume starts afresh
        db.execute("INSERT OR REPLACE INTO steps (step, epoch, pos, batch, done, t) VALUES (?, ?, ?, ?, 0, ?)",
                   (step, epoch, pos, np.asarray(batch, dtype=np.int64).tobytes(), time.time()))
        db.execute("COMMIT")

    def end_step(self, step: int, correct: float | None = None, loss: float | None = None,
                 devices: Sequence[tuple] = (), targets: Sequence[tuple[int, np.ndarray]] = ()) -> None:
        """The step finished: its programmed devices (layer, row, col, target, verified, pulses) and targets."""
        db = self.db
        if self.durable:
            self._sync("FULL")  # the step's end: synced, with every device record before it
        db.execute("BEGIN")
        db.execute("DELETE FROM targets WHERE step = ?", (step,))
        if devices:  # those not journaled one by one already (record_devices)
            db.executemany("INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, ?)", [(step, *d) for d in devices])
        if len(targets):
            db.executemany("INSERT INTO targets VALUES (?, ?, ?)",
                           [(step, layer, np.asarray(a, dtype=np.float64).tobytes()) for layer, a in targets])
        db.execute("UPDATE steps SET done = 1, correct = ?, loss = ? WHERE step = ?", (correct, loss, step))
        db.execute("COMMIT")

    def record_devices(self, step: int, devices: list[tuple]) -> None:
        """Devices programmed so far in an unfinished step (a stop during programming keeps them)."""
        if devices:
            if self.durable:
                self._sync("NORMAL")  # kept by a killed process; synced with the step's end
            self.db.executemany("INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, ?)", [(step, *d) for d in devices])

    def snapshot(self, step: int, epoch: int, pos: int) -> None:
        self.db.execute("INSERT INTO snapshots VALUES (?, ?, ?, ?)", (step, epoch, pos, time.time()))

    # ---- reading back ------------------------------------------------------------------
    def last_done(self) -> int | None:
        row = self.db.execute("SELECT MAX(step) FROM steps WHERE done = 1").fetchone()
        return None if row[0] is None else int(row[0])

    def unfinished(self) -> int | None:
        row = self.db.execute("SELECT MAX(step) FROM steps WHERE done = 0").fetchone()
        return None if row[0] is None else int(row[0])

    def steps(self, after: int = -1) -> list[dict]:
        rows = self.db.execute("SELECT step, epoch, pos, batch, done, correct, loss FROM steps WHERE step > ? "
                               "ORDER BY step", (after,)).fetchall()
        return [{"step": s, "epoch": e, "pos": p, "batch": np.frombuffer(b, dtype=np.int64), "done": bool(d),
                 "correct": c, "loss": l} for s, e, p, b, d, c, l in rows]

    def devices(self, step: int) -> list[tuple]:
        """(layer, row, col, target, verified, pulses) of the devices a step programmed, in order."""
        return self.db.execute("SELECT layer, row, col, target, verified, pulses FROM devices WHERE step = ?",
                               (step,)).fetchall()

    def targets(self, step: int) -> dict[int, np.ndarray]:
        return {layer: np.frombuffer(b, dtype=np.float64)
                for layer, b in self.db.execute("SELECT layer, data FROM targets WHERE step = ?", (step,))}

    def count(self, table: str) -> int:
        assert table in ("steps", "devices", "targets", "snapshots")
        return int(self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def close(self) -> None:
        self.db.close()
