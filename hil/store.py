"""The run folder: config, metrics, checkpoint and plot, written so nothing recorded is lost.

runs/<YYYYmmdd-HHMMSS>-<name>/
    config.yaml        the resolved RunConfig
    run.json           status (running, completed, failed, interrupted), times, error if any, pid and host
    metrics.jsonl      one JSON object per epoch, appended and flushed at once
    checkpoint.pt      conductances, biases and RNG state after the last epoch (atomic replace)
    accuracy.png       train and test accuracy per epoch
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import yaml

from hil.core.config import ConfigError, RunConfig, build_config, config_to_yaml, read_yaml
from hil.core.process import pid_alive
from hil.plotting import save_figure, subplots

#: The run name's pattern, read from its one home (RunConfig.name).
_NAME_PATTERN: str | None = next((m.pattern for m in RunConfig.model_fields["name"].metadata
                                  if getattr(m, "pattern", None)), None)


class StoreError(RuntimeError):
    """A run folder cannot be created, written or read back (permissions, a file in the way, a damaged file)."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write data to path so a crash leaves either the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    """torch.save, replacing path atomically (a checkpoint is never half written)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


@runtime_checkable
class RecordedFault(Protocol):
    """An error that describes itself for run.json (drivers/retry.py InstrumentFault: instrument, command, fault)."""

    def record(self) -> dict[str, Any]: ...


