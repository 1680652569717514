"""An online estimate of the read noise sigma from the readings training takes anyway.

Every step reads each node N times per state and reduces the readings to a mean and a variance
(`hil.core.backend.NodeStats`, variance divided by N). N * var is the sum of squared deviations of those
N readings from their mean, with N - 1 degrees of freedom; summed over states, steps and nodes it gives the
pooled within-state variance

    s^2 = sum SS / sum dof,    dof * s^2 / sigma^2 ~ chi^2(dof)   (Gaussian readings)

so the 95% interval of sigma is sqrt(dof s^2 / chi2.ppf(0.975, dof)) .. sqrt(dof s^2 / chi2.ppf(0.025, dof)).
Per node the same sums give each node's sigma, and a node whose interval lies well above the median node's
is named (a bad contact, a range change).

Drift: the readings of the last block of steps are compared with the running estimate by a two-sided F test
(their variance ratio is F(dof_block, dof_ref) when sigma did not change, with Satterthwaite's effective
degrees of freedom when nodes differ); a significant change restarts the running estimate from the block, so
it follows a bench whose noise stepped within one block.

Everything is (R, nodes): one estimate per replica, vectorized, float64 (the sums reach 1e9 terms).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy import stats

from hil.core.backend import NodeStats

CONFIDENCE = 0.95


def chi2_interval(var: torch.Tensor, dof: torch.Tensor, confidence: float = CONFIDENCE) -> tuple[torch.Tensor, torch.Tensor]:
    """The confidence interval of sigma (V) from a variance estimate var (V^2) with dof degrees of freedom
    (same shapes); NaN where dof is 0."""
    a = (1.0 - confidence) / 2.0
    d = dof.double().cpu().numpy()
    hi_q = torch.as_tensor(stats.chi2.ppf(1.0 - a, d), dtype=torch.float64)
    lo_q = torch.as_tensor(stats.chi2.ppf(a, d), dtype=torch.float64)
    ss = (var.double().cpu() * dof.double().cpu())
    return (ss / hi_q).sqrt(), (ss / lo_q).sqrt()


class VarianceSums:
    """Sums of squared deviations and degrees of freedom per replica and node."""

    def __init__(self, replicas: int, nodes: int, device: torch.device | str = "cpu"):
        # on the readings' device: adding a step's sums never waits for the device
        self.ss = torch.zeros(replicas, nodes, dtype=torch.float64, device=device)
        self.dof = torch.zeros(replicas, nodes, dtype=torch.float64, device=device)

    def add(self, ss: torch.Tensor, dof: torch.Tensor) -> None:
        self.ss += ss
        self.dof += dof

    def absorb(self, other: VarianceSums) -> None:
        self.add(other.ss, other.dof)

    def copy_from(self, other: VarianceSums) -> None:
        self.ss.copy_(other.ss)
        self.dof.copy_(other.dof)

    def clear(self) -> None:
        self.ss.zero_()
        self.dof.zero_()

    @property
    def empty(self) -> torch.Tensor:
        """(R,) bool: no degree of freedom yet."""
        return self.dof.sum(1) == 0

    def pooled(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(R,) pooled variance (V^2; NaN without data) and its degrees of freedom."""
        dof = self.dof.sum(1).cpu()
        return self.ss.sum(1).cpu() / dof, dof

    def effective_dof(self) -> torch.Tensor:
        """(R,) degrees of freedom of the pooled variance when nodes differ in sigma (Satterthwaite):
        (sum_i s_i^2 d_i)^2 / sum_i s_i^4 d_i. Equal to sum d_i for equal nodes, near one node's d when one node
        dominates: the drift test then does not take one noisy channel's scatter for a change."""
        var = torch.nan_to_num(self.ss / self.dof).cpu()
        d = self.dof.cpu()
        # s^4 overestimates sigma^4 by (d + 2) / d: unbiased, equal nodes get back about sum d_i
        num, den = (var * d).sum(1) ** 2, (var * var * d * d / (d + 2)).sum(1)
        return torch.where(den > 0, torch.minimum(num / den, d.sum(1)), d.sum(1))

    def per_node(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, nodes) variance of each node (V^2; NaN without data) and its degrees of freedom."""
        return (self.ss / self.dof).cpu(), self.dof.cpu()

    def sigma(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(R,) pooled sigma and its 95% interval, V (the interval with the effective degrees of freedom, so
        that it stays honest when one node is noisier than the rest)."""
        var, _ = self.pooled()
        lo, hi = chi2_interval(var, self.effective_dof())
        return var.sqrt(), lo, hi

    def state(self) -> dict:
        return {"ss": self.ss.cpu().clone(), "dof": self.dof.cpu().clone()}

    def load_state(self, state: dict) -> None:
        self.ss.copy_(state["ss"].to(self.ss.device))
        self.dof.copy_(state["dof"].to(self.dof.device))


