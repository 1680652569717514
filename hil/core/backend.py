"""The steps a trainer may ask of any crossbar, simulated or on a bench.

Shapes: R replicas (independent networks; 1 on a bench), B samples in the
batch, and "nodes" = every hidden and output node, layer after layer.
Voltages are in volts, conductances in siemens of the normalized network.

A bench backend works one sample at a time internally (it loops over B);
the trainer does not need to know.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass
class LowRankDelta:
    """A conductance change dG = scale * left^T @ right, per replica.

    left: (R, K, m) over the lower layer's nodes, right: (R, K, n) over the
    upper layer's. The EP update of a batch is exactly of this form
    (K ~ 2 * samples * batch), so a simulator applies it with one GEMM in
    place and never builds a weight-sized temporary.
    """

    left: torch.Tensor
    right: torch.Tensor
    scale: float

    def dense(self) -> torch.Tensor:
        return self.scale * (self.left.transpose(1, 2) @ self.right)

    def checksum(self) -> torch.Tensor:
        """(R,) sum of every factor entry: not finite exactly when some entry is NaN or Inf (see `finite`)."""
        return self.left.sum((1, 2)) + self.right.sum((1, 2))

    def finite(self) -> torch.Tensor:
        """(R,) bool: this replica's change is finite everywhere."""
        return torch.isfinite(self.checksum())

    def masked(self, keep: torch.Tensor) -> LowRankDelta:
        """Zero the replicas where keep (R,) is False (their change becomes exactly 0)."""
        k = keep.view(-1, 1, 1)
        return LowRankDelta(torch.where(k, self.left, 0.0), torch.where(k, self.right, 0.0), self.scale)


@dataclass
class ConductanceUpdate:
    """Changes to every layer's conductances (S) and, if present, bias currents (A)."""

    weights: list[LowRankDelta | torch.Tensor]
    biases: list[torch.Tensor] | None = None

    def dense_weights(self) -> list[torch.Tensor]:
        return [w.dense() if isinstance(w, LowRankDelta) else w for w in self.weights]

    def finite(self) -> torch.Tensor:
        """(R,) bool: every change of this replica is finite.

        One sum per replica instead of an elementwise test (a few kernels per step, not dozens):
        a NaN or Inf anywhere makes the sum non-finite, since Inf - Inf is NaN. Only entries
        summing past ~3e38 (float32) would be flagged wrongly; voltages that large mean the
        network has diverged anyway.
        """
        sums = [w.checksum() if isinstance(w, LowRankDelta) else w.flatten(1).sum(1) for w in self.weights]
        sums += [b.flatten(1).sum(1) for b in self.biases or []]
        total = sums[0]
        for c in sums[1:]:
            total = total + c
        return torch.isfinite(total)

    def masked(self, keep: torch.Tensor) -> ConductanceUpdate:
        weights = [
            w.masked(keep) if isinstance(w, LowRankDelta) else torch.where(keep.view(-1, 1, 1), w, 0.0)
            for w in self.weights
        ]
        biases = None if self.biases is None else [torch.where(keep.view(-1, 1), b, 0.0) for b in self.biases]
        return ConductanceUpdate(weights, biases)


