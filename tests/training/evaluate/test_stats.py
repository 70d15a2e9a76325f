"""The evaluation's statistics against references computed by others."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from training.evaluate.stats import (
    bootstrap_ci,
    deflated_sharpe,
    expected_max_sharpe,
    max_drawdown,
    moments,
    probabilistic_sharpe,
    sharpe,
    sortino,
)


def test_dsr_reproduces_the_papers_worked_example() -> None:
    # Bailey & López de Prado (2014), "The Deflated Sharpe Ratio", numerical example:
    # annualised SR 2.5 over 5 years of daily returns (T = 1250, 250 a year), N = 100
    # trials whose annualised Sharpe ratios have variance 0.5, skewness -3, kurtosis 10:
    # SR0 = 0.1132 (not annualised) and DSR = 0.9004.
    dsr, sr0 = deflated_sharpe(2.5 / math.sqrt(250), 1250, -3.0, 10.0, 100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    assert dsr == pytest.approx(0.9004, abs=5e-5)


def test_expected_max_sharpe_matches_the_monte_carlo_maximum_of_normal_trials() -> None:
    # the closed form approximates E[max of N standard normals] (scaled by the trials' std)
    rng = np.random.default_rng(11)
    for n in (10, 100, 1000):
        simulated = rng.standard_normal((4000, n)).max(axis=1).mean()
        assert expected_max_sharpe(n, 1.0) == pytest.approx(simulated, rel=0.03)
    assert expected_max_sharpe(1, 4.0) == 0.0


def test_psr_is_the_normal_tail_of_the_sharpe_ratio_estimate() -> None:
    # normal returns (skew 0, kurtosis 3): z = SR sqrt(T-1) / sqrt(1 + SR^2 / 2)
    sr, t = 0.1, 500
    z = sr * math.sqrt(t - 1) / math.sqrt(1 + sr * sr / 2)
    assert probabilistic_sharpe(sr, t, 0.0, 3.0) == pytest.approx(scipy.stats.norm.cdf(z))
    assert math.isnan(probabilistic_sharpe(sr, 1, 0.0, 3.0))


@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_bootstrap_interval_agrees_with_scipy(method: str) -> None:
    rng = np.random.default_rng(3)
    x = rng.lognormal(0.0, 1.0, 200) - 1.6  # skewed, as hourly PnL differences are
    ours = bootstrap_ci(x, level=0.9, n_resamples=20_000, method=method, seed=1)  # type: ignore[arg-type]
    ref = scipy.stats.bootstrap(
        (x,), np.mean, confidence_level=0.9, n_resamples=20_000, method=method, random_state=2
    ).confidence_interval
    width = ref.high - ref.low
    assert ours.estimate == pytest.approx(float(np.mean(x)))
    assert ours.low == pytest.approx(ref.low, abs=0.03 * width)
    assert ours.high == pytest.approx(ref.high, abs=0.03 * width)


def test_bootstrap_of_another_statistic_and_a_flat_sample() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal(120)
    ours = bootstrap_ci(x, np.median, n_resamples=5000, seed=0)
    ref = scipy.stats.bootstrap(
        (x,), np.median, n_resamples=5000, method="BCa", random_state=0
    ).confidence_interval
    assert ours.low == pytest.approx(ref.low, abs=0.06)
    assert ours.high == pytest.approx(ref.high, abs=0.06)
    flat = bootstrap_ci(np.full(10, 2.0), n_resamples=100)
    assert (flat.low, flat.estimate, flat.high) == (2.0, 2.0, 2.0)


def test_bootstrap_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="at least 2 observations"):
        bootstrap_ci(np.array([1.0]))
    with pytest.raises(ValueError, match="unknown bootstrap method"):
        bootstrap_ci(np.arange(5.0), method="studentized")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="confidence level"):
        bootstrap_ci(np.arange(5.0), level=1.5)


def test_sharpe_sortino_drawdown_and_moments_on_known_series() -> None:
    x = np.array([1.0, -1.0, 2.0, -2.0, 5.0])
    assert sharpe(x) == pytest.approx(1.0 / np.std(x, ddof=1))
    assert sharpe(x, 252) == pytest.approx(math.sqrt(252) / np.std(x, ddof=1))
    assert sortino(x) == pytest.approx(1.0 / math.sqrt((1 + 4) / 5))
    assert max_drawdown(np.array([100.0, -30.0, -50.0, 40.0, -70.0])) == pytest.approx(110.0)
    assert max_drawdown(np.array([-10.0, 5.0])) == pytest.approx(10.0)
    skew, kurt = moments(x)
    assert skew == pytest.approx(scipy.stats.skew(x))
    assert kurt == pytest.approx(scipy.stats.kurtosis(x, fisher=False))
    assert sharpe(np.zeros(4)) == 0.0 and sortino(np.ones(4)) == 0.0