class RunStore:
    """One run folder on disk."""

    def __init__(self, path: Path):
        self.path = Path(path)

    # ---- creation and opening ----------------------------------------------
    @classmethod
    def create(cls, runs_dir: Path | str | None, name: str, config: RunConfig | None = None, **status: Any) -> RunStore:
        """Make a new run folder `runs_dir/<time>-<name>`; call only after the input has been validated.

        config: the run's resolved config, written as config.yaml; None for a command that trains nothing
        (calibrate, characterize --devices), whose config.yaml then records only its name and runs dir.
        runs_dir None: the config's default. status: more for its first run.json (a bench run's lab: a kill at
        any moment after this leaves it named)."""
        root = Path(runs_dir) if runs_dir is not None else RunConfig.model_fields["runs_dir"].default
        pattern = _NAME_PATTERN
        if pattern is not None and not re.fullmatch(pattern, name):
            raise ConfigError(f"name: {name!r} is not a folder name (letters, digits, '_', '.', '-')")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = root / f"{stamp}-{name}"
        try:
            root.mkdir(parents=True, exist_ok=True)
            k = 1
            while True:
                try:
                    path.mkdir()
                    break
                except FileExistsError:
                    k += 1
                    path = root / f"{stamp}-{name}-{k}"
        except OSError as err:
            raise StoreError(f"runs_dir: cannot create a run folder in {root} ({_os_reason(err)})") from None
        store = cls(path)
        try:
            text = (config_to_yaml(config) if config is not None
                    else yaml.safe_dump({"name": name, "runs_dir": str(root)}, sort_keys=False))
            atomic_write_text(path / "config.yaml", text)
            store.mark_running(**status)
        except OSError as err:
            _remove_quietly(path)
            raise StoreError(f"runs_dir: cannot write into {path} ({_os_reason(err)})") from None
        return store

    @classmethod
    def open(cls, path: Path) -> RunStore:
        path = Path(path)
        if not (path / "config.yaml").is_file():
            raise ConfigError(f"resume: {path} is not a run folder (no config.yaml)")
        return cls(path)

    def config(self, overrides: dict[str, Any] | None = None) -> RunConfig:
        return build_config(read_yaml(self.path / "config.yaml"), overrides)

    def save_config(self, cfg: RunConfig) -> None:
        atomic_write_text(self.path / "config.yaml", config_to_yaml(cfg))

    # ---- status ------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        p = self.path / "run.json"
        if not p.is_file():
            return {}
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as err:
            raise StoreError(f"{p}: unreadable ({err.__class__.__name__}); it is rewritten atomically, so this file "
                             "was changed by hand or the disk is failing") from None
        if not isinstance(data, dict):
            raise StoreError(f"{p}: not a run status (expected a JSON object)")
        return data

    def shown_status(self) -> str:
        """The status as a user should read it: `running` whose process is gone on this host is `crashed`."""
        st = self.status()
        status = st.get("status", "unknown")
        if status == "running" and st.get("host") == socket.gethostname() and st.get("pid"):
            if not pid_alive(int(st["pid"])):
                return "crashed"
        return status

    def set_status(self, status: str, **info: Any) -> None:
        data = self.status()
        data.update(status=status, updated=time.strftime("%Y-%m-%dT%H:%M:%S"), **info)
        data.setdefault("created", data["updated"])
        if status not in ("failed", "interrupted"):
            for key in ("error", "instrument", "command", "fault"):
                data.pop(key, None)
        atomic_write_text(self.path / "run.json", json.dumps(data, indent=2) + "\n")

    def mark_running(self, **info: Any) -> None:
        """Status running, with this process's pid and host (see `running_elsewhere`)."""
        self.set_status("running", pid=os.getpid(), host=socket.gethostname(), **info)

    def running_elsewhere(self) -> int | None:
        """The pid of a live process on this host that recorded this run as running, else None."""
        st = self.status()
        pid = st.get("pid")
        if st.get("status") != "running" or not pid or st.get("host") != socket.gethostname() or pid == os.getpid():
            return None
        return int(pid) if pid_alive(int(pid)) else None

    @contextmanager
    def recording(self):
        """Marks the run failed (error kept) or interrupted (Ctrl-C) in run.json if the body raises."""
        try:
            yield self
        except BaseException as err:
            self.record_stop(err)
            raise

    def record_stop(self, err: BaseException) -> None:
        """run.json: interrupted (Ctrl-C) or failed with the error (an instrument fault also names the instrument,
        the command and the fault, drivers/retry.py)."""
        if isinstance(err, KeyboardInterrupt):
            self.set_status("interrupted", error="KeyboardInterrupt")
            return
        fault = err.record() if isinstance(err, RecordedFault) else {}
        self.set_status("failed", error=f"{err.__class__.__name__}: {err}", **fault)

    # ---- metrics -----------------------------------------------------------
    def append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def metrics(self) -> list[dict[str, Any]]:
        p = self.path / "metrics.jsonl"
        if not p.is_file():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    # ---- checkpoint --------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_torch_save(self.checkpoint_path, state)

    def load_checkpoint(self) -> dict[str, Any]:
        if not self.checkpoint_path.is_file():
            raise ConfigError(f"resume: {self.path} has no checkpoint.pt (no epoch finished)")
        return load_tensors(self.checkpoint_path, "resume")

    # ---- plot --------------------------------------------------------------
    def plot_accuracy(self) -> Path:
        rows = self.metrics()
        path = self.path / "accuracy.png"
        noise = any("sigma_estimate_V" in r for r in rows)
        if noise:  # the online sigma estimate beside the accuracy (issue 21)
            fig, (ax, ax_noise) = subplots(1, 2, figsize=(9.5, 3.5), dpi=110)
            plot_noise(ax_noise, rows)
        else:
            fig, ax = subplots(figsize=(5, 3.5), dpi=110)
        ep = [r["epoch"] for r in rows]
        for key, label in (("train_acc", "train"), ("test_acc", "test")):
            ax.plot(ep, [100 * _mean(r[key]) for r in rows], marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(self.path.name, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend()
        return save_figure(fig, path)


def plot_noise(ax, rows: list[dict[str, Any]]) -> None:
    """The epoch's sigma estimate with its 95% interval, the target, and the mean N on a second axis."""
    have = [r for r in rows if "sigma_estimate_V" in r]
    ep = [r["epoch"] for r in have]
    mid = [_mean(r["sigma_estimate_V"]) for r in have]
    lo = [m - _mean(r["sigma_estimate_low_V"]) for m, r in zip(mid, have)]
    hi = [_mean(r["sigma_estimate_high_V"]) - m for m, r in zip(mid, have)]
    ax.errorbar(ep, mid, yerr=[lo, hi], marker="o", capsize=3, label="sigma estimate (95%)")
    targets = [(r["epoch"], r["sigma_target_V"]) for r in rows if "sigma_target_V" in r]
    if targets:
        ax.plot(*zip(*targets), ls="--", color="gray", label="target sigma/sqrt(N)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("sigma of one reading (V)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    right = ax.twinx()
    right.plot([r["epoch"] for r in rows], [_mean(r["samples"]) for r in rows], color="tab:green", marker="s", ms=3)
    right.set_ylabel("N (mean over the epoch)", color="tab:green")


def load_tensors(path: Path, what: str) -> dict[str, Any]:
    """torch.load of tensors and plain data only (weights_only: a checkpoint can never run code); a damaged file is one error."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds (pickle, zip, EOF) for one cause: a bad file
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else err.__class__.__name__
        raise StoreError(f"{what}: {path} is damaged or not a checkpoint ({reason}); it is written atomically, so "
                         "it was truncated or changed after it was saved") from None
    if not isinstance(state, dict):
        raise StoreError(f"{what}: {path} is not a checkpoint (no table of tensors inside)")
    return state


def _os_reason(err: OSError) -> str:
    return f"{err.strerror or err.__class__.__name__}: {err.filename}" if err.filename else (err.strerror or str(err))


def _remove_quietly(path: Path) -> None:
    for p in sorted(path.glob("*"), reverse=True):
        try:
            p.unlink()
        except OSError:
            pass
    try:
        path.rmdir()
    except OSError:
        pass


def _mean(v):
    return sum(v) / len(v) if isinstance(v, list) else v
