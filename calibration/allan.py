"""Overlapping Allan deviation of repeated readings, and where averaging stops helping.

sigma_A^2(m) = 1 / (2 (M - 2m + 1)) * sum_j (ybar_{j+m} - ybar_j)^2, with ybar_j the
mean of readings j..j+m-1 (IEEE 1139 overlapping estimator), at octave-spaced m.

Model fitted to it (weighted least squares on the variances):
    sigma_A^2(m) = a/m + b + c m^2
white noise (a = sigma^2 per reading, slope -1/2), a flicker floor (b, flat)
and drift (c, slope +1). Terms not significant at 3 standard errors are dropped.
N_max is where averaging stops paying: the m at the model's minimum when drift
is present, else the corner a/b where white noise has fallen to the floor;
past it the deviation is within sqrt(2) of the floor. With neither, N_max is
unbounded (None) within the readings taken.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from calibration.statistics import as_readings


def octave_lengths(m_readings: int) -> np.ndarray:
    """1, 2, 4, ... up to a quarter of the readings (at least 4 differences per estimate)."""
    top = max(1, m_readings // 4)
    return 2 ** np.arange(int(math.log2(top)) + 1)


def overlapping_adev(readings, lengths=None) -> tuple[np.ndarray, np.ndarray]:
    """Averaging lengths m (readings) and the overlapping Allan deviation per node: (K,), (K, nodes)."""
    y = as_readings(readings)
    M = y.shape[0]
    if M < 4:
        raise ValueError(f"samples: Allan deviation needs at least 4 readings (got {M})")
    lengths = octave_lengths(M) if lengths is None else np.asarray(lengths)
    csum = np.vstack([np.zeros((1, y.shape[1])), np.cumsum(y, axis=0)])
    out = []
    for m in lengths:  # a handful of octaves
        means = (csum[m:] - csum[:-m]) / m           # ybar_j for j = 0..M-m
        diff = means[m:] - means[:-m]                # ybar_{j+m} - ybar_j
        out.append(np.sqrt(0.5 * (diff**2).mean(0)))
    return lengths, np.array(out)


@dataclass
class AllanResult:
    lengths: np.ndarray          # m, readings averaged
    adev: np.ndarray             # pooled over nodes (RMS), V
    white_slope: float           # log-log slope over the white region
    white_sigma: float           # sqrt(a): white sd of one reading, V
    floor: float | None          # V, None when no floor within the data
    n_max: int | None            # None when averaging keeps paying
    flicker_var: float
    drift_var: float

    def model(self, m) -> np.ndarray:
        m = np.asarray(m, dtype=float)
        return np.sqrt(self.white_sigma**2 / m + self.flicker_var + self.drift_var * m**2)

    def to_json(self) -> dict:
        return {"lengths": self.lengths.tolist(), "adev_V": self.adev.tolist(), "white_slope": self.white_slope,
                "white_sigma_V": self.white_sigma, "floor_V": self.floor, "n_max": self.n_max,
                "flicker_var_V2": self.flicker_var, "drift_var_V2": self.drift_var}


def _wls(X, y, w):
    Xw = X * w[:, None]
    cov = np.linalg.pinv(X.T @ Xw)
    beta = cov @ (Xw.T @ y)
    return beta, np.sqrt(np.clip(np.diag(cov), 0, None))


def analyse_allan(readings) -> AllanResult:
    """Allan deviation pooled over nodes, white slope, floor and N_max."""
    y = as_readings(readings)
    M, nodes = y.shape
    lengths, per_node = overlapping_adev(y)
    pooled = np.sqrt((per_node**2).mean(1))
    var = pooled**2
    # Relative uncertainty of an overlapping Allan variance: about sqrt(2/edf), edf ~ (M/m - 1) per node.
    edf = np.maximum(1.0, (M / lengths - 1.0) * nodes)
    m = lengths.astype(float)
    terms = {"a": 1 / m, "b": np.ones_like(m), "c": m**2}
    keep = ["a", "b", "c"]
    while True:
        X = np.stack([terms[k] for k in keep], 1)
        model_var = var  # weights from the data; adequate at these edf
        w = edf / (2 * np.maximum(model_var, 1e-300) ** 2)
        beta, se = _wls(X, var, w)
        drop = [k for k, b, s in zip(keep, beta, se) if k != "a" and not b > 3 * s]
        if not drop:
            break
        keep = [k for k in keep if k not in drop]
    coef = dict(zip(keep, beta))
    a = max(coef.get("a", var[0]), 0.0)
    b, c = coef.get("b", 0.0), coef.get("c", 0.0)
    n_max, floor = None, None
    if c > 0:
        m_min = (a / (2 * c)) ** (1 / 3)
        if b > 0:
            m_min = min(m_min, a / b)
        n_max = max(1, int(round(m_min)))
        floor = float(math.sqrt(a / n_max + b + c * n_max**2))
    elif b > 0:
        n_max = max(1, int(math.ceil(a / b)))
        floor = float(math.sqrt(b))
    # Slope over the white region: the octaves up to N_max/4 (at least the first three).
    top = len(m) if n_max is None else max(3, int(np.searchsorted(m, max(n_max / 4, 1), side="right")))
    top = min(top, len(m))
    if top >= 2:
        wl = edf[:top]
        slope = float(np.polyfit(np.log(m[:top]), np.log(pooled[:top]), 1, w=np.sqrt(wl))[0])
    else:
        slope = float("nan")
    return AllanResult(lengths, pooled, slope, math.sqrt(a), floor, n_max, max(b, 0.0), max(c, 0.0))
