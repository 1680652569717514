"""`hil export`: run folders as netCDF that xarray opens (units in the attributes), or CSV."""

from __future__ import annotations

import json

import numpy as np
import torch
import xarray as xr
import yaml

from hil import version
from hil.cli import main

TINY = ["--hidden", "8", "--train-limit", "40", "--test-limit", "20", "--no-progress"]


def only_run(runs):
    (run,) = [p for p in runs.iterdir() if (p / "config.yaml").is_file()]
    return run


def test_a_digits_run_opens_in_xarray_with_units(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", *TINY, "--epochs", "3", "--runs-dir", str(runs)]) == 0
    run = only_run(runs)
    capsys.readouterr()
    assert main(["export", str(run)]) == 0
    out = run / f"{run.name}.nc"
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    with xr.open_dataset(out) as ds:
        assert ds["test_acc"].dims == ("epoch",)
        assert ds["epoch"].values.tolist() == [1, 2, 3]
        assert ds["test_acc"].attrs["units"] == "1" and "test accuracy" in ds["test_acc"].attrs["long_name"]
        np.testing.assert_allclose(ds["test_acc"].values, [r["test_acc"] for r in rows])
        assert ds["train_loss"].attrs["units"] == "V2" and ds["seconds"].attrs["units"] == "s"
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        for k, w in enumerate(state["weights"]):
            g = ds[f"g_layer{k}"]
            assert g.attrs["units"] == "S" and g.attrs["snapshot_epoch"] == 3
            np.testing.assert_allclose(g.values, w.numpy().astype(np.float64))
        assert yaml.safe_load(ds.attrs["config_yaml"]) == yaml.safe_load((run / "config.yaml").read_text())
        assert ds.attrs["crossbar_hil_version"] == version() and ds.attrs["status"] == "completed"
        assert ds.attrs["created"] and ds.attrs["exported"]


def test_replicas_get_a_replica_dimension_and_csv_carries_units(tmp_path):
    runs = tmp_path / "runs"
    assert main(["train", *TINY, "--epochs", "2", "--replicas", "2", "--runs-dir", str(runs)]) == 0
    run = only_run(runs)
    assert main(["export", str(run)]) == 0
    with xr.open_dataset(run / f"{run.name}.nc") as ds:
        assert ds["test_acc"].dims == ("epoch", "replica") and ds["test_acc"].shape == (2, 2)
        assert ds["g_layer0"].sizes["replica"] == 2
    assert main(["export", str(run), "--format", "csv"]) == 0
    table = (run / f"{run.name}-epoch-replica.csv").read_text().splitlines()
    assert table[0].split(",")[:3] == ["epoch", "replica", "train_acc (1)"] and len(table) == 1 + 2 * 2
    attrs = json.loads((run / f"{run.name}-attrs.json").read_text())
    assert attrs["run_name"] == run.name


def test_a_characterization_exports_its_nodes_and_allan_deviation(tmp_path):
    runs = tmp_path / "runs"
    assert main(["characterize", "--hidden", "8", "--sigma", "1e-3", "--readings", "128", "--test-limit", "10",
                 "--runs-dir", str(runs)]) == 0
    run = only_run(runs)
    assert main(["export", str(run)]) == 0
    report = json.loads((run / "characterize.json").read_text())
    with xr.open_dataset(run / f"{run.name}.nc") as ds:
        assert ds["node"].values.tolist() == report["nodes"]
        np.testing.assert_allclose(ds["sigma_V"].values, report["estimate"]["sigma"])
        assert ds["sigma_V"].attrs["units"] == "V"
        np.testing.assert_allclose(ds["allan_deviation_V"].values, report["allan"]["adev_V"])
        readings = ds["readings_V"].values
        assert readings.shape == (128, len(report["nodes"])) and ds["readings_V"].attrs["units"] == "V"
        np.testing.assert_allclose(readings.std(axis=0, ddof=1), report["estimate"]["sigma"], rtol=1e-9)


def test_a_folder_that_is_no_run_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RUN_DIR" in err[0] and "not a run folder" in err[0], err
    assert main(["export", str(tmp_path / "missing")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RUN_DIR: no folder" in err[0], err
    assert list((tmp_path / "empty").iterdir()) == []  # nothing written
