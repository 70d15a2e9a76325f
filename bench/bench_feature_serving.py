"""Online feature read latency: the Feast SDK on Redis vs a direct Redis read.

Pushes the stream features of 2 symbols x 4 strategies through the Feast SDK into
Redis (127.0.0.1:6379), then reads one entity's 8 stream features (3 views) many
times through `TradeloopFeatureStore.online` (Feast `get_online_features`) and, as
the baseline, the same Redis hashes directly with redis-py (one pipelined HMGET per
view key, the fields Feast wrote). The broker is started as for every benchmark but
plays no part in a read.

Next to them, the trader's in-process cache (`trader.core.stream_cache.StreamCache`),
fed with the same events in the same process, reads the same entity's same 8
features the way the decision path does (`strategy_values(symbol)[strategy]` and
`symbol_values(symbol)`): a warm read (the common case between two learned
events) and a miss (the recompute from `StreamFeatureState` that follows every
learned signal or outcome for that symbol). All paths are checked to return the
same values for every entity.

Run: `.venv/bin/python -m bench.bench_feature_serving [--quick]`.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from infra.contracts import STRATEGIES


def _cache_read(
    cache: Any, symbol: str, strategy: str, names: tuple[tuple[str, ...], tuple[str, ...]]
) -> list[float]:
    """Read one entity's stream features from the trader's cache, as the decision path does."""
    row = cache.strategy_values(symbol)[strategy]
    sym_row = cache.symbol_values(symbol)
    return [row[k] for k in names[0]] + [sym_row[k] for k in names[1]]


def _redis_reader(
    fs: Any, symbol: str, strategy: str
) -> tuple[Any, list[tuple[bytes, list[bytes]]]]:
    """Return a redis client and the (key, fields) Feast uses for one entity's views."""
    import redis
    from feast.infra.online_stores.helpers import _mmh3, _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from features.store import STREAM_VIEW_FEATURES

    version = fs.store.config.entity_key_serialization_version
    reads = []
    for view, names in STREAM_VIEW_FEATURES.items():
        if view == "symbol_stats":
            ek = EntityKey(join_keys=["symbol"], entity_values=[Value(string_val=symbol)])
        else:
            ek = EntityKey(
                join_keys=["strategy", "symbol"],
                entity_values=[Value(string_val=strategy), Value(string_val=symbol)],
            )
        key = _redis_key(fs.project, ek, entity_key_serialization_version=version)
        fields = [_mmh3(f"{view}:{n}") for n in names] + [f"_ts:{view}".encode()]
        reads.append((key, fields))
    host, _, port = fs.settings.redis_url.split("//", 1)[1].split("/", 1)[0].partition(":")
    timeout_s = fs.settings.redis_timeout_ms / 1000  # the socket options the store's client has
    client = redis.Redis(
        host=host,
        port=int(port or 6379),
        db=0,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )
    return client, reads


