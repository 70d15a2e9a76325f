"""The base of every event contract: ids, UTC timestamps, the schema reference, the decode error."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, ClassVar, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["Event", "EventDecodeError", "SchemaRef", "new_event_id", "unchecked", "utc_now"]

_M = TypeVar("_M", bound=BaseModel)


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


#: BaseModel's own slot setters: about a third of the time of `object.__setattr__` by name
_SET_DICT = BaseModel.__dict__["__dict__"].__set__
_SET_FIELDS_SET = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_SET_EXTRA = BaseModel.__dict__["__pydantic_extra__"].__set__
_SET_PRIVATE = BaseModel.__dict__["__pydantic_private__"].__set__
_new = object.__new__


def unchecked(cls: type[_M], fields: dict[str, Any], given: Iterable[str] = ()) -> _M:
    """Return a `cls` holding `fields` as they are: no validation, no defaults filled.

    `fields` must name every field with a value of its type; `given` are the names the
    caller set (pydantic's fields-set). For hot paths building from their own typed state.
    """
    obj = _new(cls)
    _SET_DICT(obj, fields)
    _SET_FIELDS_SET(obj, set(given))
    _SET_EXTRA(obj, None)
    _SET_PRIVATE(obj, None)
    return obj


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
        return unchecked(
            cls, {**base, "event_id": new_event_id(), "ts_init": utc_now(), **values}, values
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the wire form as a plain dict (datetimes kept as datetimes)."""
        return self.model_dump(by_alias=True)