@dataclass
class NodeStats:
    """N readings of every node reduced to what EP needs, so memory does not grow with N.

    mean: (R, B, nodes) E[V] over each replica's readings, V.
    var: (R, B, nodes) E[V^2] - E[V]^2 over the same readings (divided by N, not N - 1: EP's E[V^2] is
        mean^2 + var), V^2; None when it is exactly 0 (one reading, or readings without noise).
    Readings of different nodes are independent, so E[(V_i - V_j)^2] = E[V_i^2] - 2 E[V_i] E[V_j] + E[V_j^2].
    """

    mean: torch.Tensor
    var: torch.Tensor | None = None

    @classmethod
    def from_readings(cls, readings: torch.Tensor, weights: torch.Tensor | None = None) -> NodeStats:
        """readings (n, R, B, nodes); weights (n, R), 1/N_r on replica r's first N_r readings (default: 1/n)."""
        n, r = readings.shape[:2]
        if weights is None:
            weights = torch.full((n, r), 1.0 / n, dtype=readings.dtype, device=readings.device)
        w = weights.to(readings.dtype).view(n, r, 1, 1)
        mean = (w * readings).sum(0)
        if n == 1:
            return cls(mean)
        return cls(mean, (w * (readings - mean) ** 2).sum(0))

    def split(self, sizes: Sequence[int]) -> list[NodeStats]:
        """One NodeStats per hidden/output layer."""
        means = torch.split(self.mean, list(sizes), dim=-1)
        varis = torch.split(self.var, list(sizes), dim=-1) if self.var is not None else [None] * len(means)
        return [NodeStats(m, v) for m, v in zip(means, varis)]


@runtime_checkable
class CrossbarBackend(Protocol):
    """What the EP trainer drives. Implemented by `sim_backend.SimCrossbar` and `drivers.InstrumentCrossbar`.

    What a caller reads is a read-only property here; what only some backends have is one of the small
    capability protocols below (`Resumable`, `Programmable`, `HasPendingChanges`, `BenchAccounting`,
    `StepJournaling`), checked with isinstance, never with hasattr or a private field.
    """

    @property
    def layer_sizes(self) -> Sequence[int]:
        """Logical layer sizes [inputs, hidden..., outputs]; the crossbar has 2*inputs input nodes."""

    @property
    def measured_sizes(self) -> Sequence[int]:
        """Nodes per measured layer (hidden..., outputs): the last axis of `measure` split layer by layer."""

    @property
    def replicas(self) -> int:
        """Number of independent networks (1 on a bench)."""

    @property
    def input_gain(self) -> float:
        """Input gain gamma, V per unit input."""

    @property
    def dtype(self) -> torch.dtype:
        """Floating point type of the readings and conductances it returns."""

    def clamp(self, x: torch.Tensor) -> None:
        """Apply input voltages gamma*[x, -x]; x is (B, inputs) or (R, B, inputs), unitless in [0, 1]."""

    def nudge(self, targets: torch.Tensor | None, beta: float = 0.0) -> None:
        """Tie each output through conductance beta (S) to its target voltage (B, outputs); None: free phase."""

    def relax(self) -> None:
        """Let the network settle to equilibrium under the present clamp and nudge."""

    def measure(self, n: int) -> torch.Tensor:
        """n independent readings of every hidden and output node: (n, R, B, nodes), V."""

    def measure_stats(self, weights: torch.Tensor) -> NodeStats:
        """Readings of every hidden and output node reduced to mean and variance as they are taken.

        weights: (n, R), 1/N_r on replica r's first N_r readings (`hil.core.ep.reading_weights`); memory does
        not grow with n.
        """

    def program(self, update: ConductanceUpdate) -> None:
        """Apply conductance (and bias) changes, kept inside the device range."""

    def conductances(self) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Present conductances per layer (R, lower nodes, upper nodes), S, and biases (R, nodes), A."""

    def close(self) -> None:
        """Leave the hardware safe: outputs ramped to 0 V and off."""


@runtime_checkable
class Resumable(Protocol):
    """A backend whose state a checkpoint can restore: conductances, and the randomness of its next readings."""

    def load_conductances(self, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor] | None = None) -> None:
        """Set every conductance (S) and bias (A), e.g. from a checkpoint."""

    def random_state(self) -> dict:
        """Everything the next readings' noise depends on (generator, clock), as tensors and plain values."""

    def load_random_state(self, state: dict) -> None:
        """Restore what `random_state` returned."""


@runtime_checkable
class Programmable(Protocol):
    """A backend whose programming has costs worth reporting (pulsed devices, a bench's write-verify)."""

    def programming_stats(self) -> dict:
        """Programming counts and times for the epoch's metrics row (a flat dict of JSON numbers, e.g. pulses
        per update, programming seconds per update); empty when there is nothing to report."""


