"""Helpers shared by tests: unique names, subprocess environments, buckets."""

from __future__ import annotations

import os
import uuid

from infra.settings import Settings
from infra.stack import create_versioned_bucket

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
TEST_BUCKET = "tradeloop-test"
TEST_HMAC_KEY = "test-hmac-key-0123456789abcdef"


def unique(prefix: str = "t") -> str:
    """Return a short unique name."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def settings_env(settings: Settings) -> dict[str, str]:
    """Return environment variables that reproduce these settings in a subprocess."""
    env = dict(os.environ)
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if not isinstance(alias, str):
            continue
        value = getattr(settings, name)
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, tuple):
            value = ",".join(value)
        if isinstance(value, bool):
            value = "1" if value else "0"
        if value in ("", None):
            env.pop(alias, None)
            continue
        env[alias] = str(value)
    return env


def s3_bucket_for(endpoint: str, name: str) -> str:
    """Create and return a fresh versioned bucket on the test S3 server."""
    create_versioned_bucket(endpoint, name)
    return name
