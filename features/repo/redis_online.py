"""A Feast online store on Redis for the stream features: one pipeline per push or read.

It is Feast's Redis store (same keys, same hash fields, same value encoding, so
any Feast client reads what it wrote), with two fast paths:

- `write_rows` writes prepared rows of several feature views in one Redis
  pipeline: no DataFrame, no Arrow conversion, no registry listing per push
  (Feast's `push` lists every feature view of the project on each call).
- `get_online_features` answers the common request (feature references, entity
  rows holding string join keys only, no on-demand views) with one pipelined HMGET
  per entity and view. What depends only on the request's shape (fields, names,
  types) is planned once per Feast request context; entity keys are cached by
  value; the response is assembled in protobuf wire format from the bytes Redis
  returns (Feast stores serialised `Value` and `Timestamp` protos) and parsed
  once. Anything else goes through Feast's own implementation.

Select it in `feature_store.yaml` with
`online_store: {type: features.repo.redis_online.TradeloopRedisOnlineStore, ...}`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from feast import utils as feast_utils
from feast.feature_service import FeatureService
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from feast.online_response import OnlineResponse
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus, GetOnlineFeaturesResponse
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

__all__ = ["OnlineRow", "TradeloopRedisOnlineStore", "TradeloopRedisOnlineStoreConfig"]

TYPE = "features.repo.redis_online.TradeloopRedisOnlineStore"
_KEY_CACHE_MAX = 4096
_PLAN_CACHE_MAX = 64

#: One online row: feature view, {join key: value}, {feature: float}, event time (UTC).
OnlineRow = tuple[Any, Mapping[str, str], Mapping[str, float], dt.datetime]


class _Plan:
    """What reads of one request shape need: fixed parts, and entity keys cached by value."""

    __slots__ = ("feature_types", "head", "keys", "types", "values", "views")

    def __init__(
        self,
        views: list[tuple[list[bytes | str], tuple[tuple[str, int], ...], int]],
        head: bytes,
        types: tuple[ValueType, ...],
        feature_types: dict[str, ValueType],
    ) -> None:
        #: per view: Redis hash fields, (join key, column index) pairs, number of features
        self.views = views
        self.head = head  # the response's metadata (feature names), serialised
        self.types = types  # value type of each entity column
        self.feature_types = feature_types
        #: (column index, value) -> the value as Feast converts it, serialised and as a proto
        self.values: dict[tuple[int, str], tuple[bytes, ValueProto]] = {}
        self.keys: dict[tuple[int, tuple[str, ...]], bytes] = {}  # (view, row) -> Redis key

    def value(self, at: int, value: str) -> tuple[bytes, ValueProto]:
        """Return an entity column's value as Feast converts it (serialised, proto)."""
        got = self.values.get((at, value))
        if got is None:
            proto = python_values_to_proto_values([value], self.types[at])[0]
            if len(self.values) >= _KEY_CACHE_MAX:
                self.values.clear()
            got = self.values[(at, value)] = (proto.SerializeToString(), proto)
        return got


# Protobuf wire format of GetOnlineFeaturesResponse.results (FeatureVector entries)
_SMALL = [bytes([i]) for i in range(128)]


def _varint(n: int) -> bytes:
    """Return a non-negative integer as a protobuf varint."""
    if n < 128:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(field: Any) -> bytes:
    return _varint(field.number << 3 | 2)  # length-delimited (messages, packed enums)


_RESULTS = GetOnlineFeaturesResponse.DESCRIPTOR.fields_by_name["results"]
_RESULTS_TAG = _tag(_RESULTS)
_VALUES_TAG, _STATUSES_TAG, _STAMPS_TAG = (
    _tag(_RESULTS.message_type.fields_by_name[name])
    for name in ("values", "statuses", "event_timestamps")
)
_PRESENT = _varint(FieldStatus.PRESENT)


def _tail(n_rows: int, stamps: list[bytes]) -> bytes:
    """Return a vector's statuses (all present, packed) and serialised event timestamps."""
    statuses = _PRESENT * n_rows
    parts = [_STATUSES_TAG, _varint(len(statuses)), statuses]
    for raw in stamps:
        parts += (_STAMPS_TAG, _varint(len(raw)), raw)
    return b"".join(parts)


