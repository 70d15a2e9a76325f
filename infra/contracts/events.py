"""Event contracts: the only shapes that cross a process boundary, and their codec.

Each contract is a frozen pydantic model with `schema` (name + version), `event_id`
(the dedup key), `ts_event` (market time, UTC) and `ts_init` (creation time, UTC).
On the wire they are JSON encoded with orjson.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, ClassVar, Literal, TypeVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from infra.contracts.base import Event, EventDecodeError, SchemaRef, new_event_id, utc_now
from infra.contracts.manifest import Artifact, FamilyDecision, GateResult, ModelManifest, Signature
from infra.contracts.orders import (
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderRole,
    OrderSide,
    OrderSubmitted,
    OrderType,
    PositionReconciled,
    VenueEvent,
)
from infra.contracts.vocab import MODEL_FAMILIES, STRATEGIES, Side, StrategyId

__all__ = [
    "CONTRACTS",
    "MODEL_FAMILIES",
    "STRATEGIES",
    "Artifact",
    "Bar",
    "DeadLetter",
    "Decision",
    "DriftAlert",
    "Event",
    "EventDecodeError",
    "ExitReason",
    "FamilyDecision",
    "FeatureUpdate",
    "GateResult",
    "ModelManifest",
    "OrderAccepted",
    "OrderCancelled",
    "OrderEvent",
    "OrderExpired",
    "OrderFilled",
    "OrderRejected",
    "OrderRole",
    "OrderSide",
    "OrderSubmitted",
    "OrderType",
    "PositionReconciled",
    "SchemaRef",
    "Side",
    "SignalSnapshot",
    "Signature",
    "StrategyId",
    "TradeOutcome",
    "VenueEvent",
    "decode",
    "encode",
    "json_schemas",
    "new_event_id",
    "utc_now",
]

E = TypeVar("E", bound=Event)


class Bar(Event):
    """One OHLCV bar; `ts_event` is the moment the bar closed."""

    SCHEMA_NAME: ClassVar[str] = "bar"
    symbol: str = Field(min_length=1)
    open: float = Field(gt=0)
    high: float = Field(gt=0)
    low: float = Field(gt=0)
    close: float = Field(gt=0)
    volume: float = Field(ge=0)
    interval_s: int = Field(default=60, gt=0)
    source: str = "live"
    #: The futures contract the prices belong to (e.g. `ESZ4`); "" when unknown.
    contract: str = ""

    @model_validator(mode="after")
    def _ohlc(self) -> Bar:
        if self.high < self.low:
            raise ValueError(f"high {self.high} < low {self.low}")
        if not (self.low <= self.open <= self.high and self.low <= self.close <= self.high):
            raise ValueError("open and close must lie within [low, high]")
        return self


class Decision(BaseModel):
    """What the trader decided for one candidate signal."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    path: Literal["models", "rules"]
    taken: bool
    reason: str
    chosen_strategy: str | None = None
    probabilities: dict[str, float] = Field(default_factory=dict)
    predicted_r: float | None = None
    size_multiplier: float = Field(default=1.0, ge=0.0, le=2.0)
    contracts: int = Field(default=0, ge=0)
    variant: Literal["champion", "challenger", "shadow"] = "champion"


class SignalSnapshot(Event):
    """A candidate signal with the full feature vector and the decision taken on it."""

    SCHEMA_NAME: ClassVar[str] = "signal_snapshot"
    symbol: str = Field(min_length=1)
    strategy: str = Field(min_length=1)
    side: Side
    entry: float = Field(gt=0)
    stop: float = Field(gt=0)
    target: float = Field(gt=0)
    feature_names: tuple[str, ...]
    features: tuple[float, ...]
    candidates: tuple[str, ...] = ()
    model_versions: dict[str, str] = Field(default_factory=dict)
    decision: Decision
    source: str = "live"
    run_id: str = ""

    @model_validator(mode="after")
    def _features_match(self) -> SignalSnapshot:
        if len(self.feature_names) != len(self.features):
            raise ValueError(
                f"{len(self.feature_names)} feature_names but {len(self.features)} features"
            )
        return self

    def feature_dict(self) -> dict[str, float]:
        """Return the features keyed by name."""
        return dict(zip(self.feature_names, self.features, strict=True))


ExitReason = Literal["stop", "target", "session_end", "risk_flatten", "timeout", "shutdown"]


