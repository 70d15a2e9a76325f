"""Typed settings per context, composed into the process settings.

Each context (`KafkaSettings`, `StoreSettings`, ...) reads its own environment
variables and can be built alone; `Settings` inherits them all, so every process
reads one object and `settings.<field>` works for every field.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from pydantic import SecretStr

from infra.settings.base import (
    STATE_FILE_NAME,
    SettingsContext,
    home_dir,
    mask_secret,
    stack_state,
)
from infra.settings.kafka import KafkaSettings
from infra.settings.markets import MarketSettings
from infra.settings.release import ReleaseSettings
from infra.settings.render import markdown_page, masked_context
from infra.settings.serving import ServingSettings
from infra.settings.store import StoreSettings
from infra.settings.trader import TraderSettings
from infra.settings.training import TrainingSettings
from infra.settings.venue import VenueSettings

__all__ = [
    "CONTEXTS",
    "STATE_FILE_NAME",
    "KafkaSettings",
    "MarketSettings",
    "ReleaseSettings",
    "ServingSettings",
    "Settings",
    "SettingsContext",
    "StoreSettings",
    "TraderSettings",
    "TrainingSettings",
    "VenueSettings",
    "get_settings",
    "home_dir",
    "mask_secret",
    "settings_env",
    "settings_markdown",
    "stack_state",
]

# The order `tradeloop config` prints them in.
CONTEXTS: tuple[type[SettingsContext], ...] = (
    MarketSettings,
    KafkaSettings,
    StoreSettings,
    ReleaseSettings,
    ServingSettings,
    TrainingSettings,
    TraderSettings,
    VenueSettings,
)


class Settings(
    MarketSettings,
    KafkaSettings,
    StoreSettings,
    ReleaseSettings,
    ServingSettings,
    TrainingSettings,
    TraderSettings,
    VenueSettings,
):
    """Every knob of tradeloop: all contexts in one object; names follow the seed design."""

    def masked_by_context(self) -> dict[str, dict[str, Any]]:
        """Return the effective settings per context title, every secret masked."""
        return {context.title: masked_context(self, context) for context in CONTEXTS}

    def masked(self) -> dict[str, Any]:
        """Return the effective settings in one flat mapping, every secret masked."""
        out: dict[str, Any] = {}
        for values in self.masked_by_context().values():
            out.update(values)
        return out


def settings_markdown() -> str:
    """Return the Markdown page of every setting, one table per context."""
    return markdown_page(CONTEXTS)


def settings_env(settings: SettingsContext) -> dict[str, str]:
    """Return this process's environment changed to reproduce `settings` in a subprocess."""
    env = dict(os.environ)
    for name, fld in type(settings).model_fields.items():
        alias = fld.validation_alias
        if not isinstance(alias, str):
            continue
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, tuple):
            value = ",".join(value)
        if isinstance(value, bool):
            value = "1" if value else "0"
        if value in ("", None):
            env.pop(alias, None)
        else:
            env[alias] = str(value)
    return env


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings (read once)."""
    return Settings()
