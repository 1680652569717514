"""Read-only views of the runs dir: what `hil runs`, `hil dashboard` and `hil export` show of run folders.

Nothing here writes into a run folder or holds a lock a running run needs: JSON and CSV files are read whole
(each is replaced atomically, hil/store.py), metrics.jsonl and commands.jsonl are appended line by line (a
line being written is skipped), the checkpoint is replaced atomically, and the step journal is opened through
SQLite's read-only URI (`mode=ro`; `immutable=1` once its writer is gone and no -wal file is left, so a
finished run's folder gains no -shm or -wal file either). A WAL reader never blocks the writer.

Every path a caller names (a run, a file) is resolved under the runs dir, and anything outside it, `..`, an
absolute path or a link out, is refused with RunNotFound.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hil.core.schema import read_yaml
from hil.store import RunStore, StoreError, load_tensors
from hil.sweep import SWEEP_COMMAND

#: report files that make a folder a characterization or a calibration (not a training run)
REPORTS = {"characterize.json": "characterize", "calibration.json": "calibrate"}


class RunNotFound(LookupError):
    """A run or file name that is not a run folder or a file under the runs dir (or tries to leave it)."""


# ---- names under the runs dir -----------------------------------------------------------------------------
def _inside(root: Path, rel: str) -> Path:
    """root/rel resolved, links followed, refused unless it stays under root."""
    if not rel or "\x00" in rel or Path(rel).is_absolute() or rel.startswith(("/", "\\")):
        raise RunNotFound(f"{rel!r}: not a path under the runs dir")
    parts = Path(rel).parts
    if any(p in ("..", "") for p in parts) or "\\" in rel:
        raise RunNotFound(f"{rel!r}: not a path under the runs dir")
    base = root.resolve()
    path = (base / rel).resolve()
    if path == base or not path.is_relative_to(base):  # a link out of the runs dir
        raise RunNotFound(f"{rel!r}: not a path under the runs dir")
    return path


def resolve_run(root: Path, name: str) -> Path:
    """The run folder `name` (a direct child of root holding config.yaml)."""
    path = _inside(Path(root), name)
    if path.parent != Path(root).resolve() or not (path / "config.yaml").is_file():
        raise RunNotFound(f"{name!r}: no run folder of that name in {root}")
    return path


def resolve_file(root: Path, rel: str) -> Path:
    """A regular file inside a run folder of root, e.g. '20261206-050607-run/accuracy.png'."""
    path = _inside(Path(root), rel)
    if not path.is_file() or path.parent.parent != Path(root).resolve():
        raise RunNotFound(f"{rel!r}: no such file in a run folder of {root}")
    return path


# ---- the runs list ----------------------------------------------------------------------------------------
@dataclass
class RunSummary:
    """One line of `hil runs`: a run folder's kind, status, epochs and last test accuracy, and what to do."""

    name: str
    path: Path
    kind: str  # train, sweep, characterize, calibrate
    status: str
    epochs: str  # "-" where a folder has no epochs (sweeps, reports)
    test_acc: float | None
    notes: list[str] = field(default_factory=list)
    updated: str = ""


def run_folders(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).iterdir() if (p / "config.yaml").is_file())


def kind_of(path: Path) -> str:
    if (path / SWEEP_COMMAND).is_file():
        return "sweep"
    return next((k for f, k in REPORTS.items() if (path / f).is_file()), "train")


