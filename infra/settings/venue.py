"""Venues: which venue routes orders, and the paper venue's fill costs."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from infra.settings.base import SettingsContext


class VenueSettings(SettingsContext):
    """The venue that routes the trader's orders and the paper venue's fill model.

    A live venue's own options (accounts, credentials) live in a settings class
    next to its adapter in `trader/venues/`.
    """

    title: ClassVar[str] = "Venues"

    venue: str = Field(
        default="paper",
        validation_alias="VENUE",
        description="Venue that routes the trader's orders, by name; `paper` simulates fills on bars.",
    )
    slippage_ticks: float = Field(
        default=1.0,
        ge=0,
        validation_alias="SLIPPAGE_TICKS",
        description="Paper fills: ticks of slippage against the order.",
    )
    commission_per_contract_usd: float = Field(
        default=2.25,
        ge=0,
        validation_alias="COMMISSION_PER_CONTRACT_USD",
        description="Paper fills: commission per contract per side.",
    )
