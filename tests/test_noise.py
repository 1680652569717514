"""Readings have standard deviation sigma, and the mean of N readings sigma/sqrt(N).

Statistical test: for M independent Gaussian values with true sd s, (M-1)*var/s^2
follows chi-square with M-1 degrees of freedom. We accept when it lies inside the
two-sided 1 - 1e-6 interval, so a correct implementation fails this check with
probability 1e-6 per assertion (the seeds are fixed, so a run is reproducible;
1e-6 is the chance over seeds). The same interval rejects a sd 3% off, shown below.
"""

import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from scipy.stats import chi2

from drivers.lab import load_lab
from hil.core.config import ConfigError, build_config
from sim_backend.crossbar import SimCrossbar
from sim_backend.noise import ReadNoise

ALPHA = 1e-6


def sd_consistent(values: torch.Tensor, sd: float) -> bool:
    m = values.numel()
    stat = (m - 1) * values.double().var().item() / sd**2
    return chi2.ppf(ALPHA / 2, m - 1) < stat < chi2.ppf(1 - ALPHA / 2, m - 1)


@pytest.mark.parametrize("n", [1, 4, 16])
def test_reading_and_mean_standard_deviation(n):
    sigma = 2e-3
    net = SimCrossbar.from_settings([8, 16, 4], input_gain=3.0, replicas=2, seeds=[0, 1], sigma=sigma, noise_seed=123,
                      dtype=torch.float64)
    net.clamp(torch.rand(64, 8, dtype=torch.float64))
    net.relax()
    clean = torch.cat(net.voltages, -1)
    reads = net.measure(n)
    assert reads.shape == (n, 2, 64, 20)
    err = reads - clean
    assert sd_consistent(err, sigma)
    means = err.mean(0)
    assert sd_consistent(means, sigma / math.sqrt(n))
    # unbiased: |mean| within 5.3 standard errors (two-sided p = 1e-7)
    assert abs(err.mean().item()) < 5.3 * sigma / math.sqrt(err.numel())


def test_statistical_check_has_power():
    torch.manual_seed(0)
    v = torch.randn(2 * 64 * 20 * 16, dtype=torch.float64)
    assert sd_consistent(v, 1.0)
    assert not sd_consistent(v, 1.03) and not sd_consistent(v, 0.97)


def test_sigma_per_replica_and_zero_noise():
    net = SimCrossbar.from_settings([4, 6, 2], input_gain=1.0, replicas=3, seeds=[0, 1, 2], sigma=[0.0, 1e-3, 1e-2],
                      dtype=torch.float64)
    net.clamp(torch.rand(200, 4, dtype=torch.float64))
    net.relax()
    err = net.measure(8) - torch.cat(net.voltages, -1)
    assert torch.all(err[:, 0] == 0)
    assert sd_consistent(err[:, 1], 1e-3) and sd_consistent(err[:, 2], 1e-2)


def test_bad_noise_values_raise():
    with pytest.raises(ValueError, match="sigma"):
        SimCrossbar.from_settings([4, 6, 2], input_gain=1.0, sigma=-1.0)
    net = SimCrossbar.from_settings([4, 6, 2], input_gain=1.0)
    net.clamp(torch.rand(2, 4))
    with pytest.raises(ValueError, match="n: readings"):
        net.measure(0)


def test_a_mains_frequency_other_than_50_or_60_hz_is_one_message_wherever_it_is_given(tmp_path):
    said = "the mains frequency is 50 or 60 Hz (got 55"
    with pytest.raises(ConfigError, match=r"noise.line_frequency_hz: " + re.escape(said)):
        build_config({"noise": {"line_frequency_hz": 55}})
    lab = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples" / "lab-emulated.yaml").read_text())
    lab.setdefault("timing", {})["line_frequency_hz"] = 55
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump(lab))
    with pytest.raises(ConfigError, match=r"timing.line_frequency_hz: " + re.escape(said)):
        load_lab(tmp_path / "lab.yaml")
    with pytest.raises(ValueError, match=r"line_frequency_hz: " + re.escape(said)):
        ReadNoise(0.1, 1, "cpu", torch.float32, line_frequency_hz=55.0)
