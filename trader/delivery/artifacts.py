"""Where a release's artifacts may come from, how large they may be, and their download.

An artifact URI is accepted (else `bad_uri`) when it is

- `s3://{S3_BUCKET}/models/{family}/{version}/{file}` with a pinned `s3_version_id`;
- the key `models/{family}/{version}/{file}` in the configured store, with a pinned
  version id (the local store keeps every version under `.versions/`);
- under `CDN_BASE_URL` (HTTPS only; the CDN is untrusted: the signed sha256 decides).

`file://`, other buckets or schemes, absolute paths and `..` are refused. The declared
size must not exceed `MAX_ARTIFACT_BYTES` (`too_large`), and every download is
streamed and cut one byte past it.
"""

from __future__ import annotations

import re
import ssl
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import unquote, urlparse

from infra.contracts import MODELS_PREFIX, Artifact
from infra.objectstore import (
    LocalObjectStore,
    ObjectNotFoundError,
    ObjectTooLargeError,
    S3ObjectStore,
    s3_client,
)
from infra.settings import Settings

__all__ = ["ArtifactRefused", "check_artifact", "fetch_artifact"]

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
_CDN_TIMEOUT_S = 30.0


class ArtifactRefused(ValueError):
    """Raise when an artifact's URI or declared size is refused; `code` is the rejection code."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}")


def _bad(art: Artifact, why: str) -> ArtifactRefused:
    return ArtifactRefused("bad_uri", f"{art.family}: {art.uri[:200]!r} {why}")


def _check_key(art: Artifact, key: str) -> None:
    """Check a store key lies under `models/{family}/{version}/` with no way out of it."""
    if any(c in key for c in ("\\", "%", "\x00")) or key != key.strip():
        raise _bad(art, "holds a backslash, a percent escape or a control character")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise _bad(art, "has an empty, `.` or `..` path segment")
    if not _NAME_RE.match(art.version):
        raise _bad(art, f"names a version {art.version[:60]!r} that is no plain name")
    prefix = f"{MODELS_PREFIX}{art.family}/{art.version}/"
    if not key.startswith(prefix) or len(parts) < 4:
        raise _bad(art, f"does not lie under {prefix}")
    if not art.s3_version_id:
        raise _bad(art, "has no pinned version id")


def _cdn_base(settings: Settings) -> str:
    base = settings.cdn_base_url.strip()
    return base if base.endswith("/") else base + "/"


def check_artifact(art: Artifact, settings: Settings) -> str:
    """Check an artifact's URI and declared size; return its kind: `s3`, `store` or `cdn`.

    Raise `ArtifactRefused` (`bad_uri`, `too_large`).
    """
    if art.size_bytes > settings.max_artifact_bytes:
        raise ArtifactRefused(
            "too_large",
            f"{art.family}: declares {art.size_bytes} bytes (MAX_ARTIFACT_BYTES "
            f"{settings.max_artifact_bytes})",
        )
    uri = art.uri
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not settings.uses_s3 or parsed.netloc != settings.bucket:
            raise _bad(art, "is not in the release bucket")
        if parsed.query or parsed.fragment or parsed.params:
            raise _bad(art, "carries a query or fragment")
        _check_key(art, parsed.path[1:])
        return "s3"
    if parsed.scheme == "https":
        base = settings.cdn_base_url.strip()
        if not base or urlparse(base).scheme != "https":
            raise _bad(art, "is on HTTPS but no HTTPS CDN_BASE_URL is configured")
        if not uri.startswith(_cdn_base(settings)):
            raise _bad(art, "is not under CDN_BASE_URL")
        rest = unquote(uri[len(_cdn_base(settings)) :].split("?", 1)[0])
        if not rest or any(p in ("", ".", "..") for p in rest.replace("\\", "/").split("/")):
            raise _bad(art, "has an empty, `.` or `..` path segment")
        return "cdn"
    if parsed.scheme or parsed.netloc or uri.startswith("/"):
        raise _bad(art, "is no key of the release store, s3:// URI or CDN URL")
    _check_key(art, uri)
    return "store"


def fetch_artifact(art: Artifact, settings: Settings, *, client: Any = None) -> bytes:
    """Download an accepted artifact, at most MAX_ARTIFACT_BYTES of it.

    `client` is a boto3 S3 client to reuse (default: a new one). Raise
    `ArtifactRefused`, `ObjectTooLargeError`, `ObjectNotFoundError` (or the store's
    error) when the bytes cannot be had.
    """
    kind = check_artifact(art, settings)
    limit = settings.max_artifact_bytes
    if kind == "cdn":
        return _fetch_https(art.uri, limit)
    if kind == "s3":
        parsed = urlparse(art.uri)
        s3 = S3ObjectStore(client or s3_client(settings), parsed.netloc)
        return s3.get(parsed.path[1:], art.s3_version_id, max_bytes=limit)
    if settings.uses_s3:
        store = S3ObjectStore(client or s3_client(settings), settings.bucket)
        return store.get(art.uri, art.s3_version_id, max_bytes=limit)
    return LocalObjectStore(settings.store_root).get(art.uri, art.s3_version_id, max_bytes=limit)


def _fetch_https(url: str, limit: int) -> bytes:
    """Stream an HTTPS download (certificate verified), cut one byte past `limit`."""
    context = ssl.create_default_context()
    request = urllib.request.Request(url, headers={"Accept": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=_CDN_TIMEOUT_S, context=context) as resp:
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise ObjectTooLargeError(f"{url} has {declared} bytes (> {limit})")
            data = bytearray()
            while chunk := resp.read(min(1 << 20, limit + 1 - len(data))):
                data += chunk
                if len(data) > limit:
                    raise ObjectTooLargeError(f"{url} is larger than {limit} bytes")
            return bytes(data)
    except urllib.error.HTTPError as exc:
        if exc.code in (403, 404, 410):
            raise ObjectNotFoundError(f"{url} (HTTP {exc.code})") from None
        raise
