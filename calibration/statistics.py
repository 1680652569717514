"""Noise statistics of repeated readings (GUM Type A) with confidence intervals."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import chdtri  # the chi-square quantile; scipy.stats takes 0.7 s to import


class NoiseDataError(ValueError):
    """Readings that cannot give a noise estimate (none, one, or not finite)."""


def as_readings(samples) -> np.ndarray:
    """(M readings,) or (M readings, nodes) -> float64 (M, nodes), checked."""
    a = np.asarray(samples.detach().cpu() if hasattr(samples, "detach") else samples, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise NoiseDataError(f"samples: expected (readings,) or (readings, nodes), got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise NoiseDataError("samples: no readings")
    if a.shape[0] < 2:
        raise NoiseDataError("samples: a single reading has no spread; take at least 2 (100 or more for a useful interval)")
    bad = ~np.isfinite(a)
    if bad.any():
        m, n = np.argwhere(bad)[0]
        raise NoiseDataError(f"samples: reading {m} of node {n} is {a[m, n]} (NaN or Inf); {int(bad.sum())} such values")
    return a


def sigma_interval(s: np.ndarray, dof, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Confidence interval on a standard deviation from chi-square with dof degrees of freedom."""
    lo_q, hi_q = chdtri(dof, (1 - level) / 2), chdtri(dof, (1 + level) / 2)  # chi2.ppf(q) = chdtri(dof, 1 - q)
    return s * np.sqrt(dof / lo_q), s * np.sqrt(dof / hi_q)


@dataclass
class NoiseEstimate:
    """Per node (arrays) and pooled over nodes (floats). Voltages in V."""

    readings: int
    mean: np.ndarray
    sigma: np.ndarray
    u_mean: np.ndarray          # GUM Type A standard uncertainty of the mean: sigma/sqrt(M)
    sigma_low: np.ndarray       # 95% interval on sigma (chi-square, M-1 dof)
    sigma_high: np.ndarray
    lag1: np.ndarray            # lag-1 autocorrelation
    n_eff: np.ndarray           # effective independent readings, M(1-r1)/(1+r1)
    pooled_sigma: float
    pooled_low: float
    pooled_high: float
    level: float = 0.95

    def to_json(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}


def estimate_noise(samples, level: float = 0.95) -> NoiseEstimate:
    """Mean, sigma with its chi-square interval, Type A uncertainty, lag-1 correlation and effective N per node.

    samples: (M,) or (M, nodes) repeated readings of a held state.
    """
    a = as_readings(samples)
    m = a.shape[0]
    mean = a.mean(0)
    sd = a.std(0, ddof=1)
    lo, hi = sigma_interval(sd, m - 1, level)
    dev = a - mean
    denom = (dev**2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r1 = np.where(denom > 0, (dev[1:] * dev[:-1]).sum(0) / denom, 0.0)
    # A negative lag-1 estimate is sampling noise around 0 for white readings (sd ~ 1/sqrt(m)); counting it would
    # promise more independent readings than were taken, so effective N is capped at m.
    r1c = np.clip(r1, 0.0, 0.999)
    n_eff = m * (1 - r1c) / (1 + r1c)
    dof = (m - 1) * a.shape[1]
    pooled = float(np.sqrt((sd**2).mean()))
    plo, phi = sigma_interval(np.array(pooled), dof, level)
    return NoiseEstimate(m, mean, sd, sd / np.sqrt(m), lo, hi, r1, n_eff, pooled, float(plo), float(phi), level)
