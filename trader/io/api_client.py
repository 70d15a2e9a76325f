"""Drive a running trader's kill switch over its HTTP API (`tradeloop flatten` / `resume`)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from pydantic import SecretStr

__all__ = ["TraderApiError", "post_control"]


class TraderApiError(RuntimeError):
    """Raise when the trader cannot be reached or refuses the request (says which and why)."""


def post_control(
    base_url: str,
    action: str,
    token: SecretStr,
    *,
    by: str = "cli",
    reason: str = "",
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """POST `/kill` or `/resume` with the bearer token; return the trader's answer."""
    if action not in ("kill", "resume"):
        raise ValueError(f"action must be 'kill' or 'resume', not {action!r}")
    secret = token.get_secret_value()
    if not secret:
        raise TraderApiError(
            "TRADER_API_TOKEN is not set here: set it to the trader's token to use the kill switch"
        )
    url = f"{base_url.rstrip('/')}/{action}"
    request = urllib.request.Request(
        url,
        data=json.dumps({"by": by, "reason": reason}).encode(),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", "")
        except ValueError:
            detail = ""
        raise TraderApiError(f"{url} answered {exc.code}: {detail or exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        why = getattr(exc, "reason", exc)
        raise TraderApiError(f"no trader answers at {url} ({why})") from None
