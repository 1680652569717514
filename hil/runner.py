"""Wires a RunConfig to data, a backend, the trainer and the run folder (what `hil train` does)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from drivers.crossbar import InstrumentCrossbar
from drivers.lab import load_lab
from hil.core.backend import BenchAccounting, CrossbarBackend, Programmable, StepJournaling, node_sizes
from hil.core.config import ConfigError, RunConfig, refuse_on_bench
from hil.data import Dataset, load_run_data
from hil.journal import StepJournal
from hil.snapshots import StepRecorder, bench_plan
from hil.store import RunStore, StoreError
from hil.sweep import check_replicas_fit
from hil.trainer import EpochMetrics, Trainer
from sim_backend.crossbar import SimCrossbar, resolve_device

TABLE_HEADER = f"{'epoch':>5}  {'train acc':>9}  {'test acc':>8}  {'train loss':>10}  {'test loss':>9}  {'time':>7}  {'samples/s':>9}"


def format_row(m: EpochMetrics) -> str:
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return (f"{m.epoch:>5}  {100 * mean(m.train_acc):>8.1f}%  {100 * mean(m.test_acc):>7.1f}%  "
            f"{mean(m.train_loss):>10.4f}  {mean(m.test_loss):>9.4f}  {m.seconds:>6.1f}s  {m.samples_per_s:>9.0f}")


def architecture(cfg: RunConfig, data: Dataset) -> str:
    return "-".join(str(s) for s in [data.n_inputs, *cfg.network.hidden, data.n_classes])


def describe_network(cfg: RunConfig, data: Dataset) -> str:
    """The data, the network and the EP setting in one line (what a run or a sweep trains)."""
    ep = cfg.ep
    return (f"{cfg.data.dataset} {architecture(cfg, data)} ({node_sizes([data.n_inputs])[0]} input nodes after doubling), "
            f"{len(data.x_train)} train / {len(data.x_test)} test samples; gamma={cfg.network.input_gain:g} V, "
            f"beta={ep.beta:g} S, eta={ep.eta:g}, T={cfg.relax.sweeps}, {'centered' if ep.centered else 'positive'} EP")


def describe(cfg: RunConfig, data: Dataset, backend_name: str) -> str:
    n = cfg.noise
    target = f" (target sigma/sqrt(N) {n.sigma_target:g} V)" if n.sigma_target is not None else ""
    return (f"{describe_network(cfg, data)}, "
            f"{'' if backend_name.startswith('lab') else f'sigma={n.sigma:g} V, '}N={n.samples}{target}, batch {cfg.train.batch_size}, "
            f"{backend_name}")


@dataclass
class Prepared:
    cfg: RunConfig
    data: Dataset
    backend: CrossbarBackend
    backend_name: str
    lab_path: Path | None = None
    store: RunStore | None = None  # a bench run's folder, made once the bench is connected (see prepare_bench)


def prepare(cfg: RunConfig, lab_path: Path | None = None, registry: Path | None = None, *,
            initialize: bool = True, create_store: Callable[..., RunStore] | None = None) -> Prepared:
    """Load the data and build the backend (simulated, or the bench of a lab config); raises before anything is written.

    initialize: program a bench to the seeded starting conductances (off when resuming: the checkpoint's come next).
    create_store: see prepare_bench.
    """
    if lab_path is not None:
        return prepare_bench(cfg, lab_path, registry, initialize=initialize, create_store=create_store)
    device = resolve_device(cfg.device)
    data = load_run_data(cfg.data, device, cfg.torch_dtype)
    check_replicas_fit(cfg, data.n_inputs, data.n_classes, device)
    backend = SimCrossbar.from_config(cfg, data.n_inputs, data.n_classes)
    return Prepared(cfg, data, backend, f"simulated crossbar on {device.type} ({cfg.dtype}, R={cfg.train.replicas})")


def prepare_bench(cfg: RunConfig, lab_path: Path, registry: Path | None = None, *, initialize: bool = True,
                  create_store: Callable[..., RunStore] | None = None) -> Prepared:
    """Connect to the bench and program it to the same seeded starting conductances the simulator would use.

    create_store(lab=...): makes the run folder once every instrument answered, before the devices are read and
    programmed to the starting conductances (the longest phase of a start on a real bench, with outputs on): a
    run killed there is listed as crashed, with what to do, and a fault there is recorded in its run.json. Bad
    input, and an instrument that does not answer, still write nothing.
    """
    if cfg.device != "cpu" or cfg.train.replicas != 1:
        raise ConfigError("--lab: a bench runs one network on the CPU (device cpu, replicas 1)")
    refuse_on_bench(cfg)  # the simulator-only fields are marked in hil.core.config
    if cfg.noise.sigma_target is not None and not cfg.noise.adaptive:
        raise ConfigError("noise.sigma_target: on a bench the target chooses N; add --samples auto (only the "
                          "simulator adds noise up to a target)")
    lab = load_lab(lab_path)
    data = load_run_data(cfg.data, "cpu", cfg.torch_dtype)
    sizes = [data.n_inputs, *cfg.network.hidden, data.n_classes]
    # The constructor refuses a run the bench cannot carry out safely before it connects to anything.
    made: list[RunStore] = []

    def connected() -> None:
        if create_store is not None and initialize:  # status `running` with the lab from its first run.json on
            made.append(create_store(lab=str(Path(lab_path).resolve())))

    backend = None
    try:
        backend = InstrumentCrossbar(lab, cfg.network, cfg.ep, layer_sizes=sizes, dtype=cfg.torch_dtype,
                                     registry=registry, read_all=initialize,  # a resume reads back as it reconciles
                                     on_connected=connected)
        if initialize:
            start = SimCrossbar.from_config(cfg, data.n_inputs, data.n_classes, replicas=1)
            backend.load_conductances(start.weights)
    except BaseException as err:
        if backend is not None:
            backend.close()  # outputs ramped to 0 V and off (the constructor does so for its own errors)
        if made:
            made[0].record_stop(err)
        raise
    return Prepared(cfg, data, backend, f"lab bench {lab.name} ({Path(lab_path).name})", Path(lab_path).resolve(),
                    made[0] if made else None)


def train_run(
    prep: Prepared,
    store: RunStore,
    *,
    resume: bool = False,
    trust_journal: bool = False,
    progress: bool = False,
    out: TextIO | None = None,
) -> list[EpochMetrics]:
    """Train, recording each step in the journal, a snapshot every K steps / S seconds and each epoch (metrics
    line, checkpoint, plot) as soon as it ends. A bench resume first reconciles the chip with the journal
    (every device read back, or with trust_journal only those the unfinished step touched)."""
    out = out or sys.stdout
    timing = prep.backend.timing if isinstance(prep.backend, InstrumentCrossbar) else None
    trainer = Trainer(prep.cfg, prep.backend, prep.data, progress=progress,
                      seconds_per_reading=None if timing is None else
                      timing.nplc / timing.line_frequency_hz + timing.overhead_s)
    backend = prep.backend
    # A bench: its instrument traffic is counted per epoch and every command logged in the run folder.
    bench = backend if isinstance(backend, BenchAccounting) else None
    counted = {"trips": 0, "board": 0}
    if bench is not None:
        bench.log.attach(store.path / "commands.jsonl")
        counted = {"trips": bench.round_trips, "board": bench.board_transactions}
    journaled = backend if isinstance(backend, StepJournaling) else None
    start, in_epoch = 1, None
    journal = StepJournal(store.path / "journal.sqlite", durable=bench is not None)
    if resume:
        state = store.load_checkpoint()
        try:
            start = trainer.load_state(state, conductances=journaled is None) + 1
            in_epoch = state.get("in_epoch")  # a mid-epoch snapshot: continue that epoch where it stood
            if journaled is not None:  # the journal carries the run past the snapshot, and the chip is checked
                plan = bench_plan(state, journal, trainer)
                in_epoch, trainer.step_count = plan["in_epoch"], plan["step_count"]
                found = journaled.reconcile(plan["weights"], plan["pending"],
                                               devices=plan["touched"] if trust_journal else None)
                print(f"reconciled the chip with the journal (step {plan['step_count']}): {found['checked']} devices "
                      f"read back{' (those the unfinished step touched)' if trust_journal else ''}, {found['off']} off by "
                      f"more than the tolerance and reprogrammed, worst {found['max_off_S']:.3g} S", file=out)
                store.set_status(store.status().get("status", "running"), reconciled=found)
            if in_epoch is not None:
                start = int(in_epoch["epoch"])
        except (KeyError, TypeError, ValueError) as err:
            journal.close()
            prep.backend.close()
            raise StoreError(f"resume: {store.checkpoint_path} does not fit this run ({err.__class__.__name__}: "
                             f"{err}); was it copied from another run?") from None
    print(describe(prep.cfg, prep.data, prep.backend_name), file=out)
    print(f"run folder: {store.path}", file=out)
    if start > prep.cfg.train.epochs:
        journal.close()
        prep.backend.close()
        print(f"nothing to do: epoch {start - 1} of {prep.cfg.train.epochs} already done (raise --epochs)", file=out)
        return []
    print(TABLE_HEADER, file=out, flush=True)

    def record(m: EpochMetrics) -> None:
        if bench is not None:  # VISA round trips and wall time per training sample, this epoch (evaluation included)
            n = len(prep.data.x_train)
            trips, counted["trips"] = bench.round_trips - counted["trips"], bench.round_trips
            board, counted["board"] = bench.board_transactions - counted["board"], bench.board_transactions
            m.extra.update(round_trips_per_training_sample=round(trips / n, 2),
                           board_transactions_per_training_sample=round(board / n, 2),
                           ms_per_training_sample=round(1e3 * m.seconds / n, 2),
                           retries=bench.retries, faults_logged=len(bench.log.faults))
        if isinstance(backend, Programmable):  # pulsed devices, a bench: pulses and programming time
            m.extra.update(backend.programming_stats())
        store.append_metrics(m.row())
        store.save_checkpoint(trainer.state(m.epoch))
        recorder.epoch_checkpoint(m.epoch)
        store.plot_accuracy()
        print(format_row(m), file=out, flush=True)
        for line in trainer.tracker.notices:  # a cap reached, a noisy node named
            print(f"  {line}", file=out, flush=True)
        trainer.tracker.notices.clear()

    store.mark_running(**({"lab": str(prep.lab_path)} if prep.lab_path else {}))
    if not resume:  # the starting state: a run stopped in its first epoch resumes from it
        store.save_checkpoint(trainer.state(0))
    t = prep.cfg.train
    recorder = StepRecorder(trainer, store.save_checkpoint, journal, every_steps=t.checkpoint_every_steps, every_s=t.checkpoint_every_s)
    try:
        with store.recording():
            history = trainer.fit(start, on_epoch=record, hooks=recorder, resume=in_epoch)
    finally:
        journal.close()
        prep.backend.close()
    # A bench's fault totals at the very end: the shutdown after the last epoch's metrics line may retry too.
    totals = {"retries": bench.retries, "faults_logged": len(bench.log.faults)} if bench is not None else {}
    reading = trainer.tracker.summary()
    store.set_status("completed", epochs=prep.cfg.train.epochs, **totals, reading=reading)
    last = history[-1] if history else None
    if last and bench is not None:
        e = last.extra
        pulses = (f"; {e['pulses']} programming pulses in all, {e['stuck_devices']} stuck"
                  if "pulses" in e and "stuck_devices" in e else "")
        print(f"bench: {e['round_trips_per_training_sample']:.1f} VISA round trips, "
              f"{e['board_transactions_per_training_sample']:.1f} programming-board transactions and "
              f"{e['ms_per_training_sample']:.0f} ms per training sample (last epoch, evaluation included)"
              f"{pulses}", file=out)
    if last and prep.cfg.noise.adaptive and isinstance(reading["readings"], int):
        print(f"readings: {reading['readings']:,} ({reading['reading_time_s'] / 3600:.3g} h of bench time); a fixed "
              f"N = {reading['worst_case_samples']} for the worst sigma seen ({reading['worst_sigma_V']:.3g} V) would "
              f"have taken {reading['worst_case_readings']:,} ({reading['worst_case_reading_time_s'] / 3600:.3g} h)",
              file=out)
    if last:
        print(f"final test accuracy {100 * sum(last.test_acc) / len(last.test_acc):.1f}%; "
              f"metrics, checkpoint and accuracy.png in {Path(store.path)}", file=out)
    return history

