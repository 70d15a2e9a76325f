"""Models, decisions (models and rules), snapshots/outcomes, and replay determinism."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bench.bench_decision import build_models
from features.stream import StreamFeatureState
from features.vectors import MODEL_FEATURES, SIZE_MAX, SIZE_MIN
from infra.contracts import (
    FEATURE_NAMES,
    STRATEGIES,
    Event,
    OrderEvent,
    SignalSnapshot,
    TradeOutcome,
    decode,
    encode,
)
from infra.contracts.vocab import (
    OUTCOME_STREAM_FEATURES,
    SIGNAL_STREAM_FEATURES,
    SYMBOL_STREAM_FEATURES,
)
from infra.settings import Settings
from tests.kit.events import content
from trader.core.decision import RULE_PRIORITY
from trader.core.engine import Engine, EngineConfig
from trader.core.stream_cache import StreamCache
from trader.delivery.models import EMPTY, ModelHolder, ModelLoadError, ModelSet
from trader.feeds.sim import SimFeed

N_BARS = 8 * 23 * 60 * 2  # eight simulated days of ES and NQ


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models")
    build_models(out, small=True, seed=3)
    return out


@pytest.fixture(scope="module")
def bars() -> list:
    return list(itertools.islice(iter(SimFeed(("ES", "NQ"), seed=9)), N_BARS))


def _settings(**env: object) -> Settings:
    return Settings(_env_file=None, **env)  # type: ignore[call-arg]


def _run(
    bars: list, models: ModelSet, settings: Settings | None = None, run_id: str = "r1"
) -> tuple[Engine, list[Event]]:
    events: list[Event] = []
    engine = Engine(
        settings or _settings(),
        EngineConfig(run_id=run_id, source="sim", record_metrics=False),
        ModelHolder(models),
        sinks=[lambda topic, ev: events.append(ev)],
    )
    engine.run(bars)
    engine.finish()
    return engine, events


def test_model_set_loads_from_dir_paths_and_bytes(models_dir: Path) -> None:
    from_dir = ModelSet.from_dir(models_dir)
    assert from_dir.families == ("meta", "exec", "sizer")
    paths = {f: models_dir / f"{f}.onnx" for f in ("meta", "exec", "sizer")}
    from_paths = ModelSet.from_paths(paths["meta"], paths["exec"], paths["sizer"])
    assert from_paths.versions == from_dir.versions
    blobs = {f: p.read_bytes() for f, p in paths.items()}
    from_bytes = ModelSet.from_bytes(blobs, "2024.06.01-1")
    assert from_bytes.versions == dict.fromkeys(("exec", "meta", "sizer"), "2024.06.01-1")
    assert from_bytes.release == "2024.06.01-1"
    probe = from_bytes.probe()
    assert sum(probe["meta"]) == pytest.approx(1.0, abs=1e-4)
    assert SIZE_MIN <= probe["sizer"][0] <= SIZE_MAX
    with pytest.raises(AttributeError):
        from_bytes.release = "x"  # type: ignore[misc]
    # bucket layout: {family}/{version}/*.onnx, the latest version wins
    nested = models_dir.parent / "nested"
    for version in ("v1", "v2"):
        for f, blob in blobs.items():
            (nested / f / version).mkdir(parents=True, exist_ok=True)
            (nested / f / version / "model.onnx").write_bytes(blob)
    assert ModelSet.from_dir(nested).versions == dict.fromkeys(("exec", "meta", "sizer"), "v2")
    settings = _settings(
        META_ONNX=str(paths["meta"]), RL_ONNX=str(paths["sizer"]), ALLOW_UNSIGNED_MODELS="1"
    )
    assert ModelSet.from_settings(settings).families == ("meta", "sizer")
    assert ModelSet.from_settings(_settings()) is EMPTY


def test_wrong_io_or_garbage_is_rejected(models_dir: Path) -> None:
    blobs = {f: (models_dir / f"{f}.onnx").read_bytes() for f in ("meta", "exec", "sizer")}
    with pytest.raises(ModelLoadError, match="input 'obs' missing"):
        ModelSet.from_bytes({"sizer": blobs["meta"]}, "v")
    with pytest.raises(ModelLoadError, match="cannot load"):
        ModelSet.from_bytes({"exec": b"not onnx"}, "v")
    with pytest.raises(ModelLoadError):
        ModelSet.from_bytes({"meta": blobs["exec"]}, "v")


def test_holder_swaps_atomically(models_dir: Path) -> None:
    holder = ModelHolder()
    assert holder.current is EMPTY
    new = ModelSet.from_dir(models_dir)
    assert holder.swap(new) is EMPTY
    assert holder.current is new and holder.swaps == 1


def _pairs(events: list[Event]) -> tuple[list[SignalSnapshot], list[TradeOutcome]]:
    return (
        [e for e in events if isinstance(e, SignalSnapshot)],
        [e for e in events if isinstance(e, TradeOutcome)],
    )


def test_models_decide_and_every_candidate_gets_a_snapshot_and_an_outcome(
    bars: list, models_dir: Path
) -> None:
    models = ModelSet.from_dir(models_dir)
    engine, events = _run(bars, models)
    signals, outcomes = _pairs(events)
    assert signals and outcomes
    by_signal = Counter(o.signal_id for o in outcomes)
    assert set(by_signal) == {s.event_id for s in signals} and set(by_signal.values()) == {1}
    taken = {s.event_id for s in signals if s.decision.taken}
    assert taken and all(o.counterfactual == (o.signal_id not in taken) for o in outcomes)
    assert all(o.quantity == 1 for o in outcomes if o.counterfactual)
    fired = {(s.symbol, s.strategy) for s in signals}
    assert fired == {(sym, st) for sym in ("ES", "NQ") for st in STRATEGIES}
    for s in signals:
        d = s.decision
        assert d.path == "models" and s.model_versions == models.versions
        assert set(d.probabilities) == set(STRATEGIES)
        assert s.feature_names == FEATURE_NAMES and len(s.features) == len(FEATURE_NAMES)
        assert d.chosen_strategy in s.candidates and s.strategy in s.candidates
        assert d.reason != "" and (d.taken == (d.reason == "taken"))
        if d.taken:
            assert d.contracts >= 1 and SIZE_MIN <= d.size_multiplier <= SIZE_MAX
            assert d.predicted_r is not None and d.predicted_r > 0
        # the meta classifier's favourite among the candidates is the chosen one
        best = max(s.candidates, key=lambda c: d.probabilities[c])
        assert d.chosen_strategy == best
    reasons = Counter(s.decision.reason for s in signals)
    assert reasons["taken"] > 0 and reasons["not_chosen"] > 0
    assert engine.status()["open_positions"] == 0
    # the engine builds its signals, decisions and outcomes unvalidated: each one validates
    for e in [*signals, *outcomes]:
        assert type(e).model_validate(e.model_dump(by_alias=True)) == e
        assert decode(encode(e)) == e


def test_the_stream_cache_updated_per_key_equals_a_full_recomputation(
    bars: list, models_dir: Path
) -> None:
    """The engine's cache replaces one strategy's row per outcome, in a new mapping."""
    _, events = _run(bars, ModelSet.from_dir(models_dir))
    learned = [e for e in events if isinstance(e, (SignalSnapshot, TradeOutcome))]
    assert sum(isinstance(e, TradeOutcome) for e in learned) > 100
    cache = StreamCache()
    full = StreamFeatureState(detect_drift=False)  # as the streams workers: signals too
    for e in learned:
        other = "NQ" if e.symbol == "ES" else "ES"
        before, untouched = cache.strategy_values(e.symbol), cache.strategy_values(other)
        cache("topic", e)
        full.learn(e)
        after = cache.strategy_values(e.symbol)
        assert cache.strategy_values(other) is untouched
        if isinstance(e, SignalSnapshot):  # no model reads what a signal feeds
            assert after is before
            continue
        assert after is not before  # the decider tells a change by identity
        assert after == cache.state.strategy_values(e.symbol)
        # every feature a model reads is the full state's, bit for bit
        for strategy, row in full.strategy_values(e.symbol).items():
            mine = after.get(strategy, dict.fromkeys(row, 0.0))
            assert {k: mine[k] for k in OUTCOME_STREAM_FEATURES} == {
                k: row[k] for k in OUTCOME_STREAM_FEATURES
            }


def test_no_model_reads_a_stream_feature_the_trader_does_not_learn() -> None:
    """The trader's cache learns outcomes only: a model input fed by signals or bars needs more."""
    unlearned = SIGNAL_STREAM_FEATURES + SYMBOL_STREAM_FEATURES
    read = [name for names in MODEL_FEATURES.values() for name in names]
    assert not [n for n in read if any(n == u or n.endswith(f"_{u}") for u in unlearned)]
    assert {"win_rate", "ewm_r", "drawdown_r"} <= set(read)  # the check sees the real names


