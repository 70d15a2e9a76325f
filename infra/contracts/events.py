"""Event contracts: the only shapes that cross a process boundary.

Each contract is a frozen pydantic model with `schema` (name + version), `event_id`
(the dedup key), `ts_event` (market time, UTC) and `ts_init` (creation time, UTC).
On the wire they are JSON encoded with orjson.
"""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Self, TypeVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
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


E = TypeVar("E", bound="Event")


def utc_now() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def new_event_id() -> str:
    """Return a fresh unique event id: 128 random bits as 32 hex digits (the form of a uuid4 hex).

    The generator is seeded from the OS and re-seeded in a forked child; it costs a
    tenth of `uuid.uuid4()`, which reads the OS's random source on every call.
    """
    return f"{random.getrandbits(128):032x}"


class EventDecodeError(ValueError):
    """Raise when bytes are not valid JSON or do not match a contract.

    `field` names the offending field (dotted path, or `<root>`), `reason` says why.
    """

    def __init__(self, contract: str, field: str, reason: str) -> None:
        self.contract = contract
        self.field = field
        self.reason = reason
        super().__init__(f"{contract}: field '{field}': {reason}")


class SchemaRef(BaseModel):
    """Name and version of a contract, carried on every event."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    version: int


#: Each contract's own `SchemaRef`, built once (a shared frozen instance validates fastest).
_SCHEMA_REFS: dict[type, SchemaRef] = {}
#: Each contract's static field defaults and schema, for `Event.checked`.
_DEFAULTS: dict[type, dict[str, Any]] = {}


class Event(BaseModel):
    """Base of every contract."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, ser_json_inf_nan="strings"
    )
    SCHEMA_NAME: ClassVar[str] = "event"
    SCHEMA_VERSION: ClassVar[int] = 1

    # Always set by `_fill_schema` from the class; the default only satisfies type checkers.
    schema_: SchemaRef = Field(default=SchemaRef(name="event", version=1), alias="schema")
    event_id: str = Field(default_factory=new_event_id, min_length=1)
    ts_event: datetime
    ts_init: datetime = Field(default_factory=utc_now)

    @model_validator(mode="before")
    @classmethod
    def _fill_schema(cls, data: Any) -> Any:
        if isinstance(data, dict) and "schema" not in data and "schema_" not in data:
            ref = _SCHEMA_REFS.get(cls)
            if ref is None:
                ref = _SCHEMA_REFS[cls] = SchemaRef(
                    name=cls.SCHEMA_NAME, version=cls.SCHEMA_VERSION
                )
            return {**data, "schema": ref}
        return data

    @field_validator("schema_")
    @classmethod
    def _schema_name(cls, value: SchemaRef) -> SchemaRef:
        if value.name != cls.SCHEMA_NAME:
            raise ValueError(f"schema name {value.name!r} is not {cls.SCHEMA_NAME!r}")
        return value

    @field_validator("ts_event", "ts_init")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is UTC:
            return value
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamp must be timezone-aware (UTC)")
        return value.astimezone(UTC)

    @classmethod
    def checked(cls, **values: Any) -> Self:
        """Build from values the caller already typed and checked, without validating them.

        Only for hot paths that build events from their own typed state (the paper
        venue's order events, a test re-validates every one). Defaults, `schema`,
        `event_id` and `ts_init` are filled in as validation would; `ts_event` must be
        an aware UTC datetime. Anything decoded from outside goes through `decode`.
        """
        base = _DEFAULTS.get(cls)
        if base is None:
            base = _DEFAULTS[cls] = {
                name: f.default
                for name, f in cls.model_fields.items()
                if f.default_factory is None and not f.is_required()
            }
            base["schema_"] = SchemaRef(name=cls.SCHEMA_NAME, version=cls.SCHEMA_VERSION)
        obj = cls.__new__(cls)
        object.__setattr__(
            obj, "__dict__", {**base, "event_id": new_event_id(), "ts_init": utc_now(), **values}
        )
        object.__setattr__(obj, "__pydantic_fields_set__", set(values))
        object.__setattr__(obj, "__pydantic_extra__", None)
        object.__setattr__(obj, "__pydantic_private__", None)
        return obj

    def to_dict(self) -> dict[str, Any]:
        """Return the wire form as a plain dict (datetimes kept as datetimes)."""
        return self.model_dump(by_alias=True)


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


OrderRole = Literal["entry", "stop", "target", "flatten"]
OrderSide = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop"]


class VenueEvent(Event):
    """Base of what the `orders` topic carries (not a contract itself): a venue's fact."""

    SCHEMA_NAME: ClassVar[str] = "venue_event"
    venue: str = Field(min_length=1)
    symbol: str = Field(min_length=1)
    contract: str = ""  # the futures contract (e.g. "ESZ4"); empty without a roll calendar
    source: str = "live"
    run_id: str = ""


class OrderEvent(VenueEvent):
    """Base of the events of one order, named by its client order id."""

    SCHEMA_NAME: ClassVar[str] = "order_event"
    client_order_id: str = Field(min_length=1)
    venue_order_id: str = ""  # the venue's id, once the venue gave one


class OrderSubmitted(OrderEvent):
    """An order was sent to the venue: a bracket's entry, one of its OCO children, or a flatten."""

    SCHEMA_NAME: ClassVar[str] = "order_submitted"
    role: OrderRole
    side: OrderSide
    quantity: int = Field(gt=0)
    order_type: OrderType
    limit_price: float | None = Field(default=None, gt=0)
    stop_price: float | None = Field(default=None, gt=0)
    parent_id: str = ""  # children: the client order id of the bracket's entry
    oco_group: str = ""  # children: the stop and target cancel each other
    signal_id: str = ""
    strategy: str = ""
    reason: str = ""  # flatten: why (session_end, timeout, shutdown, risk_flatten, ...)

    @model_validator(mode="after")
    def _prices(self) -> OrderSubmitted:
        if self.order_type == "limit" and self.limit_price is None:
            raise ValueError("a limit order needs limit_price")
        if self.order_type == "stop" and self.stop_price is None:
            raise ValueError("a stop order needs stop_price")
        return self


