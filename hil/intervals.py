"""95% intervals for what sweeps report: a convergence rate (Wilson score) and a mean accuracy (Student t).

Wilson's interval keeps its coverage near 95% for the small trial counts and the rates near 0 or 1 that sweeps
produce, where the normal approximation collapses to a zero-width interval (Brown, Cai & DasGupta, Statist. Sci.
2001).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from scipy import stats

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a rate successes/n (nan, nan for n = 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # Exactly 0 and 1 at the ends (analytically so; rounding leaves 1 - 1e-16)
    return (0.0 if successes == 0 else max(0.0, centre - half)), (1.0 if successes == n else min(1.0, centre + half))


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of values (the mean twice for a single value)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    m = statistics.fmean(values)
    if n == 1:
        return m, m
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * statistics.stdev(values) / math.sqrt(n)
    return m - half, m + half
