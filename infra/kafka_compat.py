"""Teach aiokafka InitProducerId v3 so idempotent producers work on every broker.

aiokafka speaks only v0 of InitProducerId, which carries no producer id or epoch.
Apache Kafka accepts v0, but KIP-360 brokers such as Tansu require the v3 fields.
Version negotiation picks the highest version both sides support, so adding v3
changes nothing for brokers that only know v0.
"""

from __future__ import annotations

from typing import Any

from aiokafka.protocol import transaction as _tx
from aiokafka.protocol.api import RequestStruct, Response
from aiokafka.protocol.types import CompactString, Int16, Int32, Int64, Schema, TaggedFields


class InitProducerIdResponse_v3(Response):
    API_KEY = 22
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("tags", TaggedFields),
    )


class InitProducerIdRequest_v3(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 22
    API_VERSION = 3
    RESPONSE_TYPE = InitProducerIdResponse_v3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("transaction_timeout_ms", Int32),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("tags", TaggedFields),
    )


def install() -> None:
    """Register InitProducerId v3 with aiokafka (idempotent)."""
    request = _tx.InitProducerIdRequest
    if InitProducerIdRequest_v3 in request._CLASSES:
        return
    v0_build = request.build

    def build(self: Any, cls: type[Any]) -> Any:
        if cls is InitProducerIdRequest_v3:
            return cls(self._transactional_id, self._transaction_timeout_ms, -1, -1, {})
        return v0_build(self, cls)

    request.build = build  # type: ignore[method-assign]
    request._CLASSES = (*request._CLASSES, InitProducerIdRequest_v3)  # type: ignore[assignment]


install()
