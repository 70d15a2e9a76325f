"""What every settings context shares: the state directory, the stack state, masking."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from pydantic_settings import BaseSettings, SettingsConfigDict

STATE_FILE_NAME = "stack.json"


def home_dir() -> Path:
    """Return the directory that holds the stack state, lake and models by default."""
    return Path(os.environ.get("TRADELOOP_HOME", ".tradeloop")).resolve()


def stack_state() -> dict[str, Any]:
    """Return what `tradeloop stack up` recorded, or an empty dict."""
    path = home_dir() / STATE_FILE_NAME
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def mask_secret(raw: str) -> str:
    """Return a masked form of a secret: whether it is set, nothing more."""
    return "********" if raw else "(unset)"


MASK = "********"
# user info of a URL (`scheme://user:password@host`) and credential-like query values
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/@\s]*)@")
_URL_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;](?:[^=&;#\s]*(?:pass|secret|token|key|signature|credential|auth)"
    r"[^=&;#\s]*)=)(?P<value>[^&;#\s]*)",
    re.IGNORECASE,
)


def mask_url(text: str) -> str:
    """Return `text` with every URL's user info and credential query values masked."""
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _URL_QUERY_SECRET.sub(lambda m: f"{m['key']}{MASK}", text)


class SettingsContext(BaseSettings):
    """One context's settings, read from environment variables and an optional `.env`.

    `title` names the context in `tradeloop config`; `effective` maps labels to the
    properties whose resolved values `tradeloop config` prints after the fields.
    """

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    title: ClassVar[str] = ""
    effective: ClassVar[dict[str, str]] = {}

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """Show fields as `repr` does, with credentials inside URLs masked."""
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if isinstance(value, str) else value

    @property
    def home(self) -> Path:
        """Return the state directory (`TRADELOOP_HOME`, default `.tradeloop`)."""
        return home_dir()
