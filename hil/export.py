"""`hil export`: a run folder as an xarray Dataset, written as netCDF (or CSV), for xarray and QCoDeS users.

What a folder holds becomes variables with units (`units` attribute, UDUNITS spelling: "1" for a fraction):

    metrics.jsonl      train_acc, test_acc, train_loss, test_loss, seconds, samples_per_s, bench accounting,
                       over `epoch` (and `replica` where the run trained several)
    checkpoint.pt      g_layer{k} (replica, layer{k}_input, layer{k}_output), S, the last snapshot
    characterize.json  per `node`: mean_V, sigma_V with its interval, lag1, n_eff; allan_deviation_V over
                       `averaged_readings`; readings.npy: readings_V (reading, node)
    trials.csv         a sweep's trials over `trial_row`, table.csv its points over `point`

Dataset attributes: the run's name, status and dates, the resolved config (YAML), the lab config where the run
was on a bench, the project version and the export date. The file is RUN_DIR/<name>.nc (h5netcdf, else netCDF4,
else scipy's netCDF3 writer), replaced atomically; `--format csv` writes RUN_DIR/<name>-<dims>.csv per group of
variables, with units in the column names, and <name>-attrs.json.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from hil import version
from hil.runview import conductances, read_csv, read_json, read_metrics, sweep_keys
from hil.store import StoreError, atomic_write_text

#: units of the metrics a run writes (hil/trainer.py EpochMetrics.row and the bench's accounting, hil/runner.py)
METRIC_UNITS = {
    "train_acc": ("1", "training accuracy of the free phase, during the epoch"),
    "test_acc": ("1", "test accuracy at the epoch's end"),
    "train_loss": ("V2", "mean squared-error loss per training sample, 0.5*sum (V_out - target)^2"),
    "test_loss": ("V2", "mean squared-error loss per test sample"),
    "seconds": ("s", "training time of the epoch"),
    "samples_per_s": ("s-1", "training samples per second"),
    "round_trips_per_training_sample": ("1", "VISA round trips per training sample, evaluation included"),
    "board_transactions_per_training_sample": ("1", "programming-board transactions per training sample"),
    "ms_per_training_sample": ("ms", "bench wall time per training sample, evaluation included"),
    "retries": ("1", "queries retried after a transient fault, run total"),
    "faults_logged": ("1", "faults in the command log, run total"),
    "pulses": ("1", "programming pulses, run total"),
    "stuck_devices": ("1", "devices that did not reach their target"),
    "programming_s_per_update": ("s", "time to program one update"),
}
#: units of sweep table columns (hil/sweep.py, hil/grid.py)
COLUMN_UNITS = {"sigma_V": "V", "sigma_eff_V": "V", "final_test_acc": "1", "mean_test_acc": "1", "std_test_acc": "1",
                "best_test_acc": "1", "mean_best5_test_acc": "1", "convergence_rate": "1"}
FORMATS = ("netcdf", "csv")


class ExportError(ValueError):
    """A folder that cannot be exported (not a run folder, nothing in it to export)."""


def run_dataset(path: Path) -> xr.Dataset:
    """Everything recorded in a run folder as one Dataset (see the module doc)."""
    path = Path(path)
    if not (path / "config.yaml").is_file():
        raise ExportError(f"RUN_DIR: {path} is not a run folder (no config.yaml)")
    parts = [_metrics(path), _snapshot(path), _characterization(path), _sweep(path)]
    ds = xr.merge([p for p in parts if p is not None], combine_attrs="drop_conflicts")
    if not ds.data_vars:
        raise ExportError(f"RUN_DIR: {path} holds nothing to export yet (no epoch, snapshot, report or sweep table)")
    status = read_json(path / "run.json") or {}
    ds.attrs.update({
        "title": f"crossbar-hil run {path.name}",
        "run_name": path.name,
        "status": str(status.get("status", "unknown")),
        "created": str(status.get("created", "")),
        "updated": str(status.get("updated", "")),
        "config_yaml": (path / "config.yaml").read_text(),
        "source": f"crossbar-hil {version()}",
        "crossbar_hil_version": version(),
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "Conventions": "CF-1.8",
    })
    lab = status.get("lab")
    if lab:
        ds.attrs["lab_path"] = str(lab)
        if Path(lab).is_file():
            ds.attrs["lab_yaml"] = Path(lab).read_text()
    return ds


def _metrics(path: Path) -> xr.Dataset | None:
    rows = read_metrics(path)
    if not rows:
        return None
    epochs = [int(r["epoch"]) for r in rows]
    data: dict[str, Any] = {}
    for key in dict.fromkeys(k for r in rows for k in r if k != "epoch"):
        values = [r.get(key) for r in rows]
        if all(isinstance(v, list) for v in values):  # one value per replica
            data[key] = (("epoch", "replica"), np.asarray(values, dtype=np.float64))
        elif all(isinstance(v, (int, float)) or v is None for v in values):
            data[key] = (("epoch",), np.asarray([np.nan if v is None else v for v in values], dtype=np.float64))
    ds = xr.Dataset(data, coords={"epoch": ("epoch", np.asarray(epochs), {"long_name": "epoch", "units": "1"})})
    for name, var in ds.data_vars.items():
        units, long_name = METRIC_UNITS.get(str(name), ("1", str(name)))
        var.attrs.update(units=units, long_name=long_name)
    return ds


def _snapshot(path: Path) -> xr.Dataset | None:
    try:
        snap = conductances(path)
    except StoreError:
        return None
    if snap is None:
        return None
    data = {}
    for k, g in enumerate(snap["weights"]):
        data[f"g_layer{k}"] = xr.Variable(("replica", f"layer{k}_input", f"layer{k}_output"), g, {
            "units": "S", "long_name": f"device conductances of layer {k} (input nodes doubled: +x and -x rows)",
            "snapshot_epoch": snap["epoch"], "snapshot_step": snap["step"]})
    return xr.Dataset(data)


def _characterization(path: Path) -> xr.Dataset | None:
    rep = read_json(path / "characterize.json")
    if not rep or "estimate" not in rep:
        return None
    est = rep["estimate"]
    node = ("node",)
    # a bench reads in normalized volts (UDUNITS takes a scaled unit, e.g. "0.005 V"); the simulator in volts
    volts = f"{rep['voltage_unit_V']:g} V" if rep.get("voltage_unit_V") else "V"
    level = float(est.get("level", 0.95))
    data: dict[str, Any] = {
        "mean_V": (node, est["mean"], {"units": volts, "long_name": "mean reading of the held state"}),
        "sigma_V": (node, est["sigma"], {"units": volts, "long_name": "standard deviation of one reading"}),
        "sigma_low_V": (node, est["sigma_low"], {"units": volts, "long_name": f"sigma, {level:.0%} interval low"}),
        "sigma_high_V": (node, est["sigma_high"], {"units": volts, "long_name": f"sigma, {level:.0%} interval high"}),
        "lag1": (node, est["lag1"], {"units": "1", "long_name": "lag-1 autocorrelation of the readings"}),
        "n_eff": (node, est["n_eff"], {"units": "1", "long_name": "effective number of independent readings"}),
    }
    coords: dict[str, Any] = {"node": ("node", list(rep["nodes"]))}
    allan = rep.get("allan")
    if allan:
        data["allan_deviation_V"] = (("averaged_readings",), allan["adev_V"],
                                     {"units": volts, "long_name": "Allan deviation"})
        coords["averaged_readings"] = ("averaged_readings", allan["lengths"], {"units": "1"})
    readings = path / "readings.npy"
    if readings.is_file():  # every reading, (readings, nodes); older characterizations kept only the statistics
        data["readings_V"] = (("reading", "node"), np.load(readings, allow_pickle=False),
                              {"units": volts, "long_name": "every reading of every node, in the order taken"})
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update({"readings_per_node": int(rep.get("readings", 0)), "pooled_sigma_V": float(est["pooled_sigma"]),
                     "backend": str(rep.get("backend"))})
    for key, value in (rep.get("timing") or {}).items():
        ds.attrs[f"timing_{key}"] = value
    return ds


def _sweep(path: Path) -> xr.Dataset | None:
    parts = []
    for name, dim in (("trials.csv", "trial_row"), ("table.csv", "point")):
        got = read_csv(path / name)
        if not got or not got[1]:
            continue
        header, rows = got
        columns = list(zip(*rows))
        data = {}
        for col, values in zip(header, columns):
            var = f"{name.split('.')[0]}_{col}"
            try:
                array: np.ndarray = np.asarray([float(v) if v != "" else np.nan for v in values])
            except ValueError:  # text: a per-epoch list, a hidden-layer list
                array = np.asarray(values, dtype=str)
            data[var] = ((dim,), array, {"units": COLUMN_UNITS.get(col, "1"), "long_name": f"{name}: {col}"})
        ds = xr.Dataset(data)
        ds.attrs[f"{dim}_keys"] = ",".join(sweep_keys(header))
        parts.append(ds)
    return xr.merge(parts) if parts else None


def netcdf_engine() -> str:
    """The netCDF writer here: h5netcdf (a wheel), netCDF4, or scipy's netCDF3 (always there, numbers only)."""
    for engine, module in (("h5netcdf", "h5netcdf"), ("netcdf4", "netCDF4")):
        if importlib.util.find_spec(module) is not None:
            return engine
    return "scipy"


