"""The engine: one code path for live trading, backtests and replays.

Per bar: update the symbol's features, let the paper broker fill and exit, run the
four strategies, decide among the candidates (models or rules, then risk), emit a
`SignalSnapshot` for every candidate and a `TradeOutcome` for every closed trade
(real or counterfactual). Events go to the sinks (outbox, lake writer, a list) and
back into the stream-feature cache. Nothing here touches the network or blocks.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from features.compute import MarketFeatures
from infra.contracts import FEATURE_NAMES, Decision, Event, SignalSnapshot, TradeOutcome, topic_for
from infra.settings import Settings
from trader import metrics
from trader.core.bar import MarketBar
from trader.core.decision import Choice, Decider
from trader.core.instruments import Instrument, instruments_from_settings, require
from trader.core.risk import RiskLimits, RiskManager
from trader.core.stats import TradeStats
from trader.core.strategies import Candidate, Strategy, build_strategies
from trader.core.stream_cache import StreamCache
from trader.delivery.canary import ModelRouter
from trader.delivery.models import ModelHolder
from trader.venues.paper import Closed, PaperBroker, Position

__all__ = ["Engine", "EngineConfig", "Sink"]

log = logging.getLogger(__name__)

Sink = Callable[[str, Event], None]


@dataclass(frozen=True)
class EngineConfig:
    """What a run is: symbols, the `source` tag, the run id and switches."""

    symbols: tuple[str, ...] = ("ES", "NQ")
    source: str = "sim"
    run_id: str = ""
    emit_bars: bool = False
    record_metrics: bool = True
    max_hold_bars: int = 240


def _utc(ts_s: int) -> datetime:
    return datetime.fromtimestamp(ts_s, UTC)


class Engine:
    """Features, strategies, decisions, risk and the paper broker for a set of symbols."""

    def __init__(
        self,
        settings: Settings,
        config: EngineConfig,
        holder: ModelHolder | None = None,
        sinks: Iterable[Sink] = (),
        cache: StreamCache | None = None,
        router: ModelRouter | None = None,
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
        self.sinks: list[Sink] = list(sinks)
        self.decider = Decider(
            self.holder,
            self.cache,
            rl_enabled=settings.rl_enabled,
            base_risk_usd=settings.base_risk_usd,
        )
        self.risk = RiskManager(RiskLimits.from_settings(settings))
        self.flatten = settings.flatten_at_session_end
        self.broker = PaperBroker(
            {s: self.instruments[s] for s in self.symbols},
            slippage_ticks=settings.slippage_ticks,
            commission_per_contract_usd=settings.commission_per_contract_usd,
            flatten=self.flatten,
            max_hold_bars=config.max_hold_bars,
        )
        self.features = {s: MarketFeatures(s) for s in self.symbols}
        self.strategies: dict[str, list[Strategy]] = {
            s: build_strategies(self.instruments[s]) for s in self.symbols
        }
        self.stats = TradeStats()
        self.today = TradeStats()
        self.last_bar: dict[str, MarketBar] = {}
        self.bars = 0
        self.ignored_bars = 0
        self.unfilled = 0
        self.events_emitted = 0
        self.realized_pnl_usd: dict[str, float] = dict.fromkeys(self.symbols, 0.0)
        self.equity: list[tuple[int, float]] = []
        self._equity_usd = 0.0
        self._record = config.record_metrics
        self._decision_counters: dict[tuple[str, str, str, str], Any] = {}

    # the per-bar path ---------------------------------------------------

    def on_bar(self, bar: MarketBar) -> None:
        """Process one bar of any configured symbol (others are counted and ignored)."""
        f = self.features.get(bar.symbol)
        if f is None:
            self.ignored_bars += 1
            return
        ready = f.push(bar.ts_s, bar.open, bar.high, bar.low, bar.close, bar.volume)
        if f.trading_day != self.risk.day:
            self.risk.new_bar(f.trading_day)
            self.today = TradeStats()
        broker = self.broker
        if broker.open[bar.symbol] or broker.pending[bar.symbol]:
            for closed in broker.on_bar(bar, f.minutes_to_close, f.in_rth):
                self._closed(closed)
        # strategies keep no per-bar state: bars that cannot trade (exchange calendar) skip them
        if ready and (f.entries_allowed if self.flatten else f.in_session):
            candidates = None
            for strategy in self.strategies[bar.symbol]:
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
        self.last_bar[bar.symbol] = bar
        self.bars += 1

    def evaluate_bar(self, bar: MarketBar) -> list[Candidate]:
        """Update features with a bar and return the candidates `on_bar` would act on."""
        f = self.features[bar.symbol]
        if not f.push(bar.ts_s, bar.open, bar.high, bar.low, bar.close, bar.volume):
            return []
        if not (f.entries_allowed if self.flatten else f.in_session):
            return []
        return [c for s in self.strategies[bar.symbol] if (c := s.on_bar(f)) is not None]

    def decide(self, symbol: str, candidates: list[Candidate]) -> tuple[Choice, list[Decision]]:
        """Run the decision path for a bar's candidates: models (or rules), then risk."""
        f = self.features[symbol]
        inst = self.instruments[symbol]
        router = self.router
        if router is None:
            choice = self.decider.decide(symbol, candidates, f, inst)
            variant = "champion"
        else:  # canary routing: one pre-built (model set, variant) per decision
            models, variant = router.select(symbol, f.ts_s)
            choice = self.decider.decide(symbol, candidates, f, inst, models)
        decisions: list[Decision] = []
        chosen = candidates[choice.chosen]
        strategy = chosen.strategy
        contracts, reason = 0, choice.skip_reason
        if reason is None:
            stop_usd = chosen.stop_distance * inst.point_value_usd
            contracts, reason = self.risk.check(symbol, choice.contracts, stop_usd, f.ts_s)
        for i, _cand in enumerate(candidates):
            if i == choice.chosen:
                taken = reason == "taken"
                decisions.append(
                    Decision.model_construct(  # built from checked values: no re-validation
                        path=choice.path,  # type: ignore[arg-type]
                        taken=taken,
                        reason=reason,
                        chosen_strategy=strategy,
                        probabilities=choice.probabilities,
                        predicted_r=choice.predicted_r,
                        size_multiplier=choice.multiplier,
                        contracts=contracts if taken else 0,
                        variant=variant,  # type: ignore[arg-type]
                    )
                )
            else:
                decisions.append(
                    Decision.model_construct(
                        path=choice.path,  # type: ignore[arg-type]
                        taken=False,
                        reason="not_chosen",
                        chosen_strategy=strategy,
                        probabilities=choice.probabilities,
                        predicted_r=None,
                        size_multiplier=1.0,
                        contracts=0,
                        variant=variant,  # type: ignore[arg-type]
                    )
                )
        return choice, decisions

    def _act(self, bar: MarketBar, f: MarketFeatures, candidates: list[Candidate]) -> None:
        t0 = time.perf_counter()
        choice, decisions = self.decide(bar.symbol, candidates)
        if self._record:
            metrics.DECISION_LATENCY.observe(time.perf_counter() - t0)
        router = self.router
        shadow = router.shadow() if router is not None else None
        shadow_choice = None
        if shadow is not None:  # shadow mode: the challenger scores the same inputs, untraded
            inst = self.instruments[bar.symbol]
            shadow_choice = self.decider.decide(bar.symbol, candidates, f, inst, shadow)
        signal_ids: list[str] | None = [] if router is not None else None
        ts = _utc(bar.ts_s)
        names = tuple(c.strategy for c in candidates)
        for cand, decision in zip(candidates, decisions, strict=True):
            snapshot = SignalSnapshot(
                ts_event=ts,
                symbol=bar.symbol,
                strategy=cand.strategy,
                side=cand.side_name,  # type: ignore[arg-type]
                entry=cand.entry,
                stop=cand.stop,
                target=cand.target,
                feature_names=FEATURE_NAMES,
                features=choice.features,
                candidates=names,
                model_versions=choice.model_versions,
                decision=decision,
                source=self.source,
                run_id=self.run_id,
            )
            self._emit(snapshot)
            if signal_ids is not None:
                signal_ids.append(snapshot.event_id)
            self.cache.learn(snapshot)
            taken = decision.taken
            self.stats.signal(bar.symbol, cand.strategy, taken)
            self.today.signal(bar.symbol, cand.strategy, taken)
            if self._record:
                self._count_decision(bar.symbol, cand.strategy, choice.path, taken)
            self.broker.place(
                Position(
                    snapshot,
                    bar.symbol,
                    cand.strategy,
                    cand.side,
                    decision.contracts if taken else 1,
                    cand.stop_distance,
                    abs(cand.target - cand.entry),
                    counterfactual=not taken,
                )
            )
            if taken:
                self.risk.opened(bar.symbol)
        if router is not None and signal_ids is not None:
            self._record_variant(router, choice, decisions, shadow_choice, signal_ids)

    def _record_variant(
        self,
        router: ModelRouter,
        choice: Choice,
        decisions: list[Decision],
        shadow_choice: Choice | None,
        signal_ids: list[str],
    ) -> None:
        """Tell the canary router who decided (and what the shadow would have done)."""
        chosen = decisions[choice.chosen]
        if shadow_choice is None:
            router.record_decision(signal_ids[choice.chosen], chosen.variant, taken=chosen.taken)
            return
        # The shadow passes the risk limits when the champion did, or when the champion's
        # own models vetoed its pick before risk was asked.
        shadow_taken = shadow_choice.skip_reason is None and (
            chosen.taken or choice.skip_reason is not None
        )
        router.record_shadow(
            signal_ids[choice.chosen], chosen.taken, signal_ids[shadow_choice.chosen], shadow_taken
        )
        log.debug(
            "shadow %s: champion %s taken=%s, challenger %s taken=%s p=%s r=%s",
            chosen.chosen_strategy,
            signal_ids[choice.chosen],
            chosen.taken,
            signal_ids[shadow_choice.chosen],
            shadow_taken,
            shadow_choice.probabilities,
            shadow_choice.predicted_r,
        )

    def _count_decision(self, symbol: str, strategy: str, path: str, taken: bool) -> None:
        key = (symbol, strategy, path, "true" if taken else "false")
        counter = self._decision_counters.get(key)
        if counter is None:
            counter = self._decision_counters[key] = metrics.DECISIONS.labels(*key)
        counter.inc()

    def _closed(self, closed: Closed) -> None:
        p = closed.position
        signal: SignalSnapshot = p.signal
        outcome = TradeOutcome(
            ts_event=_utc(closed.exit_ts_s),
            signal_id=signal.event_id,
            symbol=p.symbol,
            strategy=p.strategy,
            side=signal.side,
            entry_ts=_utc(p.entry_ts_s),
            entry_price=p.entry_price,
            exit_ts=_utc(closed.exit_ts_s),
            exit_price=closed.exit_price,
            quantity=p.quantity,
            pnl_usd=closed.pnl_usd,
            r_multiple=closed.r_multiple,
            mae_r=closed.mae_r,
            mfe_r=closed.mfe_r,
            commission_usd=closed.commission_usd,
            exit_reason=closed.exit_reason,  # type: ignore[arg-type]
            counterfactual=p.counterfactual,
            model_versions=signal.model_versions,
            source=self.source,
            run_id=self.run_id,
        )
        self._emit(outcome)
        if self.router is not None:  # resolves a canary/shadow decision with its R
            self.router.record_outcome(signal.event_id, closed.r_multiple)
        self.cache.learn(outcome)
        self.stats.outcome(
            p.symbol, p.strategy, closed.pnl_usd, closed.r_multiple, p.counterfactual
        )
        self.today.outcome(
            p.symbol, p.strategy, closed.pnl_usd, closed.r_multiple, p.counterfactual
        )
        if not p.counterfactual:
            bar = self.last_bar.get(p.symbol)
            self.risk.closed(
                p.symbol, closed.pnl_usd, closed.exit_ts_s, bar.interval_s if bar else 60
            )
            self.realized_pnl_usd[p.symbol] += closed.pnl_usd
            self._equity_usd += closed.pnl_usd
            self.equity.append((closed.exit_ts_s, self._equity_usd))
            if self._record:
                metrics.PNL.labels(symbol=p.symbol).set(self.realized_pnl_usd[p.symbol])

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
        """Exit every open position at the last close (`shutdown`) and drop unfilled orders."""
        closed, unfilled = self.broker.close_all(self.last_bar, "shutdown")
        for c in closed:
            self._closed(c)
        for p in unfilled:
            if not p.counterfactual:
                self.risk.cancelled(p.symbol)
        self.unfilled += len(unfilled)
        if unfilled:
            log.info(
                "%d orders placed on the last bar never filled (no outcome emitted)", len(unfilled)
            )

    def status(self) -> dict[str, Any]:
        """Return counters for /healthz and summaries."""
        return {
            "run_id": self.run_id,
            "source": self.source,
            "bars": self.bars,
            "events": self.events_emitted,
            "ignored_bars": self.ignored_bars,
            "unfilled_orders": self.unfilled,
            "open_positions": len(self.broker.positions(counterfactual=False)),
            "open_counterfactuals": len(self.broker.positions(counterfactual=True)),
            "realized_pnl_usd": {s: round(v, 2) for s, v in self.realized_pnl_usd.items()},
            "risk": self.risk.state(),
            "last_bar": {s: b.ts_event.isoformat() for s, b in self.last_bar.items()},
        }
