"""What the trader's public endpoints may show: no file paths, no exception texts.

`/healthz` is read by load balancers, dashboards and anyone on the network path;
paths tell an attacker the layout of the host and exception texts leak internals
(and sometimes data). `public(status)` walks a status document: values under
error keys become an error code (the exception's class name when the text names
one, else `error`), values under path keys are dropped, and any other string that
carries an absolute path has it replaced by `<path>`. Operators read the details
in the logs.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["ERROR_KEYS", "PATH_KEYS", "error_code", "public"]

#: keys whose values are error texts (shown as a code)
ERROR_KEYS = frozenset(
    {"error", "errors_last", "exception", "last_error", "last_bar_error", "detail", "reason_text"}
)
#: keys whose values are locations on disk (not shown)
PATH_KEYS = frozenset({"dir", "file", "path_on_disk", "directory", "filename", "state_path"})
_EXC_NAME = re.compile(r"\b([A-Z][A-Za-z0-9_]*(?:Error|Exception|Exit|Interrupt|Timeout))\b")
_PATH = re.compile(r"(?<![\w:/.])(?:~|\.{1,2})?/(?:[\w.@+-]+/)*[\w.@+-]+/?|[A-Za-z]:\\[^\s'\"]+")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


def error_code(text: object) -> str | None:
    """Return a code for an error text: the exception class it names, else `error`."""
    if text in (None, ""):
        return None
    match = _EXC_NAME.search(str(text))
    return match.group(1) if match else "error"


def _scrub(text: str) -> str:
    urls: list[str] = []

    def keep(m: re.Match[str]) -> str:
        urls.append(m.group(0))
        return f"\x00{len(urls) - 1}\x00"

    held = _URL.sub(keep, text)  # URLs (topics, endpoints) are not file paths
    held = _PATH.sub("<path>", held)
    return re.sub("\x00(\\d+)\x00", lambda m: urls[int(m.group(1))], held)


def public(value: Any, key: str = "") -> Any:
    """Return a copy of a status document that is safe to serve publicly."""
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            name = str(k)
            if name in PATH_KEYS:
                continue
            if name in ERROR_KEYS and not isinstance(v, dict | list):
                out[k] = error_code(v)
                continue
            out[k] = public(v, name)
        return out
    if isinstance(value, list | tuple):
        return [public(v, key) for v in value]
    if isinstance(value, BaseException):
        return error_code(f"{type(value).__name__}")
    if isinstance(value, str):
        return _scrub(value)
    return value
