"""Per-bar decisions: candidates -> meta choice -> predicted R -> size -> contracts.

With models (`path="models"`): the meta classifier scores `meta_vector` and the
candidate whose strategy has the highest probability is chosen; the execution
model predicts its R-multiple from `exec_vector` (a prediction <= `min_predicted_r`
skips it); the RL sizer maps `sizer_vector` to a multiplier clamped to [0.1, 2.0]
(1.0 when `RL_ENABLED=0` or no sizer is loaded). A family that is not loaded
falls back to its rule below; the path is "models" as soon as one model is loaded.

Rules (`path="rules"`, no models): the first candidate in the fixed priority
S6 Breakout > S2 EmaCross > S11 Momentum > S3 MeanReversion is chosen, nothing is
predicted, the multiplier is 1.0.

Contracts = round(BASE_RISK_USD / (stop distance x point value) x multiplier),
before the risk limits cap them. Every input row is a preallocated float32 buffer
reused across decisions and scored in place through onnxruntime IOBindings (`Scorer`);
`holder.current` is read once per decision.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

import numpy as np

from features.compute import MarketFeatures
from features.vectors import (
    MODEL_FEATURES,
    SIZE_MAX,
    SIZE_MIN,
    exec_vector,
    meta_stream_values,
    meta_vector,
    sizer_vector,
)
from infra.contracts import RULE_PRIORITY, STRATEGIES, Decision
from infra.contracts.base import unchecked
from trader.core.instruments import Instrument
from trader.core.strategies import Candidate
from trader.core.stream_cache import StreamCache
from trader.delivery.canary import ModelRouter
from trader.delivery.models import ModelHolder, ModelSet, Scorer

__all__ = ["RULE_PRIORITY", "Choice", "Decider", "Variant", "decision_for", "record_variant"]

log = logging.getLogger(__name__)

Variant = Literal["champion", "challenger", "shadow"]

_RULE_RANK = {s: i for i, s in enumerate(RULE_PRIORITY)}
_STRATEGY_INDEX = {s: i for i, s in enumerate(STRATEGIES)}
_EMPTY: Mapping[str, float] = {}
_BOUND_SETS = 4  # model sets whose scorers stay bound: champion, challenger, shadow, the last
_Scorers = tuple[Scorer | None, Scorer | None, Scorer | None]


class Choice(NamedTuple):
    """What the models (or rules) said for one bar's candidates of one symbol.

    The path stores the meta model's scores and the market features as it got them;
    `probabilities` and `features` build the record's dict and float32 tuple when
    asked, after the decision.
    """

    path: Literal["models", "rules"]
    chosen: int  # index into the candidates
    scores: list[float] | None  # the meta model's output, in STRATEGIES order
    predicted_r: float | None
    multiplier: float
    contracts: int  # before risk caps
    stop_usd: float  # the chosen candidate's stop distance per contract, USD
    model_versions: dict[str, str]
    market: list[float]  # MarketFeatures.values() of the decision's bar
    skip_reason: str | None  # set when the models veto the chosen candidate

    @property
    def probabilities(self) -> dict[str, float]:
        """Return strategy -> meta probability ({} without a meta model)."""
        scores = self.scores
        return {} if scores is None else dict(zip(STRATEGIES, scores, strict=False))

    @property
    def features(self) -> tuple[float, ...]:
        """Return the market features rounded to float32, as the models saw them."""
        return tuple(np.array(self.market, dtype=np.float32).tolist())


class Decider:
    """Turn a bar's candidates into a `Choice`, reusing preallocated input rows."""

    def __init__(
        self,
        holder: ModelHolder,
        cache: StreamCache,
        *,
        rl_enabled: bool = True,
        base_risk_usd: float = 500.0,
        min_predicted_r: float = 0.0,
    ) -> None:
        self.holder = holder
        self.cache = cache
        self.rl_enabled = rl_enabled
        self.base_risk_usd = base_risk_usd
        self.min_predicted_r = min_predicted_r
        self.meta_row = np.zeros((1, len(MODEL_FEATURES["meta"])), dtype=np.float32)
        self.exec_row = np.zeros((1, len(MODEL_FEATURES["exec"])), dtype=np.float32)
        self.sizer_row = np.zeros((1, len(MODEL_FEATURES["sizer"])), dtype=np.float32)
        #: id(model set) -> (the set, its scorers over the rows above); see `scorers`
        self._bound: dict[int, tuple[ModelSet, _Scorers]] = {}
        #: symbol -> (the stream mapping last seen, its part of the meta row)
        self._meta_tails: dict[str, tuple[Mapping[str, Mapping[str, float]], list[float]]] = {}

    def scorers(self, models: ModelSet) -> _Scorers:
        """Return the set's (meta, exec, sizer) scorers bound to this decider's rows."""
        entry = self._bound.get(id(models))
        if entry is not None and entry[0] is models:
            return entry[1]
        if len(self._bound) >= _BOUND_SETS:  # a hot swap: forget the oldest set
            del self._bound[next(iter(self._bound))]
        meta, ex, sizer = models.meta, models.exec, models.sizer
        scorers = (
            meta.bind(self.meta_row) if meta is not None else None,
            ex.bind(self.exec_row) if ex is not None else None,
            sizer.bind(self.sizer_row) if sizer is not None else None,
        )
        self._bound[id(models)] = (models, scorers)
        return scorers

    def decide(
        self,
        symbol: str,
        candidates: Sequence[Candidate],
        f: MarketFeatures,
        instrument: Instrument,
        models: ModelSet | None = None,
    ) -> Choice:
        """Choose one candidate and size it; never raises on model output.

        `models` is the set the canary router chose (default: `holder.current`).
        """
        if models is None:  # hot swap/canary: a routed set decides when given
            models = self.holder.current
        meta, ex, sizer = self.scorers(models)
        market = f.values()
        stream = self.cache.strategy_values(symbol)
        scores: list[float] | None = None
        if meta is not None:
            tail = self._meta_tails.get(symbol)
            if tail is None or tail[0] is not stream:  # learned since: rebuild the stream part
                tail = self._meta_tails[symbol] = (stream, meta_stream_values(stream))
            meta_vector(market, stream, out=self.meta_row[0], stream_values=tail[1])
            scores = meta().ravel().tolist()
            chosen, best = 0, -1.0
            for i, c in enumerate(candidates):
                p = scores[_STRATEGY_INDEX[c.strategy]]
                if p > best:
                    chosen, best = i, p
            meta_prob = scores[_STRATEGY_INDEX[candidates[chosen].strategy]]
        else:
            chosen = min(range(len(candidates)), key=lambda i: _RULE_RANK[candidates[i].strategy])
            meta_prob = 1.0 / len(candidates)
        cand = candidates[chosen]
        own = stream.get(cand.strategy, _EMPTY)
        stop_atr = cand.stop_atr
        predicted_r: float | None = None
        skip: str | None = None
        if ex is not None:
            exec_vector(
                market,
                cand.strategy,
                cand.side,
                stop_atr,
                cand.reward_risk,
                own,
                out=self.exec_row[0],
            )
            predicted_r = ex().item(0)
            if not math.isfinite(predicted_r):
                predicted_r, skip = None, "model_output_invalid"
            elif predicted_r <= self.min_predicted_r:
                skip = "low_predicted_r"
        multiplier = 1.0
        if sizer is not None and self.rl_enabled:
            sizer_vector(
                market,
                meta_prob,
                predicted_r or 0.0,
                cand.side,
                stop_atr,
                own,
                out=self.sizer_row[0],
            )
            raw = sizer().item(0)
            multiplier = min(SIZE_MAX, max(SIZE_MIN, raw)) if math.isfinite(raw) else 1.0
        stop_usd = cand.stop_distance * instrument.point_value_usd
        contracts = round(self.base_risk_usd / stop_usd * multiplier) if stop_usd > 0 else 0
        return Choice(
            "rules" if models.empty else "models",
            chosen,
            scores,
            predicted_r,
            multiplier,
            contracts,
            stop_usd,
            models.versions,
            market,
            skip,
        )


def decision_for(
    choice: Choice,
    variant: Variant,
    strategy: str,
    chosen: bool,
    reason: str,
    contracts: int,
    probabilities: dict[str, float] | None = None,
) -> Decision:
    """Return the decision on one candidate of a `Choice` (the chosen one, or one not chosen).

    Built from values already checked here and by risk, so pydantic does not re-validate.
    `probabilities` is `choice.probabilities` when the caller already built it.
    """
    taken = chosen and reason == "taken"
    fields = {
        "path": choice.path,
        "taken": taken,
        "reason": reason if chosen else "not_chosen",
        "chosen_strategy": strategy,
        "probabilities": choice.probabilities if probabilities is None else probabilities,
        "predicted_r": choice.predicted_r if chosen else None,
        "size_multiplier": choice.multiplier if chosen else 1.0,
        "contracts": contracts if taken else 0,
        "variant": variant,
    }
    return unchecked(Decision, fields, fields)


def record_variant(
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
