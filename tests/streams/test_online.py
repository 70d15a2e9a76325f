"""The worker's online pusher on the real Redis: pushes from the event loop.

`OnlinePusher.push_from_loop` writes the latest row per entity through the Feast
store (values read back through the SDK), times every push (histogram and the
timings file the benchmarks read), and gives the event loop back while a silent
Redis holds a push: the loop waits at most `inline_wait_s`, the rows are kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from features.store import TradeloopFeatureStore
from features.stream import StreamFeatureState
from infra.contracts import FeatureUpdate
from infra.settings import Settings
from streams.metrics import FEAST_PUSH_BUCKETS, StreamMetrics
from streams.online import PUSH_TIMINGS_ENV, OnlinePusher
from tests.kit.faults import ProxyKit
from tests.kit.synth import synthetic_events


@pytest.fixture(scope="module")
def proxied(
    make_module_settings: Callable[..., Settings], redis_url: str
) -> Iterator[tuple[TradeloopFeatureStore, Any]]:
    """A Feast repo whose online store is the machine's Redis behind a fault proxy."""
    kit = ProxyKit()
    redis = kit.to(redis_url.removeprefix("redis://").split("/")[0], name="redis")
    settings = make_module_settings(kafka=False, REDIS_URL=f"redis://{redis.address}/0",
                                    REDIS_TIMEOUT_MS=300)  # fmt: skip
    fs = TradeloopFeatureStore(settings)
    fs.apply()
    yield fs, redis
    kit.close()


def _updates(n: int) -> tuple[StreamFeatureState, list[FeatureUpdate]]:
    state = StreamFeatureState()
    outputs: list[Any] = []
    for e in synthetic_events(n):
        outputs.extend(state.learn(e))  # type: ignore[arg-type]
    return state, [o for o in outputs if isinstance(o, FeatureUpdate)]


def test_push_from_loop_writes_the_latest_rows_and_times_each_push(
    proxied: tuple[TradeloopFeatureStore, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs, _ = proxied
    timings = tmp_path / "push.txt"
    monkeypatch.setenv(PUSH_TIMINGS_ENV, str(timings))
    metrics = StreamMetrics()
    pusher = OnlinePusher(fs, metrics)
    state, updates = _updates(2000)
    half = len(updates) // 2

    async def two_pushes() -> list[int]:
        written = []
        for chunk in (updates[:half], updates[half:]):
            pusher.add(chunk)
            written.append(await pusher.push_from_loop(pusher.take()))
        return written

    written = asyncio.run(two_pushes())
    pusher.close()
    assert written == [len({(u.feature_view, u.symbol, u.strategy) for u in c})
                       for c in (updates[:half], updates[half:])]  # fmt: skip
    assert pusher.pending == 0 and pusher.rows_pushed == sum(written)
    for row in state.entity_rows():  # the online values are the last folded ones
        got = fs.online(row.symbol, row.strategy)
        assert {k: got[k][0] for k in row.values} == row.values
    lines = timings.read_text().split()
    assert len(lines) == 2 and all(0 < float(x) < 60 for x in lines)
    count = metrics.registry.get_sample_value("tradeloop_feast_push_seconds_count")
    assert count == 2
    bounds = [
        metrics.registry.get_sample_value("tradeloop_feast_push_seconds_bucket", {"le": str(b)})
        for b in FEAST_PUSH_BUCKETS
    ]
    assert None not in bounds and bounds == sorted(bounds)  # type: ignore[type-var]


def test_a_silent_redis_gives_the_loop_back_and_keeps_the_rows(
    proxied: tuple[TradeloopFeatureStore, Any],
) -> None:
    fs, redis = proxied
    pusher = OnlinePusher(fs, StreamMetrics(), inline_wait_s=0.01)
    _, updates = _updates(500)
    pusher.add(updates)
    assert asyncio.run(pusher.push_from_loop(pusher.take())) > 0  # connected while healthy

    async def push_while_silent() -> tuple[bool, int, BaseException | None]:
        pusher.add(updates)
        batch = pusher.take()
        before = pusher.waited_out
        task = asyncio.create_task(pusher.push_from_loop(batch))
        # the task's first step: it gives the loop back while Redis is silent
        await asyncio.sleep(0)
        held = not task.done()
        waited_out = pusher.waited_out - before
        try:
            await task
        except Exception as exc:  # the push fails once Redis's timeout passes
            pusher.requeue(batch)
            return held, waited_out, exc
        return held, waited_out, None

    redis.set("blackhole")
    held, waited_out, error = asyncio.run(push_while_silent())
    assert held and waited_out == 1
    assert error is not None
    assert pusher.pending == len({(u.feature_view, u.symbol, u.strategy) for u in updates})
    redis.heal()
    assert asyncio.run(pusher.push_from_loop(pusher.take())) == pusher.rows_pushed // 2
    pusher.close()


def test_warm_connects_before_the_first_push_and_a_silent_redis_only_logs(
    proxied: tuple[TradeloopFeatureStore, Any], caplog: pytest.LogCaptureFixture
) -> None:
    fs, redis = proxied
    _, updates = _updates(300)
    fresh = TradeloopFeatureStore(fs.settings)  # a client of its own: no connection yet
    pusher = OnlinePusher(fresh, StreamMetrics())
    accepted = redis.counters.accepted
    pusher.warm().result(timeout=10)
    assert redis.counters.accepted == accepted + 1
    pusher.add(updates)
    assert asyncio.run(pusher.push_from_loop(pusher.take())) > 0
    assert redis.counters.accepted == accepted + 1  # the first push used that connection
    pusher.close()

    silent = OnlinePusher(TradeloopFeatureStore(fs.settings), StreamMetrics())
    redis.set("blackhole")
    try:
        with caplog.at_level("WARNING", logger="streams.online"):
            assert silent.warm().result(timeout=10) is None  # logged, not raised
    finally:
        redis.heal()
    assert "online store warm-up failed" in caplog.text
    silent.add(updates)
    assert asyncio.run(silent.push_from_loop(silent.take())) > 0  # the first push connects
    silent.close()