def summarize(path: Path) -> RunSummary:
    """What `hil runs` prints for a folder; status `unreadable` where its run.json or metrics are damaged."""
    store = RunStore(path)
    kind = kind_of(path)
    try:
        status = store.shown_status()
        st = store.status()
        rows = read_metrics(path)
    except (StoreError, ValueError):
        return RunSummary(path.name, path, kind, "unreadable", "", None)
    sweep = kind == "sweep"  # a sweep's results are in its CSV files, not metrics.jsonl
    report = next((f for f in REPORTS if (path / f).is_file()), None)
    acc = mean(rows[-1].get("test_acc")) if rows else None
    notes = ["sweep: table.csv, trials.csv"] if sweep and status == "completed" else []
    if report:
        notes.append(f"{report.split('.')[0]}: {report}")
    if st.get("lab"):
        notes.append(f"bench {Path(st['lab']).name}")
    reading = st.get("reading")
    if isinstance(reading, dict) and isinstance(reading.get("readings"), int):  # adaptive N's accounting (issue 21)
        notes.append(f"{reading['readings']:.3g} readings, {reading['reading_time_s'] / 3600:.3g} h (fixed N = "
                     f"{reading['worst_case_samples']} for the worst sigma: "
                     f"{reading['worst_case_reading_time_s'] / 3600:.3g} h)")
    resume = f"hil sweep resume {path}" if sweep else f"hil train --resume {path}"
    if not sweep and not store.checkpoint_path.is_file():  # stopped before training began: nothing to resume
        resume = (f"hil safe --lab {st['lab']}, then start again" if st.get("lab") else "start again")
    if status == "crashed":
        notes.append(f"pid {st.get('pid')} gone: {resume}")
    elif status == "interrupted":
        notes.append(f"resume: {resume}")
    elif status == "failed" and st.get("error"):
        notes.append(str(st["error"])[:80])
    epochs = "-" if sweep or report else str(len(rows))
    return RunSummary(path.name, path, kind, status, epochs, acc, notes, str(st.get("updated", "")))


def mean(v: Any) -> float | None:
    """A metric as one number: the mean over replicas where it is a list."""
    if isinstance(v, list):
        return sum(v) / len(v) if v else None
    return float(v) if isinstance(v, (int, float)) else None


# ---- one run folder ---------------------------------------------------------------------------------------
def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl; a last line still being appended is left for the next read. A damaged line elsewhere is a
    ValueError naming the file and line."""
    p = Path(path) / "metrics.jsonl"
    if not p.is_file():
        return []
    text = p.read_text()
    lines = text.split("\n")
    rows = []
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if k == len(lines) - 1:  # no newline yet: the writer is in the middle of it
                break
            raise ValueError(f"{p}: line {k + 1} is not JSON") from None
    return rows


def read_config(path: Path) -> dict[str, Any]:
    """A run folder's config.yaml as a tree (ConfigError naming the file when it is missing or not YAML)."""
    return read_yaml(Path(path) / "config.yaml", "config.yaml")


def journal_progress(path: Path) -> dict[str, Any] | None:
    """Where training stands from the step journal (between epoch ends): steps done, the epoch in training,
    samples and free-phase correct count so far in it; None without a journal."""
    db_path = Path(path) / "journal.sqlite"
    if not db_path.is_file():
        return None
    with ReadOnlyDB(db_path) as db:
        done, last = db.execute("SELECT COUNT(*), MAX(step) FROM steps WHERE done = 1").fetchone()
        if not done:
            return {"steps_done": 0, "epoch": None, "samples": 0, "correct": None}
        epoch = db.execute("SELECT epoch FROM steps WHERE step = ?", (last,)).fetchone()[0]
        rows = db.execute("SELECT batch, correct FROM steps WHERE done = 1 AND epoch = ?", (epoch,)).fetchall()
        pulses = db.execute("SELECT COUNT(*), SUM(pulses) FROM devices").fetchone()
    samples = sum(len(b) // 8 for b, _ in rows)  # batch: int64 sample indices
    corrects = [c for _, c in rows if c is not None]
    return {"steps_done": int(done), "epoch": int(epoch), "samples": samples,
            "correct": float(sum(corrects)) if len(corrects) == len(rows) else None,
            "devices_programmed": int(pulses[0]), "pulses": int(pulses[1] or 0)}


class ReadOnlyDB:
    """A short-lived read-only SQLite connection (closed on exit)."""

    def __init__(self, path: Path):
        live = path.with_name(path.name + "-wal").exists()  # a writer may be at work: share its WAL index
        uri = f"{path.resolve().as_uri()}?mode=ro" + ("" if live else "&immutable=1")
        self.db = sqlite3.connect(uri, uri=True, timeout=1.0)

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, *exc: object) -> None:
        self.db.close()


def conductances(path: Path) -> dict[str, Any] | None:
    """The last snapshot's conductances (checkpoint.pt): per layer an array (replicas, inputs, outputs) in S,
    with the epoch and step it holds; None before the first snapshot."""
    p = Path(path) / "checkpoint.pt"
    if not p.is_file():
        return None
    state = load_tensors(p, "snapshot")
    weights = [np.asarray(w.detach().cpu().numpy(), dtype=np.float64) for w in state.get("weights", [])]
    biases = state.get("biases")
    return {"weights": weights, "epoch": int(state.get("epoch", 0)), "step": int(state.get("step", 0)),
            "in_epoch": state.get("in_epoch") is not None,
            "biases": [np.asarray(b.detach().cpu().numpy(), dtype=np.float64) for b in biases] if biases else None}


