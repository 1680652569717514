import os
import random
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from torch.utils._python_dispatch import TorchDispatchMode

torch.set_num_threads(2)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXAMPLE_LAB = EXAMPLES / "lab-emulated.yaml"
SEED_ENV = "HIL_TEST_SEED"
DEFAULT_SEED = 2026


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
def characterize_devices_on(tree: dict, folder: Path, pulses: int = 500, devices: int = 10) -> Path:
    """`hil characterize --devices` (`pulses` pulses, 2 cycles, `devices` devices) on an emulated lab built from the
    lab config `tree`, written to folder/lab.yaml; asserts it succeeds and leaves every output off; returns the
    *-devices run folder."""
    import os

    import yaml

    from drivers.lab import LabConfig
    from hil.cli import main
    from sim_backend.emulator.lab import EmulatedLab

    (folder / "lab.yaml").write_text(yaml.safe_dump(tree))
    with EmulatedLab(LabConfig.model_validate(tree)) as emu:
        os.environ["HIL_EMULATOR_REGISTRY"] = str(emu.write_registry(folder / "reg.json"))
        try:
            rc = main(["characterize", "--devices", "--lab", str(folder / "lab.yaml"), "--pulses", str(pulses),
                       "--cycles", "2", "--sample", str(devices), "--runs-dir", str(folder / "runs")])
        finally:
            del os.environ["HIL_EMULATOR_REGISTRY"]
        assert emu.outputs() == {}  # the programmer left at rest
    assert rc == 0
    return next((folder / "runs").glob("*-devices"))


# ---- the example lab and the quiet emulated lab -------------------------------------------------------------------
def example_tree(name: str = "lab-emulated.yaml", **emulator) -> dict:
    """A fresh copy of an example lab config (examples/NAME) as a tree, its `emulator:` settings overridden."""
    tree = yaml.safe_load((EXAMPLES / name).read_text())
    tree["emulator"].update(emulator)
    return tree


def quiet_tree(name: str = "lab-emulated.yaml", **emulator) -> dict:
    """The example lab with noiseless readings, so replies are exact (more emulator settings override)."""
    return example_tree(name, **{"read_noise_V": 0.0, **emulator})


@contextmanager
def emulated(tree: dict, folder: Path, monkeypatch=None):
    """The lab config `tree` written to folder/lab.yaml and emulated on 127.0.0.1, its registry in folder/reg.json
    (and in HIL_EMULATOR_REGISTRY when a monkeypatch is given). Yields .path, .lab (LabConfig), .emu, .registry."""
    from drivers.lab import LabConfig
    from sim_backend.emulator import EmulatedLab

    path = folder / "lab.yaml"
    path.write_text(yaml.safe_dump(tree))
    lab = LabConfig.model_validate(tree)
    with EmulatedLab(lab) as emu:
        registry = emu.write_registry(folder / "reg.json")
        if monkeypatch is not None:
            monkeypatch.setenv("HIL_EMULATOR_REGISTRY", str(registry))
        yield SimpleNamespace(path=path, lab=lab, emu=emu, registry=registry)


@pytest.fixture
def example_lab() -> dict:
    """examples/lab-emulated.yaml as a tree, a fresh copy per test."""
    return example_tree()


@pytest.fixture
def quiet_lab():
    """The example lab with noiseless readings, emulated: (LabConfig, EmulatedLab)."""
    from drivers.lab import LabConfig
    from sim_backend.emulator import EmulatedLab

    lab = LabConfig.model_validate(quiet_tree())
    with EmulatedLab(lab) as emu:
        yield lab, emu


# ---- seeded random moments (kill times): a failure can be replayed ------------------------------------------------
def replay_seed() -> int:
    """HIL_TEST_SEED if set (`random`: a fresh one), else a fixed default."""
    given = os.environ.get(SEED_ENV, "").strip()
    if given == "random":
        return random.SystemRandom().randrange(2**31)
    if not given:
        return DEFAULT_SEED
    try:
        return int(given)
    except ValueError:
        raise pytest.UsageError(f"{SEED_ENV}: an integer or 'random' (got {given!r})") from None


@pytest.fixture
def seeded_draw(request) -> random.Random:
    """A random.Random for a test's random moments; its seed is printed (pytest shows it with a failure) and
    `HIL_TEST_SEED=<seed> pytest <test>` replays them. Its seed is `.seed_used`, for assertion messages."""
    seed = replay_seed()
    print(f"{request.node.nodeid}: random moments from seed {seed} (replay: {SEED_ENV}={seed})")
    draw = random.Random(seed)
    draw.seed_used = seed  # type: ignore[attr-defined]  # for assertion messages
    return draw
