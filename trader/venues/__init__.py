"""Order routing: the venue interface, the paper venue and adapters for real brokers.

Venues are chosen by name (`VENUE`, `--venue`) through `venue_for`. The registry
holds import paths, so an adapter's client library loads only when it is chosen.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from trader.venues.base import (
    BracketOrder,
    ConnectionState,
    DuplicateClientOrderId,
    InvalidOrder,
    Position,
    UnknownOrder,
    Venue,
    VenueDisconnected,
    VenueError,
    WorkingOrder,
    child_order_id,
    client_order_id,
)

if TYPE_CHECKING:
    from infra.settings import Settings
    from trader.core.instruments import Instrument

__all__ = [
    "VENUES",
    "BracketOrder",
    "ConnectionState",
    "DuplicateClientOrderId",
    "InvalidOrder",
    "Position",
    "UnknownOrder",
    "UnknownVenue",
    "Venue",
    "VenueDisconnected",
    "VenueError",
    "VenueFactory",
    "WorkingOrder",
    "child_order_id",
    "client_order_id",
    "register_venue",
    "venue_for",
]


class VenueFactory(Protocol):
    """Build a venue from the process settings and the traded instruments."""

    def __call__(self, settings: Settings, instruments: Mapping[str, Instrument]) -> Venue: ...


#: name -> "module:factory"; a factory takes (settings, instruments) and returns a `Venue`.
VENUES: dict[str, str] = {
    "paper": "trader.venues.paper:PaperVenue.from_settings",
    "ib": "trader.venues.ib:IbVenue.from_settings",
    "projectx": "trader.venues.projectx:ProjectxVenue.from_settings",
    "rithmic": "trader.venues.rithmic:RithmicVenue.from_settings",
}


class UnknownVenue(VenueError, ValueError):
    """Raise when no venue is registered under a name."""


def register_venue(name: str, target: str) -> None:
    """Register a venue factory by import path (`"package.module:callable"`)."""
    VENUES[name] = target


def _load(target: str) -> VenueFactory:
    module_name, _, attr = target.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[return-value]


def venue_for(
    name: str, settings: Settings, instruments: Mapping[str, Instrument] | None = None
) -> Venue:
    """Return a new venue registered under `name`, configured from `settings`."""
    target = VENUES.get(name)
    if target is None:
        raise UnknownVenue(f"unknown venue {name!r}; known: {', '.join(sorted(VENUES))}")
    if instruments is None:
        from trader.core.instruments import instruments_from_settings

        instruments = instruments_from_settings(settings)
    return _load(target)(settings, instruments)
