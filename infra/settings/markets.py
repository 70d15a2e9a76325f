"""Markets: what is traded and trained."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from infra.settings.base import SettingsContext


class MarketSettings(SettingsContext):
    """Symbols and instrument specifications."""

    title: ClassVar[str] = "Markets"

    symbols: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("ES", "NQ"),
        validation_alias="SYMBOLS",
        description="Comma-separated symbols to trade and train (seed: `ES,NQ`).",
    )
    instruments_json: str = Field(
        default="",
        validation_alias="INSTRUMENTS_JSON",
        description='Extra instruments as JSON, e.g. `{"MES": {"tick_size": 0.25, "tick_value_usd": 1.25}}`; ES and NQ are built in.',
    )

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(s.strip().upper() for s in value.split(",") if s.strip())
        return value
