"""A simulated layered resistive crossbar (PyTorch, CPU or CUDA).

Layers 0..L: layer 0 holds the 2*inputs clamped input nodes gamma*[x, -x],
layers 1..L-1 are hidden nodes with diodes (ReLU, or reversed for the
bipolar half), layer L the linear outputs. weights[j] (R, m_j, m_{j+1}) are
the device conductances between layer j and j+1, in S, kept in
[g_min, g_max].

Relaxation is Millman's theorem applied exactly to a whole layer at once
(nodes of one layer share no device, so their equations are independent):

    V_i = rho( (sum_j g_ij V_j + b_i [+ beta t_i]) / (sum_j g_ij [+ beta]) )

swept over the layers T times (block Gauss-Seidel, which minimizes the
network's co-content layer by layer).

Speed: the input drive x_in @ W_0 is computed once per clamp and reused in
every sweep of both phases; the conductance sums at every node are
recomputed only when conductances change, and the sums over W_0 (the largest
matrix) come out of the same GEMM as the drive, through a row of ones
appended to the inputs, so W_0 is read once per step for both; updates are
applied in place as low-rank GEMMs followed by the range clamp; with one
hidden layer a sweep is five kernels (two fused multiply-adds, two
divisions, one diode clamp), the nudge terms being prepared once per phase.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from hil.core.backend import (
    ConductanceUpdate,
    CrossbarBackend,
    LowRankDelta,
    NodeStats,
    Programmable,
    Resumable,
    input_voltages,
    node_sizes,
)
from hil.core.config import DevicesConfig, NetworkConfig, RelaxConfig, RunConfig
from hil.core.seeds import replica_seeds, seed_stream
from sim_backend.devices.programming import PulseProgrammer
from sim_backend.noise import ReadNoise, WhiteReadNoise
from sim_backend.streams import ReplicaStreams


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} asked for, but torch sees no CUDA device")
    return dev


def initial_conductances(
    lower: int, upper: int, seeds: Sequence[int], init_scale: float, layer: int, init: str = "uniform"
) -> torch.Tensor:
    """Initial conductances per replica, S, drawn on the CPU in float64 from each replica's own seed.

    init "uniform": U(0, c/sqrt(fan_in)); "symmetric": U(-c/sqrt(fan_in), c/sqrt(fan_in)), which the caller
    clamps into the device range (the DRN code's init: about half the devices start at the bottom).
    Drawing on the CPU makes the start identical on CPU and CUDA and in float32/float64.
    """
    if init not in ("uniform", "symmetric"):
        raise ValueError(f"network.init: {init!r} is not one of 'uniform', 'symmetric'")
    bound = init_scale / math.sqrt(lower)
    low = 0.0 if init == "uniform" else -bound
    out = torch.empty(len(seeds), lower, upper, dtype=torch.float64)
    for r, seed in enumerate(seeds):  # once per run, not in the training loop
        gen = torch.Generator().manual_seed(seed_stream(seed, "init", layer))
        out[r].uniform_(low, bound, generator=gen)
    return out


class SimCrossbar:
    """Simulated crossbar implementing `hil.core.backend.CrossbarBackend` for R replicas."""

    def __init__(
        self,
        layer_sizes: Sequence[int],
        network: NetworkConfig,
        relax: RelaxConfig,
        noise: WhiteReadNoise,
        *,
        devices: DevicesConfig | None = None,
        replicas: int = 1,
        seeds: Sequence[int] | None = None,
        noise_seed: int | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        """layer_sizes: [inputs, *network.hidden, outputs]; network, relax: the run's sections (gain, diodes,
        device range; sweeps); noise: the read-noise model of the readings, on `device` with one sigma per replica;
        devices: how updates reach the devices (None or `exact`: added exactly); seeds: one per replica (initial
        conductances); noise_seed: a salt of the readings' streams and the pulsed devices' generator (default: the replica seeds
        alone decide the readings, and the first seed the devices' write noise)."""
        if len(layer_sizes) < 2 or any(int(s) < 1 for s in layer_sizes):
            raise ValueError(f"layer_sizes: need at least [inputs, outputs], all >= 1 (got {list(layer_sizes)})")
        if [int(s) for s in layer_sizes[1:-1]] != list(network.hidden):
            raise ValueError(f"network.hidden: {network.hidden} differs from the hidden sizes of layer_sizes "
                             f"{list(layer_sizes)}")
        if noise.sigma.numel() != int(replicas):
            raise ValueError(f"noise: its sigma has {noise.sigma.numel()} values, need one per replica ({replicas})")
        self.layer_sizes = [int(s) for s in layer_sizes]
        self.node_sizes = node_sizes(self.layer_sizes)
        self.replicas = int(replicas)
        self.seeds = list(seeds) if seeds is not None else list(range(self.replicas))
        if len(self.seeds) != self.replicas:
            raise ValueError(f"seeds: need one per replica ({self.replicas}), got {len(self.seeds)}")
        self.input_gain = float(network.input_gain)
        self.g_min = float(network.g_min)
        self.g_max = None if network.g_max is None else float(network.g_max)
        self.sweeps = int(relax.sweeps)
        self.warm_start = bool(relax.warm_start)
        init_scale, bipolar = network.init_scale, network.bipolar
        self.device = torch.device(device) if not isinstance(device, str) else resolve_device(device)
        self.dtype = dtype
        # Checks that read a device value back to the host (a synchronisation per step on a GPU) run at
        # once on the CPU, where they are free; elsewhere their failures surface as NaN voltages, which the
        # trainer's non-finite check turns into an error at its next check.
        self.host_checks = self.device.type == "cpu"
        if self.device.type == "cuda":
            # Strict float32: TF32 matmuls would add ~1e-3 relative error, larger than the signals EP reads.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self.noise = noise
        # The readings' random numbers: one stream per replica seed, so a replica reads the same noise whichever
        # replicas share its run (a sweep's chunking, --max-replicas, the executor).
        self._gen = ReplicaStreams(self.seeds, self.device, salt=0 if noise_seed is None else noise_seed)

        L = len(self.node_sizes) - 1
        self.weights = [
            initial_conductances(self.node_sizes[j], self.node_sizes[j + 1], self.seeds, init_scale, j,
                                 network.init)
            .clamp_(self.g_min, self.g_max)
            .to(self.device, dtype)
            for j in range(L)
        ]
        self.biases = (
            [torch.zeros(self.replicas, k, device=self.device, dtype=dtype) for k in self.node_sizes[1:]]
            if network.bias else None
        )
        # Diode bounds per hidden layer: ReLU nodes in [0, inf), the bipolar half in (-inf, 0].
        self._lo, self._hi = [], []
        for k in self.node_sizes[1:-1]:
            lo = torch.zeros(k, device=self.device, dtype=dtype)
            hi = torch.full((k,), math.inf, device=self.device, dtype=dtype)
            if bipolar:
                lo[k - k // 2:] = -math.inf
                hi[k - k // 2:] = 0.0
            self._lo.append(lo)
            self._hi.append(hi)
        self.bipolar = bool(bipolar)
        # devices: how updates reach the devices. None or `exact`: added exactly.
        self.programmer: PulseProgrammer | None = None
        if devices is not None and devices.update != "exact":
            if self.g_max is None:
                raise ValueError(f"g_max: the device model {devices.model!r} needs the device range [g_min, g_max]")
            self.programmer = PulseProgrammer(devices, self.weights, g_min=self.g_min, g_max=self.g_max,
                                              seeds=self.seeds, seed=self.seeds[0] if noise_seed is None else noise_seed,
                                              host_checks=self.host_checks)
        self._den: list[torch.Tensor] | None = None  # stale after programming; see _sums()
        # The batch size of the drive GEMM that gave the node sums (None: summed directly). Sums are kept only for
        # clamps of that batch size, so they are the same numbers whatever ran before (e.g. a resumed run's first
        # step and an uninterrupted run's first step after evaluation): BLAS may round a GEMM differently per shape.
        self._den_batch: int | None = None
        self._x_in: torch.Tensor | None = None
        self._drive: torch.Tensor | None = None
        self._targets: torch.Tensor | None = None
        self._beta: float | torch.Tensor = 0.0
        self.voltages: list[torch.Tensor] = []

    @classmethod
    def from_config(cls, cfg: RunConfig, n_inputs: int, n_outputs: int, *,
                    sigma: float | Sequence[float] | None = None, seeds: Sequence[int] | None = None,
                    replicas: int | None = None) -> SimCrossbar:
        """Build from a `hil.core.config.RunConfig` (sigma, V, and seeds may be given per replica)."""
        r = replicas or cfg.train.replicas
        device = resolve_device(cfg.device)
        return cls([n_inputs, *cfg.network.hidden, n_outputs], cfg.network, cfg.relax,
                   ReadNoise.from_config(cfg.noise, r, device, cfg.torch_dtype, sigma=sigma), devices=cfg.devices,
                   replicas=r, seeds=seeds if seeds is not None else replica_seeds(cfg.train.seed, r),
                   device=device, dtype=cfg.torch_dtype)

    @classmethod
    def from_settings(
        cls,
        layer_sizes: Sequence[int],
        *,
        input_gain: float,
        replicas: int = 1,
        seeds: Sequence[int] | None = None,
        bias: bool = False,
        bipolar: bool = False,
        init_scale: float = 1.0,
        init: str = "uniform",
        g_min: float = 0.0,
        g_max: float | None = None,
        sweeps: int = 5,
        warm_start: bool = False,
        sigma: float | Sequence[float] = 0.0,
        noise_seed: int | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> SimCrossbar:
        """A bare network from scalar settings, without a RunConfig (tests, scripts, the emulated bench's chip):
        the network and relax sections are built (and validated) from them, the read noise is white (sigma, V)."""
        if len(layer_sizes) < 2:
            raise ValueError(f"layer_sizes: need at least [inputs, outputs], all >= 1 (got {list(layer_sizes)})")
        if sweeps < 1:
            raise ValueError(f"sweeps: must be >= 1 (got {sweeps})")
        network = NetworkConfig(hidden=[int(s) for s in layer_sizes[1:-1]], input_gain=input_gain, bias=bias,
                                bipolar=bipolar, init=init, init_scale=init_scale, g_min=g_min, g_max=g_max)
        dev = torch.device(device) if not isinstance(device, str) else resolve_device(device)
        return cls(layer_sizes, network, RelaxConfig(sweeps=sweeps, warm_start=warm_start),
                   ReadNoise(sigma, replicas, dev, dtype), replicas=replicas, seeds=seeds, noise_seed=noise_seed,
                   device=dev, dtype=dtype)

    # ---- bookkeeping -------------------------------------------------------
    @property
    def measured_sizes(self) -> list[int]:
        """Nodes per measured layer (hidden..., outputs)."""
        return self.node_sizes[1:]

    def _sums(self, first_layer_sums: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Total conductance at every hidden/output node (S), (R, 1, k) per layer: devices below and above.

        first_layer_sums: the column sums of W_0 when the caller already has them (from the drive GEMM).
        """
        if self._den is None:
            self._den_batch = None
            L = len(self.weights)
            den = []
            for l in range(1, L + 1):
                d = first_layer_sums if (l == 1 and first_layer_sums is not None) else self.weights[l - 1].sum(1)
                if l < L:
                    d = d + self.weights[l].sum(2)
                den.append(d.unsqueeze(1))
            self._den = den
        return self._den

    def _stale(self) -> None:
        """Conductances changed: the node sums and the input drive must be recomputed."""
        self._den = None
        self._den_batch = None
        self._drive = None

    # ---- backend protocol --------------------------------------------------
    def clamp(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.layer_sizes[0]:
            raise ValueError(f"x: expected {self.layer_sizes[0]} inputs per sample, got {x.shape[-1]}")
        self.clamp_voltages(input_voltages(x.to(self.device, self.dtype), self.input_gain))

    def clamp_voltages(self, v_in: torch.Tensor) -> None:
        """Clamp raw input-node voltages (B, 2*inputs), V, as a bench's DACs do (no doubling applied here)."""
        v_in = v_in.to(self.device, self.dtype)
        if v_in.shape[-1] != self.node_sizes[0]:
            raise ValueError(f"v_in: expected {self.node_sizes[0]} input-node voltages, got {v_in.shape[-1]}")
        self._x_in = v_in
        self._drive = None
        if self._den_batch is not None and self._den_batch != v_in.shape[-2]:
            self._den = self._den_batch = None
        if not (self.warm_start and self.voltages and self.voltages[0].shape[1] == v_in.shape[-2]):
            self.voltages = [torch.zeros(self.replicas, v_in.shape[-2], k, device=self.device, dtype=self.dtype)
                             for k in self.node_sizes[1:]]

    def nudge(self, targets: torch.Tensor | None, beta: float | torch.Tensor = 0.0) -> None:
        """Tie the outputs through conductance beta (S; a float, or one value per output) to targets (V)."""
        if targets is None:
            self._targets, self._beta = None, 0.0
            return
        if isinstance(beta, torch.Tensor):
            b = beta.to(self.device, self.dtype)
            if b.shape[-1] != self.node_sizes[-1] or not bool(torch.isfinite(b).all()) or bool((b < 0).any()):
                raise ValueError(f"beta: one finite conductance >= 0 S per output expected (got {beta.tolist()})")
            self._targets, self._beta = targets.to(self.device, self.dtype), b
            return
        if beta == 0 or not math.isfinite(beta):
            raise ValueError(f"beta: must be a finite nonzero conductance, S (got {beta})")
        if beta < 0 and self.host_checks and bool((self._sums()[-1] + beta <= 0).any()):
            # Centered EP's -beta phase: a negative nudge larger than the conductance at a node has no equilibrium.
            raise ValueError(f"beta: -{-beta:g} S exceeds the conductance at an output node; lower beta for centered EP")
        self._targets = targets.to(self.device, self.dtype)
        self._beta = float(beta)

    def _input_drive(self) -> torch.Tensor:
        """x_in @ W_0 (R, B, k1), A; when the node sums are stale, one GEMM gives both."""
        if self._drive is None:
            if self._x_in is None:
                raise RuntimeError("clamp(x) must come before relax()")
            x = self._x_in
            if self._den is None:
                ones = torch.ones(*x.shape[:-2], 1, x.shape[-1], device=x.device, dtype=x.dtype)
                both = torch.matmul(torch.cat([x, ones], dim=-2), self.weights[0])  # (R, B+1, k1)
                self._drive = both[:, :-1]
                self._sums(first_layer_sums=both[:, -1])
                self._den_batch = x.shape[-2]
            else:
                self._drive = torch.matmul(x, self.weights[0])
        return self._drive

    def relax(self) -> None:
        V, W, L = self.voltages, self.weights, len(self.weights)
        drive = self._input_drive()
        den = list(self._sums())
        # What does not change during the sweeps, prepared once: the constant part of each layer's
        # numerator (input drive, bias currents, the nudge's pull beta*t) and the output's total conductance.
        const: list[torch.Tensor | None] = [None] * L
        if self.biases is not None:
            const = [b.unsqueeze(1) for b in self.biases]
        const[0] = drive if const[0] is None else drive + const[0]
        if self._targets is not None:
            pull = self._beta * self._targets
            const[-1] = pull if const[-1] is None else const[-1] + pull
            den[-1] = den[-1] + self._beta
            if not isinstance(self._beta, torch.Tensor) and self._beta < 0:
                # A -beta larger than a node's conductance has no equilibrium: NaN, never a wrong voltage.
                den[-1] = torch.where(den[-1] > 0, den[-1], math.nan)
        first = drive if const[0] is None else const[0]  # never None: it holds the drive (and, if L = 1, the pull)
        for _ in range(self.sweeps):
            for l in range(1, L + 1):
                c = const[l - 1]
                if l == 1:
                    if L == 1:
                        V[0] = first / den[0]  # no hidden layer: the outputs see only the inputs
                        continue
                    num = torch.baddbmm(first, V[1], W[1].transpose(1, 2))
                else:
                    num = torch.bmm(V[l - 2], W[l - 1]) if c is None else torch.baddbmm(c, V[l - 2], W[l - 1])
                    if l < L:
                        num.baddbmm_(V[l], W[l].transpose(1, 2))
                num.div_(den[l - 1])
                if l < L:  # the diodes
                    if self.bipolar:
                        num.clamp_(self._lo[l - 1], self._hi[l - 1])
                    else:
                        num.clamp_min_(0.0)
                V[l - 1] = num

    def measure(self, n: int) -> torch.Tensor:
        if n < 1:
            raise ValueError(f"n: readings per node must be >= 1 (got {n})")
        return self.noise.sample(torch.cat(self.voltages, dim=-1), n, self._gen)

    def measure_nodes(self, n: int, nodes: Sequence[int]) -> torch.Tensor:
        """n readings of some nodes (`hil.core.backend.SubsetMeasurable`): every node is read and the others
        dropped, so the noise stream stays that of a full reading (a simulated reading costs nothing)."""
        return self.measure(n)[..., list(nodes)]

    def set_read_noise(self, scale: float, floor_V: torch.Tensor | None = None) -> None:
        """`hil.core.backend.AdjustableNoise`: sigma schedules and added noise."""
        self.noise.rescale(scale, floor_V)

    def measure_stats(self, weights: torch.Tensor) -> NodeStats:
        """Weighted readings (weights (n, R)) reduced to mean and variance in bounded memory (see ReadNoise.stats)."""
        if weights.shape[0] < 1:
            raise ValueError("weights: at least one reading per node")
        return self.noise.stats(torch.cat(self.voltages, dim=-1), weights, self._gen)

    def program(self, update: ConductanceUpdate) -> None:
        if self.programmer is not None:  # pulsed devices: pulse counts or write-verify (sim_backend/devices)
            self.programmer.host_checks = self.host_checks
            self.programmer.program(self.weights, update.weights, now_s=self.noise.time_s)
        else:
            self._program_exact(update)
        if update.biases is not None and self.biases is not None:
            for b, db in zip(self.biases, update.biases):
                b.add_(db.to(b.dtype))
        self._stale()

    def _program_exact(self, update: ConductanceUpdate) -> None:
        for W, delta in zip(self.weights, update.weights):
            if isinstance(delta, LowRankDelta):
                W.baddbmm_(delta.left.transpose(1, 2).to(W.dtype), delta.right.to(W.dtype), alpha=delta.scale)
            else:
                W.add_(delta.to(W.dtype))
            # The device range: conductance saturates at g_min and g_max (a physical limit, not a safety clamp).
            W.clamp_(self.g_min, self.g_max)

    def programming_stats(self) -> dict:
        """Pulsed devices: pulses and programming time per update since the last call (empty for exact)."""
        return {} if self.programmer is None else self.programmer.stats()

    def conductances(self) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        return self.weights, self.biases

    def load_conductances(self, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor] | None = None) -> None:
        """Set every conductance (e.g. from a checkpoint); shapes must match."""
        for j, (W, new) in enumerate(zip(self.weights, weights)):
            if tuple(new.shape) != tuple(W.shape):
                raise ValueError(f"weights[{j}]: shape {tuple(new.shape)} does not match the network {tuple(W.shape)}")
            W.copy_(new)
            if self.programmer is not None:  # what the devices hold (write noise and drift are not saved)
                for state in (self.programmer.hidden, self.programmer.written):
                    if state is not None:
                        state[j].copy_(new)
                if self.programmer.t_prog is not None:
                    self.programmer.t_prog[j].fill_(self.noise.time_s)
        if biases is not None and self.biases is not None:
            for b, new in zip(self.biases, biases):
                b.copy_(new)
        self._stale()

    def random_state(self) -> dict:
        """What the next readings and updates depend on besides the conductances: the noise generator, the
        simulated clock, 1/f state and, with pulsed devices, the programmer's rounding state."""
        state = {"streams": self._gen.state(), **self.noise.state()}
        if self.programmer is not None:
            state["programmer"] = self.programmer.state()
        return state

    def load_random_state(self, state: dict) -> None:
        if "streams" in state:  # checkpoints before per-replica streams held a torch generator: a new stream
            self._gen.load_state(state["streams"])
        self.noise.load_state(state)
        if self.programmer is not None and "programmer" in state:
            self.programmer.load_state(state["programmer"])

    def close(self) -> None:
        """Nothing to make safe in a simulation; kept for the protocol."""


if TYPE_CHECKING:  # mypy checks here that the simulator meets the whole contract and its capabilities

    def _meets_the_contract(sim: SimCrossbar) -> tuple[CrossbarBackend, Resumable, Programmable]:
        return sim, sim, sim
