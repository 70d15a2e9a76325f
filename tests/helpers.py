"""Helpers shared by tests: unique names, subprocess environments, buckets."""

from __future__ import annotations

import uuid

from infra.settings import settings_env as settings_env  # re-exported for the tests
from infra.stack import create_versioned_bucket

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
TEST_BUCKET = "tradeloop-test"
TEST_HMAC_KEY = "test-hmac-key-0123456789abcdef"


def unique(prefix: str = "t") -> str:
    """Return a short unique name."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def s3_bucket_for(endpoint: str, name: str) -> str:
    """Create and return a fresh versioned bucket on the test S3 server."""
    create_versioned_bucket(endpoint, name)
    return name