def stats_sums(stats_: NodeStats, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, nodes) sum of squares and degrees of freedom of one measurement's readings (none for a replica
    that read each node once). samples: (R,) the N of each replica."""
    n = samples.to(device=stats_.mean.device, dtype=torch.float64)
    r, b, nodes = stats_.mean.shape
    dof = ((n - 1).clamp(min=0) * b).view(r, 1).expand(r, nodes)
    if stats_.var is None:  # exactly zero spread (no noise)
        return torch.zeros(r, nodes, dtype=torch.float64, device=n.device), dof.clone()
    ss = stats_.var.double().sum(1) * n.view(r, 1)
    return torch.where(n.view(r, 1) >= 2, ss, 0.0), dof.clone()


def pair_sums(readings: torch.Tensor, nodes: torch.Tensor, use: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two readings (2, R, B, nodes) of the same state: (a - b)^2 / 2 estimates sigma^2 with one degree of
    freedom. Only the nodes in `nodes` (bool, (nodes,)) and replicas in `use` (bool, (R,)) count."""
    d = (readings[0] - readings[1]).double()
    r, b, m = d.shape
    mask = (use.to(d.device).view(r, 1) & nodes.to(d.device).view(1, m)).to(torch.float64)
    return (d * d).sum(1) / 2.0 * mask, b * mask


@dataclass
class DriftEvent:
    step: int
    replica: int
    sigma_before_V: float
    sigma_after_V: float
    p_value: float

    def to_json(self) -> dict:
        return {"step": self.step, "replica": self.replica, "sigma_before_V": self.sigma_before_V,
                "sigma_after_V": self.sigma_after_V, "p_value": self.p_value}


class SigmaEstimator:
    """The running estimate (reference), the block since the last check, and the epoch's readings."""

    def __init__(self, replicas: int, nodes: int, drift_alpha: float = 1e-3, device: torch.device | str = "cpu"):
        self.R, self.nodes = replicas, nodes
        self.drift_alpha = drift_alpha
        self.reference = VarianceSums(replicas, nodes, device)
        self.block = VarianceSums(replicas, nodes, device)
        self.epoch = VarianceSums(replicas, nodes, device)

    def add(self, ss: torch.Tensor, dof: torch.Tensor) -> None:
        self.block.add(ss, dof)
        self.epoch.add(ss, dof)

    def check(self, step: int) -> list[DriftEvent]:
        """Fold the block into the running estimate, or restart it from the block where sigma changed."""
        v_ref, _ = self.reference.pooled()
        v_blk, _ = self.block.pooled()
        d_ref, d_blk = self.reference.effective_dof(), self.block.effective_dof()
        events = []
        both = (d_ref > 0) & (d_blk > 0)
        if bool(both.any()):
            cdf = torch.as_tensor(stats.f.cdf((v_blk / v_ref).numpy(), d_blk.numpy(), d_ref.numpy()))
            p = 2.0 * torch.minimum(cdf, 1.0 - cdf)  # two-sided: noise that fell is drift too
            # zero spread in either (a silent simulator) is no evidence of drift
            p = torch.where(both & (v_ref > 0) & (v_blk > 0), p, torch.ones_like(p))
            for r in torch.nonzero(p < self.drift_alpha).flatten().tolist():
                events.append(DriftEvent(step, r, float(v_ref[r].sqrt()), float(v_blk[r].sqrt()), float(p[r])))
        drifted = torch.zeros(self.R, dtype=torch.bool)
        for e in events:
            drifted[e.replica] = True
        keep = (~drifted).view(-1, 1).to(dtype=torch.float64, device=self.reference.ss.device)
        self.reference.ss.mul_(keep).add_(self.block.ss)
        self.reference.dof.mul_(keep).add_(self.block.dof)
        self.block.clear()
        return events

    def sigma(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(R,) the running estimate and its 95% interval, V."""
        return self.reference.sigma()

    def state(self) -> dict:
        return {"reference": self.reference.state(), "block": self.block.state(), "epoch": self.epoch.state()}

    def load_state(self, state: dict) -> None:
        self.reference.load_state(state["reference"])
        self.block.load_state(state["block"])
        self.epoch.load_state(state["epoch"])


def noisy_nodes(sums: VarianceSums, ratio: float, confidence: float = CONFIDENCE) -> list[list[tuple[int, float, float]]]:
    """Per replica, the nodes whose sigma is above `ratio` times the median node's with confidence (the lower
    bound of a Bonferroni-corrected interval over the nodes): [(node index, sigma V, times the median)]."""
    var, dof = sums.per_node()
    m = var.shape[1]
    lo, _ = chi2_interval(var, dof, 1.0 - (1.0 - confidence) / max(m, 1))
    median = var.nanmedian(dim=1).values.sqrt()
    out: list[list[tuple[int, float, float]]] = []
    for r in range(var.shape[0]):
        if not bool(torch.isfinite(median[r])) or float(median[r]) == 0.0:
            out.append([])
            continue
        bad = torch.nonzero(lo[r] > ratio * median[r]).flatten().tolist()
        s = var[r].sqrt()
        out.append([(i, float(s[i]), float(s[i] / median[r])) for i in bad])
    return out
