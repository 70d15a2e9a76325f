"""Pure logic of the canary: the verdict, deterministic routing, promotion and rollback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from trader.delivery.canary import ModelRouter, VariantStats, evaluate, route_fraction
from trader.delivery.models import ModelHolder, ModelSet

T0 = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


class Clock:
    """A manual monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Listener:
    """A `TrialListener` that records what the router tells it."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.retired: list[str] = []

    def trial_promoted(self, models: ModelSet, reason: str) -> None:
        self.events.append(("promote", models.release))

    def trial_rolled_back(self, result: dict[str, Any]) -> None:
        self.events.append(("rollback", result["release"]))

    def retire(self, models: ModelSet) -> None:
        self.retired.append(models.release)


def stats(*rs: float, decisions: int | None = None) -> VariantStats:
    s = VariantStats()
    for r in rs:
        s.resolve(r)
    s.decisions = len(rs) if decisions is None else decisions
    s.taken = sum(1 for r in rs if r != 0)
    return s


def test_a_trial_waits_for_n_resolved_decisions_or_the_window() -> None:
    v = evaluate(stats(1.0), stats(1.0), elapsed_s=10, min_decisions=5, window_sec=60)
    assert v.action == "wait"
    v = evaluate(stats(1.0), stats(*[1.0] * 5), elapsed_s=10, min_decisions=5, window_sec=60)
    assert v.action == "promote" and "5 resolved" in v.reason
    v = evaluate(stats(1.0), stats(1.0), elapsed_s=60, min_decisions=5, window_sec=60)
    assert v.action == "promote" and "window" in v.reason


def test_not_worse_within_the_tolerance_promotes_and_worse_rolls_back() -> None:
    champion = stats(0.5, 0.5, 0.5, 0.5)  # mean 0.5
    kw: dict[str, Any] = {
        "elapsed_s": 0.0,
        "min_decisions": 4,
        "window_sec": 600.0,
        "tolerance_r": 0.05,
    }
    assert evaluate(champion, stats(0.5, 0.5, 0.5, 0.5), **kw).action == "promote"
    assert evaluate(champion, stats(0.46, 0.46, 0.46, 0.46), **kw).action == "promote"
    assert evaluate(champion, stats(0.44, 0.44, 0.44, 0.44), **kw).action == "rollback"
    assert evaluate(champion, stats(-1.0, 1.0, -1.0, 0.0), **kw).action == "rollback"


def test_baselines_without_evidence() -> None:
    kw: dict[str, Any] = {"elapsed_s": 600.0, "min_decisions": 50, "window_sec": 600.0}
    # no resolved challenger decision by the end of the window: nothing says it is worse
    assert evaluate(stats(1.0), VariantStats(), **kw).action == "promote"
    # no champion evidence: the baseline is flat (0 R)
    assert evaluate(VariantStats(), stats(0.1), **kw).action == "promote"
    assert evaluate(VariantStats(), stats(-0.5), **kw).action == "rollback"


def test_routing_is_deterministic_and_honours_the_share() -> None:
    champ, chall = ModelSet({}, release="champ"), ModelSet({}, release="chall")
    routers = []
    for _ in range(2):  # two processes replaying the same bars
        router = ModelRouter(ModelHolder(champ), mode="canary", share=0.2)
        router.start_challenger(chall, release="chall", sequence=2)
        routers.append(router)
    picks = []
    for symbol in ("ES", "NQ"):
        for i in range(5000):
            ts = T0 + timedelta(minutes=i)
            a = routers[0].select(symbol, ts)
            b = routers[1].select(symbol, int(ts.timestamp()))
            assert a[1] == b[1]
            assert (a[1] == "challenger") == (route_fraction(symbol, int(ts.timestamp())) < 0.2)
            picks.append(a[1])
    share = picks.count("challenger") / len(picks)
    assert 0.18 < share < 0.22
    # the pair handed out is pre-built: no tuple is made per decision
    first = routers[0].select("ES", T0)
    assert routers[0].select("ES", T0) is first
    assert first[0] is (chall if first[1] == "challenger" else champ)


def test_share_edges_and_off_mode() -> None:
    champ, chall = ModelSet({}, release="champ"), ModelSet({}, release="chall")
    all_in = ModelRouter(ModelHolder(champ), mode="canary", share=1.0)
    all_in.start_challenger(chall)
    none = ModelRouter(ModelHolder(champ), mode="canary", share=0.0)
    none.start_challenger(chall)
    for i in range(500):
        assert all_in.select("ES", T0 + timedelta(minutes=i))[1] == "challenger"
        assert none.select("ES", T0 + timedelta(minutes=i))[1] == "champion"
    off = ModelRouter(ModelHolder(champ), mode="off")
    assert off.select("ES", T0) == (champ, "champion")
    with pytest.raises(RuntimeError):
        off.start_challenger(chall)
    with pytest.raises(ValueError):
        ModelRouter(ModelHolder(champ), mode="sometimes")  # type: ignore[arg-type]


def _trial(mode: str = "canary", **kw: float) -> tuple[ModelRouter, ModelHolder, Clock, Listener]:
    clock = Clock()
    holder = ModelHolder(ModelSet({}, release="champ"))
    router = ModelRouter(
        holder,
        mode=mode,  # type: ignore[arg-type]
        share=0.5,
        min_decisions=int(kw.get("n", 10)),
        window_sec=kw.get("window", 600.0),
        clock=clock,
    )
    heard = Listener()
    router.subscribe(heard)
    router.start_challenger(ModelSet({}, release="chall"), release="chall", sequence=2)
    return router, holder, clock, heard


def test_a_challenger_that_is_not_worse_is_promoted() -> None:
    router, holder, _clock, heard = _trial(n=10)
    for i in range(10):
        router.record_decision(f"c{i}", "champion", taken=True)
        router.record_outcome(f"c{i}", 0.3)
    for i in range(9):
        router.record_decision(f"x{i}", "challenger", taken=True)
        router.record_outcome(f"x{i}", 0.4)
    assert holder.current.release == "champ" and not heard.events  # 9 of 10: still on trial
    status = router.status()
    assert status["challenger"]["release"] == "chall"
    assert status["counts"]["challenger"]["resolved"] == 9
    assert status["comparison"]["difference_r"] == pytest.approx(0.1)
    assert status["shares"] == {"champion": 0.5, "challenger": 0.5}
    router.record_decision("x9", "challenger", taken=False)  # a skip resolves at 0 R
    assert holder.current.release == "chall"
    assert heard.events == [("promote", "chall")]
    assert heard.retired == ["champ"]  # the old champion is handed over to be freed
    assert router.challenger is None and router.promotions == 1
    assert router.status()["last_result"]["outcome"] == "promoted"
    assert router.select("ES", T0) == (holder.current, "champion")


def test_a_worse_challenger_is_rolled_back_automatically() -> None:
    router, holder, _clock, heard = _trial(n=5)
    for i in range(5):
        router.record_decision(f"c{i}", "champion", taken=True)
        router.record_outcome(f"c{i}", 0.5)
    for i in range(5):
        router.record_decision(f"x{i}", "challenger", taken=True)
        router.record_outcome(f"x{i}", -1.0)
    assert holder.current.release == "champ"
    assert heard.events == [("rollback", "chall")]
    assert heard.retired == ["chall"]
    assert router.rollbacks == 1 and router.challenger is None
    last = router.status()["last_result"]
    assert last["outcome"] == "rolled_back" and "<" in last["reason"]
    assert last["counts"]["challenger"]["mean_r"] == -1.0


def test_the_window_ends_a_trial() -> None:
    router, holder, clock, heard = _trial(n=1000, window=60.0)
    router.record_decision("c0", "champion", taken=True)
    router.record_outcome("c0", 1.0)
    router.record_decision("x0", "challenger", taken=True)
    router.record_outcome("x0", -0.5)
    assert router.tick() is None  # not due
    clock.now += 61.0
    verdict = router.tick()
    assert verdict is not None and verdict.action == "rollback" and "window" in verdict.reason
    assert heard.events == [("rollback", "chall")] and holder.current.release == "champ"


def test_outcomes_of_unknown_or_skipped_signals_are_ignored() -> None:
    router, _holder, _clock, _heard = _trial(n=100)
    router.record_decision("c0", "champion", taken=False)
    router.record_outcome("c0", 3.0)  # a counterfactual of the skipped pick
    router.record_outcome("never-seen", 2.0)
    champion = router.status()["counts"]["champion"]
    assert champion["resolved"] == 1 and champion["sum_r"] == 0.0


def test_shadow_scores_beside_the_champion_and_never_routes() -> None:
    router, holder, _clock, heard = _trial(mode="shadow", n=3)
    assert router.select("ES", T0) == (holder.current, "champion")
    shadow = router.shadow()
    assert shadow is not None and shadow.release == "chall"
    # same pick, both take it: one trade resolves both
    router.record_shadow("s1", True, "s1", True)
    # different picks: the champion's trade and the shadow's counterfactual
    router.record_shadow("s2", True, "s3", True)
    # the champion skips, the shadow would trade the same candidate (a counterfactual)
    router.record_shadow("s4", False, "s4", True)
    status = router.status()
    assert status["counts"]["disagreements"] == 1
    assert status["counts"]["pending"] == 4
    assert status["shares"] == {"champion": 1.0, "challenger": 0.0}
    for sid, r in (("s1", 1.0), ("s2", -1.0), ("s3", 2.0)):
        router.record_outcome(sid, r)
    assert not heard.events
    router.record_outcome("s4", 0.5)
    # champion: 1.0, -1.0, 0 (skipped) -> 0.0 ; shadow: 1.0, 2.0, 0.5 -> 1.1667
    assert heard.events == [("promote", "chall")]
    last = router.status()["last_result"]
    assert last["counts"]["champion"]["mean_r"] == pytest.approx(0.0)
    assert last["counts"]["challenger"]["mean_r"] == pytest.approx(3.5 / 3)
    assert router.shadow() is None


def test_a_newer_release_supersedes_and_a_rollback_release_cancels() -> None:
    router, holder, _clock, heard = _trial(n=100)
    router.start_challenger(ModelSet({}, release="chall2"), release="chall2", sequence=3)
    assert router.challenger is not None and router.challenger.release == "chall2"
    assert router.history[-1]["outcome"] == "superseded"
    assert heard.retired == ["chall"]
    router.cancel("rollback r4")
    assert router.challenger is None and router.history[-1]["outcome"] == "cancelled"
    assert heard.retired == ["chall", "chall2"]
    assert heard.events == []  # neither a promotion nor a rollback by the trial
    assert holder.current.release == "champ"
    assert router.status()["challenger"] is None


def test_a_swap_behind_the_routers_back_is_seen() -> None:
    holder = ModelHolder(ModelSet({}, release="a"))
    router = ModelRouter(holder, mode="canary", share=0.0)
    assert router.select("ES", T0)[0].release == "a"
    holder.swap(ModelSet({}, release="b"))
    assert router.select("ES", T0)[0].release == "b"


def test_every_subscriber_hears_until_it_unsubscribes() -> None:
    router, holder, _clock, first = _trial(n=1)
    second = Listener()
    unsubscribe = router.subscribe(second)
    router.promote("by hand")
    assert first.events == second.events == [("promote", "chall")]
    assert first.retired == second.retired == ["champ"]
    unsubscribe()
    router.start_challenger(ModelSet({}, release="chall3"), release="chall3", sequence=3)
    router.rollback("by hand")
    assert first.events == [("promote", "chall"), ("rollback", "chall3")]
    assert first.retired == ["champ", "chall3"]
    assert second.events == [("promote", "chall")] and second.retired == ["champ"]
    assert holder.current.release == "chall"
