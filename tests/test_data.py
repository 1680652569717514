"""Datasets: the embedded digits, IDX files in both layouts, raw and gzip, and the missing-file error."""

import numpy as np
import pytest
from conftest import write_idx

from hil.core.config import DataConfig
from hil.data import DatasetError, load_dataset, read_idx


def make_idx_set(folder, gz, n_train=30, n_test=10):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_idx(folder / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 28, 28)), gz)
    write_idx(folder / "train-labels-idx1-ubyte", np.arange(n_train) % 10, gz)
    write_idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28)), gz)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.arange(n_test) % 10, gz)


def test_digits_embedded():
    d = load_dataset(DataConfig())
    assert d.x_train.shape == (1437, 64) and d.x_test.shape == (360, 64) and d.n_classes == 10
    assert 0 <= d.x_train.min() and d.x_train.max() <= 1


def test_digits_two_classes_downsampled():
    d = load_dataset(DataConfig(classes=[0, 1], image_size=4))
    assert d.n_inputs == 16 and d.n_classes == 2 and set(d.y_train.tolist()) == {0, 1}


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_idx_folders(tmp_path, gz, layout):
    folder = tmp_path if layout == "flat" else tmp_path / "KMNIST" / "raw"
    make_idx_set(folder, gz)
    d = load_dataset(DataConfig(dataset="kmnist", data_dir=tmp_path, image_size=14))
    assert d.x_train.shape == (30, 196) and d.x_test.shape == (10, 196) and d.n_classes == 10
    raw = read_idx(next(folder.glob("train-images*")))
    assert raw.shape == (30, 28, 28)


def test_missing_files_error_names_them(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset(DataConfig(dataset="mnist", data_dir=tmp_path))
    msg = str(e.value)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert stem in msg
    assert str(tmp_path / "MNIST" / "raw") in msg


def test_corrupt_idx_is_reported(tmp_path):
    make_idx_set(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x0d\x01junk")
    with pytest.raises(DatasetError, match="not an unsigned-byte IDX file"):
        load_dataset(DataConfig(dataset="mnist", data_dir=tmp_path))


def test_bad_class_selection():
    with pytest.raises(ValueError, match="digits has no label 12"):  # refused with the config, before any loading
        DataConfig(classes=[3, 12])
    with pytest.raises(DatasetError, match="classes"):  # and by the data itself (a config built unchecked)
        load_dataset(DataConfig.model_construct(**{**DataConfig().model_dump(), "classes": [3, 12]}))


def test_download_without_torchvision_says_so(tmp_path):
    pytest.importorskip("torch")
    try:
        import torchvision  # noqa: F401  # pyflakes: only whether it imports matters
        pytest.skip("torchvision imports here; the download path would go to the network")
    except Exception:  # noqa: BLE001 - it does not import with this torch: the case under test
        pass
    with pytest.raises(DatasetError, match="--download needs torchvision"):
        load_dataset(DataConfig(dataset="mnist", data_dir=tmp_path, download=True))
