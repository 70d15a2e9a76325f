"""Fixtures of the infra tests."""

from __future__ import annotations

import pytest

from infra.bus import KafkaBus
from tests.helpers import SettingsFactory


@pytest.fixture
def bus(make_settings: SettingsFactory) -> KafkaBus:
    """Return a bus on the session broker with a unique topic prefix."""
    return KafkaBus(make_settings())
