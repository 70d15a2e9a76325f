"""The engine drives any venue the same way: exits it manages itself, refusals it survives."""

from __future__ import annotations

import asyncio

import pytest

from infra.contracts import Event, OrderSubmitted, SignalSnapshot, TradeOutcome
from infra.settings import Settings
from trader.core.engine import Engine, EngineConfig
from trader.core.instruments import BUILTIN
from trader.feeds.sim import SimFeed
from trader.venues import UnknownVenue, venue_for
from trader.venues.paper import PaperVenue, PaperVenueSettings

SYMBOLS = ("ES", "NQ")


def _run(venue: PaperVenue | None, max_hold_bars: int = 60) -> tuple[Engine, list[Event]]:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    out: list[Event] = []
    engine = Engine(
        settings,
        EngineConfig(
            symbols=SYMBOLS, run_id="ev", record_metrics=False, max_hold_bars=max_hold_bars
        ),
        sinks=[lambda _t, e: out.append(e)],
        venue=venue,
    )
    engine.run(SimFeed(SYMBOLS, seed=11, days=8))
    engine.finish()
    return engine, out


def _real(events: list[Event]) -> list[tuple[object, ...]]:
    return [
        (o.symbol, o.entry_ts, o.exit_ts, o.entry_price, o.exit_price, o.pnl_usd, o.exit_reason)
        for o in events
        if isinstance(o, TradeOutcome) and not o.counterfactual
    ]


def test_session_end_and_timeout_exits_by_the_engine_match_the_paper_models() -> None:
    """A venue that never flattens by itself gets the engine's flatten orders at the same prices."""
    _, own = _run(None)  # the paper venue exits at the session end and on timeout itself
    holding = PaperVenue(
        {s: BUILTIN[s] for s in SYMBOLS},
        PaperVenueSettings(flatten_at_session_end=False, max_hold_bars=100_000),
    )
    engine, managed = _run(holding)
    reasons = {r[-1] for r in _real(managed)}
    assert {"session_end", "timeout"} <= reasons
    assert _real(managed) == _real(own)
    flattens = [e for e in managed if isinstance(e, OrderSubmitted) and e.role == "flatten"]
    assert {f.reason for f in flattens} >= {"session_end", "timeout"}
    assert engine.venue.positions() == [] and engine.order_errors == 0


def test_a_disconnected_venue_refuses_orders_and_the_engine_goes_on() -> None:
    venue = PaperVenue({s: BUILTIN[s] for s in SYMBOLS})
    asyncio.run(venue.disconnect())
    engine, events = _run(venue)
    taken = [e for e in events if isinstance(e, SignalSnapshot) and e.decision.taken]
    assert taken and engine.order_errors == len(taken)
    assert not [e for e in events if isinstance(e, OrderSubmitted)]
    assert _real(events) == [] and engine.risk.open_positions == 0
    assert engine.status()["order_errors"] == len(taken)


def test_venues_are_chosen_by_name() -> None:
    settings = Settings(_env_file=None, SLIPPAGE_TICKS=2)  # type: ignore[call-arg]
    venue = venue_for(settings.venue, settings)
    assert isinstance(venue, PaperVenue) and venue.config.slippage_ticks == 2
    assert venue.connected
    with pytest.raises(UnknownVenue, match=r"nope.*paper"):
        venue_for("nope", settings)
