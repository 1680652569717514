"""Datasets as tensors in [0, 1].

- digits: the 8x8 handwritten digits that ship inside scikit-learn (no download).
- mnist, kmnist, fashion-mnist: IDX files (raw or .gz) from a folder, flat or in
  torchvision's layout (ROOT/MNIST/raw, ROOT/KMNIST/raw, ROOT/FashionMNIST/raw).
  Debian's `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist) is found
  by itself.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hil.core.config import DataConfig

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
TORCHVISION_FOLDER = {"mnist": "MNIST", "kmnist": "KMNIST", "fashion-mnist": "FashionMNIST"}
SYSTEM_FOLDERS = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")], "mnist": [Path("/usr/share/datasets/mnist")]}
WHERE_TO_GET = {
    "mnist": "the MNIST files (e.g. torchvision's mirror, or pass --download with torchvision installed)",
    "kmnist": "the KMNIST files from the ROIS-DS Center for Open Data in the Humanities (or --download with torchvision)",
    "fashion-mnist": "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), Zalando Research's fashion-mnist "
    "repository, or --download with torchvision",
}


class DatasetError(FileNotFoundError):
    """A dataset could not be found or read; the message names the files and where to get them."""


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # (n, features) in [0, 1]
    y_train: torch.Tensor  # (n,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def n_inputs(self) -> int:
        return self.x_train.shape[1]

    def to(self, device) -> Dataset:
        return Dataset(self.name, self.x_train.to(device), self.y_train.to(device),
                       self.x_test.to(device), self.y_test.to(device), self.n_classes)


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (unsigned-byte data), raw or gzip-compressed."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DatasetError(f"{path}: damaged gzip file ({err.__class__.__name__}: {err}); download it again") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read ({err.strerror or err})") from None
    if len(data) < 4:
        raise DatasetError(f"{path}: too short for an IDX file")
    zero, dtype_code, ndim = data[0] << 8 | data[1], data[2], data[3]
    if zero != 0 or dtype_code != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    if len(data) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: truncated inside its header ({len(data)} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: holds {body.size} bytes of data, the header says {int(np.prod(dims))}")
    return body.reshape(dims)


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        p = folder / name
        if p.is_file():
            return p
    return None


def candidate_folders(name: str, data_dir: Path | None) -> list[Path]:
    folders: list[Path] = []
    if data_dir is not None:
        folders += [data_dir, data_dir / TORCHVISION_FOLDER[name] / "raw", data_dir / name]
    else:
        folders += SYSTEM_FOLDERS.get(name, [])
    return folders


def find_idx_folder(name: str, data_dir: Path | None) -> Path:
    folders = candidate_folders(name, data_dir)
    for folder in folders:
        if all(_find_file(folder, stem) for stem in IDX_FILES.values()):
            return folder
    where = ", ".join(str(f) for f in folders) or "(no folder: pass --data-dir)"
    expected = ", ".join(f"{s}[.gz]" for s in IDX_FILES.values())
    raise DatasetError(f"{name}: expected {expected} in one of: {where}. Get them from {WHERE_TO_GET[name]}.")


def _download(name: str, data_dir: Path) -> None:
    try:
        # optional: torchvision is no dependency (and may not import with this torch); only --download needs it
        import torchvision.datasets as tvd
    except Exception as err:  # noqa: BLE001 - any import failure means no download path
        raise DatasetError(f"--download needs torchvision, which does not import here ({err.__class__.__name__}: {err})") from None
    cls = {"mnist": tvd.MNIST, "kmnist": tvd.KMNIST, "fashion-mnist": tvd.FashionMNIST}[name]
    for train in (True, False):
        cls(root=str(data_dir), train=train, download=True)


def _load_idx(name: str, data_dir: Path | None, download: bool):
    if data_dir is not None and not Path(data_dir).exists() and not download:
        raise DatasetError(f"data.data_dir: folder not found: {data_dir}")
    try:
        folder = find_idx_folder(name, data_dir)
    except DatasetError:
        if not download:
            raise
        if data_dir is None:
            raise DatasetError("--download needs --data-dir to say where to put the files") from None
        _download(name, Path(data_dir))
        folder = find_idx_folder(name, data_dir)
    files = {k: _find_file(folder, stem) for k, stem in IDX_FILES.items()}
    arrays = {k: read_idx(f) for k, f in files.items() if f is not None}  # find_idx_folder found them all
    for split in ("train", "test"):
        if len(arrays[f"{split}_images"]) != len(arrays[f"{split}_labels"]):
            raise DatasetError(f"{folder}: {split} images and labels differ in count")
    to_x = lambda a: torch.from_numpy(a.reshape(len(a), -1).astype(np.float32) / 255.0)  # noqa: E731
    to_y = lambda a: torch.from_numpy(a.astype(np.int64))  # noqa: E731
    side = arrays["train_images"].shape[1]
    return (to_x(arrays["train_images"]), to_y(arrays["train_labels"]),
            to_x(arrays["test_images"]), to_y(arrays["test_labels"]), side)


def _load_digits():
    # scikit-learn takes ~2 s to import and only the digits data set needs it: imported when that one is loaded
    from sklearn import datasets, model_selection

    d = datasets.load_digits()
    x = d.data.astype(np.float32) / 16.0
    # A fixed stratified 80/20 split, independent of the training seed, so runs compare.
    xtr, xte, ytr, yte = model_selection.train_test_split(x, d.target, test_size=0.2, random_state=0, stratify=d.target)
    t = torch.from_numpy
    return t(xtr), t(ytr.astype(np.int64)), t(xte), t(yte.astype(np.int64)), 8


def _pool(x: torch.Tensor, side: int, new_side: int) -> torch.Tensor:
    if new_side > side:
        raise DatasetError(f"image_size: {new_side} is larger than the images ({side}x{side})")
    if new_side == side:
        return x
    img = x.view(-1, 1, side, side)
    return torch.nn.functional.adaptive_avg_pool2d(img, new_side).reshape(len(x), -1)


def _select(x, y, classes):
    keep = torch.zeros_like(y, dtype=torch.bool)
    for c in classes:
        keep |= y == c
    relabel = torch.full((int(y.max()) + 1,), -1, dtype=torch.int64)
    for i, c in enumerate(classes):
        relabel[c] = i
    return x[keep], relabel[y[keep]]


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load the dataset a DataConfig names, with its class selection, pooling and limits applied."""
    if cfg.dataset == "digits":
        xtr, ytr, xte, yte, side = _load_digits()
    else:
        xtr, ytr, xte, yte, side = _load_idx(cfg.dataset, cfg.data_dir, cfg.download)
    n_classes = int(max(ytr.max(), yte.max())) + 1
    if cfg.classes is not None:
        bad = [c for c in cfg.classes if not 0 <= c < n_classes]
        if bad:
            raise DatasetError(f"classes: {bad} not among the labels 0..{n_classes - 1} of {cfg.dataset}")
        xtr, ytr = _select(xtr, ytr, cfg.classes)
        xte, yte = _select(xte, yte, cfg.classes)
        n_classes = len(cfg.classes)
    if cfg.image_size is not None:
        xtr, xte = _pool(xtr, side, cfg.image_size), _pool(xte, side, cfg.image_size)
    if cfg.train_limit:
        xtr, ytr = xtr[: cfg.train_limit], ytr[: cfg.train_limit]
    if cfg.test_limit:
        xte, yte = xte[: cfg.test_limit], yte[: cfg.test_limit]
    return Dataset(cfg.dataset, xtr.contiguous(), ytr, xte.contiguous(), yte, n_classes)
