"""Load test: the emulated bench trains through more than 10,000 VISA round trips while about 1% of the replies
come back past the timeout and 0.1% of them find the connection dropped. The run completes, and every
injected fault is in commands.jsonl and counted in the metrics.

The fault positions are drawn per instrument from a printed seed (HIL_TEST_SEED replays or varies them), at
least 30 commands apart: a retry or a read-back meeting a second fault would stop the run by design
(tests/test_faults.py), which is not what this test is for.
"""

import json

from conftest import emulated, example_tree

from hil.core.config import load_config, merge_trees
from hil.runner import prepare, train_run
from hil.store import RunStore

TIMEOUT_MS = 200
DELAY_S = 0.3
QUERY = r"\?|print"
VISA = ("dac_plus", "dac_minus", "smu_hidden", "smu_out", "smu_b", "switch")


def positions(draw, rate, horizon, gap):
    """Command counts (from injection) at which a fault fires: about `rate` of them, at least `gap` apart."""
    out, at = [], 0
    while True:
        at += gap + int(draw.expovariate(rate / (1 - rate * gap)))
        if at >= horizon:
            return out
        out.append(at)


def test_ten_thousand_round_trips_with_delays_and_drops(tmp_path, monkeypatch, seeded_draw):
    tree = example_tree(time_scale=0.0)
    for inst in tree["instruments"].values():
        inst["timeout_ms"] = TIMEOUT_MS
    # Each delayed reply costs the 200 ms timeout: 100 training samples over 2 epochs keep about 110 of them
    # (and a dozen drops) in about half the time of 200 samples, at the same rates.
    cfg = load_config(None, {"data.train_limit": 100, "data.test_limit": 20, "train.epochs": 2,
                             "runs_dir": str(tmp_path / "runs")}, base=merge_trees({"name": "load"}, tree["run"]))
    draw = seeded_draw  # the fault positions: the same on every run unless HIL_TEST_SEED says otherwise
    with emulated(tree, tmp_path, monkeypatch) as bench:
        emu = bench.emu
        prep = prepare(cfg, bench.path)
        store = RunStore.create(cfg.runs_dir, cfg.name, cfg)
        injected = 0
        for name in VISA:
            # Both kinds fire on queries (`after` counts the queries from now on), spaced over their union.
            at = positions(draw, 0.011, 20_000, 30)
            for k in at:
                kind = "drop" if draw.random() < 0.1 else "delay"  # 0.1% of the queries dropped, 1% delayed
                emu.inject(name, kind, after=k, delay_s=DELAY_S, match=QUERY)
                injected += 1
        history = train_run(prep, store)
        assert emu.outputs() == {}
        fired = {name: list(emu.instruments[name].faults.fired) for name in VISA}
    assert len(history) == 2 and json.loads((store.path / "run.json").read_text())["status"] == "completed"
    log = [json.loads(x) for x in (store.path / "commands.jsonl").read_text().splitlines()]
    trips = sum(1 for r in log if r["reply"] is not None and r["instrument"] in VISA and "fault" not in r)
    assert trips >= 10_000, trips
    n_fired = sum(len(f) for f in fired.values())
    delays = sum(k == "delay" for f in fired.values() for k, _ in f)
    drops = n_fired - delays
    assert delays >= 0.005 * trips and drops >= 0.0003 * trips, (delays, drops, trips)  # the rates really were applied
    logged = [r for r in log if r.get("fault") in ("no reply before the timeout", "connection dropped")]
    for name, f in fired.items():  # every fault that fired is a line of the log, for its instrument
        assert sum(r["instrument"] == name for r in logged) >= len(f), name
    row = json.loads((store.path / "metrics.jsonl").read_text().splitlines()[-1])
    total = json.loads((store.path / "run.json").read_text())  # the totals after the shutdown, which may retry too
    assert total["faults_logged"] >= n_fired and total["retries"] >= n_fired, (total, n_fired)
    assert row["retries"] <= total["retries"] and row["faults_logged"] <= total["faults_logged"]
    print(f"{trips} VISA round trips, {delays} replies delayed past the timeout, {drops} connections dropped, "
          f"{row['retries']} retries; {injected} faults placed")
