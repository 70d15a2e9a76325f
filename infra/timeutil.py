"""Parse the durations and times users type: `30m`, `2h`, `2024-05-01T13:30Z`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = ["parse_duration", "parse_time"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Parse `30m`, `90s`, `2h`, `1d`, `1w` or plain seconds into seconds (> 0)."""
    match = _DURATION.match(text or "")
    if not match:
        raise ValueError(f"duration {text!r}: use a number with s, m, h, d or w (e.g. 30m)")
    value = float(match.group(1)) * _UNIT_S[match.group(2).lower()]
    if value <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    return value


def parse_time(
    text: str | None, now: datetime | None = None, *, what: str = "time"
) -> datetime | None:
    """Return the UTC time meant by an ISO time or date (naive = UTC) or `15m`-style ago.

    Empty input gives None. Raise `ValueError` naming `what` and the input otherwise.
    """
    if not text or not text.strip():
        return None
    match = _DURATION.match(text)
    if match and match.group(2):
        return (now or datetime.now(UTC)) - timedelta(seconds=parse_duration(text))
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{what} {text!r}: expected a duration ago such as 15m, 2h, 1d or an ISO time "
            "such as 2024-05-01T13:30:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)
