"""The batched backtest equals the incremental one: same events, values and statistics."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bench.bench_decision import build_models
from features.compute import MarketFeatures
from features.tape import TapeFeatures
from infra.contracts import Event
from infra.settings import Settings
from tests.kit.events import content
from trader.core.bar import MarketBar
from trader.core.engine import Engine, EngineConfig
from trader.core.strategies import STRATEGY_CLASSES
from trader.core.tape_run import BatchedRunError, run_batched
from trader.delivery.models import EMPTY, ModelHolder, ModelSet
from trader.feeds.sim import SimFeed

N_BARS = 8 * 23 * 60 * 2  # eight simulated days of ES and NQ


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> ModelSet:
    out = tmp_path_factory.mktemp("models")
    build_models(out, small=True, seed=5)
    return ModelSet.from_dir(out)


@pytest.fixture(scope="module")
def bars() -> list[MarketBar]:
    return list(itertools.islice(iter(SimFeed(("ES", "NQ"), seed=21)), N_BARS))


def _engine(models: ModelSet, events: list[Event], **env: object) -> Engine:
    return Engine(
        Settings(_env_file=None, **env),  # type: ignore[call-arg]
        EngineConfig(run_id="parity", source="sim", record_metrics=False),
        ModelHolder(models),
        sinks=[lambda topic, ev: events.append(ev)],
    )


def _both(
    bars: list[MarketBar], models: ModelSet, chunk_bars: int, **env: object
) -> tuple[Engine, list[dict], Engine, list[dict]]:
    one: list[Event] = []
    incremental = _engine(models, one, **env)
    assert incremental.run(bars) == len(bars)
    incremental.finish()
    other: list[Event] = []
    batched = _engine(models, other, **env)
    assert run_batched(batched, bars, chunk_bars=chunk_bars) == len(bars)
    batched.finish()
    ids_a: dict[str, int] = {}
    ids_b: dict[str, int] = {}
    return (
        incremental,
        [content(e, ids_a) for e in one],
        batched,
        [content(e, ids_b) for e in other],
    )


def _assert_same(a: Engine, events_a: list[dict], b: Engine, events_b: list[dict]) -> None:
    assert len(events_a) == len(events_b)
    for i, (x, y) in enumerate(zip(events_a, events_b, strict=True)):
        assert x == y, f"event {i} differs"
    assert a.stats.summary() == b.stats.summary()
    assert a.equity == b.equity and a.realized_pnl_usd == b.realized_pnl_usd
    assert (a.bars, a.ignored_bars, a.events_emitted) == (b.bars, b.ignored_bars, b.events_emitted)
    assert a.risk.state() == b.risk.state()


def test_batched_backtest_with_models_emits_the_incremental_events(
    bars: list[MarketBar], models: ModelSet
) -> None:
    a, events_a, b, events_b = _both(bars, models, chunk_bars=3_001)
    signals = [e for e in events_a if "decision" in e]
    outcomes = [e for e in events_a if "exit_reason" in e]
    assert len(signals) > 100 and len(outcomes) > 100
    assert any(s["decision"]["taken"] for s in signals)
    assert any(s["decision"]["path"] == "models" for s in signals)
    _assert_same(a, events_a, b, events_b)


@pytest.mark.parametrize(
    "env",
    [
        {"FLATTEN_AT_SESSION_END": "0"},  # strategies on any session hour, trades held overnight
        {"PROP_DAILY_LOSS_LIMIT_USD": 300, "PROP_MAX_LOSS_LIMIT_USD": 1500},  # marks, breaches
    ],
    ids=["no-flatten", "prop-rules"],
)
def test_batched_backtest_by_the_rules_matches_under_other_settings(
    bars: list[MarketBar], env: dict[str, object]
) -> None:
    a, events_a, b, events_b = _both(bars, EMPTY, chunk_bars=10_000, **env)
    assert sum("decision" in e for e in events_a) > 100
    _assert_same(a, events_a, b, events_b)


def test_batched_run_counts_foreign_bars_stops_at_max_bars_and_continues(
    bars: list[MarketBar],
) -> None:
    foreign = [MarketBar("CL", b.ts_s, 70.0, 70.5, 69.5, 70.1, 10.0) for b in bars[:50]]
    mixed = [x for pair in zip(bars[:50], foreign, strict=True) for x in pair] + bars[50:6_000]
    one: list[Event] = []
    incremental = _engine(EMPTY, one)
    incremental.run(mixed, max_bars=4_000)
    incremental.run(mixed[4_000:])
    other: list[Event] = []
    batched = _engine(EMPTY, other)
    assert run_batched(batched, mixed, max_bars=4_000, chunk_bars=1_500) == 4_000
    assert run_batched(batched, mixed[4_000:], chunk_bars=700) == len(mixed) - 4_000
    assert batched.ignored_bars == incremental.ignored_bars == 50
    ids_a: dict[str, int] = {}
    ids_b: dict[str, int] = {}
    _assert_same(
        incremental,
        [content(e, ids_a) for e in one],
        batched,
        [content(e, ids_b) for e in other],
    )


def test_a_batched_run_needs_an_engine_without_incremental_state(bars: list[MarketBar]) -> None:
    engine = _engine(EMPTY, [])
    engine.run(bars[:10])
    with pytest.raises(BatchedRunError, match="10 bars incrementally"):
        run_batched(engine, bars[10:20])


def test_strategy_directions_over_a_tape_equal_the_per_bar_directions(
    bars: list[MarketBar],
) -> None:
    for symbol in ("ES", "NQ"):
        own = [b for b in bars if b.symbol == symbol]
        f = MarketFeatures(symbol)
        expected: dict[str, list[int]] = {s: [] for s in STRATEGY_CLASSES}
        for b in own:
            f.push(b.ts_s, b.open, b.high, b.low, b.close, b.volume)
            for sid, cls in STRATEGY_CLASSES.items():
                expected[sid].append(cls.direction(cls.__new__(cls), f))
        tape = TapeFeatures(symbol)
        tape.extend(
            np.array([b.ts_s for b in own], np.int64),
            *(
                np.array([getattr(b, k) for b in own])
                for k in ("open", "high", "low", "close", "volume")
            ),
        )
        for sid, cls in STRATEGY_CLASSES.items():
            got = cls.directions(tape.cols).tolist()
            assert got == expected[sid], sid
            assert sum(1 for d in got if d) > 20, sid  # each strategy fires in the sample
