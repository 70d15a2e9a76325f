"""In-process stream features for decisions, fed with the trader's own events.

The cache is one of the engine's sinks: every outcome the engine publishes is learned
here (`__call__`), so the stream features a decision sees (per-strategy win rate,
EW R, ...) are the same in a backtest, live and in a replay. The computation is
`features.stream.StreamFeatureState` (the streams workers use the same class). Values
are cached per symbol and updated per learned key (the row of that strategy only),
keeping the decision path cheap.

Only what a model reads is learned. Bars feed the per-symbol features and signals
the signal rate (`SIGNAL_STREAM_FEATURES`), which no model input uses (a test
holds `features.vectors.MODEL_FEATURES` to that), so neither is fed: a signal
costs a backtest no fold and leaves the decider's cached rows as they are. The
streams workers learn all three, for the online store and the lake.
"""

from __future__ import annotations

from collections.abc import Mapping

from features.stream import StreamFeatureState
from infra.contracts import Event, TradeOutcome
from infra.contracts.vocab import STRATEGY_STREAM_FEATURES

__all__ = ["StreamCache"]


class StreamCache:
    """Stream features per symbol and strategy, learned from the trader's events."""

    def __init__(self, state: StreamFeatureState | None = None) -> None:
        self.state = state if state is not None else StreamFeatureState(detect_drift=False)
        self._strategy: dict[str, Mapping[str, Mapping[str, float]]] = {}
        self._symbol: dict[str, Mapping[str, float]] = {}

    def __call__(self, topic: str, event: Event) -> None:
        """Engine sink: learn every outcome (no model reads what other events feed).

        Only the learned key's row of the symbol's strategy values is replaced, in a new
        mapping (the decider tells a change by identity); no feature update is built.
        """
        if not isinstance(event, TradeOutcome):
            return
        ks = self.state.fold(event)
        if ks is None:
            return
        symbol = ks.symbol
        self._symbol.pop(symbol, None)
        cached = self._strategy.get(symbol)
        if cached is not None:
            row = cached.get(ks.strategy)
            fresh = dict(cached)
            fresh[ks.strategy] = {
                **(row if row is not None else dict.fromkeys(STRATEGY_STREAM_FEATURES, 0.0)),
                **ks.values,
            }
            self._strategy[symbol] = fresh

    def strategy_values(self, symbol: str) -> Mapping[str, Mapping[str, float]]:
        """Return strategy -> feature name -> value for a symbol."""
        cached = self._strategy.get(symbol)
        if cached is None:
            cached = self._strategy[symbol] = self.state.strategy_values(symbol)
        return cached

    def symbol_values(self, symbol: str) -> Mapping[str, float]:
        """Return the per-symbol stream features."""
        cached = self._symbol.get(symbol)
        if cached is None:
            cached = self._symbol[symbol] = self.state.symbol_values(symbol)
        return cached
