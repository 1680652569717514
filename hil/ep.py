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
that a simulator applies in place with one GEMM. Readings of the two phases
are paired sample by sample; the mean of the paired differences equals the
difference of the means, so this is exact.
"""

from __future__ import annotations

from typing import Sequence

import torch

from hil.backend import ConductanceUpdate, LowRankDelta


def _flat(samples: torch.Tensor) -> torch.Tensor:
    """(n, R, B, k) -> (R, n*B, k): the readings act as a larger batch."""
    n, r, b, k = samples.shape
    return samples.permute(1, 0, 2, 3).reshape(r, n * b, k)


def reading_weights(samples: Sequence[int] | int, replicas: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(n_max, R) weights 1/N_r for the first N_r readings of replica r, 0 after: E[.] per replica."""
    ns = torch.as_tensor([samples] * replicas if isinstance(samples, int) else list(samples))
    if ns.numel() != replicas or (ns < 1).any():
        raise ValueError(f"samples: need {replicas} values >= 1 (got {ns.tolist()})")
    k = torch.arange(int(ns.max())).unsqueeze(1)
    return ((k < ns.unsqueeze(0)).to(torch.float64) / ns.unsqueeze(0)).to(device=device, dtype=dtype)


def input_layer_delta(x_in: torch.Tensor, h0: torch.Tensor, h1: torch.Tensor, w: torch.Tensor, coef: float) -> LowRankDelta:
    """Update of the devices between the clamped inputs and the first hidden layer.

    x_in: (B, m) or (R, B, m) input voltages, exact and equal in both phases (da = 0).
    h0, h1: (n, R, B, k) readings in the two phases; w: (n, R) reading weights.
    Sum over readings and batch of -dh_j * (2 x_i - sh_j) = -2 x^T (E_n dh) + 1^T (E_n dh*sh).
    """
    n, r, b, k = h0.shape
    wv = w.view(n, r, 1, 1)
    dh = (h1 - h0) * wv
    sh = h1 + h0
    x = x_in if x_in.dim() == 3 else x_in.unsqueeze(0).expand(r, -1, -1)
    ones = torch.ones(r, 1, x.shape[-1], dtype=x.dtype, device=x.device)
    left = torch.cat([2.0 * x, ones], dim=1)
    right = torch.cat([-dh.sum(0), (dh * sh).sum(dim=(0, 2)).unsqueeze(1)], dim=1)
    return LowRankDelta(left, right, coef / b)


def hidden_layer_delta(
    a0: torch.Tensor, a1: torch.Tensor, h0: torch.Tensor, h1: torch.Tensor, w: torch.Tensor, coef: float
) -> LowRankDelta:
    """Update of the devices between two measured layers (lower a, upper h), readings (n, R, B, .)."""
    n, r, b, _ = h0.shape
    wv = w.view(n, r, 1, 1)
    da, sa = _flat((a1 - a0) * wv), _flat(a1 + a0)
    dh, sh = _flat((h1 - h0) * wv), _flat(h1 + h0)
    u = (da * sa).sum(1, keepdim=True)  # (R, 1, m)
    v = (dh * sh).sum(1, keepdim=True)  # (R, 1, k)
    # sum_k w_k (da_i - dh_j)(sa_i - sh_j): the weight rides on one factor of each product.
    left = torch.cat([da, sa, u, torch.ones_like(u)], dim=1)
    right = torch.cat([-sh, -dh, torch.ones_like(v), v], dim=1)
    return LowRankDelta(left, right, coef / b)


def ep_update(
    x_in: torch.Tensor,
    phase0: Sequence[torch.Tensor],
    phase1: Sequence[torch.Tensor],
    beta: float,
    eta: float,
    centered: bool = False,
    biases: bool = False,
    weights: torch.Tensor | None = None,
) -> ConductanceUpdate:
    """The EP conductance update from readings of two phases.

    x_in: clamped input voltages (B, m0) or (R, B, m0), V.
    phase0, phase1: per hidden/output layer, readings (n, R, B, k), V. For positive
        EP these are the free (0) and nudged (+beta) phases; for centered EP the
        -beta and +beta phases.
    weights: (n, R) reading weights (see `reading_weights`); default: mean over all n.
    Returns the update averaged over readings and batch.
    """
    if not beta > 0:
        raise ValueError(f"beta: must be > 0 (got {beta})")
    n, r = phase0[0].shape[:2]
    if weights is None:
        weights = torch.full((n, r), 1.0 / n, dtype=phase0[0].dtype, device=phase0[0].device)
    span = 2.0 * beta if centered else beta
    coef = -eta / (2.0 * span)
    deltas = [input_layer_delta(x_in, phase0[0], phase1[0], weights, coef)]
    for k in range(1, len(phase0)):
        deltas.append(hidden_layer_delta(phase0[k - 1], phase1[k - 1], phase0[k], phase1[k], weights, coef))
    bias = None
    if biases:
        wv = weights.view(n, r, 1, 1)
        bias = [(eta / span) * ((p1 - p0) * wv).sum(0).mean(1) for p0, p1 in zip(phase0, phase1)]
    return ConductanceUpdate(deltas, bias)