def test_rules_path_without_models_and_rl_disabled(bars: list, models_dir: Path) -> None:
    _, events = _run(bars[: N_BARS // 2], EMPTY)
    signals, _ = _pairs(events)
    for s in signals:
        d = s.decision
        assert d.path == "rules" and s.model_versions == {} and d.probabilities == {}
        assert d.predicted_r is None and d.size_multiplier == 1.0
        assert d.chosen_strategy == min(s.candidates, key=RULE_PRIORITY.index)
    _, events = _run(bars[: N_BARS // 2], ModelSet.from_dir(models_dir), _settings(RL_ENABLED="0"))
    signals, _ = _pairs(events)
    assert signals and all(s.decision.size_multiplier == 1.0 for s in signals)


def test_replay_reproduces_the_same_decisions_exactly(bars: list, models_dir: Path) -> None:
    first_engine, first = _run(bars, ModelSet.from_dir(models_dir), run_id="replay")
    second_engine, second = _run(bars, ModelSet.from_dir(models_dir), run_id="replay")
    ids_a: dict[str, int] = {}
    ids_b: dict[str, int] = {}
    a = [content(e, ids_a) for e in first]
    b = [content(e, ids_b) for e in second]
    assert len(a) == len(b) > 100
    assert a == b
    assert first_engine.stats.summary() == second_engine.stats.summary()
    assert {e.event_id for e in first}.isdisjoint({e.event_id for e in second})
    # the orders of a replay carry the same client order ids (derived from the signals)
    orders_a = [e.client_order_id for e in first if isinstance(e, OrderEvent)]
    orders_b = [e.client_order_id for e in second if isinstance(e, OrderEvent)]
    assert orders_a and orders_a == orders_b


def test_the_engine_publishes_each_fact_once_to_every_sink(bars: list, models_dir: Path) -> None:
    engine, events = _run(bars[: N_BARS // 2], ModelSet.from_dir(models_dir), run_id="sinks")
    signals = [e for e in events if isinstance(e, SignalSnapshot)]
    outcomes = [e for e in events if isinstance(e, TradeOutcome)]
    assert engine.events_emitted == len(events) and signals and outcomes
    total = engine.stats.summary()
    assert sum(g["ALL"]["signals"] for g in total.values()) == len(signals)
    real = sum(not o.counterfactual for o in outcomes)
    assert sum(g["ALL"]["trades"] for g in total.values()) == real > 0
    # the stream-feature cache learned exactly the published signals and outcomes, once
    fresh = StreamCache()
    for e in events:
        fresh("any", e)
    for symbol in ("ES", "NQ"):
        assert fresh.strategy_values(symbol) == engine.cache.strategy_values(symbol)


def test_a_swap_between_decisions_changes_the_versions_recorded(
    bars: list, models_dir: Path
) -> None:
    events: list[Event] = []
    holder = ModelHolder()
    engine = Engine(
        _settings(),
        EngineConfig(run_id="s", record_metrics=False),
        holder,
        sinks=[lambda t, e: events.append(e)],
    )
    half = N_BARS // 2
    engine.run(bars[:half])
    models = ModelSet.from_dir(models_dir)
    holder.swap(models)
    engine.run(bars[half:])
    cut = bars[half].ts_s
    signals, _ = _pairs(events)
    before = [s for s in signals if s.ts_event.timestamp() < cut]
    after = [s for s in signals if s.ts_event.timestamp() >= cut]
    assert before and after
    assert all(s.decision.path == "rules" for s in before)
    assert all(s.decision.path == "models" and s.model_versions == models.versions for s in after)
    assert np.isfinite([f for s in signals for f in s.features]).all()