def export_run(path: Path, fmt: str = "netcdf") -> list[Path]:
    """Write the run's Dataset into its folder; returns the files written."""
    if fmt not in FORMATS:
        raise ExportError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    path = Path(path)
    ds = run_dataset(path)
    if fmt == "netcdf":
        out = path / f"{path.name}.nc"
        engine = netcdf_engine()
        if engine == "scipy":  # netCDF3 has no strings longer than a char array: keep those as attributes only
            ds = ds.drop_vars([k for k, v in ds.data_vars.items() if v.dtype.kind in "US"])
        _write_netcdf(ds, out, engine)
        return [out]
    written = []
    groups: dict[tuple[str, ...], list[str]] = {}
    for key, var in ds.data_vars.items():
        groups.setdefault(tuple(str(d) for d in var.dims), []).append(str(key))
    for dims, keys in groups.items():
        frame = ds[keys].to_dataframe()
        frame.columns = [f"{k} ({ds[k].attrs.get('units', '1')})" for k in frame.columns]
        out = path / f"{path.name}-{'-'.join(dims)}.csv"
        atomic_write_text(out, frame.to_csv())
        written.append(out)
    out = path / f"{path.name}-attrs.json"
    atomic_write_text(out, json.dumps({k: _plain(v) for k, v in ds.attrs.items()}, indent=1) + "\n")
    return [*written, out]


def _write_netcdf(ds: xr.Dataset, out: Path, engine: str) -> None:
    """to_netcdf into a temporary name beside out, then replace it: a reader never sees half a file."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        ds.to_netcdf(tmp, engine=engine)  # type: ignore[call-overload]
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
