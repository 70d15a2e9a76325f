"""A Feast online store on Redis for the stream features: one pipeline per push or read.

It is Feast's Redis store (same keys, same hash fields, same value encoding, so
any Feast client reads what it wrote), with two fast paths:

- `write_rows` writes prepared rows of several feature views in one Redis
  pipeline: no DataFrame, no Arrow conversion, no registry listing per push
  (Feast's `push` lists every feature view of the project on each call).
- `get_online_features` answers the common request (feature references, entity
  rows holding join keys only, no on-demand views) from Feast's cached request
  context with one pipelined HMGET per entity and view, and builds the response
  proto directly. Anything else goes through Feast's own implementation.

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

#: One online row: feature view, {join key: value}, {feature: float}, event time (UTC).
OnlineRow = tuple[Any, Mapping[str, str], Mapping[str, float], dt.datetime]


class TradeloopRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    """Config of the store (Feast's Redis config with a new type name)."""

    type: Literal["features.repo.redis_online.TradeloopRedisOnlineStore"] = TYPE  # type: ignore[assignment]


class TradeloopRedisOnlineStore(RedisOnlineStore):
    """Feast's Redis online store with pipelined multi-view writes and a lean read path."""

    def __init__(self) -> None:
        super().__init__()
        self._fields: dict[tuple[str, str], bytes] = {}
        self._keys: dict[tuple[str, tuple[tuple[str, str], ...]], bytes] = {}

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
        if (
            isinstance(features, FeatureService)
            or include_version
            or not isinstance(entity_rows, list)
            or not entity_rows
            or not all(isinstance(r, dict) for r in entity_rows)
        ):
            return None
        (
            _refs,
            odfvs,
            entity_to_join_key,
            entity_types,
            join_keys_set,
            grouped_refs,
            _row_names,
            needed_request_data,
            entityless,
        ) = feast_utils._get_cached_request_context(registry, project, features, full_feature_names)
        columns = list(entity_rows[0])
        if (
            odfvs
            or needed_request_data
            or entityless
            or any(set(r) != set(columns) for r in entity_rows)
            or not set(columns) <= set(join_keys_set)
        ):
            return None
        views = []
        for table, requested in grouped_refs:
            if getattr(table.projection, "join_key_map", None) or getattr(
                table.projection, "version_tag", None
            ):
                return None
            keys = sorted(entity_to_join_key[e] for e in table.entities)
            if not set(keys) <= set(columns):
                return None
            views.append((table, list(requested), keys))

        proto_cols = {
            c: python_values_to_proto_values(
                [r[c] for r in entity_rows], entity_types.get(c, ValueType.UNKNOWN)
            )
            for c in columns
        }
        n_rows = len(entity_rows)
        reads: list[tuple[bytes, list[bytes | str]]] = []
        for table, requested, keys in views:
            fields: list[bytes | str] = [self._field(table.name, f) for f in requested]
            fields.append(f"_ts:{table.name}")
            for i in range(n_rows):
                key = self._entity_key(config, [(k, proto_cols[k][i]) for k in keys])
                reads.append((key, fields))
        replies = self._read_hash_fields(config, reads)  # one pipeline

        response = GetOnlineFeaturesResponse()
        names = response.metadata.feature_names.val
        null_ts = Timestamp()
        for c in columns:
            names.append(c)
            vector = response.results.add()
            vector.values.extend(proto_cols[c])
            vector.statuses.extend([FieldStatus.PRESENT] * n_rows)
            vector.event_timestamps.extend([null_ts] * n_rows)
        at = 0
        for table, requested, _ in views:
            rows = replies[at : at + n_rows]
            at += n_rows
            stamps = []
            for row in rows:
                ts = Timestamp()
                if row[-1]:
                    ts.ParseFromString(row[-1])
                stamps.append(ts)
            prefix = f"{table.projection.name_to_use()}__" if full_feature_names else ""
            for j, name in enumerate(requested):
                names.append(prefix + name)
                vector = response.results.add()
                for row in rows:  # Feast's Redis read: a missing field is an empty value
                    value = vector.values.add()
                    if row[j]:
                        value.ParseFromString(row[j])
                vector.statuses.extend([FieldStatus.PRESENT] * n_rows)
                vector.event_timestamps.extend(stamps)
        return OnlineResponse(response, feature_types=self._build_feature_types(grouped_refs))
