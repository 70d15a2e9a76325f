"""The engine: one code path for live trading, backtests and replays.

Per bar: update the symbol's features, show the bar to the venue (the paper venue
fills and exits by it; a broker ignores it) and to the counterfactual fill model,
count the excursions of open trades, settle the trades whose exit filled, run the
four strategies, decide among the candidates (models or rules, then risk), emit a
`SignalSnapshot` for every candidate, submit the taken one as a bracket order to
the venue and place the others as counterfactuals. Every fact (signals, the
venue's order events, outcomes, bars) is published once to the sinks: the
outbox or lake writer, the stream-feature cache, the statistics and the canary's
outcome tracking; only the canary's routing is a direct call. The venue is called
the same way in backtests, paper and live trading. Nothing here touches the
network or blocks.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

from features.compute import MarketFeatures
from features.rolls import front_contract
from infra.contracts import (
    FEATURE_NAMES,
    Decision,
    Event,
    SignalSnapshot,
    VenueEvent,
    topic_for,
)
from infra.crash import CrashPoint, crash_point
from infra.settings import Settings
from trader import metrics
from trader.core.bar import MarketBar
from trader.core.decision import Choice, Decider, Variant, decision_for, record_variant
from trader.core.instruments import Instrument, instruments_from_settings, require
from trader.core.risk import RiskLimits, RiskManager, open_pnl_usd
from trader.core.sinks import CanaryOutcomes, Sink, StatsSink
from trader.core.stats import TradeStats
from trader.core.strategies import Candidate, Strategy, build_strategies
from trader.core.stream_cache import StreamCache
from trader.core.trades import Trade, TradeBook, counterfactual_outcome, trade_outcome
from trader.delivery.canary import ModelRouter
from trader.delivery.models import ModelHolder
from trader.venues.base import BracketOrder, Venue, VenueError, client_order_id
from trader.venues.fills import Closed, PaperBroker, Position
from trader.venues.paper import PaperVenue

__all__ = ["Engine", "EngineConfig", "Sink", "Verdict"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    """What a run is: symbols, the `source` tag, the run id and switches."""

    symbols: tuple[str, ...] = ("ES", "NQ")
    source: str = "sim"
    run_id: str = ""
    emit_bars: bool = False
    record_metrics: bool = True
    max_hold_bars: int = 240


class Verdict(NamedTuple):
    """The decision path's result: the choice, who decided, and what risk allowed."""

    choice: Choice
    variant: Variant
    contracts: int  # after the risk limits
    reason: str  # "taken", or why not (a model veto or a risk limit)


def _utc(ts_s: int) -> datetime:
    return datetime.fromtimestamp(ts_s, UTC)