def _vector(values: list[bytes], tail: bytes) -> bytes:
    """Return one `results` entry: the serialised values, then `tail` (see `_tail`)."""
    parts: list[bytes] = []
    for raw in values:
        parts += (_VALUES_TAG, _varint(len(raw)), raw)
    parts.append(tail)
    body = b"".join(parts)
    return b"".join((_RESULTS_TAG, _varint(len(body)), body))


class TradeloopRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    """Config of the store (Feast's Redis config with a new type name)."""

    type: Literal["features.repo.redis_online.TradeloopRedisOnlineStore"] = TYPE  # type: ignore[assignment]


class TradeloopRedisOnlineStore(RedisOnlineStore):
    """Feast's Redis online store with pipelined multi-view writes and a lean read path."""

    def __init__(self) -> None:
        super().__init__()
        self._fields: dict[tuple[str, str], bytes] = {}
        self._keys: dict[tuple[str, tuple[tuple[str, str], ...]], bytes] = {}
        # per (id of a Feast request context, entity columns): the context (held, so
        # its id stays its own) and the plan, None for a request Feast answers itself
        self._plans: dict[tuple[int, tuple[str, ...]], tuple[Any, _Plan | None]] = {}

    # Keys -----------------------------------------------------------------

    def _field(self, view: str, feature: str) -> bytes:
        key = (view, feature)
        field = self._fields.get(key)
        if field is None:
            field = self._fields[key] = _mmh3(f"{view}:{feature}")
        return field

    def _entity_key(self, config: RepoConfig, values: Sequence[tuple[str, ValueProto]]) -> bytes:
        """Return the Redis key of an entity (Feast's serialisation plus the project)."""
        ident = (config.project, tuple((k, v.SerializeToString().hex()) for k, v in values))
        key = self._keys.get(ident)  # type: ignore[arg-type]
        if key is None:
            proto = EntityKeyProto(
                join_keys=[k for k, _ in values], entity_values=[v for _, v in values]
            )
            key = serialize_entity_key(
                proto, entity_key_serialization_version=config.entity_key_serialization_version
            ) + config.project.encode("utf-8")
            if len(self._keys) >= _KEY_CACHE_MAX:
                self._keys.clear()
            self._keys[ident] = key  # type: ignore[index]
        return key

    # Writing --------------------------------------------------------------

    def connect(self, config: RepoConfig) -> bool:
        """Open a connection to Redis now (a PING), so the first write or read does not."""
        return bool(self._get_client(config.online_store).ping())

    def write_rows(self, config: RepoConfig, rows: Iterable[OnlineRow]) -> int:
        """Write rows of any stream feature views in one Redis pipeline; return rows written.

        Each row replaces the entity's values of its view (as Feast's push with
        `skip_dedup` does): rows arrive in processing order, latest per entity.
        """
        online_config = config.online_store
        client = self._get_client(online_config)
        ttl = online_config.key_ttl_seconds
        n = 0
        with client.pipeline(transaction=False) as pipe:
            for table, join_keys, values, event_ts in rows:
                view = table.name
                key = self._entity_key(
                    config, [(k, ValueProto(string_val=v)) for k, v in sorted(join_keys.items())]
                )
                ts = Timestamp()
                ts.FromDatetime(event_ts.astimezone(dt.UTC))
                mapping: dict[bytes | str, bytes] = {f"_ts:{view}": ts.SerializeToString()}
                for name, value in values.items():
                    mapping[self._field(view, name)] = ValueProto(
                        double_val=float(value)
                    ).SerializeToString()
                pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
                if ttl:
                    pipe.expire(name=key, time=ttl)
                n += 1
            if n:
                pipe.execute()
        return n

    # Reading --------------------------------------------------------------

    def get_online_features(  # type: ignore[override]
        self,
        config: RepoConfig,
        features: list[str] | FeatureService,
        entity_rows: Any,
        registry: Any,
        project: str,
        full_feature_names: bool = False,
        include_feature_view_version_metadata: bool = False,
    ) -> OnlineResponse:
        """Read features; the common request in one pipeline, anything else as Feast does."""
        fast = self._lean_read(
            config, features, entity_rows, registry, project, full_feature_names,
            include_feature_view_version_metadata,
        )  # fmt: skip
        if fast is not None:
            return fast
        return super().get_online_features(
            config, features, entity_rows, registry, project, full_feature_names,
            include_feature_view_version_metadata,
        )  # fmt: skip

    def _lean_read(
        self,
        config: RepoConfig,
        features: Any,
        entity_rows: Any,
        registry: Any,
        project: str,
        full_feature_names: bool,
        include_version: bool,
    ) -> OnlineResponse | None:
        """Answer a request of join keys with string values in one pipeline, else None."""
        if (
            isinstance(features, FeatureService)
            or include_version
            or type(entity_rows) is not list
            or not entity_rows
            or type(entity_rows[0]) is not dict
        ):
            return None
        columns = tuple(entity_rows[0])
        names = set(columns)
        for row in entity_rows:
            if type(row) is not dict or row.keys() != names:
                return None
            for value in row.values():
                if type(value) is not str:
                    return None
        ctx = feast_utils._get_cached_request_context(
            registry, project, features, full_feature_names
        )
        plan = self._plan(ctx, columns, full_feature_names)
        if plan is None:
            return None

        rows = [tuple(r[c] for c in columns) for r in entity_rows]
        n_rows = len(rows)
        reads: list[tuple[bytes, list[bytes | str]]] = []
        keys = plan.keys
        for view, (fields, picks, _) in enumerate(plan.views):
            for row in rows:
                key = keys.get((view, row))
                if key is None:
                    values = [(name, plan.value(at, row[at])[1]) for name, at in picks]
                    key = self._entity_key(config, values)
                    if len(keys) >= _KEY_CACHE_MAX:
                        keys.clear()
                    keys[(view, row)] = key
                reads.append((key, fields))
        replies: list[list[Any]] = self._read_hash_fields(config, reads)  # one pipeline

        chunks = [plan.head]
        tail = _tail(n_rows, [b""] * n_rows)  # entity columns carry no event time
        for at in range(len(columns)):
            chunks.append(_vector([plan.value(at, r[at])[0] for r in rows], tail))
        at = 0
        for _, _, n_features in plan.views:
            view_rows = replies[at : at + n_rows]
            at += n_rows
            tail = _tail(n_rows, [row[-1] or b"" for row in view_rows])
            for j in range(n_features):  # Feast's Redis read: a missing field is an empty value
                chunks.append(_vector([row[j] or b"" for row in view_rows], tail))
        response = GetOnlineFeaturesResponse.FromString(b"".join(chunks))
        return OnlineResponse(response, feature_types=dict(plan.feature_types))

    def _plan(self, ctx: tuple[Any, ...], columns: tuple[str, ...], full: bool) -> _Plan | None:
        """Return the read plan of a request context and entity columns (None: Feast's path)."""
        ident = (id(ctx), columns)
        cached = self._plans.get(ident)
        if cached is not None and cached[0] is ctx:
            return cached[1]
        plan = self._make_plan(ctx, columns, full)
        if len(self._plans) >= _PLAN_CACHE_MAX:
            self._plans.clear()
        self._plans[ident] = (ctx, plan)
        return plan

    def _make_plan(
        self, ctx: tuple[Any, ...], columns: tuple[str, ...], full: bool
    ) -> _Plan | None:
        (
            _refs, odfvs, entity_to_join_key, entity_types, join_keys_set, grouped_refs,
            _row_names, needed_request_data, entityless,
        ) = ctx  # fmt: skip
        if odfvs or needed_request_data or entityless or not set(columns) <= set(join_keys_set):
            return None
        views = []
        names = list(columns)
        for table, requested in grouped_refs:
            projection = table.projection
            if getattr(projection, "join_key_map", None) or getattr(
                projection, "version_tag", None
            ):
                return None
            keys = sorted(entity_to_join_key[e] for e in table.entities)
            if not set(keys) <= set(columns):
                return None
            fields: list[bytes | str] = [self._field(table.name, f) for f in requested]
            fields.append(f"_ts:{table.name}")
            picks = tuple((k, columns.index(k)) for k in keys)
            views.append((fields, picks, len(requested)))
            prefix = f"{projection.name_to_use()}__" if full else ""
            names.extend(prefix + f for f in requested)
        head = GetOnlineFeaturesResponse()
        head.metadata.feature_names.val.extend(names)
        types = tuple(entity_types.get(c, ValueType.UNKNOWN) for c in columns)
        feature_types = self._build_feature_types(grouped_refs)
        return _Plan(views, head.SerializeToString(), types, feature_types)
