"""Deterministic synthetic bars, signals and outcomes (tests and benchmarks)."""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Iterator

from infra.contracts import (
    FEATURE_NAMES,
    STRATEGIES,
    Bar,
    Decision,
    Event,
    SignalSnapshot,
    TradeOutcome,
)

__all__ = ["FEATURE_NAMES", "synthetic_events"]

START = dt.datetime(2024, 3, 4, 14, 30, tzinfo=dt.UTC)


def synthetic_events(
    n: int,
    symbols: tuple[str, ...] = ("ES", "NQ"),
    seed: int = 7,
    start: dt.datetime = START,
    run_id: str = "synth",
) -> Iterator[Event]:
    """Yield `n` events: a bar per symbol per minute, signals on some bars, outcomes later.

    Ids and timestamps are derived from the seed, so two calls yield equal events.
    """
    rng = random.Random(seed)
    price = {s: 5000.0 if s == "ES" else 17000.0 for s in symbols}
    pending: list[tuple[int, TradeOutcome]] = []
    count = 0
    minute = 0
    while count < n:
        ts = start + dt.timedelta(minutes=minute)
        for sym in symbols:
            if count >= n:
                return
            p0 = price[sym]
            p1 = max(1.0, p0 * math.exp(rng.gauss(0.0, 0.0008)))
            price[sym] = p1
            hi, lo = (
                max(p0, p1) * (1 + rng.random() * 3e-4),
                min(p0, p1) * (1 - rng.random() * 3e-4),
            )
            yield Bar(
                event_id=f"{run_id}-bar-{sym}-{minute}",
                ts_event=ts,
                ts_init=ts,
                symbol=sym,
                open=p0,
                high=hi,
                low=lo,
                close=p1,
                volume=float(rng.randint(100, 5000)),
            )
            count += 1
            if count < n and rng.random() < 0.35:
                strat = rng.choice(STRATEGIES)
                side = rng.choice(("long", "short"))
                sig_id = f"{run_id}-sig-{sym}-{minute}"
                risk = p1 * 0.001
                yield SignalSnapshot(
                    event_id=sig_id,
                    ts_event=ts,
                    ts_init=ts,
                    symbol=sym,
                    strategy=strat,
                    side=side,  # type: ignore[arg-type]
                    entry=p1,
                    stop=p1 - risk if side == "long" else p1 + risk,
                    target=p1 + 2 * risk if side == "long" else p1 - 2 * risk,
                    feature_names=FEATURE_NAMES,
                    features=tuple(round(rng.gauss(0, 1), 6) for _ in FEATURE_NAMES),
                    candidates=(strat,),
                    model_versions={"meta": "v1"},
                    decision=Decision(
                        path="rules",
                        taken=rng.random() < 0.6,
                        reason="synthetic",
                        chosen_strategy=strat,
                        probabilities={s: 0.25 for s in STRATEGIES},
                        predicted_r=0.1,
                        size_multiplier=1.0,
                        contracts=1,
                    ),
                    run_id=run_id,
                )
                count += 1
                hold = rng.randint(1, 30)
                r = rng.gauss(0.15 if strat != "S6" else -0.1, 1.0)
                exit_ts = ts + dt.timedelta(minutes=hold)
                pending.append(
                    (
                        minute + hold,
                        TradeOutcome(
                            event_id=f"{run_id}-out-{sym}-{minute}",
                            ts_event=exit_ts,
                            ts_init=exit_ts,
                            signal_id=sig_id,
                            symbol=sym,
                            strategy=strat,
                            side=side,  # type: ignore[arg-type]
                            entry_ts=ts,
                            entry_price=p1,
                            exit_ts=exit_ts,
                            exit_price=max(1.0, p1 + r * risk),
                            quantity=1,
                            pnl_usd=round(r * 250.0, 2),
                            r_multiple=r,
                            mae_r=-abs(rng.gauss(0, 0.5)),
                            mfe_r=abs(rng.gauss(0, 1)),
                            exit_reason="target" if r > 0 else "stop",
                            counterfactual=rng.random() < 0.3,
                            run_id=run_id,
                        ),
                    )
                )
        due = [o for m, o in pending if m <= minute]
        pending = [(m, o) for m, o in pending if m > minute]
        for out in due:
            if count >= n:
                return
            yield out
            count += 1
        minute += 1
