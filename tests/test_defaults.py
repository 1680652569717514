"""Defaults that train on every dataset the project loads, with one hidden layer and with two: no node floats
(g_min > 0), and the gain, learning rate and diodes are sized to the input count and depth where unset."""

import json

import pytest
from conftest import write_fashion_like

from hil.cli import main
from hil.core.config import build_config
from hil.data import DatasetError, find_idx_folder


def test_settings_are_sized_to_the_data_where_unset():
    digits = build_config({}, {})
    assert (digits.network.input_gain, digits.ep.eta, digits.network.bipolar) == (64.0, 1e-2, False)
    images = build_config({}, {"data.dataset": "fashion-mnist"})
    assert (images.network.input_gain, images.ep.eta) == (500.0, 1e-3)  # the paper's setting for 784 inputs
    deep = build_config({}, {"data.dataset": "fashion-mnist", "network.hidden": [256, 128]})
    assert deep.network.input_gain == 2000.0 and deep.network.bipolar
    mine = build_config({}, {"data.dataset": "fashion-mnist", "network.input_gain": 30.0, "ep.eta": 0.5,
                             "network.bipolar": False, "network.hidden": [8, 8]})
    assert (mine.network.input_gain, mine.ep.eta, mine.network.bipolar) == (30.0, 0.5, False)
    assert mine._sized_to_data == frozenset()
    assert build_config({}, {}).network.g_min > 0


def have(dataset):
    try:
        find_idx_folder(dataset, None)
    except DatasetError:  # not installed here
        return False
    return True


# Real data where this machine has it (CI installs Debian's dataset-fashion-mnist); a stand-in with the same
# shape otherwise, so every loader and every default runs.
DATASETS = ["digits", "fashion-mnist", "mnist", "kmnist"]


# Two hidden layers on digits and Fashion-MNIST only: MNIST and KMNIST here are the same stand-in as a missing
# Fashion-MNIST, so their deep runs would repeat a case (their loaders are covered by the one-layer runs).
CASES = [(d, "default") for d in DATASETS] + [("digits", "256,128"), ("fashion-mnist", "256,128")]


@pytest.mark.parametrize(("dataset", "hidden"), CASES)
def test_defaults_train_on_every_dataset(dataset, hidden, tmp_path):
    args = ["train", "--no-progress", "--dataset", dataset, "--epochs", "1", "--runs-dir", str(tmp_path / "runs")]
    real = dataset == "digits" or have(dataset)
    if dataset != "digits":
        # 8,000 samples: past step 1,608, where the old defaults hit a non-finite update on Fashion-MNIST.
        args += ["--train-limit", "8000", "--test-limit", "1000"]
        if not real:
            args += ["--data-dir", str(write_fashion_like(tmp_path / dataset, n_train=8000, n_test=1000))]
    if hidden != "default":
        args += ["--hidden", hidden]
    assert main(args) == 0  # a non-finite update would stop it with exit 1
    run = next((tmp_path / "runs").iterdir())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    floor = 0.5 if hidden == "default" else 0.2  # chance is 0.1; two hidden layers learn more slowly
    assert rows[-1]["test_acc"] > floor, (dataset, hidden, rows[-1], "real" if real else "stand-in")