class OrderAccepted(OrderEvent):
    """The venue is working an order at these terms (again after each modification)."""

    SCHEMA_NAME: ClassVar[str] = "order_accepted"
    quantity: int = Field(gt=0)
    limit_price: float | None = Field(default=None, gt=0)
    stop_price: float | None = Field(default=None, gt=0)


class OrderRejected(OrderEvent):
    """The venue refused an order; `reason` is the venue's own words."""

    SCHEMA_NAME: ClassVar[str] = "order_rejected"
    reason: str = Field(min_length=1)


class OrderFilled(OrderEvent):
    """An order (partly) filled: `quantity` now, `cumulative_quantity` so far."""

    SCHEMA_NAME: ClassVar[str] = "order_filled"
    role: OrderRole
    side: OrderSide
    fill_price: float = Field(gt=0)
    quantity: int = Field(gt=0)
    cumulative_quantity: int = Field(gt=0)
    leaves_quantity: int = Field(default=0, ge=0)  # what is still working after this fill
    commission_usd: float = Field(default=0.0, ge=0)
    venue_fill_id: str = Field(min_length=1)

    @model_validator(mode="after")
    def _cumulative(self) -> OrderFilled:
        if self.cumulative_quantity < self.quantity:
            raise ValueError(
                f"cumulative_quantity {self.cumulative_quantity} < quantity {self.quantity}"
            )
        return self


class OrderCancelled(OrderEvent):
    """An order stopped working before it filled completely (requested, OCO, shutdown)."""

    SCHEMA_NAME: ClassVar[str] = "order_cancelled"
    reason: str = ""
    cumulative_quantity: int = Field(default=0, ge=0)


class OrderExpired(OrderEvent):
    """An order's time in force ran out before it filled completely."""

    SCHEMA_NAME: ClassVar[str] = "order_expired"
    reason: str = ""
    cumulative_quantity: int = Field(default=0, ge=0)


class PositionReconciled(VenueEvent):
    """After a (re)start: the venue's position against the one rebuilt from the order events."""

    SCHEMA_NAME: ClassVar[str] = "position_reconciled"
    quantity: int  # the venue's: > 0 long, < 0 short
    avg_price: float = Field(default=0.0, ge=0)
    expected_quantity: int = 0  # rebuilt from our own order events
    expected_avg_price: float = Field(default=0.0, ge=0)
    status: Literal["matched", "adopted", "unexplained"]
    working_orders: tuple[str, ...] = ()  # client order ids the venue still works
    detail: str = ""


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


class Artifact(BaseModel):
    """One ONNX file of a release."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    family: str
    version: str
    uri: str
    s3_version_id: str | None = None
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)
    input_names: tuple[str, ...]
    output_names: tuple[str, ...] = ()
    feature_names: tuple[str, ...] = ()
    metrics: dict[str, float] = Field(default_factory=dict)
    probe_input: tuple[float, ...] = ()
    probe_output: tuple[float, ...] = ()


class FamilyDecision(BaseModel):
    """What the gate did with one model family and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    #: release: the challenger serves; champion: the previous model keeps serving;
    #: rules: no model of the family serves (the trader's rule fallback decides).
    decision: Literal["release", "champion", "rules"]
    reason: str = ""


class GateResult(BaseModel):
    """The champion/challenger decision recorded in a manifest.

    Fields after `challenger_metrics` came later: manifests without them still decode.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    decision: Literal["release", "refuse", "first", "rollback"]
    reasons: tuple[str, ...] = ()
    champion_metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    challenger_metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    #: The trivial baseline of each family on the same holdout (rules, mean, fixed size).
    baseline_metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    families: dict[str, FamilyDecision] = Field(default_factory=dict)
    #: The significance test of the holdout's per-decision sized R (release vs champion).
    test: str = ""
    p_value: float | None = Field(default=None, ge=0.0, le=1.0)
    confidence: float | None = Field(default=None, gt=0.0, lt=1.0)


class Signature(BaseModel):
    """A signature over the canonical manifest body."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    alg: Literal["hmac-sha256", "ed25519"]
    key_id: str
    value: str


class ModelManifest(Event):
    """A signed model release; `signatures` cover the canonical JSON of everything else."""

    SCHEMA_NAME: ClassVar[str] = "model_manifest"
    model_set: str = "default"
    release: str
    sequence: int = Field(ge=1)
    kind: Literal["release", "rollback"] = "release"
    rollback_of: str | None = None
    artifacts: tuple[Artifact, ...]
    feature_names: tuple[str, ...] = ()
    train_window_start: datetime | None = None
    train_window_end: datetime | None = None
    gate: GateResult | None = None
    #: The training hyperparameters per family (a tuned profile's values included).
    hyperparameters: dict[str, dict[str, float]] = Field(default_factory=dict)
    #: The link to the model set's previous manifest (None on its first one): its
    #: sequence and the sha256 of its published bytes.
    previous_sequence: int | None = Field(default=None, ge=1)
    previous_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    key_id: str = ""
    signatures: tuple[Signature, ...] = ()

    def artifact(self, family: str) -> Artifact | None:
        """Return the artifact of a model family, if the release has one."""
        return next((a for a in self.artifacts if a.family == family), None)


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
