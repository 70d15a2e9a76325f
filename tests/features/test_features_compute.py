"""Snapshot features: incremental equals batch, warm-up, session flags across DST."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from features.batch import batch_features
from features.compute import WARMUP_BARS, MarketFeatures, et_clock
from infra.contracts import FEATURE_NAMES, Bar
from trader.feeds.sim import SimFeed

IDX = {n: i for i, n in enumerate(FEATURE_NAMES)}


def _columns(bars: list) -> tuple[np.ndarray, ...]:
    return tuple(
        np.array([getattr(b, k) for b in bars])
        for k in ("ts_s", "open", "high", "low", "close", "volume")
    )


@pytest.fixture(scope="module")
def sim_bars() -> dict[str, list]:
    out: dict[str, list] = {"ES": [], "NQ": []}
    for bar in SimFeed(("ES", "NQ"), seed=3, days=6):
        out[bar.symbol].append(bar)
    return out


@pytest.mark.parametrize("symbol", ["ES", "NQ"])
def test_incremental_equals_batch(sim_bars: dict[str, list], symbol: str) -> None:
    bars = sim_bars[symbol]
    mf = MarketFeatures(symbol)
    rows = []
    for bar in bars:
        vec = mf.update(bar)
        rows.append(np.full(len(FEATURE_NAMES), np.nan, np.float32) if vec is None else vec)
    incremental = np.vstack(rows)
    batch = batch_features(*_columns(bars))
    assert incremental.shape == batch.shape == (len(bars), len(FEATURE_NAMES))
    assert incremental.dtype == np.float32
    assert np.array_equal(np.isnan(incremental), np.isnan(batch))
    ready = ~np.isnan(batch[:, 0])
    np.testing.assert_allclose(incremental[ready], batch[ready], rtol=2e-4, atol=2e-6)
    # every feature varies across the run (none is a constant placeholder)
    assert all(np.nanstd(batch[:, j]) > 0 for j in range(len(FEATURE_NAMES)))


def test_warmup_returns_none_then_vectors(sim_bars: dict[str, list]) -> None:
    mf = MarketFeatures("ES")
    results = [mf.update(b) for b in sim_bars["ES"][: WARMUP_BARS + 5]]
    assert all(r is None for r in results[: WARMUP_BARS - 1])
    assert all(
        r is not None and r.shape == (len(FEATURE_NAMES),) for r in results[WARMUP_BARS - 1 :]
    )


def test_update_accepts_bar_events() -> None:
    mf = MarketFeatures("ES")
    t0 = int(datetime(2024, 3, 5, 14, 31, tzinfo=UTC).timestamp())
    last = None
    for i in range(WARMUP_BARS):
        price = 5000 + (i % 7) * 0.25
        ev = Bar(
            ts_event=datetime.fromtimestamp(t0 + 60 * i, UTC),
            symbol="ES",
            open=price,
            high=price + 0.5,
            low=price - 0.5,
            close=price,
            volume=100 + i,
        )
        last = mf.update(ev)
    assert last is not None and np.all(np.isfinite(last))


@pytest.mark.parametrize(
    ("utc", "rth", "opening"),
    [
        (datetime(2024, 1, 8, 14, 31, tzinfo=UTC), 1.0, 1.0),  # 09:31 EST
        (datetime(2024, 7, 8, 13, 31, tzinfo=UTC), 1.0, 1.0),  # 09:31 EDT
        (datetime(2024, 7, 8, 14, 31, tzinfo=UTC), 1.0, 0.0),  # 10:31 EDT
        (datetime(2024, 1, 8, 21, 0, tzinfo=UTC), 1.0, 0.0),  # 16:00 EST, the last RTH bar
        (datetime(2024, 1, 8, 21, 1, tzinfo=UTC), 0.0, 0.0),  # 16:01 EST
        (datetime(2024, 7, 8, 13, 30, tzinfo=UTC), 0.0, 0.0),  # 09:30 EDT closes the pre-open bar
        (datetime(2024, 7, 6, 15, 0, tzinfo=UTC), 0.0, 0.0),  # a Saturday
    ],
)
def test_session_flags_use_us_eastern(utc: datetime, rth: float, opening: float) -> None:
    ts = int(utc.timestamp())
    out = batch_features(
        ts - 60 * np.arange(WARMUP_BARS)[::-1],
        *(np.full(WARMUP_BARS, 5000.0) for _ in range(4)),
        np.full(WARMUP_BARS, 100.0),
    )
    assert out[-1, IDX["session_rth"]] == rth
    assert out[-1, IDX["session_open_30"]] == opening
    minute, _, _ = et_clock(ts)
    angle = 2 * np.pi * minute / 1440
    assert out[-1, IDX["tod_sin"]] == pytest.approx(np.sin(angle), abs=1e-6)
