"""The Redis online store of the stream features: one pipeline per push or read, Feast's keys.

Pushes go through `TradeloopFeatureStore.push_updates` (prepared rows, one pipeline)
and must leave Redis byte for byte as Feast's own DataFrame push does; reads through
the Feast SDK (`get_online_features`, the store's lean path) must answer exactly
what Feast's own Redis read answers for the same request.
"""

from __future__ import annotations

import datetime as dt
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
# a value longer than 127 bytes (multi-byte lengths), keys in the other order, repeats
ODD = [{"strategy": STRATEGIES[1], "symbol": "ES"}, {"symbol": "Y" * 300, "strategy": "z"}] * 20


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


def _feasts_read(fs: TradeloopFeatureStore, features: list[str], rows: Any, full: bool) -> Any:
    store = fs.store
    online = store._get_provider().online_store
    return RedisOnlineStore.get_online_features(
        online, store.config, features, rows, store.registry, store.project,
        full_feature_names=full,
    )  # fmt: skip


@pytest.mark.parametrize("full_names", [False, True])
@pytest.mark.parametrize(
    "rows", [ENTITIES[:1], ENTITIES, UNKNOWN, ENTITIES[2:4] + UNKNOWN + ENTITIES[2:3], ODD]
)
def test_sdk_reads_equal_feasts_own_redis_read(
    pushed: tuple[TradeloopFeatureStore, Any], rows: list[dict[str, str]], full_names: bool
) -> None:
    fs, _ = pushed
    got = fs.store.get_online_features(
        features=list(ONLINE_FEATURES), entity_rows=rows, full_feature_names=full_names
    )
    want = _feasts_read(fs, list(ONLINE_FEATURES), rows, full_names)
    assert got.proto == want.proto
    store = fs.store
    lean = store._get_provider().online_store._lean_read(
        store.config, list(ONLINE_FEATURES), rows, store.registry, store.project, full_names, False
    )
    assert lean is not None and lean.proto == want.proto  # the lean path answered
    assert got.to_dict(include_event_timestamps=True) == want.to_dict(include_event_timestamps=True)


def test_requests_of_other_shapes_read_as_feast_does(
    pushed: tuple[TradeloopFeatureStore, Any],
) -> None:
    """Each feature list and column set gets its own plan; reads alternate between them."""
    fs, _ = pushed
    shapes = [
        (list(ONLINE_FEATURES), ENTITIES[:3]),
        (list(reversed(ONLINE_FEATURES)), ENTITIES[3:]),
        (["symbol_stats:regime"], [{"symbol": "NQ"}, {"symbol": "ES"}]),  # a symbol-only request
        (["signal_stats:signal_rate", "symbol_stats:realized_vol"], UNKNOWN),
    ]
    for _ in range(2):
        for features, rows in shapes:
            got = fs.store.get_online_features(features=features, entity_rows=rows)
            assert got.proto == _feasts_read(fs, features, rows, False).proto, features


def test_a_request_off_the_lean_path_reads_as_feast_does(
    pushed: tuple[TradeloopFeatureStore, Any],
) -> None:
    """Rows with unequal columns or non-string values take Feast's own read."""
    fs, _ = pushed
    online = fs.store._get_provider().online_store
    features = list(ONLINE_FEATURES)
    mixed = [ENTITIES[0], {"symbol": "ES"}]
    with pytest.raises(Exception) as ours:
        fs.store.get_online_features(features=features, entity_rows=mixed)
    with pytest.raises(type(ours.value)):
        _feasts_read(fs, features, mixed, False)
    columns = {"symbol": ["ES", "NQ"], "strategy": [STRATEGIES[0], STRATEGIES[1]]}
    got = fs.store.get_online_features(features=features, entity_rows=columns)
    assert got.proto == _feasts_read(fs, features, columns, False).proto
    assert online._lean_read(
        fs.store.config, features, columns, fs.store.registry, fs.project, False, False
    ) is None  # fmt: skip


def test_online_returns_the_folded_values(pushed: tuple[TradeloopFeatureStore, Any]) -> None:
    fs, state = pushed
    for row in ENTITIES:
        got = fs.online(row["symbol"], row["strategy"])
        want = {
            **state.strategy_values(row["symbol"]).get(row["strategy"], {}),
            **state.symbol_values(row["symbol"]),
        }
        assert {k: v for k, (v, _) in got.items() if k in want} == want


def test_online_returns_feasts_values_and_event_times(
    pushed: tuple[TradeloopFeatureStore, Any],
) -> None:
    fs, _ = pushed
    names = [ref.partition(":")[2] for ref in ONLINE_FEATURES]
    for row in ENTITIES + UNKNOWN:
        proto = _feasts_read(fs, list(ONLINE_FEATURES), [row], False).proto
        vectors = dict(zip(proto.metadata.feature_names.val, proto.results, strict=True))
        got = fs.online(row["symbol"], row["strategy"])
        assert sorted(got) == sorted(names)
        for name in names:
            value = vectors[name].values[0]
            stamp = vectors[name].event_timestamps[0]
            want_ts = stamp.ToDatetime(tzinfo=dt.UTC) if stamp.seconds or stamp.nanos else None
            want_value = value.double_val if value.HasField("double_val") else None
            assert got[name] == (want_value, want_ts), name
        if row in ENTITIES:  # the test reads something, and reads absence as None
            assert all(v is not None and ts is not None for v, ts in got.values())
        elif row["symbol"] == "ZZ":
            assert all(v == (None, None) for v in got.values())


def test_an_unknown_view_is_refused(pushed: tuple[TradeloopFeatureStore, Any]) -> None:
    fs, state = pushed
    bad = state.entity_rows()[0].model_copy(update={"feature_view": "nope"})
    with pytest.raises(KeyError, match="unknown stream feature view 'nope'"):
        fs.push_updates([bad])
