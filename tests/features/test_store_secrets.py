"""The rendered Feast config holds the Redis password: it is private (0600) from the
first byte, and a bad REDIS_URL is reported without its password."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from features.store import TradeloopFeatureStore, redis_connection_string
from infra.settings import Settings

PASSWORD = "feast-redis-pw-under-test"


def test_feature_store_yaml_is_private(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        kafka=False,
        FEAST_REPO_DIR=str(tmp_path / "repo"),
        REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:6379/3",
    )
    path = TradeloopFeatureStore(settings).render()
    assert PASSWORD in path.read_text()  # Feast needs it
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # re-rendering over a world-readable copy makes it private again
    path.chmod(0o644)
    TradeloopFeatureStore(settings).render()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # the definitions (no secret) stay readable
    assert stat.S_IMODE((path.parent / "definitions.py").stat().st_mode) == 0o644


def test_a_bad_redis_url_error_does_not_show_the_password() -> None:
    with pytest.raises(ValueError, match="REDIS_URL") as err:
        redis_connection_string(f"http://user:{PASSWORD}@redis:6379/0")
    assert PASSWORD not in str(err.value)
    assert "http://********@redis:6379/0" in str(err.value)