class Engine:
    """Features, strategies, decisions, risk and a venue for a set of symbols."""

    def __init__(
        self,
        settings: Settings,
        config: EngineConfig,
        holder: ModelHolder | None = None,
        sinks: Iterable[Sink] = (),
        cache: StreamCache | None = None,
        router: ModelRouter | None = None,
        venue: Venue | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.run_id = config.run_id or uuid.uuid4().hex[:12]
        self.source = config.source
        self.instruments: dict[str, Instrument] = instruments_from_settings(settings)
        require(self.instruments, config.symbols)
        self.symbols = config.symbols
        self.holder = holder or ModelHolder()
        self.router = router  # canary routing (trader/delivery/canary.py); None: the holder decides
        self.cache = cache or StreamCache()
        self.stats_sink = StatsSink()
        self.sinks: list[Sink] = [*sinks, self.cache, self.stats_sink]
        if router is not None:  # resolves a canary/shadow decision with its outcome's R
            self.sinks.append(CanaryOutcomes(router))
        self.decider = Decider(
            self.holder,
            self.cache,
            rl_enabled=settings.rl_enabled,
            base_risk_usd=settings.base_risk_usd,
        )
        self.risk = RiskManager(RiskLimits.from_settings(settings))
        self.flatten = settings.flatten_at_session_end
        #: the entry gate: with flattening, regular hours up to the cutoff; else any session hour
        self._gate = "entries_allowed" if self.flatten else "in_session"
        traded = {s: self.instruments[s] for s in self.symbols}
        self.venue: Venue = venue or PaperVenue.from_settings(
            settings, traded, max_hold_bars=config.max_hold_bars
        )
        self.venue.source, self.venue.run_id = self.source, self.run_id
        self.venue.add_listener(self._order_event)
        self.book = TradeBook(
            {s: i.point_value_usd for s, i in self.instruments.items()}, self.symbols
        )
        self.shadow = PaperBroker(  # counterfactuals: the paper fill model, never a venue
            traded,
            slippage_ticks=settings.slippage_ticks,
            commission_per_contract_usd=settings.commission_per_contract_usd,
            flatten=self.flatten,
            max_hold_bars=config.max_hold_bars,
        )
        self.features = {s: MarketFeatures(s) for s in self.symbols}
        self.strategies: dict[str, list[Strategy]] = {
            s: build_strategies(self.instruments[s]) for s in self.symbols
        }
        self.last_bar: dict[str, MarketBar] = {}
        self.bars = 0
        self.ignored_bars = 0
        self.unfilled = 0
        self.order_errors = 0
        self.events_emitted = 0
        self.realized_pnl_usd: dict[str, float] = dict.fromkeys(self.symbols, 0.0)
        self.equity: list[tuple[int, float]] = []
        self._equity_usd = 0.0
        self._record = config.record_metrics
        self._decision_counters: dict[tuple[str, str, str, str], Any] = {}

    @property
    def stats(self) -> TradeStats:
        """Return the run's signal and trade statistics."""
        return self.stats_sink.total

    @property
    def today(self) -> TradeStats:
        """Return the trading day's signal and trade statistics."""
        return self.stats_sink.today

    # the per-bar path ---------------------------------------------------

    def on_bar(self, bar: MarketBar) -> None:
        """Process one bar of any configured symbol (others are counted and ignored)."""
        symbol = bar.symbol
        f = self.features.get(symbol)
        if f is None:
            self.ignored_bars += 1
            return
        ready = f.push(bar.ts_s, bar.open, bar.high, bar.low, bar.close, bar.volume)
        self.step(bar, f, ready and getattr(f, self._gate))

    def step(self, bar: MarketBar, f: Any, screen: bool) -> None:
        """Process a bar whose features `f` hold it; `screen`: run the strategies.

        `on_bar` calls it after the incremental update; a batched backtest
        (`trader.core.tape_run`) after seeking its feature tape to the bar, with
        `screen` true only where a strategy's batched direction is not 0.
        """
        symbol = bar.symbol
        if f.trading_day != self.risk.day:
            self.risk.new_bar(f.trading_day)
            self.stats_sink.new_day()
        venue = self.venue
        watching = venue.watching
        if watching is None or symbol in watching:
            venue.on_bar(bar, f)
        shadow = self.shadow
        if shadow.open[symbol] or shadow.pending[symbol]:
            for closed in shadow.on_bar(bar, f.minutes_to_close, f.in_rth):
                self._counterfactual_closed(closed)
        book = self.book
        held = book.open[symbol]
        if held:
            book.step(bar, skip_held=self.flatten and not f.in_rth)
            if (
                (self.flatten and not f.entries_allowed)
                or len(held) > 1
                or held[0].bars_held >= self.config.max_hold_bars
            ):
                self._manage(bar, f)
        if book.closing:
            for trade in book.settle():
                self._trade_closed(trade)
        if self.risk.prop is not None:  # prop-firm rules (trader/core/risk.py): mark, flatten
            self._mark(bar)
        # strategies keep no per-bar state: bars that cannot trade (exchange calendar) skip them
        if screen:
            candidates = None
            for strategy in self.strategies[symbol]:
                cand = strategy.on_bar(f)
                if cand is not None:
                    if candidates is None:
                        candidates = [cand]
                    else:
                        candidates.append(cand)
            if candidates is not None:
                self._act(bar, f, candidates)
        if self.config.emit_bars:
            self._emit(bar.to_event(self.source, self.settings.roll_days_before_expiry))
        self.last_bar[symbol] = bar
        self.bars += 1

    def _mark(self, bar: MarketBar) -> None:
        """Mark the symbol's open trades at the close for the prop-firm rules; flatten on a breach."""
        pv = self.instruments[bar.symbol].point_value_usd
        fee = self.settings.commission_per_contract_usd
        pnl = sum(
            open_pnl_usd(t.side, t.quantity, t.entry_price, bar.close, pv, fee)
            for t in self.book.open.get(bar.symbol, ())
            if not t.exiting
        )
        if self.risk.mark(bar.symbol, pnl) is not None:
            self._venue_call(self.venue.flatten, None, "risk_flatten")

    def _entries_open(self, f: MarketFeatures) -> bool:
        """Say whether a trade may open on the features' current bar (the exchange calendar)."""
        return bool(getattr(f, self._gate))

    def _manage(self, bar: MarketBar, f: MarketFeatures) -> None:
        """Flatten trades the venue still holds at the session end or after `max_hold_bars`."""
        session_over = self.flatten and not f.entries_allowed
        for trade in self.book.open[bar.symbol]:
            if trade.exiting:
                continue
            reason = None
            if session_over and (
                (f.in_rth and f.minutes_to_close <= 0)
                or (not f.in_rth and trade.entry_ts_s != bar.ts_s)
            ):
                reason = "session_end"
            elif trade.bars_held >= self.config.max_hold_bars:
                reason = "timeout"
            if reason is not None:
                self._venue_call(self.venue.flatten, bar.symbol, reason)
                return

    def _venue_call(self, call: Callable[..., None], *args: Any) -> bool:
        """Call the venue; count and log a refusal instead of raising into the bar loop."""
        try:
            call(*args)
        except VenueError as exc:
            self.order_errors += 1
            log.warning("venue %s refused %s%r: %s", self.venue.name, call.__name__, args, exc)
            return False
        return True

    def evaluate_bar(self, bar: MarketBar) -> list[Candidate]:
        """Update features with a bar and return the candidates `on_bar` would act on."""
        f = self.features[bar.symbol]
        if not f.push(bar.ts_s, bar.open, bar.high, bar.low, bar.close, bar.volume):
            return []
        if not self._entries_open(f):
            return []
        return [c for s in self.strategies[bar.symbol] if (c := s.on_bar(f)) is not None]

    def decide(self, symbol: str, candidates: list[Candidate]) -> Verdict:
        """Run the decision path for a bar's candidates: models (or rules), then risk.

        Nothing here builds an event or a record: `decisions` does, after the path.
        """
        f = self.features[symbol]
        inst = self.instruments[symbol]
        router = self.router
        variant: Variant = "champion"
        if router is None:
            choice = self.decider.decide(symbol, candidates, f, inst)
        else:  # canary routing: one pre-built (model set, variant) per decision
            models, routed = router.select(symbol, f.ts_s)
            variant = cast(Variant, routed)
            choice = self.decider.decide(symbol, candidates, f, inst, models)
        if choice.skip_reason is not None:
            return Verdict(choice, variant, 0, choice.skip_reason)
        contracts, reason = self.risk.check(symbol, choice.contracts, choice.stop_usd, f.ts_s)
        return Verdict(choice, variant, contracts, reason)

    @staticmethod
    def decisions(verdict: Verdict, candidates: list[Candidate]) -> list[Decision]:
        """Return the Decision record of every candidate of a verdict."""
        choice, variant, contracts, reason = verdict
        strategy = candidates[choice.chosen].strategy
        probabilities = choice.probabilities
        return [
            decision_for(
                choice, variant, strategy, i == choice.chosen, reason, contracts, probabilities
            )
            for i in range(len(candidates))
        ]

    def _act(self, bar: MarketBar, f: MarketFeatures, candidates: list[Candidate]) -> None:
        t0 = time.perf_counter()
        verdict = self.decide(bar.symbol, candidates)
        if self._record:
            metrics.DECISION_LATENCY.observe(time.perf_counter() - t0)
        choice = verdict.choice
        decisions = self.decisions(verdict, candidates)
        router = self.router
        shadow = router.shadow() if router is not None else None
        shadow_choice = None
        if shadow is not None:  # shadow mode: the challenger scores the same inputs, untraded
            inst = self.instruments[bar.symbol]
            shadow_choice = self.decider.decide(bar.symbol, candidates, f, inst, shadow)
        signal_ids: list[str] | None = [] if router is not None else None
        ts = _utc(bar.ts_s)
        names = tuple(c.strategy for c in candidates)
        features = choice.features
        for cand, decision in zip(candidates, decisions, strict=True):
            snapshot = SignalSnapshot.checked(  # built from typed state; a test validates
                ts_event=ts,
                symbol=bar.symbol,
                strategy=cand.strategy,
                side=cand.side_name,  # type: ignore[arg-type]
                entry=cand.entry,
                stop=cand.stop,
                target=cand.target,
                feature_names=FEATURE_NAMES,
                features=features,
                candidates=names,
                model_versions=choice.model_versions,
                decision=decision,
                source=self.source,
                run_id=self.run_id,
            )
            self._emit(snapshot)
            if signal_ids is not None:
                signal_ids.append(snapshot.event_id)
            taken = decision.taken
            if self._record:
                self._count_decision(bar.symbol, cand.strategy, choice.path, taken)
            if taken:
                self._submit(bar, cand, snapshot, decision.contracts)
            else:
                self.shadow.place(
                    Position(
                        snapshot,
                        bar.symbol,
                        cand.strategy,
                        cand.side,
                        1,
                        cand.stop_distance,
                        abs(cand.target - cand.entry),
                        counterfactual=True,
                    )
                )
        if router is not None and signal_ids is not None:
            record_variant(router, choice, decisions, shadow_choice, signal_ids)

    def _submit(
        self, bar: MarketBar, cand: Candidate, snapshot: SignalSnapshot, contracts: int
    ) -> None:
        """Send a taken candidate to the venue as a bracket order."""
        try:
            order = BracketOrder(
                client_order_id=client_order_id(
                    bar.symbol, cand.strategy, snapshot.ts_event, "entry"
                ),
                symbol=bar.symbol,
                side="buy" if cand.side > 0 else "sell",
                quantity=contracts,
                stop_distance=cand.stop_distance,
                target_distance=abs(cand.target - cand.entry),
                contract=front_contract(
                    bar.symbol, bar.ts_s, self.settings.roll_days_before_expiry
                ),
                signal_id=snapshot.event_id,
                strategy=cand.strategy,
            )
        except VenueError as exc:  # e.g. a zero stop distance: no order, the bar goes on
            self.order_errors += 1
            log.warning("no order for signal %s: %s", snapshot.event_id, exc)
            return
        self.book.submitted(
            Trade(
                snapshot,
                order.client_order_id,
                bar.symbol,
                cand.strategy,
                cand.side,
                contracts,
                order.stop_distance,
                order.target_distance,
            )
        )
        self.risk.opened(bar.symbol)
        watching = self.venue.watching
        if watching is not None and bar.symbol not in watching:
            self.venue.on_bar(bar, self.features[bar.symbol])  # the bar the order is sent on
        if not self._venue_call(self.venue.submit_bracket, order):
            self.book.forget(order.client_order_id)
            self.risk.cancelled(bar.symbol)

    def _order_event(self, event: VenueEvent) -> None:
        """Venue listener: publish the order event; release the risk of an entry that died."""
        self._emit(event)
        crash_point(CrashPoint.TRADER_ORDER_SPOOLED_BEFORE_JOURNAL)  # the journal listens after us
        dead = self.book.apply(event)
        if dead is not None:
            self.risk.cancelled(dead.symbol)
            self.unfilled += 1

    def _count_decision(self, symbol: str, strategy: str, path: str, taken: bool) -> None:
        key = (symbol, strategy, path, "true" if taken else "false")
        counter = self._decision_counters.get(key)
        if counter is None:
            counter = self._decision_counters[key] = metrics.DECISIONS.labels(*key)
        counter.inc()

    def _counterfactual_closed(self, closed: Closed) -> None:
        self._emit(counterfactual_outcome(closed, self.source, self.run_id))

    def _trade_closed(self, t: Trade) -> None:
        pv = self.instruments[t.symbol].point_value_usd
        self._emit(trade_outcome(t, pv, self.source, self.run_id))
        pnl = t.pnl_usd
        bar = self.last_bar.get(t.symbol)
        self.risk.closed(t.symbol, pnl, t.exit_ts_s, bar.interval_s if bar else 60)
        self.realized_pnl_usd[t.symbol] += pnl
        self._equity_usd += pnl
        self.equity.append((t.exit_ts_s, self._equity_usd))
        if self._record:
            metrics.PNL.labels(symbol=t.symbol).set(self.realized_pnl_usd[t.symbol])

    def _emit(self, event: Event) -> None:
        topic = topic_for(event)
        for sink in self.sinks:
            sink(topic, event)
        self.events_emitted += 1

    # runs ---------------------------------------------------------------

    def run(
        self,
        bars: Iterable[MarketBar],
        max_bars: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Process bars as fast as possible; return how many were processed."""
        on_bar = self.on_bar
        n = 0
        for bar in bars:
            on_bar(bar)
            n += 1
            if progress is not None and n % 4096 == 0:
                progress(n)
            if max_bars is not None and n >= max_bars:
                break
        return n

    def finish(self) -> None:
        """Flatten the venue (`shutdown`: unfilled entries cancelled) and close counterfactuals."""
        unfilled = self.unfilled
        if self.venue.connected:
            self._venue_call(self.venue.flatten, None, "shutdown")
        for trade in self.book.settle():
            self._trade_closed(trade)
        closed, dropped = self.shadow.close_all(self.last_bar, "shutdown")
        for c in closed:
            self._counterfactual_closed(c)
        self.unfilled += len(dropped)
        if self.unfilled > unfilled:
            log.info(
                "%d orders placed on the last bar never filled (no outcome emitted)",
                self.unfilled - unfilled,
            )

    def status(self) -> dict[str, Any]:
        """Return counters for /healthz and summaries."""
        return {
            "run_id": self.run_id,
            "source": self.source,
            "venue": {"name": self.venue.name, "state": self.venue.state.value},
            "bars": self.bars,
            "events": self.events_emitted,
            "ignored_bars": self.ignored_bars,
            "unfilled_orders": self.unfilled,
            "order_errors": self.order_errors,
            "open_positions": len(self.venue.positions()),
            "open_counterfactuals": len(self.shadow.positions(counterfactual=True)),
            "working_orders": len(self.venue.working_orders()),
            "realized_pnl_usd": {s: round(v, 2) for s, v in self.realized_pnl_usd.items()},
            "risk": self.risk.state(),
            "last_bar": {s: b.ts_event.isoformat() for s, b in self.last_bar.items()},
        }
