import sqlite3
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

torch.set_num_threads(2)


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"


def write_idx(path, array, gz=False):
    """One IDX file (unsigned bytes), raw or gzip-compressed (name + .gz)."""
    import gzip
    import struct

    import numpy as np

    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def write_fashion_like(folder, n_train=3000, n_test=528, seed=0, gz=True):
    """A learnable stand-in for Fashion-MNIST: 28x28 images, 10 classes, each a fixed template plus noise.

    528 test samples: evaluation ends with a 16-sample batch, unlike the 4-sample training batches.
    """
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 255, (10, 28, 28))

    def images(n):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        x = 0.6 * templates[labels] + rng.uniform(0, 0.4 * 255, (n, 28, 28))
        return x.clip(0, 255), labels

    xtr, ytr = images(n_train)
    xte, yte = images(n_test)
    write_idx(folder / "train-images-idx3-ubyte", xtr, gz)
    write_idx(folder / "train-labels-idx1-ubyte", ytr, gz)
    write_idx(folder / "t10k-images-idx3-ubyte", xte, gz)
    write_idx(folder / "t10k-labels-idx1-ubyte", yte, gz)
    return folder


# ---- counters of what torch does inside a block (a training step must neither sync nor allocate weight-sized) --
HOST_READS = {"_local_scalar_dense", "is_nonzero", "nonzero", "masked_select", "equal"}


class HostReads(TorchDispatchMode):
    """The operations that read a device value back to the host (a synchronisation on a GPU), in order."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in HOST_READS:
            self.seen.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


class Sizes(TorchDispatchMode):
    """The largest tensor created (not a view, not written in place) while the mode is on, in elements."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        fresh = not func._schema.is_mutable and not any(r.alias_info for r in func._schema.returns)
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if fresh and isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def journal_count(run, sql: str) -> int:
    """A COUNT query on a run's journal, read while the run may still write it (WAL lets a reader in);
    0 while the journal does not exist yet or is locked."""
    path = run / "journal.sqlite"
    if not path.is_file():
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return int(db.execute(sql).fetchone()[0])
        finally:
            db.close()
    except sqlite3.OperationalError:
        return 0


# ---- a bench's devices characterized through its programmer (the serial board, the ArC ONE, the SMU pulser) -----
def characterize_devices_on(tree: dict, folder: Path) -> Path:
    """`hil characterize --devices` (500 pulses, 2 cycles, 10 devices) on an emulated lab built from the lab config
    `tree`, written to folder/lab.yaml; asserts it succeeds and leaves every output off; returns the *-devices
    run folder."""
    import os

    import yaml

    from drivers.lab import LabConfig
    from hil.cli import main
    from sim_backend.emulator.lab import EmulatedLab

    (folder / "lab.yaml").write_text(yaml.safe_dump(tree))
    with EmulatedLab(LabConfig.model_validate(tree)) as emu:
        os.environ["HIL_EMULATOR_REGISTRY"] = str(emu.write_registry(folder / "reg.json"))
        try:
            rc = main(["characterize", "--devices", "--lab", str(folder / "lab.yaml"), "--pulses", "500",
                       "--cycles", "2", "--sample", "10", "--runs-dir", str(folder / "runs")])
        finally:
            del os.environ["HIL_EMULATOR_REGISTRY"]
        assert emu.outputs() == {}  # the programmer left at rest
    assert rc == 0
    return next((folder / "runs").glob("*-devices"))
