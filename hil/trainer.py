"""The backend-abstract Equilibrium Propagation trainer.

One training step, the same on a simulator and on a bench:

    clamp(x) -> free phase: relax, measure N -> nudge(+beta): relax, measure N
    [centered: nudge(-beta): relax, measure N] -> EP update -> program

Predictions (training and test accuracy) come from the free-phase readings of
the output nodes averaged over the N samples, through the same relax and
measure path the bench uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from hil import threads
from hil.adaptive import NoiseTracker
from hil.core.backend import CrossbarBackend, HasPendingChanges, NamedNodes, NodeStats, Resumable, input_voltages
from hil.core.config import RunConfig
from hil.core.ep import ep_update, reading_weights
from hil.core.seeds import seed_stream
from hil.data import Dataset


class NonFiniteUpdateError(RuntimeError):
    """An EP update held NaN or Inf; it and every later update of that replica were not programmed."""


@dataclass
class EpochMetrics:
    epoch: int
    train_acc: list[float]
    train_loss: list[float]
    test_acc: list[float]
    test_loss: list[float]
    seconds: float
    samples_per_s: float
    extra: dict = field(default_factory=dict)

    def row(self) -> dict:
        """JSON row: scalars for one replica, lists (one value per replica) for several."""
        one = len(self.train_acc) == 1
        pick = (lambda v: v[0]) if one else (lambda v: v)  # noqa: E731
        return {
            "epoch": self.epoch,
            "train_acc": pick(self.train_acc),
            "test_acc": pick(self.test_acc),
            "train_loss": pick(self.train_loss),
            "test_loss": pick(self.test_loss),
            "seconds": round(self.seconds, 3),
            "samples_per_s": round(self.samples_per_s, 1),
            **self.extra,
        }


class Trainer:
    """Trains any `CrossbarBackend` with EP.

    samples: N per replica (an int, or one per replica for sweeps); default: the config's (its start with
        samples auto, after which `tracker` chooses it).
    seconds_per_reading: time one reading takes, for the accounting (default: the config's NPLC and overhead).
    check_every: steps between host checks of the non-finite flag (1 on CPU: every step).
    halt_on_nonfinite: raise NonFiniteUpdateError when a replica's update is NaN/Inf; when False
        (sweeps) that replica just stops learning and `halted` marks it.
    """

    def __init__(
        self,
        cfg: RunConfig,
        backend: CrossbarBackend,
        data: Dataset,
        *,
        samples: int | Sequence[int] | None = None,
        progress: bool = False,
        check_every: int | None = None,
        halt_on_nonfinite: bool = True,
        seconds_per_reading: float | None = None,
    ):
        self.cfg = cfg
        self.backend = backend
        self.data = data
        self.R = backend.replicas
        self.device = data.x_train.device
        self.dtype = cfg.torch_dtype
        self.n_out = backend.layer_sizes[-1]
        self.measured_sizes = list(backend.layer_sizes[1:])
        initial = samples if samples is not None else cfg.noise.initial_samples
        per_replica = [initial] * self.R if isinstance(initial, int) else list(initial)
        n = cfg.noise
        steps = cfg.train.epochs * -(-len(data.x_train) // cfg.train.batch_size)
        #: the online sigma estimate, adaptive N, noise schedules and reading accounting (hil/adaptive.py)
        self.tracker = NoiseTracker(
            n, backend, per_replica, steps,
            seconds_per_reading if seconds_per_reading is not None else n.nplc / n.line_frequency_hz + n.overhead_s,
            backend.node_names() if isinstance(backend, NamedNodes) else None, device=self.device)
        self.w = reading_weights(self.tracker.samples, self.R, self.device, self.dtype)
        self.progress = progress
        self.check_every = check_every or (1 if self.device.type == "cpu" else 50)
        self.halt_on_nonfinite = halt_on_nonfinite
        self.with_bias = bool(cfg.network.bias)
        self._alive = torch.ones(self.R, dtype=torch.bool, device=self.device)
        self._eye = torch.eye(self.n_out, dtype=self.dtype, device=self.device)  # targets are its rows
        self.step_count = 0
        self.in_epoch: dict | None = None  # where the epoch in training stands (see `snapshot`)
        self._first_bad = torch.full((self.R,), -1, dtype=torch.long, device=self.device)

    # ---- one EP step ---------------------------------------------------------
    def _phase(self, targets, beta) -> list[NodeStats]:
        self.backend.nudge(targets, beta)
        self.backend.relax()
        stats = self.backend.measure_stats(self.w)
        self.tracker.observe(stats)
        if targets is None:  # the free state: at N = 1 a subset of nodes is read once more to estimate sigma
            self.tracker.extra_reading(stats, self.step_count)
        return stats.split(self.measured_sizes)

    @property
    def samples(self) -> list[int]:
        """The N in force, per replica."""
        return self.tracker.samples

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One EP update on a batch; returns per replica (correct count, summed loss) of the free phase."""
        ep = self.cfg.ep
        t = self._eye[y]
        self.tracker.before_step(self.step_count)
        self.backend.clamp(x)
        free = self._phase(None, 0.0)
        pred = free[-1].mean  # each replica's mean over its N readings of the outputs
        plus = self._phase(t, ep.beta)
        if ep.centered:
            minus = self._phase(t, -ep.beta)
            update = ep_update(input_voltages(x, self.backend.input_gain), minus, plus, ep.beta, ep.eta,
                               centered=True, biases=self.with_bias, layer_ratio=ep.eta_layer_ratio)
        else:
            update = ep_update(input_voltages(x, self.backend.input_gain), free, plus, ep.beta, ep.eta,
                               biases=self.with_bias, layer_ratio=ep.eta_layer_ratio)
        # Never program a NaN/Inf: a bad replica's update is zeroed, the replica halted, the run stopped at the next check.
        ok = update.finite() & self._alive
        self._first_bad.masked_fill_(ok ^ self._alive, self.step_count)  # replicas failing now (ok implies alive)
        self._alive &= ok
        self.backend.program(update.masked(ok))
        self.backend.nudge(None)
        self.step_count += 1
        if self.tracker.after_step(self.step_count):
            self.w = reading_weights(self.tracker.samples, self.R, self.device, self.dtype)
        if self.step_count % self.check_every == 0:
            self.check_finite()
        correct = (pred.argmax(-1) == y).sum(-1)
        loss = 0.5 * ((pred - t) ** 2).sum((-1, -2))
        return correct, loss

    @property
    def halted(self) -> torch.Tensor:
        """(R,) bool: replicas stopped by a non-finite update (their conductances stay as they were)."""
        return ~self._alive

    def check_finite(self) -> None:
        halted = self.halted
        if self.halt_on_nonfinite and bool(halted.any()):
            bad = torch.nonzero(halted).flatten().tolist()
            steps = self._first_bad[halted].tolist()
            raise NonFiniteUpdateError(
                f"non-finite conductance update (NaN or Inf) in replica(s) {bad} at step(s) {steps}: "
                "that update and every later one of the replica were not programmed. Lower eta, "
                "raise g_min above 0 (a node with no conductance floats), check the input gain, or, for "
                "centered EP, lower beta below the conductance at every output node."
            )

    # ---- evaluation ----------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch: int | None = None) -> tuple[list[float], list[float]]:
        """Accuracy and mean loss per replica, through relax and measure (free phase)."""
        batch = batch or self.cfg.train.eval_batch_size
        correct = torch.zeros(self.R, device=self.device, dtype=torch.int64)  # counted exactly: 700 of 1,000 is 70%
        loss = torch.zeros(self.R, device=self.device, dtype=self.dtype)
        for i in range(0, len(x), batch):
            xb, yb = x[i:i + batch], y[i:i + batch]
            self.backend.clamp(xb)
            self.backend.nudge(None)
            self.backend.relax()
            stats = self.backend.measure_stats(self.w)
            self.tracker.count_only(stats)
            out = stats.mean[..., -self.n_out:]
            correct += (out.argmax(-1) == yb).sum(-1)
            loss += 0.5 * ((out - self._eye[yb]) ** 2).sum((-1, -2))
        n = max(len(x), 1)
        # float64, so an accuracy at a threshold (0.7 = 700/1000) is not 0.69999999 in float32 and below it
        return (correct.double() / n).tolist(), (loss / n).tolist()

    # ---- epochs --------------------------------------------------------------
    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The epoch's sample order, on the CPU: it depends on (seed, epoch) only, so a resumed run sees the same
        batches, and the journal records batch indices without reading anything back from the device."""
        g = torch.Generator().manual_seed(seed_stream(self.cfg.train.seed, "epoch_order", epoch))
        return torch.randperm(len(self.data.x_train), generator=g)

    @torch.no_grad()
    def train_epoch(self, epoch: int, hooks=None, resume: dict | None = None) -> tuple[list[float], list[float], float]:
        """One pass over the shuffled training set; returns accuracy, loss per replica and training seconds.

        hooks: `begin(epoch, pos, batch_cpu)` before and `end(epoch, pos, correct, loss)` after each step (the
            runner journals and snapshots there). resume: an `in_epoch` record of a mid-epoch snapshot.
        """
        d = self.data
        n = len(d.x_train)
        bs = self.cfg.train.batch_size
        order_cpu = self.epoch_order(epoch)
        order = order_cpu.to(self.device)
        correct = torch.zeros(self.R, dtype=torch.long, device=self.device)
        loss = torch.zeros(self.R, dtype=self.dtype, device=self.device)
        start, elapsed = 0, 0.0
        if resume is not None:
            if not torch.equal(resume["order"], order_cpu):
                raise ValueError("the snapshot's data order differs from this run's (another seed or data set)")
            start, elapsed = int(resume["pos"]), float(resume["seconds"])
            correct.copy_(resume["correct"])
            loss.copy_(resume["loss"])
        self.in_epoch = {"epoch": epoch, "pos": start, "order": order_cpu, "correct": correct, "loss": loss}
        t0 = time.perf_counter() - elapsed
        self.in_epoch["t0"] = t0
        steps = range(start, -(-n // bs))
        bar = tqdm(steps, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not self.progress,
                   initial=start, total=-(-n // bs))
        for pos in bar:
            threads.rebalance()  # this process's share of the cores, as other hil processes start and stop
            idx = order[pos * bs:(pos + 1) * bs]
            if hooks is not None:
                hooks.begin(epoch, pos, order_cpu[pos * bs:(pos + 1) * bs])
            c, l = self.step(d.x_train[idx], d.y_train[idx])
            correct += c
            loss += l
            self.in_epoch["pos"] = pos + 1
            if hooks is not None:
                hooks.end(epoch, pos, c, l)
        self.check_finite()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        self.in_epoch = None
        return (correct.double() / n).tolist(), (loss / n).tolist(), seconds

    def fit(self, start_epoch: int = 1, on_epoch: Callable[[EpochMetrics], None] | None = None, hooks=None,
            resume: dict | None = None) -> list[EpochMetrics]:
        """Train from start_epoch; resume: the `in_epoch` record of a mid-epoch snapshot of start_epoch."""
        history = []
        for epoch in range(start_epoch, self.cfg.train.epochs + 1):
            t0 = time.perf_counter() - (float(resume["seconds"]) if resume else 0.0)
            tr_acc, tr_loss, train_s = self.train_epoch(epoch, hooks, resume)
            resume = None
            te_acc, te_loss = self.evaluate(self.data.x_test, self.data.y_test)
            m = EpochMetrics(epoch, tr_acc, tr_loss, te_acc, te_loss, time.perf_counter() - t0,
                             len(self.data.x_train) * self.R / max(train_s, 1e-9),
                             self.tracker.epoch_row(self.step_count))
            history.append(m)
            if on_epoch:
                on_epoch(m)
        return history

    # ---- checkpoint state ----------------------------------------------------
    def state(self, epoch: int) -> dict:
        weights, biases = self.backend.conductances()
        state = {
            "epoch": epoch,
            "step": self.step_count,
            "weights": [w.detach().cpu().clone() for w in weights],
            "biases": None if biases is None else [b.detach().cpu().clone() for b in biases],
            "alive": self._alive.cpu().clone(),
            "first_bad": self._first_bad.cpu().clone(),
            "noise_tracker": self.tracker.state(),
        }
        if isinstance(self.backend, Resumable):
            state["random"] = self.backend.random_state()
        state["torch_rng"] = torch.get_rng_state()
        if isinstance(self.backend, HasPendingChanges):  # a bench's sub-tolerance changes not yet programmed
            state["pending"] = [p.detach().cpu().clone() for p in self.backend.pending]
        return state

    def snapshot(self) -> dict:
        """A checkpoint in the middle of an epoch: `state` of the last finished epoch plus where this one stands
        (position, data order, free-phase correct counts and losses so far, seconds so far)."""
        e = self.in_epoch
        if e is None:
            raise RuntimeError("snapshot: no epoch is in training (call it from a step hook)")
        state = self.state(e["epoch"] - 1)
        state["in_epoch"] = {"epoch": e["epoch"], "pos": e["pos"], "order": e["order"].clone(),
                             "correct": e["correct"].cpu().clone(), "loss": e["loss"].cpu().clone(),
                             "seconds": time.perf_counter() - e["t0"]}
        return state

    def load_state(self, state: dict, conductances: bool = True) -> int:
        """Restore conductances and RNG from a checkpoint; returns the epoch it finished.

        conductances=False: leave them to the caller (a bench resume reconciles the chip with the journal)."""
        if not isinstance(self.backend, Resumable):
            raise RuntimeError("this backend cannot load conductances from a checkpoint")
        if conductances:
            self.backend.load_conductances(state["weights"], state["biases"])
        if "random" in state:
            self.backend.load_random_state(state["random"])
        self.step_count = int(state.get("step", 0))
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        if "noise_tracker" in state:  # the sigma estimate, the N in force and the reading counts go on
            self.tracker.load_state(state["noise_tracker"])
            self.w = reading_weights(self.tracker.samples, self.R, self.device, self.dtype)
        if "alive" in state:  # replicas halted by a non-finite update stay halted
            self._alive.copy_(state["alive"])
            self._first_bad.copy_(state["first_bad"])
        return int(state["epoch"])

