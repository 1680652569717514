"""Random numbers that belong to a replica: counter-based streams, one per replica seed.

A sweep trains its networks in chunks of replicas (`--max-replicas`), in-process or on Ray. With one
torch.Generator per chunk, a replica's read noise depended on which replicas shared its chunk. Here the k-th
random number a replica draws is a hash of (its seed, k) alone, so a trial's readings, and so its result, depend
on its seed and settings only, whatever the chunking or executor.

The hash is splitmix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014):
the stream of a key is mix(key + k * golden), k = 0, 1, 2, ... Each 64-bit output gives two normals by the
Box-Muller transform (its high and low 32 bits as two uniforms). Everything is torch integer and float
arithmetic over the whole (readings, replicas, batch, nodes) tensor: no loop over replicas.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def _int64(c: int) -> int:
    """A 64-bit constant as the signed int64 with the same bits (torch has no uint64 arithmetic)."""
    return c - (1 << 64) if c >= 1 << 63 else c


GOLDEN = _int64(0x9E3779B97F4A7C15)
_M1 = _int64(0xBF58476D1CE4E5B9)
_M2 = _int64(0x94D049BB133111EB)
_TWO_PI = 2 * math.pi
_INV_2_32 = 2.0**-32


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's >> is arithmetic: it copies the sign bit)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finalizer on int64 tensors (multiplication wraps modulo 2^64, as uint64 arithmetic does)."""
    x = x ^ _shr(x, 30)
    x = x * _M1
    x = x ^ _shr(x, 27)
    x = x * _M2
    return x ^ _shr(x, 31)


def mix_int(x: int) -> int:
    """mix64 of one Python integer (the same bits), for keys."""
    return int(mix64(torch.tensor([_int64(x % (1 << 64))], dtype=torch.int64))[0])


class ReplicaStreams:
    """One counter-based stream of standard normals per replica: `normal` draws the next values of every replica's.

    seeds: one per replica; salt: tells apart streams of the same seeds that must differ. Normal k of a replica is
    the cosine (k even) or sine (k odd) half of the Box-Muller pair of word k // 2, so the values do not depend on
    how the draws are split into calls. Every replica advances by the same count per call: `state()` is one integer.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str, salt: int = 0):
        keys = [mix_int(mix_int(int(s)) ^ mix_int(int(salt) + 0x5EED)) for s in seeds]
        self.keys = torch.tensor(keys, dtype=torch.int64, device=device)
        self.device = torch.device(device)
        self.counter = 0  # normals drawn so far by each replica

    @property
    def replicas(self) -> int:
        return int(self.keys.numel())

    def normal(self, shape: Sequence[int], replica_dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Standard normal values of `shape`; slice `replica_dim` r comes from replica r's stream alone."""
        shape = tuple(int(s) for s in shape)
        if shape[replica_dim] != self.replicas:
            raise ValueError(f"shape {shape}: dimension {replica_dim} must be the {self.replicas} replicas")
        per = math.prod(shape) // self.replicas
        first, skip = divmod(self.counter, 2)
        words = (skip + per + 1) // 2
        k = torch.arange(first, first + words, dtype=torch.int64, device=self.device)
        w = mix64(self.keys.view(-1, 1) + k.view(1, -1) * GOLDEN)  # (R, words)
        self.counter += per
        # Two uniforms in (0, 1] per word (never 0: the logarithm stays finite); float64 keeps all 32 bits.
        work = torch.float64 if dtype == torch.float64 else torch.float32
        u1 = (_shr(w, 32).to(work) + 0.5).mul_(_INV_2_32).clamp_(max=1.0)
        u2 = ((w & 0xFFFFFFFF).to(work) + 0.5).mul_(_INV_2_32)
        r = u1.log_().mul_(-2.0).sqrt_()
        angle = u2.mul_(_TWO_PI)
        z = torch.stack((r * torch.cos(angle), r * torch.sin(angle)), dim=-1).view(self.replicas, -1)
        z = z[:, skip:skip + per]
        others = [s for i, s in enumerate(shape) if i != replica_dim]
        return z.to(dtype).reshape(self.replicas, *others).movedim(0, replica_dim)

    def state(self) -> dict:
        return {"counter": self.counter}

    def load_state(self, state: dict) -> None:
        self.counter = int(state["counter"])
