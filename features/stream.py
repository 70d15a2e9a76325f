"""Stream features: pure, deterministic online statistics over bars, signals and outcomes.

`StreamFeatureState.learn(event)` folds one event into river statistics and returns
the `FeatureUpdate` events of the views it changed (and a `DriftAlert` when a
strategy's R-multiple distribution drifts). The trader imports this module
in-process, so it depends on river, numpy-free stdlib and the event contracts only.

Views (one per triggering topic, so every value depends on the order of a single
Kafka partition and never on how topics interleave):

- `strategy_stats` (outcomes, per symbol + strategy): win_rate, mean_r, ewm_r,
  drawdown_r, trade_count. Counterfactual outcomes count: they are what the
  strategy would have done.
- `signal_stats` (signals, per symbol + strategy): signal_rate (signals per hour
  of market time over the trailing hour).
- `symbol_stats` (bars, per symbol): realized_vol (std of 1-bar log returns over the
  last 30 bars) and regime (-1 down trend, 0 range, +1 up trend).

State is a mapping of small per-key pieces (`KeyState`), so a Faust table with a
changelog can hold it: pass the table as `store`. Every update the state makes is
written back with `store[key] = piece`, which is what triggers the changelog.
Each piece remembers the Kafka positions it has applied; an event at or below a
remembered position is not applied twice (a restarted worker re-reads uncommitted
records) and its key's latest update is returned again instead, with the same
event id, so downstream stores converge.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from river import stats, utils

from features import stream_codec
from features.stream_codec import StateDecodeError
from infra.contracts import (
    Bar,
    DriftAlert,
    FeatureUpdate,
    SchemaRef,
    SignalSnapshot,
    TradeOutcome,
)
from infra.contracts.base import unchecked
from infra.contracts.vocab import (
    OUTCOME_STREAM_FEATURES,
    SIGNAL_STREAM_FEATURES,
    STRATEGY_STREAM_FEATURES,
    STREAM_VIEWS,
    SYMBOL_STREAM_FEATURES,
)

__all__ = [
    "OUTCOME_FEATURES",
    "SIGNAL_FEATURES",
    "SYMBOL_FEATURES",
    "VIEWS",
    "VIEW_FEATURES",
    "KeyState",
    "Source",
    "StateDecodeError",
    "StreamFeatureState",
    "derived_id",
    "key_for",
]

STATE_SCHEMA = "tradeloop.stream_state"
STATE_VERSION = 2  # 1 was a pickle
WINDOW_TRADES = 50
EWM_FADING = 0.1
SIGNAL_PERIOD = dt.timedelta(hours=1)
VOL_WINDOW_BARS = 30
EMA_FAST_FADING = 2.0 / 11.0
EMA_SLOW_FADING = 2.0 / 31.0
REGIME_THRESHOLD = 1.0
ADWIN_DELTA = 0.002

OUTCOME_VIEW, SIGNAL_VIEW, SYMBOL_VIEW = STREAM_VIEWS
VIEWS: tuple[str, ...] = STREAM_VIEWS
OUTCOME_FEATURES: tuple[str, ...] = OUTCOME_STREAM_FEATURES
SIGNAL_FEATURES: tuple[str, ...] = SIGNAL_STREAM_FEATURES
SYMBOL_FEATURES: tuple[str, ...] = SYMBOL_STREAM_FEATURES
VIEW_FEATURES: dict[str, tuple[str, ...]] = {
    OUTCOME_VIEW: OUTCOME_FEATURES,
    SIGNAL_VIEW: SIGNAL_FEATURES,
    SYMBOL_VIEW: SYMBOL_FEATURES,
}
_FEATURE_UPDATE_SCHEMA = SchemaRef(
    name=FeatureUpdate.SCHEMA_NAME, version=FeatureUpdate.SCHEMA_VERSION
)
#: Every field of a FeatureUpdate, all set by `_outputs` (pydantic's fields-set).
_FEATURE_UPDATE_FIELDS = tuple(FeatureUpdate.model_fields)
_KIND_VIEW = {"o": OUTCOME_VIEW, "s": SIGNAL_VIEW, "b": SYMBOL_VIEW}

StreamEvent = Bar | SignalSnapshot | TradeOutcome
Output = FeatureUpdate | DriftAlert


@dataclass(frozen=True, slots=True)
class Source:
    """Where an event was read: topic, partition and offset (for exactly-once folding)."""

    topic: str
    partition: int
    offset: int


def derived_id(trigger_event_id: str, tag: str) -> str:
    """Return a deterministic event id for an output derived from a triggering event."""
    return hashlib.sha256(f"{trigger_event_id}:{tag}".encode()).hexdigest()[:32]


def key_for(event: StreamEvent) -> str:
    """Return the state key an event folds into (`o|ES|S2`, `s|ES|S2`, `b|ES`)."""
    if isinstance(event, TradeOutcome):
        return f"o|{event.symbol}|{event.strategy}"
    if isinstance(event, SignalSnapshot):
        return f"s|{event.symbol}|{event.strategy}"
    if isinstance(event, Bar):
        return f"b|{event.symbol}"
    raise TypeError(
        f"stream features take Bar, SignalSnapshot or TradeOutcome, not {type(event).__name__}"
    )


def _naive(ts: dt.datetime) -> dt.datetime:
    return ts.astimezone(dt.UTC).replace(tzinfo=None)


@dataclass(slots=True)
class KeyState:
    """The online statistics of one key plus what it last emitted."""

    kind: str
    symbol: str
    strategy: str = ""
    version: int = STATE_VERSION
    stats: dict[str, Any] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    last_event_id: str = ""
    last_ts_event: dt.datetime | None = None
    last_ts_init: dt.datetime | None = None
    last_drift: tuple[float, str] | None = None

    @classmethod
    def new(cls, key: str, *, detect_drift: bool = True) -> KeyState:
        """Return an empty state for a key (without a drift detector if asked)."""
        parts = key.split("|")
        kind, symbol = parts[0], parts[1]
        strategy = parts[2] if len(parts) > 2 else ""
        ks = cls(kind=kind, symbol=symbol, strategy=strategy)
        if kind == "o":
            ks.stats = {
                "win": utils.Rolling(stats.Mean, window_size=WINDOW_TRADES),
                "r": utils.Rolling(stats.Mean, window_size=WINDOW_TRADES),
                "ewm": stats.EWMean(fading_factor=EWM_FADING),
                "cum_r": 0.0,
                "peak_r": 0.0,
                "count": 0,
            }
            if detect_drift:
                ks.stats["adwin"] = _adwin()
        elif kind == "s":
            ks.stats = {"rate": utils.TimeRolling(stats.Sum, period=SIGNAL_PERIOD)}
        elif kind == "b":
            ks.stats = {
                "last_close": None,
                "var": utils.Rolling(stats.Var, window_size=VOL_WINDOW_BARS, ddof=1),
                "fast": stats.EWMean(fading_factor=EMA_FAST_FADING),
                "slow": stats.EWMean(fading_factor=EMA_SLOW_FADING),
            }
        else:
            raise ValueError(f"unknown state key {key!r}")
        return ks

    @property
    def view(self) -> str:
        """Return the feature view this key feeds."""
        return _KIND_VIEW[self.kind]

    def to_bytes(self) -> bytes:
        """Serialise exactly as a versioned JSON document (floats round-trip bit for bit)."""
        doc = {
            "schema": STATE_SCHEMA,
            "version": self.version,
            "kind": self.kind,
            "symbol": self.symbol,
            "strategy": self.strategy,
            "stats": {
                name: value if name in _SCALARS else stream_codec.export(value)
                for name, value in self.stats.items()
            },
            "values": {k: stream_codec.dump_float(v) for k, v in self.values.items()},
            "positions": self.positions,
            "last_event_id": self.last_event_id,
            "last_ts_event": _iso(self.last_ts_event),
            "last_ts_init": _iso(self.last_ts_init),
            "last_drift": (
                None
                if self.last_drift is None
                else [stream_codec.dump_float(self.last_drift[0]), self.last_drift[1]]
            ),
        }
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)

    @staticmethod
    def from_bytes(blob: bytes) -> KeyState:
        """Restore a piece written by `to_bytes`; raise `StateDecodeError` on anything else.

        The blob is untrusted (anyone who can produce to the changelog wrote it):
        it is parsed as JSON against the piece's schema and never executed.
        """
        try:
            doc = orjson.loads(blob)
        except orjson.JSONDecodeError as exc:
            raise StateDecodeError(f"state piece is not JSON ({exc})") from None
        return _piece_from_doc(doc)


_SCALARS = frozenset({"cum_r", "peak_r", "count", "last_close"})
_PIECE_FIELDS = (
    "schema",
    "version",
    "kind",
    "symbol",
    "strategy",
    "stats",
    "values",
    "positions",
    "last_event_id",
    "last_ts_event",
    "last_ts_init",
    "last_drift",
)


def _iso(ts: dt.datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()


def _str(v: Any, what: str, limit: int = 256) -> str:
    if not isinstance(v, str) or len(v) > limit:
        raise StateDecodeError(f"{what}: expected a string of at most {limit} characters")
    return v


def _utc(v: Any, what: str) -> dt.datetime | None:
    if v is None:
        return None
    try:
        ts = dt.datetime.fromisoformat(_str(v, what))
    except ValueError as exc:
        raise StateDecodeError(f"{what}: {exc}") from None
    if ts.utcoffset() != dt.timedelta(0):
        raise StateDecodeError(f"{what}: expected a UTC timestamp")
    return ts.replace(tzinfo=dt.UTC)


def _scalar(name: str, v: Any, what: str) -> float | int | None:
    if name == "count":
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise StateDecodeError(f"{what}: expected a trade count")
        return v
    if name == "last_close" and v is None:
        return None
    return stream_codec.load_float(v, what)


def _piece_from_doc(doc: Any) -> KeyState:
    if not isinstance(doc, dict) or set(doc) != set(_PIECE_FIELDS):
        raise StateDecodeError("not a stream state piece (fields differ)")
    if doc["schema"] != STATE_SCHEMA or doc["version"] != STATE_VERSION:
        raise StateDecodeError(
            f"state piece schema {doc['schema']!r:.40} v{doc['version']!r:.10} "
            f"(this code reads {STATE_SCHEMA} v{STATE_VERSION})"
        )
    kind = _str(doc["kind"], "kind", 1)
    if kind not in _KIND_VIEW:
        raise StateDecodeError(f"unknown state kind {kind!r}")
    symbol, strategy = _str(doc["symbol"], "symbol"), _str(doc["strategy"], "strategy")
    if "|" in symbol or "|" in strategy or (kind == "b") == bool(strategy):
        raise StateDecodeError(f"bad key parts {symbol!r:.40}/{strategy!r:.40} for kind {kind}")
    key = f"b|{symbol}" if kind == "b" else f"{kind}|{symbol}|{strategy}"
    stats_doc = doc["stats"]
    if not isinstance(stats_doc, dict):
        raise StateDecodeError("stats: expected an object")
    ks = KeyState.new(key, detect_drift="adwin" in stats_doc)
    if set(stats_doc) != set(ks.stats):
        raise StateDecodeError(f"stats of a {kind!r} piece: expected {sorted(ks.stats)}")
    for name, template in ks.stats.items():
        if name in _SCALARS:
            ks.stats[name] = _scalar(name, stats_doc[name], f"stats.{name}")
        else:
            stream_codec.restore(template, stats_doc[name], f"stats.{name}")
    values, positions = doc["values"], doc["positions"]
    if not isinstance(values, dict) or not set(values) <= set(VIEW_FEATURES[ks.view]):
        raise StateDecodeError(f"values: expected features of {ks.view}")
    ks.values = {k: stream_codec.load_float(v, f"values.{k}") for k, v in values.items()}
    if not isinstance(positions, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in positions.items()
    ):
        raise StateDecodeError("positions: expected {topic:partition: offset}")
    for pos in positions:
        _, _, part = pos.rpartition(":")
        if not part.isdigit():
            raise StateDecodeError(f"positions: {pos!r:.80} is not topic:partition")
    ks.positions = dict(positions)
    ks.last_event_id = _str(doc["last_event_id"], "last_event_id")
    ks.last_ts_event = _utc(doc["last_ts_event"], "last_ts_event")
    ks.last_ts_init = _utc(doc["last_ts_init"], "last_ts_init")
    drift = doc["last_drift"]
    if drift is not None:
        if not isinstance(drift, list) or len(drift) != 2:
            raise StateDecodeError("last_drift: expected [value, detail]")
        ks.last_drift = (
            stream_codec.load_float(drift[0], "last_drift"),
            _str(drift[1], "last_drift", 4096),
        )
    if ks.last_event_id and (ks.last_ts_event is None or ks.last_ts_init is None):
        raise StateDecodeError("a piece with a last event needs its timestamps")
    return ks


def _adwin() -> Any:
    # river.drift imports scikit-learn and pandas: only processes that detect drift pay for it.
    from river.drift import ADWIN

    return ADWIN(delta=ADWIN_DELTA)


def _fold_outcome(ks: KeyState, ev: TradeOutcome) -> tuple[float, str] | None:
    s = ks.stats
    r = float(ev.r_multiple)
    s["win"].update(1.0 if r > 0 else 0.0)
    s["r"].update(r)
    s["ewm"].update(r)
    s["cum_r"] = s["cum_r"] + r
    s["peak_r"] = max(s["peak_r"], s["cum_r"])
    s["count"] = s["count"] + 1
    adwin = s.get("adwin")
    if adwin is not None:
        adwin.update(r)
    ks.values = {
        "win_rate": float(s["win"].get()),
        "mean_r": float(s["r"].get()),
        "ewm_r": float(s["ewm"].get()),
        "drawdown_r": float(s["peak_r"] - s["cum_r"]),
        "trade_count": float(s["count"]),
    }
    if adwin is not None and adwin.drift_detected:
        return (
            ks.values["mean_r"],
            f"ADWIN(delta={ADWIN_DELTA}) on r_multiple after {s['count']} trades; "
            f"window mean {adwin.estimation:.4f}, width {adwin.width:.0f}",
        )
    return None


def _fold_signal(ks: KeyState, ev: SignalSnapshot) -> None:
    rolling = ks.stats["rate"]
    rolling.update(1.0, t=_naive(ev.ts_event))
    hours = SIGNAL_PERIOD.total_seconds() / 3600.0
    ks.values = {"signal_rate": float(rolling.get()) / hours}


def _fold_bar(ks: KeyState, ev: Bar) -> None:
    s = ks.stats
    close = float(ev.close)
    last = s["last_close"]
    if last is not None and last > 0:
        s["var"].update(math.log(close / last))
    s["last_close"] = close
    s["fast"].update(close)
    s["slow"].update(close)
    var = float(s["var"].get()) if len(s["var"].window) >= 2 else 0.0
    vol = math.sqrt(max(var, 0.0))
    spread = (float(s["fast"].get()) - float(s["slow"].get())) / close
    regime = 0.0
    if vol > 0.0:
        strength = spread / vol
        if strength > REGIME_THRESHOLD:
            regime = 1.0
        elif strength < -REGIME_THRESHOLD:
            regime = -1.0
    ks.values = {"realized_vol": vol, "regime": regime}


class StreamFeatureState:
    """Per-key online statistics; `learn` folds one event, the getters read values."""

    def __init__(
        self, store: MutableMapping[str, KeyState] | None = None, *, detect_drift: bool = True
    ) -> None:
        self.store: MutableMapping[str, KeyState] = store if store is not None else {}
        self.detect_drift = detect_drift
        if detect_drift:
            _adwin()  # import river.drift now, not on the first outcome mid-stream

    # Folding -----------------------------------------------------------

    def learn(self, event: StreamEvent, source: Source | None = None) -> list[Output]:
        """Fold one event; return the updates (and drift alerts) it produced.

        With a `source`, an event at or below the position this key already applied
        is not folded again; the key's latest outputs are returned instead.
        """
        ks = self.fold(event, source)
        return self._outputs(ks) if ks is not None else self.latest(key_for(event))

    def fold(self, event: StreamEvent, source: Source | None = None) -> KeyState | None:
        """Fold one event and return its key's state, building no output.

        Return None when `source` says the key already applied the event.
        """
        key = key_for(event)
        ks = self.store.get(key)
        if ks is None:
            ks = KeyState.new(key, detect_drift=self.detect_drift)
        if source is not None:
            pos = f"{source.topic}:{source.partition}"
            done = ks.positions.get(pos)
            if done is not None and source.offset <= done:
                return None
            ks.positions[pos] = source.offset
        drifted: tuple[float, str] | None = None
        if isinstance(event, TradeOutcome):
            drifted = _fold_outcome(ks, event)
        elif isinstance(event, SignalSnapshot):
            _fold_signal(ks, event)
        else:
            _fold_bar(ks, event)
        ks.last_event_id = event.event_id
        ks.last_ts_event = event.ts_event
        ks.last_ts_init = event.ts_init
        ks.last_drift = drifted
        self.store[key] = ks  # the assignment is what writes a Faust changelog
        return ks

    def learn_many(self, events: list[StreamEvent]) -> list[Output]:
        """Fold events in order; return every output."""
        out: list[Output] = []
        for ev in events:
            out.extend(self.learn(ev))
        return out

    def latest(self, key: str) -> list[Output]:
        """Return the outputs of the last event folded into a key (identical ids)."""
        ks = self.store.get(key)
        if ks is None or not ks.last_event_id:
            return []
        return self._outputs(ks)

    def _outputs(self, ks: KeyState) -> list[Output]:
        assert ks.last_ts_event is not None and ks.last_ts_init is not None
        out: list[Output] = [
            # built from already-validated values: skip validation on the hot path
            unchecked(
                FeatureUpdate,
                {
                    "schema_": _FEATURE_UPDATE_SCHEMA,
                    "event_id": derived_id(ks.last_event_id, ks.view),
                    "ts_event": ks.last_ts_event,
                    "ts_init": ks.last_ts_init,
                    "feature_view": ks.view,
                    "symbol": ks.symbol,
                    "strategy": ks.strategy,
                    "values": dict(ks.values),
                },
                _FEATURE_UPDATE_FIELDS,
            )
        ]
        if ks.last_drift is not None:
            value, detail = ks.last_drift
            out.append(
                DriftAlert(
                    event_id=derived_id(ks.last_event_id, "drift:r_multiple"),
                    ts_event=ks.last_ts_event,
                    ts_init=ks.last_ts_init,
                    symbol=ks.symbol,
                    strategy=ks.strategy,
                    metric="r_multiple",
                    detector="ADWIN",
                    value=value,
                    detail=detail,
                )
            )
        return out

    # Reading -----------------------------------------------------------

    def _items(self) -> Iterator[tuple[str, KeyState]]:
        yield from list(self.store.items())

    def strategy_values(self, symbol: str) -> dict[str, dict[str, float]]:
        """Return {strategy: {name: value}} for a symbol (STRATEGY_STREAM_FEATURES)."""
        out: dict[str, dict[str, float]] = {}
        for _, ks in self._items():
            if ks.symbol != symbol or ks.kind not in ("o", "s"):
                continue
            row = out.setdefault(ks.strategy, dict.fromkeys(STRATEGY_STREAM_FEATURES, 0.0))
            row.update(ks.values)
        return out

    def symbol_values(self, symbol: str) -> dict[str, float]:
        """Return {name: value} for a symbol (SYMBOL_STREAM_FEATURES)."""
        ks = self.store.get(f"b|{symbol}")
        row = dict.fromkeys(SYMBOL_STREAM_FEATURES, 0.0)
        if ks is not None:
            row.update(ks.values)
        return row

    def entity_rows(self) -> list[FeatureUpdate]:
        """Return the latest update of every key (what the online store should hold)."""
        out: list[FeatureUpdate] = []
        for key, _ in sorted(self._items()):
            out.extend(o for o in self.latest(key) if isinstance(o, FeatureUpdate))
        return out

    # Serialisation -----------------------------------------------------

    def to_state(self) -> dict[str, bytes]:
        """Return every key's piece as bytes."""
        return {key: ks.to_bytes() for key, ks in self._items()}

    @classmethod
    def from_state(
        cls, state: dict[str, bytes], store: MutableMapping[str, KeyState] | None = None
    ) -> StreamFeatureState:
        """Return a state restored from `to_state()` output."""
        out = cls(store)
        for key, blob in state.items():
            out.store[key] = KeyState.from_bytes(blob)
        return out