class TradeOutcome(Event):
    """A closed trade (or the counterfactual of a skipped signal) linked to its signal.

    Version 2 names the orders that opened and closed a real trade (`entry_order_id`,
    `exit_order_id`: client order ids; empty for counterfactuals and version 1).
    """

    SCHEMA_NAME: ClassVar[str] = "trade_outcome"
    SCHEMA_VERSION: ClassVar[int] = 2
    signal_id: str = Field(min_length=1)
    symbol: str = Field(min_length=1)
    strategy: str = Field(min_length=1)
    side: Side
    entry_ts: datetime
    entry_price: float = Field(gt=0)
    exit_ts: datetime
    exit_price: float = Field(gt=0)
    quantity: int = Field(ge=0)
    pnl_usd: float
    r_multiple: float
    mae_r: float
    mfe_r: float
    commission_usd: float = 0.0
    exit_reason: ExitReason
    counterfactual: bool = False
    model_versions: dict[str, str] = Field(default_factory=dict)
    source: str = "live"
    run_id: str = ""
    entry_order_id: str = ""
    exit_order_id: str = ""


class FeatureUpdate(Event):
    """Stream feature values for one entity, as pushed to the online store."""

    SCHEMA_NAME: ClassVar[str] = "feature_update"
    feature_view: str
    symbol: str
    strategy: str = ""
    values: dict[str, float]


class DriftAlert(Event):
    """A drift detector fired on a stream metric."""

    SCHEMA_NAME: ClassVar[str] = "drift_alert"
    symbol: str
    strategy: str = ""
    metric: str
    detector: str
    value: float
    detail: str = ""


class DeadLetter(Event):
    """A record that could not be processed, with its original bytes and origin."""

    SCHEMA_NAME: ClassVar[str] = "dead_letter"
    source_topic: str
    partition: int
    offset: int
    key_b64: str = ""
    payload_b64: str
    error_type: str
    reason: str
    consumer: str = ""

    @classmethod
    def from_record(
        cls,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        error: BaseException,
        consumer: str = "",
        ts_event: datetime | None = None,
    ) -> DeadLetter:
        """Build a dead letter from a failed record and the error it raised."""
        return cls(
            ts_event=ts_event or utc_now(),
            source_topic=topic,
            partition=partition,
            offset=offset,
            key_b64=base64.b64encode(key or b"").decode(),
            payload_b64=base64.b64encode(value or b"").decode(),
            error_type=type(error).__name__,
            reason=str(error)[:2000],
            consumer=consumer,
        )

    def payload(self) -> bytes:
        """Return the original bytes."""
        return base64.b64decode(self.payload_b64)


CONTRACTS: dict[str, type[Event]] = {
    c.SCHEMA_NAME: c
    for c in (
        Bar,
        SignalSnapshot,
        TradeOutcome,
        FeatureUpdate,
        DriftAlert,
        ModelManifest,
        DeadLetter,
        OrderSubmitted,
        OrderAccepted,
        OrderRejected,
        OrderFilled,
        OrderCancelled,
        OrderExpired,
        PositionReconciled,
    )
}


def _default(obj: object) -> object:
    if isinstance(obj, BaseModel):
        return obj.model_dump(by_alias=True)
    raise TypeError(f"cannot encode {type(obj).__name__}")


def encode(event: Event) -> bytes:
    """Encode an event to JSON bytes."""
    return orjson.dumps(event.model_dump(by_alias=True), default=_default)


def _first_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "<root>"
    return loc, str(err.get("msg", "invalid"))


def decode(data: bytes | bytearray | memoryview | str, contract: type[E] | None = None) -> E:
    """Decode JSON bytes to the contract named by its `schema` (or the one given, or a subclass).

    Raise `EventDecodeError` naming the field and the reason on any mismatch.
    """
    expected = contract.SCHEMA_NAME if contract is not None else "event"
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise EventDecodeError(expected, "<root>", f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise EventDecodeError(
            expected, "<root>", f"expected a JSON object, got {type(obj).__name__}"
        )
    schema = obj.get("schema")
    if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
        raise EventDecodeError(expected, "schema", "missing or not an object with a 'name'")
    name = schema["name"]
    cls = CONTRACTS.get(name)
    if cls is None:
        raise EventDecodeError(expected, "schema.name", f"unknown contract {name!r}")
    if contract is not None and not issubclass(cls, contract):
        raise EventDecodeError(expected, "schema.name", f"got {name!r}, expected {expected!r}")
    version = schema.get("version")
    if not isinstance(version, int) or version > cls.SCHEMA_VERSION or version < 1:
        raise EventDecodeError(
            name, "schema.version", f"unsupported version {version!r} (max {cls.SCHEMA_VERSION})"
        )
    try:
        return cls.model_validate(obj)  # type: ignore[return-value]
    except ValidationError as exc:
        field, reason = _first_error(exc)
        raise EventDecodeError(name, field, reason) from None
    except ValueError as exc:
        raise EventDecodeError(name, "<root>", str(exc)) from None


def json_schemas() -> dict[str, dict[str, Any]]:
    """Return the JSON Schema of every contract, keyed by schema name."""
    return {
        name: cls.model_json_schema(by_alias=True, mode="serialization")
        for name, cls in CONTRACTS.items()
    }
