"""The canary through the real decision engine, and the hot swapper putting releases on trial."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

import orjson
import pytest

from infra.contracts import Event, ModelManifest, SignalSnapshot, TradeOutcome
from infra.settings import Settings
from infra.signing import Keyring
from tests.hotswap_support import build_blobs, release_bytes, sign, unsigned_manifest
from trader.core.engine import Engine, EngineConfig
from trader.delivery.canary import ModelRouter, route_fraction
from trader.delivery.hotswap import HotSwapper
from trader.delivery.models import ModelHolder, ModelSet
from trader.feeds.sim import SimFeed

BARS = 2 * 1440 * 3  # three simulated days of ES and NQ


def _sets() -> tuple[ModelSet, ModelSet]:
    champion = ModelSet.from_bytes(build_blobs(1), "v1", release="r1")
    challenger = ModelSet.from_bytes(build_blobs(2), "v2", release="r2")
    return champion, challenger


def _run(
    settings: Settings,
    mode: Literal["off", "shadow", "canary"],
    *,
    share: float = 0.5,
    min_decisions: int = 10**6,
) -> tuple[ModelRouter, ModelHolder, list[Event], ModelSet, ModelSet]:
    champion, challenger = _sets()
    holder = ModelHolder(champion)
    router = ModelRouter(
        holder, mode=mode, share=share, min_decisions=min_decisions, window_sec=1e9
    )  # type: ignore[arg-type]
    router.start_challenger(challenger, release="r2", sequence=2)
    events: list[Event] = []
    engine = Engine(
        settings,
        EngineConfig(symbols=("ES", "NQ"), source="sim", record_metrics=False),
        holder,
        sinks=[lambda _topic, ev: events.append(ev)],
        router=router,
    )
    engine.run(iter(SimFeed(("ES", "NQ"), seed=3)), max_bars=BARS)
    return router, holder, events, champion, challenger


def _signals(events: list[Event]) -> list[SignalSnapshot]:
    return [e for e in events if isinstance(e, SignalSnapshot)]


def test_canary_routes_a_deterministic_share_through_the_engine(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(kafka=False)
    router, holder, events, champion, challenger = _run(settings, "canary", share=0.5)
    signals = _signals(events)
    assert signals, "the sim produced no signal"
    variants = {s.decision.variant for s in signals}
    assert variants == {"champion", "challenger"}
    for s in signals:
        ts = int(s.ts_event.timestamp())
        routed = "challenger" if route_fraction(s.symbol, ts) < 0.5 else "champion"
        assert s.decision.variant == routed
        expected = challenger if routed == "challenger" else champion
        assert s.model_versions == expected.versions
    status = router.status()
    decided = (
        status["counts"]["champion"]["decisions"] + status["counts"]["challenger"]["decisions"]
    )
    bars_with_signals = {(s.symbol, s.ts_event) for s in signals}
    assert decided == len(bars_with_signals)  # one decision per bar with candidates
    assert holder.current is champion  # no verdict yet (N and window not reached)

    # a replay of the same bars with the same models routes and decides identically
    _, _, again, _, _ = _run(settings, "canary", share=0.5)
    assert [(s.symbol, s.ts_event, s.strategy, s.decision) for s in _signals(again)] == [
        (s.symbol, s.ts_event, s.strategy, s.decision) for s in signals
    ]


def _replay_trial(events: list[Event], min_decisions: int) -> dict[str, dict[str, float]]:
    """Recount a canary trial from the engine's events alone, up to its end.

    Each bar's chosen signal is one decision of its variant: a skip resolves at 0 R,
    a taken one with the R of its trade's outcome. The trial ends at the decision
    that gives the challenger its `min_decisions`-th resolved decision.
    """
    counts = {
        v: dict.fromkeys(("decisions", "taken", "resolved", "wins", "sum_r"), 0.0)
        for v in ("champion", "challenger")
    }
    pending: dict[str, str] = {}

    def resolve(variant: str, r: float) -> bool:
        c = counts[variant]
        c["resolved"] += 1
        c["sum_r"] += r
        c["wins"] += r > 0
        return counts["challenger"]["resolved"] >= min_decisions

    for ev in events:
        ended = False
        if isinstance(ev, SignalSnapshot) and ev.strategy == ev.decision.chosen_strategy:
            variant = ev.decision.variant
            counts[variant]["decisions"] += 1
            if ev.decision.taken:
                counts[variant]["taken"] += 1
                pending[ev.event_id] = variant
            else:
                ended = resolve(variant, 0.0)
        elif isinstance(ev, TradeOutcome) and ev.signal_id in pending:
            ended = resolve(pending.pop(ev.signal_id), ev.r_multiple)
        if ended:
            return counts
    raise AssertionError(f"the challenger never reached {min_decisions} resolved decisions")


def test_the_canary_concludes_through_the_engine(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(kafka=False)
    router, holder, events, champion, challenger = _run(
        settings, "canary", share=0.5, min_decisions=20
    )
    assert router.challenger is None, "the trial should have ended after 20 resolved decisions"
    result = router.history[-1]
    want = _replay_trial(events, 20)
    for variant in ("champion", "challenger"):
        got = result["counts"][variant]
        for key in ("decisions", "taken", "resolved", "wins"):
            assert got[key] == want[variant][key], (variant, key)
        assert got["sum_r"] == pytest.approx(want[variant]["sum_r"], abs=1e-6), variant
    assert want["challenger"]["resolved"] == 20
    # the rule: promote unless the challenger's mean R is worse than the champion's
    # (0 R without a resolved champion decision) by more than 0.05 R
    champ_mean = (
        want["champion"]["sum_r"] / want["champion"]["resolved"]
        if want["champion"]["resolved"]
        else 0.0
    )
    chall_mean = want["challenger"]["sum_r"] / 20
    promoted = chall_mean >= champ_mean - 0.05
    assert result["outcome"] == ("promoted" if promoted else "rolled_back"), (
        chall_mean,
        champ_mean,
    )
    signals = _signals(events)
    if promoted:
        assert holder.current is challenger
        # after promotion the new champion decides everything
        tail = signals[-5:]
        assert all(s.decision.variant == "champion" for s in tail)
        assert all(s.model_versions == challenger.versions for s in tail)
    else:
        assert holder.current is champion
        assert all(s.model_versions == champion.versions for s in signals[-5:])
    outcomes = [e for e in events if isinstance(e, TradeOutcome)]
    assert outcomes  # resolved through real (and counterfactual) trades


def test_shadow_scores_the_challenger_on_every_decision_and_trades_none(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(kafka=False)
    router, holder, events, champion, _challenger = _run(settings, "shadow")
    signals = _signals(events)
    assert signals and all(s.decision.variant == "champion" for s in signals)
    assert all(s.model_versions == champion.versions for s in signals)
    counts = router.status()["counts"]
    assert counts["champion"]["decisions"] == counts["challenger"]["decisions"] > 0
    assert counts["champion"]["decisions"] == len({(s.symbol, s.ts_event) for s in signals})
    assert holder.current is champion


def test_the_swapper_puts_new_releases_on_trial(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(kafka=False, CANARY_MODE="canary", CANARY_SHARE=0.3)
    holder = ModelHolder()
    router = ModelRouter.from_settings(settings, holder)
    swapper = HotSwapper(settings, holder, router=router, use_kafka=False)

    def apply(raw: bytes) -> str:
        return asyncio.run(swapper.apply(raw, source="test"))

    r1 = release_bytes(settings, 1)
    assert apply(r1) == "swapped"  # the first release has no champion to compare with
    assert apply(release_bytes(settings, 2)) == "challenger"
    assert holder.current.release == "r1"
    assert router.challenger is not None and router.challenger.release == "r2"
    assert swapper.status()["challenger"] == "r2"
    assert router.status()["shares"] == {"champion": 0.7, "challenger": 0.3}

    router.promote("test")
    assert holder.current.release == "r2"
    status = swapper.status()
    assert status["swaps"] == 2 and status["last_swap"]["release"] == "r2"
    assert status["last_swap"]["source"].startswith("canary")
    assert status["sequence"] == 2 and status["challenger"] is None

    assert apply(release_bytes(settings, 3)) == "challenger"
    router.rollback("worse in test")
    assert holder.current.release == "r2"
    assert swapper.rejections["canary_rollback"] == 1
    assert swapper.status()["last_rejection"]["release"] == "r3"

    # a signed rollback release skips the trial and cancels a running one
    assert apply(release_bytes(settings, 4)) == "challenger"
    old = ModelManifest.model_validate(orjson.loads(r1))
    rollback = unsigned_manifest(list(old.artifacts), 5, release="r5", kind="rollback")
    assert apply(sign(rollback, Keyring.from_settings(settings))) == "swapped"
    assert holder.current.release == "r5"
    assert holder.current.versions == {"meta": "v1", "exec": "v1", "sizer": "v1"}
    assert router.challenger is None and router.history[-1]["outcome"] == "cancelled"