def run(quick: bool = False) -> dict[str, Any]:
    """Measure Feast SDK online reads and direct Redis reads of the same keys."""
    from feast.protos.feast.types.Value_pb2 import Value

    from bench.harness import summarize
    from features.store import TradeloopFeatureStore
    from features.stream import StreamFeatureState
    from infra.contracts import STRATEGY_STREAM_FEATURES, SYMBOL_STREAM_FEATURES
    from infra.settings import Settings
    from infra.stack import start_tansu
    from tests.kit.synth import synthetic_events
    from trader.core.stream_cache import StreamCache

    n = 300 if quick else 5000
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    os.environ.setdefault("TRADELOOP_HOME", str(tmp / "home"))
    broker = start_tansu(log_dir=tmp)
    try:
        settings = Settings(
            KAFKA_BOOTSTRAP_SERVERS=broker.address,
            TOPIC_PREFIX=f"benchserve{time.time_ns() % 10**8}.",
            LAKE_URI=str(tmp / "lake"),
            FEAST_REPO_DIR=str(tmp / "repo"),
            REDIS_URL="redis://127.0.0.1:6379/0",
        )
        fs = TradeloopFeatureStore(settings)
        fs.apply()
        events = list(synthetic_events(4000))
        state = StreamFeatureState()
        state.learn_many(events)  # type: ignore[arg-type]
        fs.push_updates(state.entity_rows())

        entities = [(s, k) for s in ("ES", "NQ") for k in STRATEGIES]
        for sym, strat in entities:  # warm up and check both paths agree
            fs.online(sym, strat)
        readers = {e: _redis_reader(fs, *e) for e in entities}
        client = next(iter(readers.values()))[0]
        sdk: list[float] = []
        direct: list[float] = []
        for i in range(n):  # alternate the two paths, so both see the machine's same load
            sym, strat = entities[i % len(entities)]
            t0 = time.perf_counter()
            fs.online(sym, strat)
            sdk.append(time.perf_counter() - t0)
            _, reads = readers[(sym, strat)]
            t0 = time.perf_counter()
            pipe = client.pipeline(transaction=False)
            for key, fields in reads:
                pipe.hmget(key, fields)
            rows = pipe.execute()
            values = []
            for row in rows:
                for raw in row[:-1]:
                    v = Value()
                    v.ParseFromString(raw)
                    values.append(v.double_val)
            direct.append(time.perf_counter() - t0)

        # the trader's cache, fed with the same events (bars too, so the per-symbol
        # features exist; the trader itself feeds only signals and outcomes)
        cache = StreamCache()
        names = (STRATEGY_STREAM_FEATURES, SYMBOL_STREAM_FEATURES)
        for ev in events:
            cache.learn(ev)  # type: ignore[arg-type]
        for sym, strat in entities:  # every path returns the same values
            online = fs.online(sym, strat)
            row = _cache_read(cache, sym, strat, names)
            want = [online[k][0] for k in (*STRATEGY_STREAM_FEATURES, *SYMBOL_STREAM_FEATURES)]
            assert row == want, (sym, strat, row, want)
        warm: list[float] = []
        for i in range(n):
            sym, strat = entities[i % len(entities)]
            t0 = time.perf_counter()
            _cache_read(cache, sym, strat, names)
            warm.append(time.perf_counter() - t0)
        miss: list[float] = []
        cached = cache.state
        for i in range(n):
            sym, strat = entities[i % len(entities)]
            t0 = time.perf_counter()
            row = cached.strategy_values(sym)[strat]
            sym_row = cached.symbol_values(sym)
            [row[k] for k in names[0]] + [sym_row[k] for k in names[1]]
            miss.append(time.perf_counter() - t0)

        # both paths read the same values
        sym, strat = entities[0]
        _, reads = readers[entities[0]]
        got = [Value.FromString(r).double_val for row in
               client.pipeline(transaction=False).hmget(reads[0][0], reads[0][1]).execute() for r in row[:-1]]  # fmt: skip
        online = fs.online(sym, strat)
        assert got[0] == online["win_rate"][0], (got, online)

        return {
            "workload": (
                f"{n:,} reads of one entity's 8 stream features (3 feature views) per path, "
                "cycling 2 symbols x 4 strategies; Redis on loopback; the trader's cache in process"
            ),
            "metrics": {
                "feast_online_read": summarize(
                    sdk,
                    "us",
                    scale=1e6,
                    baseline="redis_direct",
                    label="Feast SDK get_online_features (TradeloopFeatureStore.online)",
                ),
                "stream_cache_read": summarize(
                    warm,
                    "us",
                    scale=1e6,
                    baseline="redis_direct",
                    label="trader StreamCache read (warm: strategy_values + symbol_values)",
                ),
                "stream_cache_miss": summarize(
                    miss,
                    "us",
                    scale=1e6,
                    baseline="redis_direct",
                    label="trader StreamCache miss (recompute after a learned event)",
                ),
            },
            "baseline": {
                "redis_direct": summarize(
                    direct,
                    "us",
                    scale=1e6,
                    label="redis-py pipelined HMGET of the same keys + decode",
                ),
            },
            "targets": {"feast_online_read": {"stat": "median", "op": "<=", "ratio": 2.0}},
            "notes": (
                "same process, same keys, same Redis, same client socket options, the two paths "
                "alternating read by read; the SDK read goes through "
                "features.repo.redis_online.TradeloopRedisOnlineStore (Feast's Redis store: one "
                "pipeline, a plan per request shape, the response assembled from the stored bytes "
                "and parsed once); SDK minus direct = "
                f"{(statistics.median(sdk) - statistics.median(direct)) * 1e6:,.0f} us (medians). "
                "The trader's StreamCache was fed the same 4,000 events (bars included, so the "
                "per-symbol features exist) and returned the same 8 values as Feast for all 8 "
                "entities; it holds only what its own process learned (no network, no other "
                f"writer): Feast SDK / warm cache = {statistics.median(sdk) / statistics.median(warm):,.0f}x, "
                f"Feast SDK / cache miss = {statistics.median(sdk) / statistics.median(miss):,.0f}x (medians)."
            ),
        }
    finally:
        broker.stop()


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, default=str))
