"""The fixtures every area needs: environment isolation, `make_settings` and the services.

Services (the Tansu broker, moto's S3 server, the machine's Redis) are started once per
session by these fixtures and stopped by them; the machine's Redis is used as it is (the
run fails, it does not skip, if it is absent). Every test gets its own topic prefix
(`topic_factory`), bucket and state directory. Fixtures of one area live in that area's
`conftest.py` (e.g. `tests/infra/conftest.py`).
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Isolate every run from the developer's own state and environment.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="tradeloop-tests-"))
os.environ["TRADELOOP_HOME"] = str(_SESSION_HOME)
for _var in (
    "KAFKA_BOOTSTRAP_SERVERS",
    "S3_BUCKET",
    "S3_ENDPOINT_URL",
    "REDIS_URL",
    "LAKE_URI",
    "TOPIC_PREFIX",
    "MANIFEST_HMAC_KEY",
    "MANIFEST_VERIFY_KEYS",
    "MANIFEST_ED25519_PRIVATE_KEY",
    "MANIFEST_ED25519_PUBLIC_KEYS",
    "ALLOW_HMAC_RELEASES",
    "ALLOW_UNSIGNED_MODELS",
    "RELEASE_STATE_PATH",
    "SYMBOLS",
):
    os.environ.pop(_var, None)
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")

from infra.settings import Settings  # noqa: E402
from infra.stack import ManagedProcess, start_moto, start_tansu  # noqa: E402
from tests.helpers import (  # noqa: E402
    REDIS_HOST,
    REDIS_PORT,
    TEST_BUCKET,
    TEST_HMAC_KEY,
    SettingsFactory,
    s3_bucket_for,
    unique,
    unique_topic_prefix,
)

__all__ = ["SettingsFactory"]  # re-exported: tests import it from here

# `durable_broker`: a Tansu broker on S3 storage that keeps its records across restarts
pytest_plugins = ["tests.kit.durable"]


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    """Start one Tansu broker for the session."""
    proc = start_tansu(log_dir=tmp_path_factory.mktemp("tansu"))
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    """Start moto's S3 server for the session, with a versioned test bucket."""
    proc = start_moto(log_dir=tmp_path_factory.mktemp("moto"), bucket=TEST_BUCKET)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Return the machine's Redis URL; fail loudly if Redis is not running."""
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(16)
    except OSError as exc:
        pytest.fail(
            f"Redis is required at {REDIS_HOST}:{REDIS_PORT} and is not reachable ({exc}); "
            "start it with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ''"
        )
    if not reply.startswith(b"+PONG"):
        pytest.fail(f"{REDIS_HOST}:{REDIS_PORT} answered {reply!r}, not Redis")
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture(scope="session")
def topic_factory() -> Callable[[], str]:
    """Return a maker of fresh topic prefixes: each call gives one no other test uses."""
    return unique_topic_prefix


def _settings_factory(
    request: pytest.FixtureRequest, home: Path, topic_prefix: Callable[[], str]
) -> SettingsFactory:
    def factory(
        *, kafka: bool = True, s3: bool = False, redis: bool = False, **env: Any
    ) -> Settings:
        values: dict[str, Any] = {
            "TOPIC_PREFIX": topic_prefix(),
            "STORE_DIR": str(home / "store"),
            "OUTBOX_DIR": str(home / "outbox"),
            "MANIFEST_HMAC_KEY": TEST_HMAC_KEY,
            # The seed's tests sign with HMAC: their traders opt in (tests of the
            # public-key trader pass ALLOW_HMAC_RELEASES="0" and Ed25519 keys).
            "ALLOW_HMAC_RELEASES": "1",
            "RELEASE_STATE_PATH": str(home / "release-state.json"),
            "KAFKA_SESSION_TIMEOUT_MS": 6000,
        }
        if kafka:
            values["KAFKA_BOOTSTRAP_SERVERS"] = request.getfixturevalue("kafka_broker").address
        if s3:
            # a versioned bucket of its own: releases (models/manifest/...) never mix across tests
            endpoint = request.getfixturevalue("s3_server").address
            bucket = s3_bucket_for(endpoint, unique("tl-"))
            values["S3_ENDPOINT_URL"] = endpoint
            values["S3_BUCKET"] = bucket
            values["LAKE_URI"] = f"s3://{bucket}/lake"
        else:
            values["LAKE_URI"] = str(home / "lake")
        if redis:
            values["REDIS_URL"] = request.getfixturevalue("redis_url")
        values.update(env)
        return Settings(**values)

    return factory


@pytest.fixture
def make_settings(
    tmp_path: Path, request: pytest.FixtureRequest, topic_factory: Callable[[], str]
) -> SettingsFactory:
    """Return a factory of Settings with a unique topic prefix and a private home.

    Keyword arguments use the environment variable names (`S3_BUCKET=...`).
    Pass `kafka=True`, `s3=True` or `redis=True` to wire the real services in.
    """
    return _settings_factory(request, tmp_path, topic_factory)


@pytest.fixture(scope="module")
def make_module_settings(
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    topic_factory: Callable[[], str],
) -> SettingsFactory:
    """Return what `make_settings` returns, for module-scoped fixtures (one home per module)."""
    return _settings_factory(request, tmp_path_factory.mktemp("module"), topic_factory)


@pytest.fixture
def fault_proxies() -> Iterator[Any]:
    """Return a `tests.kit.faults.ProxyKit`: fault proxies closed when the test ends."""
    from tests.kit.faults import ProxyKit

    kit = ProxyKit()
    yield kit
    kit.close()
