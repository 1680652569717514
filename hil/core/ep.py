"""The Equilibrium Propagation learning rule for resistive networks.

Positive EP (paper eqs. 7, 9, 10), with E[.] the mean over the N readings and
the batch:

    dg_ij = -eta/(2 beta) * (E[(dV_ij^beta)^2] - E[(dV_ij^0)^2])
    db_i  =  eta/beta     * (E[V_i^beta]      - E[V_i^0])

Centered EP uses the phases -beta and +beta, whose distance is 2 beta.

Why the factored form: with gamma ~ 500 the squared drops across input
devices reach 1e5 V^2 while their change under the nudge is ~1e-3 V^2, so
subtracting two squares in float32 loses every digit. Instead

    (a1 - h1)^2 - (a0 - h0)^2 = (da_i - dh_j) * (sa_i - sh_j)

with d = phase1 - phase0 and s = phase1 + phase0, which expands into a sum of
outer products: the update of a batch is left^T @ right, a low-rank matrix
that a simulator applies in place with one GEMM.

The N readings of a node enter only through their mean and variance
(`hil.core.backend.NodeStats`): readings of different nodes are independent, so
E[(V_i - V_j)^2] = E[V_i^2] - 2 E[V_i] E[V_j] + E[V_j^2] with
E[V^2] = mean^2 + var, and the update above holds with d and s taken on the
means plus the change in variance of each node. Memory stays that of one
reading whatever N is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hil.core.backend import ConductanceUpdate, LowRankDelta, NodeStats


def reading_weights(samples: Sequence[int] | int, replicas: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(n_max, R) weights 1/N_r for the first N_r readings of replica r, 0 after: E[.] per replica."""
    ns = torch.as_tensor([samples] * replicas if isinstance(samples, int) else list(samples))
    if ns.numel() != replicas or (ns < 1).any():
        raise ValueError(f"samples: need {replicas} values >= 1 (got {ns.tolist()})")
    k = torch.arange(int(ns.max())).unsqueeze(1)
    return ((k < ns.unsqueeze(0)).to(torch.float64) / ns.unsqueeze(0)).to(device=device, dtype=dtype)


def _square_change(d: torch.Tensor, s: torch.Tensor, v0: torch.Tensor | None, v1: torch.Tensor | None) -> torch.Tensor:
    """E1[V^2] - E0[V^2] = d*s + (var1 - var0), d = mean1 - mean0, s = mean1 + mean0."""
    out = d * s
    if v0 is not None:
        out = out - v0
    if v1 is not None:
        out = out + v1
    return out


def input_layer_delta(x_in: torch.Tensor, h0: NodeStats, h1: NodeStats, coef: float) -> LowRankDelta:
    """Update of the devices between the clamped inputs and the first hidden layer.

    x_in: (B, m) or (R, B, m) input voltages, exact and equal in both phases.
    h0, h1: the first layer's node statistics (R, B, k) in the two phases.
    Sum over the batch of E1[(x - h)^2] - E0[(x - h)^2] = -2 x^T dh + 1^T (E1[h^2] - E0[h^2]).
    """
    r, b, _ = h0.mean.shape
    dh = h1.mean - h0.mean
    sq = _square_change(dh, h1.mean + h0.mean, h0.var, h1.var)
    x = x_in if x_in.dim() == 3 else x_in.unsqueeze(0).expand(r, -1, -1)
    ones = torch.ones(r, 1, x.shape[-1], dtype=x.dtype, device=x.device)
    left = torch.cat([2.0 * x, ones], dim=1)
    right = torch.cat([-dh, sq.sum(1, keepdim=True)], dim=1)
    return LowRankDelta(left, right, coef / b)


def hidden_layer_delta(a0: NodeStats, a1: NodeStats, h0: NodeStats, h1: NodeStats, coef: float) -> LowRankDelta:
    """Update of the devices between two measured layers (lower a, upper h), statistics (R, B, .).

    E1[(a - h)^2] - E0[(a - h)^2] = (da_i - dh_j)(sa_i - sh_j) + dvar_a_i + dvar_h_j, summed over the batch.
    """
    b = h0.mean.shape[1]
    da, sa = a1.mean - a0.mean, a1.mean + a0.mean
    dh, sh = h1.mean - h0.mean, h1.mean + h0.mean
    u = _square_change(da, sa, a0.var, a1.var).sum(1, keepdim=True)  # (R, 1, m)
    v = _square_change(dh, sh, h0.var, h1.var).sum(1, keepdim=True)  # (R, 1, k)
    left = torch.cat([da, sa, u, torch.ones_like(u)], dim=1)
    right = torch.cat([-sh, -dh, torch.ones_like(v), v], dim=1)
    return LowRankDelta(left, right, coef / b)


def ep_update(
    x_in: torch.Tensor,
    phase0: Sequence[NodeStats],
    phase1: Sequence[NodeStats],
    beta: float,
    eta: float,
    centered: bool = False,
    biases: bool = False,
    layer_ratio: float = 1.0,
) -> ConductanceUpdate:
    """The EP conductance update from the node statistics of two phases.

    x_in: clamped input voltages (B, m0) or (R, B, m0), V.
    phase0, phase1: per hidden/output layer, `NodeStats` (R, B, k) of the readings, V. For positive EP these
        are the free (0) and nudged (+beta) phases; for centered EP the -beta and +beta phases.
    layer_ratio: layer k of devices (0: the inputs') learns with eta * layer_ratio^k, and so do the bias
        currents of the nodes above it.
    Returns the update averaged over the batch.
    """
    if not beta > 0:
        raise ValueError(f"beta: must be > 0 (got {beta})")
    span = 2.0 * beta if centered else beta
    etas = [eta * layer_ratio**k for k in range(len(phase0))]
    deltas: list[LowRankDelta | torch.Tensor] = [input_layer_delta(x_in, phase0[0], phase1[0], -etas[0] / (2.0 * span))]
    for k in range(1, len(phase0)):
        deltas.append(hidden_layer_delta(phase0[k - 1], phase1[k - 1], phase0[k], phase1[k], -etas[k] / (2.0 * span)))
    bias = None
    if biases:
        bias = [(e / span) * (p1.mean - p0.mean).mean(1) for e, p0, p1 in zip(etas, phase0, phase1)]
    return ConductanceUpdate(deltas, bias)