@runtime_checkable
class HasPendingChanges(Protocol):
    """A backend holding changes too small to program yet (a bench's sub-tolerance remainders), which a
    checkpoint must keep so that a resumed run programs them as the uninterrupted one would."""

    @property
    def pending(self) -> Sequence[torch.Tensor]:
        """Per layer, the change not yet programmed, normalized S, shaped like the conductances."""


class CommandLog(Protocol):
    """The part of a bench's command log the application uses."""

    #: failed exchanges (timeouts, garbage, dropped connections) so far, one record each
    faults: list

    def attach(self, path: Path) -> None:
        """Append every exchange from now on to this JSON-lines file."""


@runtime_checkable
class BenchAccounting(Protocol):
    """A bench: it counts its instrument traffic and keeps a log of every command."""

    @property
    def round_trips(self) -> int:
        """VISA queries so far (DACs, SMUs, switches)."""

    @property
    def board_transactions(self) -> int:
        """Command/reply pairs with the programming boards so far."""

    @property
    def retries(self) -> int:
        """Queries retried after a transient fault so far."""

    @property
    def log(self) -> CommandLog:
        """The command log."""


@runtime_checkable
class StepJournaling(Protocol):
    """A backend whose programming is journaled device by device, so a stopped run can be reconciled."""

    #: called with (layer, row, col, target, verified, pulses) in normalized S as each device is programmed
    on_programmed: Callable[[tuple], None] | None

    def step_targets(self) -> list[tuple[int, Any]]:
        """Per layer, the last update's target conductances (normalized S, flattened)."""

    def reconcile(self, expected: Sequence[torch.Tensor], pending: Sequence[torch.Tensor] | None = None,
                  devices: Sequence[tuple[int, int, int]] | None = None) -> dict:
        """Make the hardware hold `expected` (read back every device, or only `devices`); returns what it found."""


@runtime_checkable
class SubsetMeasurable(Protocol):
    """A backend that can read some nodes only (the extra reading that estimates sigma when N = 1)."""

    def measure_nodes(self, n: int, nodes: Sequence[int]) -> torch.Tensor:
        """n readings of the given nodes (indices into the hidden and output nodes) in the present state:
        (n, R, B, len(nodes)), V."""


@runtime_checkable
class AdjustableNoise(Protocol):
    """A simulator whose read noise changes during training: a sigma schedule (a drifting bench rehearsed) and
    noise added up to an effective-noise target."""

    def set_read_noise(self, scale: float, floor_V: torch.Tensor | None = None) -> None:
        """Each replica's sigma becomes max(sigma * scale, floor_V[r]) (V per reading; sigma as configured)."""


@runtime_checkable
class NamedNodes(Protocol):
    """A backend whose nodes have names worth reporting (a bench: the channel and route of each)."""

    def node_names(self) -> list[str]:
        """One name per hidden and output node, in measurement order."""


# The input doubling: input i drives two nodes, +gamma*x_i (node i) and -gamma*x_i (node inputs + i), so that
# conductances g >= 0 carry signals of either sign. These three functions are its one home.
def input_voltages(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """The clamped input node voltages gamma*[x, -x], V: (..., inputs) -> (..., 2*inputs)."""
    return gamma * torch.cat([x, -x], dim=-1)


def input_nodes(i: int, inputs: int) -> tuple[int, int]:
    """The input nodes input i drives: (the one at +gamma*x_i, the one at -gamma*x_i), of 2*inputs."""
    return i, inputs + i


def node_sizes(layer_sizes: Sequence[int]) -> list[int]:
    """Nodes per layer as the crossbar has them: [2*inputs, hidden..., outputs] from [inputs, hidden..., outputs]."""
    return [2 * int(layer_sizes[0]), *(int(s) for s in layer_sizes[1:])]