class CommandLog:
    """A bench run's command log (commands.jsonl), followed: each `update` reads only the lines appended since the
    last one, so a page refreshed every few seconds costs the new lines, not the whole log. Counts per
    instrument the commands sent and the queries answered (VISA round trips and board transactions), keeps
    every logged fault (drivers/retry.py: timeouts, garbage, dropped connections, with what was done) and the
    last `keep` exchanges."""

    def __init__(self, path: Path, keep: int = 40):
        self.path = Path(path)
        self.offset = 0
        self.commands: dict[str, int] = {}
        self.queries: dict[str, int] = {}
        self.faults: list[dict[str, Any]] = []
        self.tail: list[dict[str, Any]] = []
        self.keep = keep

    def update(self) -> CommandLog:
        if not self.path.is_file():
            return self
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1  # whole lines only: the last one may be in the middle of its write
        for line in chunk[:end].decode("utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            inst = str(row.get("instrument", "?"))
            if "fault" in row:
                self.faults.append(row)
            else:
                self.commands[inst] = self.commands.get(inst, 0) + 1
                if row.get("reply") is not None:
                    self.queries[inst] = self.queries.get(inst, 0) + 1
            self.tail.append(row)
        self.tail = self.tail[-self.keep:]
        self.offset += end
        return self


def read_csv(path: Path) -> tuple[list[str], list[list[str]]] | None:
    """A sweep's table.csv or trials.csv: header and rows; None where the file is not there (yet)."""
    if not Path(path).is_file():
        return None
    rows = list(csv.reader(io.StringIO(Path(path).read_text())))
    return (rows[0], rows[1:]) if rows else ([], [])


def read_json(path: Path) -> dict[str, Any] | None:
    if not Path(path).is_file():
        return None
    data = json.loads(Path(path).read_text())
    return data if isinstance(data, dict) else None


def sweep_keys(header: list[str]) -> list[str]:
    """The columns of a sweep's trials.csv that name a point: the varied keys (a grid's), sigma_V and samples."""
    return header[:header.index("samples") + 1] if "samples" in header else []


def sweep_cells(path: Path) -> dict[str, Any] | None:
    """A sweep's points as they fill in, from trials.csv (rewritten after every epoch or chunk): per point the
    trials done, mean final test accuracy and the convergence rate (final accuracy >= the sweep's threshold)."""
    got = read_csv(Path(path) / "trials.csv")
    if got is None:
        return None
    header, rows = got
    keys = sweep_keys(header)
    grid = read_json(Path(path) / "grid.json") or {}
    threshold = sweep_threshold(Path(path), grid)
    acc_col = header.index("final_test_acc") if "final_test_acc" in header else None
    cells: dict[tuple[str, ...], list[float]] = {}
    for row in rows:
        if acc_col is None or len(row) != len(header) or row[acc_col] == "":
            continue
        cells.setdefault(tuple(row[: len(keys)]), []).append(float(row[acc_col]))
    points = [{"key": dict(zip(keys, k)), "trials": len(v), "mean_test_acc": float(np.mean(v)),
               "convergence_rate": float(np.mean([a >= threshold for a in v]))} for k, v in cells.items()]
    return {"keys": keys, "threshold": threshold, "points": points, "varied": list(grid.get("vary", {}))}


def sweep_threshold(path: Path, grid: dict[str, Any]) -> float:
    """The accuracy a sweep counts as converged: grid.json's or critical.json's (written when it ends), else the
    --threshold of its command line (sweep.json), else the sweep commands' default, 0.5."""
    for source in (grid, read_json(path / "critical.json") or {}):
        if "threshold" in source:
            return float(source["threshold"])
    argv = (read_json(path / SWEEP_COMMAND) or {}).get("argv", [])
    for k, arg in enumerate(argv):
        if arg == "--threshold" and k + 1 < len(argv):
            return float(argv[k + 1])
        if arg.startswith("--threshold="):
            return float(arg.split("=", 1)[1])
    return 0.5
