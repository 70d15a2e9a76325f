"""Futures contract specifications: ES and NQ built in, others from `INSTRUMENTS_JSON`."""

from __future__ import annotations

import json
from dataclasses import dataclass

from infra.settings import Settings

__all__ = ["BUILTIN", "Instrument", "InstrumentError", "instruments_from_settings"]


class InstrumentError(ValueError):
    """Raise when an instrument is unknown or badly configured."""


@dataclass(frozen=True, slots=True)
class Instrument:
    """A futures contract: tick size and dollar value of one point."""

    symbol: str
    tick_size: float
    point_value_usd: float

    @property
    def tick_value_usd(self) -> float:
        """Return the dollar value of one tick."""
        return self.tick_size * self.point_value_usd

    def round_price(self, price: float) -> float:
        """Return the price rounded to the nearest tick."""
        return round(price / self.tick_size) * self.tick_size


BUILTIN: dict[str, Instrument] = {
    "ES": Instrument("ES", 0.25, 50.0),
    "NQ": Instrument("NQ", 0.25, 20.0),
}


def instruments_from_settings(settings: Settings) -> dict[str, Instrument]:
    """Return the built-in instruments overlaid with `INSTRUMENTS_JSON`.

    `INSTRUMENTS_JSON` maps a symbol to `{"tick_size": .., "point_value_usd": ..}`,
    e.g. `{"MES": {"tick_size": 0.25, "point_value_usd": 5}}`.
    """
    out = dict(BUILTIN)
    raw = settings.instruments_json.strip()
    if not raw:
        return out
    try:
        spec = json.loads(raw)
    except ValueError as exc:
        raise InstrumentError(f"INSTRUMENTS_JSON is not valid JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise InstrumentError("INSTRUMENTS_JSON must be an object keyed by symbol")
    for symbol, fields in spec.items():
        try:
            tick = float(fields["tick_size"])
            point = float(fields["point_value_usd"])
        except (TypeError, KeyError, ValueError) as exc:
            raise InstrumentError(
                f"INSTRUMENTS_JSON[{symbol!r}] needs numeric tick_size and point_value_usd ({exc})"
            ) from None
        if tick <= 0 or point <= 0:
            raise InstrumentError(
                f"INSTRUMENTS_JSON[{symbol!r}]: tick_size and point_value_usd must be > 0"
            )
        out[symbol.upper()] = Instrument(symbol.upper(), tick, point)
    return out


def require(instruments: dict[str, Instrument], symbols: tuple[str, ...] | list[str]) -> None:
    """Raise `InstrumentError` unless every symbol has a specification."""
    missing = [s for s in symbols if s not in instruments]
    if missing:
        raise InstrumentError(
            f"no instrument specification for {', '.join(missing)}; add it to INSTRUMENTS_JSON"
        )
