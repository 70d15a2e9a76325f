"""Statistics of an evaluation: Sharpe, Sortino, drawdown, bootstrap intervals, the DSR.

- `bootstrap_ci`: the percentile or the bias-corrected and accelerated (BCa,
  Efron 1987) interval of a statistic of one sample, resampled with replacement;
  the same method as `scipy.stats.bootstrap` (a test holds them together).
- `probabilistic_sharpe` (PSR) and `deflated_sharpe` (DSR): Bailey and López de
  Prado, "The Deflated Sharpe Ratio" (2014). PSR is the probability that the true
  Sharpe ratio exceeds a benchmark given the sample's length, skewness and
  kurtosis; the DSR takes as benchmark the Sharpe ratio the best of N unskilled
  trials would show (`expected_max_sharpe`). Sharpe ratios here are per period,
  not annualised; kurtosis is the plain (not excess) fourth moment ratio.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import ndtr, ndtri

__all__ = [
    "EULER_GAMMA",
    "Interval",
    "bootstrap_ci",
    "deflated_sharpe",
    "expected_max_sharpe",
    "max_drawdown",
    "moments",
    "probabilistic_sharpe",
    "sharpe",
    "sortino",
]

EULER_GAMMA = 0.5772156649015329
Method = Literal["BCa", "percentile"]


@dataclass(frozen=True)
class Interval:
    """A point estimate and its two-sided confidence interval."""

    estimate: float
    low: float
    high: float
    level: float
    method: str
    n: int

    def to_dict(self) -> dict[str, float | str | int]:
        """Return the interval as plain JSON values."""
        return {
            "estimate": self.estimate,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "method": self.method,
            "n": self.n,
        }


def sharpe(x: np.ndarray, periods_per_year: float = 1.0) -> float:
    """Return mean / standard deviation (ddof 1) x √periods; 0 when it is undefined."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return 0.0
    sd = float(np.std(x, ddof=1))
    return float(np.mean(x)) / sd * math.sqrt(periods_per_year) if sd > 0 else 0.0


def sortino(x: np.ndarray, periods_per_year: float = 1.0) -> float:
    """Return mean / downside deviation (root mean square of the losses) x √periods."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return 0.0
    down = math.sqrt(float(np.mean(np.minimum(x, 0.0) ** 2)))
    return float(np.mean(x)) / down * math.sqrt(periods_per_year) if down > 0 else 0.0


def max_drawdown(pnl: np.ndarray) -> float:
    """Return the largest fall of cumulative PnL from a previous peak (≥ 0; from 0 at the start)."""
    x = np.asarray(pnl, dtype=np.float64)
    if not len(x):
        return 0.0
    equity = np.concatenate([[0.0], np.cumsum(x)])
    return float(np.max(np.maximum.accumulate(equity) - equity))


def moments(x: np.ndarray) -> tuple[float, float]:
    """Return the skewness and the (plain) kurtosis of a sample; (0, 3) when flat."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return 0.0, 3.0
    d = x - x.mean()
    m2 = float(np.mean(d**2))
    if m2 <= 0:
        return 0.0, 3.0
    return float(np.mean(d**3)) / m2**1.5, float(np.mean(d**4)) / m2**2


def _stat_of_resamples(
    x: np.ndarray, idx: np.ndarray, stat: Callable[..., np.ndarray]
) -> np.ndarray:
    return np.asarray(stat(x[idx], axis=-1), dtype=np.float64)


def _jackknife(x: np.ndarray, stat: Callable[..., np.ndarray], rows: int = 256) -> np.ndarray:
    """Return the statistic of each leave-one-out sample (in blocks of `rows`)."""
    n = len(x)
    base = np.arange(n - 1)
    out = []
    for start in range(0, n, rows):
        left = np.arange(start, min(n, start + rows))
        idx = base[None, :] + (base[None, :] >= left[:, None])  # skip index `left`
        out.append(np.asarray(stat(x[idx], axis=-1), dtype=np.float64))
    return np.concatenate(out)


def bootstrap_ci(
    x: np.ndarray,
    stat: Callable[..., np.ndarray] = np.mean,
    *,
    level: float = 0.95,
    n_resamples: int = 9999,
    method: Method = "BCa",
    seed: int = 0,
    batch: int = 1000,
) -> Interval:
    """Return the bootstrap interval of `stat(x)` (`stat` takes an `axis` argument)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    n = len(x)
    if n < 2:
        raise ValueError(f"bootstrap needs at least 2 observations, got {n}")
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    estimate = float(stat(x, axis=-1))
    rng = np.random.Generator(np.random.PCG64(seed))
    parts = []
    for start in range(0, n_resamples, batch):
        k = min(batch, n_resamples - start)
        parts.append(_stat_of_resamples(x, rng.integers(0, n, size=(k, n)), stat))
    boot = np.concatenate(parts)
    alpha = (1.0 - level) / 2.0
    if method == "percentile":
        lo_q, hi_q = alpha, 1.0 - alpha
    elif method == "BCa":
        below = (np.count_nonzero(boot < estimate) + np.count_nonzero(boot <= estimate)) / (
            2.0 * len(boot)
        )
        z0 = float(ndtri(below))
        jack = _jackknife(x, stat)
        d = jack.mean() - jack
        denom = 6.0 * float(np.sum(d**2)) ** 1.5
        a = float(np.sum(d**3)) / denom if denom > 0 else 0.0
        qs = []
        for z_alpha in (float(ndtri(alpha)), float(ndtri(1.0 - alpha))):
            qs.append(float(ndtr(z0 + (z0 + z_alpha) / (1.0 - a * (z0 + z_alpha)))))
        lo_q, hi_q = qs
    else:
        raise ValueError(f"unknown bootstrap method {method!r}: BCa or percentile")
    if not (math.isfinite(lo_q) and math.isfinite(hi_q)):  # a flat sample: no spread
        return Interval(estimate, estimate, estimate, level, method, n)
    low, high = np.percentile(boot, [100.0 * lo_q, 100.0 * hi_q])
    return Interval(estimate, float(low), float(high), level, method, n)


def probabilistic_sharpe(
    sr: float, n_obs: int, skew: float, kurtosis: float, benchmark: float = 0.0
) -> float:
    """Return PSR: P(true Sharpe > benchmark) for a per-period Sharpe `sr` over `n_obs` periods."""
    if n_obs < 2:
        return float("nan")
    var = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if var <= 0:
        return float("nan")
    return float(ndtr((sr - benchmark) * math.sqrt(n_obs - 1) / math.sqrt(var)))


def expected_max_sharpe(n_trials: int, var_trials: float, mean_trials: float = 0.0) -> float:
    """Return the expected maximum Sharpe ratio of `n_trials` unskilled trials (the DSR's SR0)."""
    if n_trials <= 1 or var_trials <= 0:
        return mean_trials
    n = float(n_trials)
    z = (1.0 - EULER_GAMMA) * float(ndtri(1.0 - 1.0 / n)) + EULER_GAMMA * float(
        ndtri(1.0 - 1.0 / (n * math.e))
    )
    return mean_trials + math.sqrt(var_trials) * z


def deflated_sharpe(
    sr: float, n_obs: int, skew: float, kurtosis: float, n_trials: int, var_trials: float
) -> tuple[float, float]:
    """Return (DSR, SR0): PSR of `sr` against the expected best of `n_trials` trials."""
    sr0 = expected_max_sharpe(n_trials, var_trials)
    return probabilistic_sharpe(sr, n_obs, skew, kurtosis, benchmark=sr0), sr0
