"""Helpers shared by tests: unique names, waiting on conditions, subprocess environments, buckets."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from infra.settings import Settings
from infra.settings import settings_env as settings_env  # re-exported for the tests
from infra.stack import create_versioned_bucket

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
TEST_BUCKET = "tradeloop-test"
TEST_HMAC_KEY = "test-hmac-key-0123456789abcdef"

#: What the `make_settings` fixture returns: keyword arguments are environment variable names.
SettingsFactory = Callable[..., Settings]

T = TypeVar("T")


def unique(prefix: str = "t") -> str:
    """Return a short unique name."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def unique_topic_prefix(stem: str = "t") -> str:
    """Return a fresh topic prefix (`<stem><hex>.`): every topic under it is the caller's own."""
    return f"{unique(stem)}."


def s3_bucket_for(endpoint: str, name: str) -> str:
    """Create and return a fresh versioned bucket on the test S3 server."""
    create_versioned_bucket(endpoint, name)
    return name


def _timed_out(what: str, timeout_s: float, last: Any) -> AssertionError:
    return AssertionError(f"timed out after {timeout_s:g}s waiting for {what} (last: {last!r})")


def wait_until(
    predicate: Callable[[], T], timeout_s: float, *, interval_s: float = 0.05, what: str = ""
) -> T:
    """Poll `predicate` until it returns something truthy and return that; fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise _timed_out(what or getattr(predicate, "__name__", "a condition"), timeout_s, last)
        time.sleep(interval_s)


async def wait_until_async(
    predicate: Callable[[], T], timeout_s: float, *, interval_s: float = 0.05, what: str = ""
) -> T:
    """Like `wait_until`, yielding to the event loop between polls."""
    deadline = time.monotonic() + timeout_s
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise _timed_out(what or getattr(predicate, "__name__", "a condition"), timeout_s, last)
        await asyncio.sleep(interval_s)
