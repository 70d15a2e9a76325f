"""The Redis online store of the stream features: one pipeline per push or read, Feast's keys.

Pushes go through `TradeloopFeatureStore.push_updates` (prepared rows, one pipeline)
and must leave Redis byte for byte as Feast's own DataFrame push does; reads through
the Feast SDK (`get_online_features`, the store's lean path) must answer exactly
what Feast's own Redis read answers for the same request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from feast.infra.online_stores.redis import RedisOnlineStore

from features.repo.redis_online import TradeloopRedisOnlineStore
from features.store import ONLINE_FEATURES, TradeloopFeatureStore
from features.stream import StreamFeatureState
from infra.contracts import STRATEGIES
from infra.settings import Settings
from tests.kit.synth import synthetic_events

ENTITIES = [{"symbol": s, "strategy": k} for s in ("ES", "NQ") for k in STRATEGIES]
UNKNOWN = [{"symbol": "ZZ", "strategy": STRATEGIES[0]}, {"symbol": "ES", "strategy": "none"}]


@pytest.fixture(scope="module")
def pushed(make_module_settings: Callable[..., Settings]) -> tuple[TradeloopFeatureStore, Any]:
    """A repo on Redis with the stream features of 3,000 events pushed online."""
    settings = make_module_settings(kafka=False, redis=True)
    fs = TradeloopFeatureStore(settings)
    fs.apply()
    state = StreamFeatureState()
    state.learn_many(list(synthetic_events(3000)))  # type: ignore[arg-type]
    assert fs.push_updates(state.entity_rows()) == len(state.entity_rows())
    return fs, state


def _hashes(fs: TradeloopFeatureStore) -> dict[bytes, Any]:
    client = redis.Redis.from_url(fs.settings.redis_url)
    project = fs.project.encode()
    return {k: client.hgetall(k) for k in client.scan_iter(count=1000) if k.endswith(project)}


def test_the_store_class_is_feasts_redis_store(pushed: tuple[TradeloopFeatureStore, Any]) -> None:
    fs, _ = pushed
    online = fs.store._get_provider().online_store
    assert isinstance(online, TradeloopRedisOnlineStore)
    assert isinstance(online, RedisOnlineStore)


def test_push_writes_what_feasts_own_push_writes(pushed: tuple[TradeloopFeatureStore, Any]) -> None:
    fs, state = pushed
    ours = _hashes(fs)
    assert len(ours) == len({(u.symbol, u.strategy) for u in state.entity_rows()})
    client = redis.Redis.from_url(fs.settings.redis_url)
    client.delete(*ours)
    rows: dict[str, list[dict[str, Any]]] = {}
    for u in state.entity_rows():
        rows.setdefault(u.feature_view, []).append(
            {"symbol": u.symbol, "strategy": u.strategy, "values": u.values, "ts_event": u.ts_event}
        )
    for view, view_rows in rows.items():
        fs.push(view, view_rows)  # Feast's push: DataFrame, Arrow, online_write_batch
    assert _hashes(fs) == ours


@pytest.mark.parametrize("full_names", [False, True])
@pytest.mark.parametrize(
    "rows", [ENTITIES[:1], ENTITIES, UNKNOWN, ENTITIES[2:4] + UNKNOWN + ENTITIES[2:3]]
)
def test_sdk_reads_equal_feasts_own_redis_read(
    pushed: tuple[TradeloopFeatureStore, Any], rows: list[dict[str, str]], full_names: bool
) -> None:
    fs, _ = pushed
    store = fs.store
    online = store._get_provider().online_store
    got = store.get_online_features(
        features=list(ONLINE_FEATURES), entity_rows=rows, full_feature_names=full_names
    )
    want = RedisOnlineStore.get_online_features(
        online, store.config, list(ONLINE_FEATURES), rows, store.registry, store.project,
        full_feature_names=full_names,
    )  # fmt: skip
    assert got.proto == want.proto
    assert got.to_dict() == want.to_dict()


def test_online_returns_the_folded_values(pushed: tuple[TradeloopFeatureStore, Any]) -> None:
    fs, state = pushed
    for row in ENTITIES:
        got = fs.online(row["symbol"], row["strategy"])
        want = {
            **state.strategy_values(row["symbol"]).get(row["strategy"], {}),
            **state.symbol_values(row["symbol"]),
        }
        assert {k: v for k, (v, _) in got.items() if k in want} == want


def test_an_unknown_view_is_refused(pushed: tuple[TradeloopFeatureStore, Any]) -> None:
    fs, state = pushed
    bad = state.entity_rows()[0].model_copy(update={"feature_view": "nope"})
    with pytest.raises(KeyError, match="unknown stream feature view 'nope'"):
        fs.push_updates([bad])
